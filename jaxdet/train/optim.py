"""Learning-rate schedules and the optimizer (optax)."""
import math

import jax
import jax.numpy as jnp
import optax


WARMUPS = ("linear", "burn_in")


def learning_rate_schedule(cfg, total_steps):
  """``step -> lr``: a warmup over ``warmup_steps``, times the decay policy. The warmup
  (``warmup``) is

  * ``"linear"`` (the default): from ``base_lr * warmup_factor`` to ``base_lr`` (Goyal et al.
    2017, Sec. 2.2 "gradual warmup");
  * ``"burn_in"``: darknet's ``base_lr * (step / warmup_steps) ^ burn_in_power`` (its cfg's
    ``burn_in`` and ``power``, 4 by default; ``get_current_rate`` in src/network.c), from 0.

  The decay policies:

  * ``"step"``: multiply by ``decay_factor`` at each absolute step in ``decay_steps``
    (Detectron's 1x: 0.1 at 60k and 80k of 90k);
  * ``"cosine"``: half-cosine from 1 to 0 over the steps after warmup;
  * ``"poly"``: ``(1 - step / total_steps) ** power`` (darknet's ``policy=poly``; YOLOv2's
    classifier pretraining, Sec. 3: "polynomial rate decay with a power of 4");
  * ``"constant"``: 1.
  """
  if cfg.name not in ("step", "cosine", "poly", "constant"):
    raise ValueError(f"unknown schedule {cfg.name!r}; use 'step', 'cosine', 'poly' or "
                     "'constant'")
  warmup_shape = cfg.get("warmup", "linear")
  if warmup_shape not in WARMUPS:
    raise ValueError(f"unknown warmup {warmup_shape!r}; use one of {WARMUPS}")
  boundaries = jnp.asarray(sorted(cfg.get("decay_steps", ())) or [total_steps + 1], jnp.int32)
  warmup = max(int(cfg.warmup_steps), 0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    alpha = jnp.clip(step / max(warmup, 1), 0.0, 1.0)
    if not warmup:
      warmup_mult = 1.0
    elif warmup_shape == "burn_in":
      warmup_mult = alpha ** cfg.get("burn_in_power", 4.0)
    else:
      warmup_mult = cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.name == "step":
      decay_mult = cfg.decay_factor ** jnp.sum(step >= boundaries)
    elif cfg.name == "cosine":
      progress = jnp.clip((step - warmup) / max(total_steps - warmup, 1), 0.0, 1.0)
      decay_mult = 0.5 * (1 + jnp.cos(math.pi * progress))
    elif cfg.name == "poly":
      decay_mult = jnp.clip(1 - step / max(total_steps, 1), 0.0, 1.0) ** cfg.power
    else:
      decay_mult = 1.0
    return cfg.base_lr * warmup_mult * decay_mult

  return schedule


def is_norm_param(path):
  """Parameters of normalisation layers (BatchNorm / *_bn / *norm* modules)."""
  names = [str(getattr(k, "key", k)).lower() for k in path]
  return any("norm" in n or n.endswith("bn") for n in names[:-1])


def weight_decay_mask(params, decay_norm_params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: decay_norm_params or not is_norm_param(path), params)


def build_optimizer(cfg, schedule, frozen=None):
  """``sgd`` (momentum, L2 weight decay added to the gradient, as Caffe/Detectron) or ``adamw``;
  optional global-norm gradient clipping first.

  ``frozen``: a tree of bools over the parameters (:meth:`Detector.frozen_parameters`) or
  ``None``. The parameters it marks get zero updates, no weight decay and no optimizer state."""
  chain = []
  if cfg.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  mask = lambda params: weight_decay_mask(params, cfg.decay_norm_params)
  if cfg.name == "sgd":
    if cfg.weight_decay > 0:
      chain.append(optax.add_decayed_weights(cfg.weight_decay, mask=mask))
    chain.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == "adamw":
    chain.append(optax.adamw(schedule, b1=cfg.momentum, weight_decay=cfg.weight_decay, mask=mask))
  else:
    raise ValueError(f"unknown optimizer {cfg.name!r}; use 'sgd' or 'adamw'")
  tx = optax.chain(*chain)
  if frozen is None or not any(jax.tree.leaves(frozen)):
    return tx
  labels = jax.tree.map(lambda is_frozen: "frozen" if is_frozen else "train", frozen)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
