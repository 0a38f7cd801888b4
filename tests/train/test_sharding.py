"""The sharded train step over 8 (simulated) devices equals the single-device step."""
import jax
import numpy as np
import pytest

from experiments import retinanet
from experiments import ssd

from jaxdet import detectors
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from tests.train.helpers import random_batch, tiny_config


def run_steps(config, devices, batches):
  mesh = sharding.make_mesh(devices)
  detector = detectors.build(config.model)
  state, tx, schedule = state_lib.build_state(detector, config, mesh)
  step = state_lib.jit_train_step(detector, tx, schedule, config.train.ema_decay, mesh)
  metrics = []
  for batch in batches:
    global_batch = sharding.global_batch(batch, mesh)
    assert len(global_batch["image"].sharding.device_set) == len(devices)
    state, m = step(state, global_batch)
    metrics.append(m)
  return jax.device_get(state), jax.device_get(metrics)


# SSD's narrow VGG has batch norm after every conv over 8 images: reduction order moves its
# parameters by ~1e-4 relative after three steps.
@pytest.mark.parametrize("experiment,rtol", [(retinanet, 2e-5), (ssd, 3e-4)],
                         ids=["retinanet", "ssd"])
def test_sharded_step_equals_single_device(scenes_dir, experiment, rtol):
  assert jax.device_count() == 8
  config = tiny_config(scenes_dir, experiment, ema_decay=0.9)
  batches = [random_batch(8, seed=s) for s in range(3)]
  single_state, single_metrics = run_steps(config, jax.devices()[:1], batches)
  sharded_state, sharded_metrics = run_steps(config, jax.devices(), batches)
  for name in ("params", "model_state", "ema_params", "opt_state"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol / 10),
                 getattr(single_state, name), getattr(sharded_state, name))
  for a, b in zip(single_metrics, sharded_metrics):
    assert a["num_positive"] == b["num_positive"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  assert int(sharded_state.step) == 3

