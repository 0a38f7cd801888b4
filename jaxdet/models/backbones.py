"""The families' backbones, built by name from their settings by one builder, for the detectors
and for the classifier that pretrains them on ImageNet (``jaxdet.detectors.classifier``).

A backbone maps images to its feature maps (a dict); with ``num_classes > 0`` it is the
classification network instead: the trunk trained whole, then global pooling and the classes'
``logits``. Each is registered with the name its detector gives it in the variables
(``backbone``, ``features``, ``net``), so a detector started from a classifier's weights
(``train.init_from``) finds the trunk's arrays where it looks for them.

``settings`` is the family's backbone config (a mapping). Register another with
``@backbones.register("<name>", variable_name=...)``.
"""
import dataclasses
from typing import Callable

from jaxdet.config import nested_tuples
from jaxdet.models import darknet
from jaxdet.models import resnet
from jaxdet.models import vgg
from jaxdet.models import yolo_v1_net


@dataclasses.dataclass(frozen=True)
class Backbone:
  build: Callable              # (settings, dtype, backend, num_classes) -> Flax module
  variable_name: str           # its name in the detector's (and the classifier's) variables


REGISTRY = {}


def register(name, variable_name="backbone"):
  def add(build_fn):
    REGISTRY[name] = Backbone(build_fn, variable_name)
    return build_fn
  return add


def get(name):
  if name not in REGISTRY:
    raise ValueError(f"backbone {name!r}: choose from {tuple(REGISTRY)}")
  return REGISTRY[name]


def build(backbone, settings, *, dtype, backend, num_classes=0, name=None):
  """The backbone registered as ``backbone``, from ``settings`` (see the module doc); ``name``:
  Flax's, else the attribute that holds it names it."""
  return get(backbone).build(settings, dtype=dtype, backend=backend, num_classes=num_classes,
                             name=name)


@register("resnet")
def resnet_backbone(settings, **module_args):
  """He et al. 2016: ``architecture`` (``jaxdet.models.resnet.RESNETS``), and for detection
  ``norm`` and ``freeze_at`` (RetinaNet, Sec. 4 "Initialization")."""
  detection = {} if module_args["num_classes"] else dict(
      norm=settings.get("norm", "batch_norm"), freeze_at=settings.get("freeze_at", 0))
  return resnet.build_resnet(settings["architecture"], **detection, **module_args)


@register("darknet19")
def darknet19_backbone(settings, **module_args):
  """YOLOv2 Sec. 3 "Faster", Table 6: ``stages``, and ``batch_norm`` (default True)."""
  return darknet.Darknet19(stages=nested_tuples(settings["stages"]),
                           batch_norm=settings.get("batch_norm", True), **module_args)


@register("darknet53")
def darknet53_backbone(settings, **module_args):
  """YOLOv3 Sec. 2.4, Table 1: ``stem_width``, ``stage_widths``, ``blocks``."""
  return darknet.Darknet53(stem_width=settings["stem_width"],
                           stage_widths=tuple(settings["stage_widths"]),
                           blocks=tuple(settings["blocks"]), **module_args)


@register("ssd_vgg16", variable_name="features")
def ssd_vgg16_backbone(settings, **module_args):
  """SSD Sec. 3 "Base network": VGG-16 reduced (``atrous``, default True); for detection also
  its ``extras``, ``l2norm_scale`` and ``freeze_at`` (``jaxdet.models.vgg``)."""
  detection = dict(extras=()) if module_args["num_classes"] else dict(
      extras=nested_tuples(settings["extras"]), l2norm_scale=settings["l2norm_scale"],
      freeze_at=settings["freeze_at"])
  return vgg.SSDFeatures(
      stage_widths=tuple(settings["stage_widths"]), stage_depths=tuple(settings["stage_depths"]),
      fc_width=settings["fc_width"], fc6_dilation=settings["fc6_dilation"],
      atrous=settings.get("atrous", True),
      batch_norm=settings["batch_norm"], **detection, **module_args)


@register("yolo_v1", variable_name="net")
def yolo_v1_backbone(settings, **module_args):
  """YOLOv1 Sec. 2.2: the first convolutions (``stages``) with average pooling and a connected
  layer; the detector's network (``YOLOv1Net``) runs the same ``conv_stages`` before its
  connected layers, so it is the classifier only (``num_classes > 0``)."""
  if not module_args["num_classes"]:
    raise ValueError("the yolo_v1 backbone is the pretraining classifier: YOLOv1Net holds the "
                     "detector's convolutions and connected layers in one module")
  return yolo_v1_net.YOLOv1Classifier(stages=nested_tuples(settings["stages"]),
                                      batch_norm=settings["batch_norm"], **module_args)
