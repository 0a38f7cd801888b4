"""Focal and smooth L1 losses against float64 formulas written out independently."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import losses


def focal_reference(x, y, alpha, gamma):
  p = 1 / (1 + np.exp(-x))
  p_t = np.where(y == 1, p, 1 - p)
  alpha_t = np.where(y == 1, alpha, 1 - alpha)
  return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [0.25, 0.5])
def test_focal_matches_formula(alpha, gamma):
  x = np.linspace(-8, 8, 41)
  for y in (0.0, 1.0):
    got = losses.sigmoid_focal_loss(jnp.asarray(x, jnp.float32), jnp.full(x.shape, y), alpha, gamma)
    np.testing.assert_allclose(got, focal_reference(x, np.full(x.shape, y), alpha, gamma),
                               rtol=2e-5, atol=1e-7)


def test_focal_hand_value():
  # x = 0: p = 0.5; y = 1: FL = -0.25 * 0.5^2 * log(0.5) = 0.0625 * 0.693147...
  np.testing.assert_allclose(losses.sigmoid_focal_loss(jnp.zeros(1), jnp.ones(1)),
                             [0.0625 * np.log(2)], rtol=1e-6)


def test_focal_gamma_zero_is_alpha_weighted_cross_entropy():
  x = jnp.array([-3.0, 0.5, 4.0])
  y = jnp.array([1.0, 0.0, 1.0])
  ce = -(y * jax.nn.log_sigmoid(x) + (1 - y) * jax.nn.log_sigmoid(-x))
  np.testing.assert_allclose(losses.sigmoid_focal_loss(x, y, alpha=-1, gamma=0.0), ce, rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_no_nan_at_extreme_logits(gamma):
  x = jnp.array([-1e4, -100.0, 0.0, 100.0, 1e4])
  for y in (jnp.zeros(5), jnp.ones(5)):
    loss = lambda v: losses.sigmoid_focal_loss(v, y, 0.25, gamma).sum()
    value, grad = jax.value_and_grad(loss)(x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_focal_is_computed_in_float32_for_bfloat16_logits():
  out = losses.sigmoid_focal_loss(jnp.array([0.3], jnp.bfloat16), jnp.ones(1))
  assert out.dtype == jnp.float32


def test_smooth_l1_hand_values():
  x = jnp.array([-2.0, -0.5, 0.0, 0.05, 1.0])
  # beta 1: |x| >= 1 -> |x| - 0.5; else 0.5 x^2
  np.testing.assert_allclose(losses.smooth_l1(x, 1.0), [1.5, 0.125, 0.0, 0.00125, 0.5], rtol=1e-6)
  # beta 0.11: 0.05 -> 0.5 * 0.0025 / 0.11; 1.0 -> 1 - 0.055
  np.testing.assert_allclose(losses.smooth_l1(x, 0.11)[3:], [0.5 * 0.0025 / 0.11, 0.945], rtol=1e-6)
  np.testing.assert_allclose(losses.smooth_l1(x, 0.0), np.abs(np.asarray(x)))
