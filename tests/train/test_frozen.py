"""Freezing part of the backbone (``model.freeze_at``, frozen batch norm): what a train step
leaves alone, and the loop's refusal to freeze weights nobody trained."""
import functools

import jax
import numpy as np
import pytest

from experiments import retinanet
from experiments import ssd
from jaxdet import detectors
from jaxdet.train import loop
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from tests.train.helpers import random_batch, tiny_config
from tests.train.test_sharding import run_steps


def frozen_config(scenes_dir, experiment=retinanet):
  """``tiny_test`` with RetinaNet's stem, C2 and batch norm frozen, or SSD's conv1 and conv2."""
  config = tiny_config(scenes_dir, experiment)
  config.unlock()
  if experiment is retinanet:
    config.model.backbone_norm, config.model.freeze_at = "frozen_batch_norm", 2
  else:
    config.model.base.freeze_at = 2
  config.lock()
  return config


@pytest.mark.parametrize("experiment,trained", [
    (retinanet, [("backbone", "stage3_block0", "Conv_0", "kernel"),
                 ("backbone", "stage5_block0", "proj_conv", "kernel"),
                 ("fpn", "lateral3", "kernel"), ("head", "cls_output", "bias")]),
    (ssd, [("features", "conv3_1", "kernel"), ("features", "conv3_1_bn", "scale"),
           ("features", "fc7", "kernel"), ("head", "cls_0", "bias")])], ids=["retinanet", "ssd"])
def test_frozen_backbone_parts_do_not_move_in_a_train_step(scenes_dir, experiment, trained):
  """After two steps every frozen parameter is bitwise where it started and the layers above
  the frozen part have trained; batch statistics move only where batch norm is not frozen
  (RetinaNet's are all frozen here; SSD's tiny VGG has batch norm after every convolution)."""
  config = frozen_config(scenes_dir, experiment)
  detector = detectors.build(config.model)
  start, _, _ = state_lib.build_state(detector, config, sharding.make_mesh(jax.devices()[:2]))
  start = jax.device_get(start)
  end, _ = run_steps(config, jax.devices()[:2], [random_batch(2, seed=s) for s in range(2)])
  frozen = detector.frozen_parameters(start.params)
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), start.params, end.params)
  assert sum(jax.tree.leaves(frozen)) > 0
  assert not any(m for m, f in zip(jax.tree.leaves(moved), jax.tree.leaves(frozen)) if f)
  for path in trained:
    assert functools.reduce(lambda tree, key: tree[key], path, moved), path
  stats_moved = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                             start.model_state["batch_stats"], end.model_state["batch_stats"])
  if experiment is retinanet:
    assert not any(jax.tree.leaves(stats_moved))
  else:
    features = stats_moved["features"]
    assert not any(jax.tree.leaves([features["conv1_1_bn"], features["conv2_1_bn"]]))
    assert all(jax.tree.leaves([features["conv3_1_bn"], features["fc7_bn"]]))


def test_a_frozen_backbone_without_pretrained_weights_is_an_error(scenes_dir, tmp_path):
  with pytest.raises(ValueError, match="set --config.train.init_from=<workdir of the backbone"):
    loop.train(frozen_config(scenes_dir), str(tmp_path))
