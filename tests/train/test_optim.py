"""Schedules and optimizer against hand-computed values."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdet.train import optim


def schedule_config(**kw):
  base = dict(name="step", base_lr=0.01, warmup_steps=1000, warmup_factor=0.001,
              decay_steps=(60_000, 80_000), decay_factor=0.1)
  return ml_collections.ConfigDict({**base, **kw})


def test_detectron_1x_step_schedule():
  lr = optim.learning_rate_schedule(schedule_config(), 90_000)
  np.testing.assert_allclose(lr(0), 0.01 * 0.001, rtol=1e-6)
  # Half-way through warmup: factor 0.001 * 0.5 + 0.5 = 0.5005.
  np.testing.assert_allclose(lr(500), 0.01 * 0.5005, rtol=1e-6)
  np.testing.assert_allclose(lr(1000), 0.01, rtol=1e-6)
  np.testing.assert_allclose(lr(59_999), 0.01, rtol=1e-6)
  np.testing.assert_allclose(lr(60_000), 0.001, rtol=1e-5)
  np.testing.assert_allclose(lr(80_000), 0.0001, rtol=1e-5)


def test_cosine_schedule():
  lr = optim.learning_rate_schedule(schedule_config(name="cosine", warmup_steps=100), 1100)
  np.testing.assert_allclose(lr(100), 0.01, rtol=1e-6)
  np.testing.assert_allclose(lr(600), 0.005, rtol=1e-5)   # half-way: (1 + cos(pi/2)) / 2
  np.testing.assert_allclose(lr(1100), 0.0, atol=1e-9)


def test_poly_schedule():
  """darknet's policy=poly: base * (1 - step / total) ** power, e.g. 0.1 * 0.5 ** 4."""
  lr = optim.learning_rate_schedule(schedule_config(name="poly", power=4.0, base_lr=0.1,
                                                    warmup_steps=0), 1000)
  np.testing.assert_allclose(lr(0), 0.1, rtol=1e-6)
  np.testing.assert_allclose(lr(500), 0.1 * 0.0625, rtol=1e-5)
  np.testing.assert_allclose(lr(900), 0.1 * 1e-4, rtol=1e-4)
  np.testing.assert_allclose(lr(1000), 0.0, atol=1e-12)


def test_darknet_burn_in():
  """darknet's get_current_rate: base * (step / burn_in) ** power below burn_in (power 4 unless
  the cfg says otherwise), then the steps policy: cfg/yolov3.cfg's 1e-3, 1,000 steps."""
  lr = optim.learning_rate_schedule(schedule_config(
      base_lr=1e-3, warmup="burn_in", warmup_steps=1000, burn_in_power=4.0,
      decay_steps=(400_000, 450_000)), 500_200)
  np.testing.assert_allclose(lr(0), 0.0, atol=1e-15)
  np.testing.assert_allclose(lr(100), 1e-3 * 1e-4, rtol=1e-5)        # (100 / 1000)^4
  np.testing.assert_allclose(lr(500), 1e-3 / 16, rtol=1e-6)
  np.testing.assert_allclose(lr(1000), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(400_000), 1e-4, rtol=1e-5)
  squared = optim.learning_rate_schedule(schedule_config(
      base_lr=1.0, warmup="burn_in", warmup_steps=10, burn_in_power=2.0), 100)
  np.testing.assert_allclose(squared(3), 0.09, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown warmup"):
    optim.learning_rate_schedule(schedule_config(warmup="exponential"), 10)


def test_yolo_recipes_burn_in():
  from experiments import yolo_v2  # pylint: disable=import-outside-toplevel
  from experiments import yolo_v3  # pylint: disable=import-outside-toplevel
  for c in (yolo_v2.get_config("yolov2_voc_416"), yolo_v3.get_config("yolov3_416_coco")):
    lr = optim.learning_rate_schedule(c.train.schedule, c.train.total_steps)
    np.testing.assert_allclose([lr(0), lr(250), lr(1000)], [0.0, 1e-3 / 256, 1e-3], rtol=1e-6,
                               atol=1e-15)


def test_unknown_schedule_and_optimizer_are_errors():
  with pytest.raises(ValueError, match="unknown schedule"):
    optim.learning_rate_schedule(schedule_config(name="exponential"), 10)
  with pytest.raises(ValueError, match="unknown optimizer"):
    optim.build_optimizer(ml_collections.ConfigDict(dict(
        name="lamb", grad_clip_norm=0.0, weight_decay=0.0, decay_norm_params=False)), 0.1)


def sgd_config(**kw):
  base = dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=1e-4,
              decay_norm_params=False, grad_clip_norm=0.0)
  return ml_collections.ConfigDict({**base, **kw})


def test_sgd_momentum_with_l2_decay_skips_batch_norm():
  params = {"conv": {"kernel": jnp.array([1.0, -2.0])},
            "stem_bn": {"scale": jnp.array([3.0])},
            "BatchNorm_0": {"bias": jnp.array([0.5])}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optim.build_optimizer(sgd_config(), lambda step: 0.1)
  opt_state = tx.init(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  # Step 1: v = g + wd * w (conv only); w -= lr * v.
  np.testing.assert_allclose(updates["conv"]["kernel"], [-0.1 * (1 + 1e-4), -0.1 * (1 - 2e-4)],
                             rtol=1e-6)
  np.testing.assert_allclose(updates["stem_bn"]["scale"], [-0.1], rtol=1e-6)
  np.testing.assert_allclose(updates["BatchNorm_0"]["bias"], [-0.1], rtol=1e-6)
  params = optax.apply_updates(params, updates)
  updates, _ = tx.update(grads, opt_state, params)
  # Step 2: v = 0.9 * v1 + g2 (+ decay on the new weights).
  w = np.array([1.0, -2.0]) - 0.1 * (1 + 1e-4 * np.array([1.0, -2.0]))
  v = 0.9 * (1 + 1e-4 * np.array([1.0, -2.0])) + 1 + 1e-4 * w
  np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * v, rtol=1e-6)
  np.testing.assert_allclose(updates["stem_bn"]["scale"], [-0.1 * 1.9], rtol=1e-6)


def test_gradient_clipping():
  tx = optim.build_optimizer(sgd_config(momentum=0.0, weight_decay=0.0, grad_clip_norm=1.0),
                             lambda step: 1.0)
  params = {"w": jnp.zeros(2)}
  updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)   # norm 5 -> 1


def test_norm_parameter_detection():
  assert optim.is_norm_param(("backbone", "stage2_block0", "BatchNorm_1", "scale"))
  assert optim.is_norm_param(("backbone", "proj_bn", "bias"))
  assert not optim.is_norm_param(("head", "cls_output", "bias"))
  assert not optim.is_norm_param(("fpn", "lateral3", "kernel"))


def test_frozen_parameters_get_no_update_no_decay_and_no_state():
  params = {"backbone": {"kernel": jnp.array([1.0, -2.0])}, "head": {"kernel": jnp.array([4.0])}}
  frozen = {"backbone": {"kernel": True}, "head": {"kernel": False}}
  tx = optim.build_optimizer(sgd_config(), lambda step: 0.1, frozen)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(2):
    updates, opt_state = tx.update(grads, opt_state, params)
    np.testing.assert_array_equal(updates["backbone"]["kernel"], [0.0, 0.0])
  # The trained leaf follows plain SGD: step 2's v = 0.9 (1 + 4e-4) + 1 + 4e-4 (its weight is
  # still 4 in this loop, which never applies the updates).
  np.testing.assert_allclose(updates["head"]["kernel"], [-0.1 * 1.9 * (1 + 4e-4)], rtol=1e-6)
  # Momentum is kept for the trained value only: the state is the size of a plain optimizer's
  # over the trained parameters alone (its momentum and the schedule's step count).
  size = lambda state: sum(leaf.size for leaf in jax.tree.leaves(state))
  plain = optim.build_optimizer(sgd_config(), lambda step: 0.1).init({"head": params["head"]})
  assert size(opt_state) == size(plain) == 2


def test_frozen_parameters_with_adamw():
  params = {"backbone": {"kernel": jnp.array([1.0, -2.0])}, "head": {"kernel": jnp.array([4.0])}}
  frozen = {"backbone": {"kernel": True}, "head": {"kernel": False}}
  tx = optim.build_optimizer(sgd_config(name="adamw"), lambda step: 0.1, frozen)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  np.testing.assert_array_equal(updates["backbone"]["kernel"], [0.0, 0.0])
  # Adam's first step is lr * m_hat / (sqrt(v_hat) + eps) = lr * g / |g|, plus the decoupled
  # decay lr * wd * w (Loshchilov & Hutter, Alg. 2); to float32's rounding of 1 - 0.999 in the
  # bias correction (1e-5).
  np.testing.assert_allclose(updates["head"]["kernel"], [-0.1 * (1 + 1e-4 * 4.0)], rtol=2e-5)


def test_nothing_frozen_keeps_the_plain_optimizer_state():
  params = {"w": jnp.zeros(3)}
  plain = optim.build_optimizer(sgd_config(), lambda step: 0.1)
  unfrozen = optim.build_optimizer(sgd_config(), lambda step: 0.1, {"w": False})
  assert (jax.tree.structure(plain.init(params))
          == jax.tree.structure(unfrozen.init(params)))
