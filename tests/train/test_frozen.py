"""Freezing part of the backbone (``model.freeze_at``, frozen batch norm): what a train step
leaves alone, and the loop's refusal to freeze weights nobody trained."""
import functools

from flax import traverse_util
import jax
import numpy as np
import pytest

from experiments import retinanet
from experiments import ssd
from jaxdet import detectors
from jaxdet.train import checkpoint
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
  # Every unmasked kernel moves (weight decay alone moves it), so a trained layer masked by
  # mistake fails too. Biases and norm parameters without gradient may stay: e.g. the tiny
  # SSD's 1x1 map had no mined negatives.
  for path, is_frozen in jax.tree_util.tree_leaves_with_path(frozen):
    if path[-1].key == "kernel":
      assert functools.reduce(lambda tree, key: tree[key.key], path, moved) != is_frozen, path
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


def test_a_frozen_run_starts_from_pretrained_weights_and_resumes(scenes_dir, tmp_path):
  """Frozen batch norm takes batch norm's weights (``init_from``), keeps them through training
  and a resume (which needs no ``init_from``); weights missing from the pretrained run are an
  error, not a silently random frozen layer."""
  pretrained = str(tmp_path / "pretrained")
  loop.train(tiny_config(scenes_dir, total_steps=1), pretrained)   # batch norm, nothing frozen
  saved, _ = checkpoint.restore_arrays(pretrained, parts=("params", "model_state"))
  workdir = str(tmp_path / "frozen")

  def frozen_run(total_steps, init_from):
    config = frozen_config(scenes_dir)
    config.unlock()
    config.train.update(total_steps=total_steps, checkpoint_every=1, init_from=init_from,
                        allow_config_change="train.total_steps")   # the resume trains longer
    return loop.train(config, workdir)

  detector, state, *_ = frozen_run(2, pretrained)
  _, resumed, *_ = frozen_run(3, "")
  assert int(resumed.step) == 3
  frozen = traverse_util.flatten_dict(detector.frozen_parameters(state.params))
  pretrained_params = traverse_util.flatten_dict(saved["params"])
  for run in (state, resumed):
    run_params = traverse_util.flatten_dict(run.params)
    for path in (path for path, is_frozen in frozen.items() if is_frozen):
      np.testing.assert_array_equal(run_params[path], pretrained_params[path])
  np.testing.assert_array_equal(resumed.model_state["batch_stats"]["backbone"]["stem_bn"]["mean"],
                                saved["model_state"]["batch_stats"]["backbone"]["stem_bn"]["mean"])

  extra = {"extra": {"kernel": np.zeros(2, np.float32)}}
  required = jax.tree.map(lambda _: False, dict(state.params)) | {"extra": {"kernel": True}}
  with pytest.raises(ValueError, match="lacks frozen parameters .*: params/extra/kernel"):
    checkpoint.initialize_from(state.replace(params=dict(state.params) | extra), pretrained,
                               required=required)
