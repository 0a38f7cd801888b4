"""Detector families. ``build(config.model)`` returns the family's :class:`Detector`."""
import importlib

FAMILIES = ("retinanet", "ssd", "yolo_v1", "yolo_v2", "yolo9000", "yolo_v3", "classifier")


def build(model_config):
  family = model_config.family
  if family not in FAMILIES:
    raise ValueError(f"unknown detector family {family!r}; available: {FAMILIES}")
  return importlib.import_module(f"jaxdet.detectors.{family}").build(model_config)
