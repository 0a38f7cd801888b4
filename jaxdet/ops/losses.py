"""Element-wise detection losses, computed in float32 whatever the network's compute dtype."""
import jax
import jax.numpy as jnp


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
  """Focal loss FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) (Lin et al. 2017, Eq. 5).

  Element-wise over ``logits`` with binary ``targets`` of the same shape. Computed in log space:
  ``log p_t`` and ``log(1 - p_t)`` come from ``log_sigmoid``, and the modulating factor is
  ``exp(gamma * log(1 - p_t))``, so neither extreme logits nor ``gamma = 0`` (where the naive
  ``pow(0, 0)`` has a NaN gradient) produce NaN. ``alpha < 0`` disables the alpha weighting.
  """
  logits = logits.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  log_p = jax.nn.log_sigmoid(logits)           # log sigma(x)
  log_not_p = jax.nn.log_sigmoid(-logits)      # log(1 - sigma(x))
  log_p_t = targets * log_p + (1 - targets) * log_not_p
  log_not_p_t = targets * log_not_p + (1 - targets) * log_p
  loss = -jnp.exp(gamma * log_not_p_t) * log_p_t
  if alpha >= 0:
    loss = (targets * alpha + (1 - targets) * (1 - alpha)) * loss
  return loss


def smooth_l1(x, beta=1.0):
  """Smooth L1 (Girshick 2015, Eq. 3), Huber-like with transition at ``beta``; ``beta = 0`` is L1.

  0.5 x^2 / beta if |x| < beta, else |x| - 0.5 beta.
  """
  x = jnp.abs(x.astype(jnp.float32))
  if beta <= 0:
    return x
  return jnp.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def half_squared_error(outputs, targets):
  """``(outputs - targets)^2 / 2`` element-wise in float32. darknet's layers back-propagate
  ``scale * (target - output)`` for a squared-error term, which is the negative gradient of
  *half* the squared error: the YOLO losses use this form so that ``jax.grad`` equals darknet's
  deltas, and darknet's learning rates and weight decay carry over unchanged."""
  return 0.5 * jnp.square(outputs.astype(jnp.float32) - targets)


def binary_cross_entropy(logits, targets):
  """``-t log sigma(x) - (1 - t) log(1 - sigma(x))`` element-wise, in float32 log space;
  ``targets`` may be soft (0..1). Its gradient in ``x`` is ``sigma(x) - t``."""
  logits = logits.astype(jnp.float32)
  return -(targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))


def softmax_cross_entropy(logits, labels):
  """``-log softmax(logits)[label]`` per row, in float32 (SSD's confidence loss, Eq. 3)."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def hard_negatives(negative_loss, negative, num_positive, neg_pos_ratio=3):
  """SSD's hard negative mining (Liu et al. 2016, Sec. 2.2 "Hard negative mining").

  Per image (row), keeps the negatives with the highest ``negative_loss`` so that at most
  ``neg_pos_ratio`` (3) negatives count per positive; an image without positives keeps none.
  Ties are broken by position (first wins), so the choice is deterministic.

  Args:
    negative_loss: ``[B, N]`` confidence loss of each box as background (not differentiated).
    negative: ``[B, N]`` bool, the candidate negatives.
    num_positive: ``[B]`` positives per image.
  Returns:
    ``[B, N]`` bool mask of the kept negatives.
  """
  ranked = jnp.where(negative, jax.lax.stop_gradient(negative_loss).astype(jnp.float32), -jnp.inf)
  order = jnp.argsort(-ranked, axis=1, stable=True)
  rank = jnp.argsort(order, axis=1)
  keep = jnp.minimum(neg_pos_ratio * num_positive, jnp.sum(negative, axis=1))
  return negative & (rank < keep[:, None])
