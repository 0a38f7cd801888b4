"""A diverging run stops with a clear message and keeps its last good checkpoint."""
import os

import jax
import numpy as np
import pytest

from jaxdet import detectors
from jaxdet.train import checkpoint
from jaxdet.train import loop
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from tests.train.helpers import tiny_config


def test_nan_loss_stops_and_keeps_last_good_checkpoint(coco_dir, tmp_path):
  config = tiny_config(coco_dir, total_steps=40, checkpoint_every=2, log_every=2)
  config.unlock()
  config.train.schedule.base_lr = 1e12        # diverges within a few steps
  config.train.schedule.warmup_steps = 0
  workdir = str(tmp_path)
  kept = "(last good checkpoint|no checkpoint had been written)"
  with pytest.raises(loop.NonFiniteLossError, match=f"non-finite loss .* {kept}"):
    loop.train(config, workdir)
  steps = sorted(int(d) for d in os.listdir(checkpoint.checkpoint_dir(workdir)) if d.isdigit())
  assert not steps or steps[-1] < 40
  if steps:   # every kept checkpoint is finite
    mesh = sharding.make_mesh()
    state, _, _ = state_lib.build_state(detectors.build(config.model), config, mesh)
    restored, _ = checkpoint.restore(checkpoint.manager(workdir), state)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.params))
