"""Every sweep an experiment file defines is runnable: each cell's overrides name keys of its
base variant's config, and the detector and augmentation they describe build."""
import importlib

import jax
import pytest

from jaxdet import detectors
from jaxdet.data import augment

FAMILIES = ("retinanet", "ssd", "yolo_v1", "yolo_v2", "yolo_v3", "yolo9000")
SWEEPS = [(family, name) for family in FAMILIES
          for name in getattr(importlib.import_module(f"experiments.{family}"), "SWEEPS", ())]


def test_the_shipped_sweeps_are_found():
  assert ("retinanet", "focal_loss") in SWEEPS and ("ssd", "table2_components") in SWEEPS


@pytest.mark.parametrize("family, name", SWEEPS, ids=[f"{f}:{n}" for f, n in SWEEPS])
def test_every_cell_of_a_shipped_sweep_builds(family, name):
  experiment = importlib.import_module(f"experiments.{family}")
  sweep = experiment.get_sweep(name)
  assert sweep.name == name and len(sweep.seeds) >= 2
  for cell in sweep.cells:
    config = experiment.get_config(sweep.base)                # locked: a key it lacks is a
    config.update_from_flattened_dict(dict(cell.overrides))   # KeyError, as on the command line
    detector = detectors.build(config.model)
    jax.eval_shape(lambda: detector.init(jax.random.key(0), tuple(config.data.image_size)))
    augment.build(config.data.augment)
  with pytest.raises(ValueError, match="unknown .* sweep"):
    experiment.get_sweep("no_such_sweep")
