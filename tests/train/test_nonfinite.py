"""A diverging run stops with a clear message; every checkpoint it leaves is finite."""
import os
import re

import jax
import numpy as np
import pytest

from jaxdet import detectors
from jaxdet.train import checkpoint
from jaxdet.train import loop
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from tests.train.helpers import tiny_config


def test_divergence_stops_and_keeps_the_last_good_checkpoint(scenes_dir, tmp_path):
  config = tiny_config(scenes_dir, total_steps=40, checkpoint_every=2, log_every=2)
  config.unlock()
  # Trains normally for 3 steps, then the learning rate jumps by 1e12 and training blows up.
  config.train.schedule.update(name="step", warmup_steps=0, decay_steps=(3,), decay_factor=1e12)
  workdir = str(tmp_path)
  with pytest.raises(loop.NonFiniteLossError) as error:
    loop.train(config, workdir)
  message = str(error.value)
  failed = int(re.search(r"non-finite loss, gradient or parameters at step (\d+)", message)[1])
  kept = int(re.search(r"last good checkpoint \(step (\d+)\) is kept", message)[1])
  steps = sorted(int(d) for d in os.listdir(checkpoint.checkpoint_dir(workdir)) if d.isdigit())
  assert 2 <= kept < failed < 40 and steps[-1] == kept
  target, _, _ = state_lib.build_state(detectors.build(config.model), config, sharding.make_mesh())
  restored, _ = checkpoint.restore(checkpoint.manager(workdir), target)
  assert int(restored.step) == kept
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.params))
