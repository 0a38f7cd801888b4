"""The training state and the jit-compiled train and predict steps (pure functions)."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxdet.train import optim
from jaxdet.train import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any          # non-trainable collections, e.g. {"batch_stats": ...}
  opt_state: Any
  ema_params: Any           # exponential moving average of params ({} when disabled)
  rng: jax.Array            # base key; step t uses fold_in(rng, t)

  def eval_variables(self):
    """Variables for evaluation: the EMA weights when kept, else the live ones."""
    params = self.ema_params if self.ema_params else self.params
    return {"params": params, **self.model_state}


def create_state(detector, tx, rng, image_size, use_ema):
  init_rng, rng = jax.random.split(rng)
  variables = detector.init(init_rng, image_size)
  params = variables["params"]
  model_state = {k: v for k, v in variables.items() if k != "params"}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                    opt_state=tx.init(params), ema_params=params if use_ema else {}, rng=rng)


def build_state(detector, config, mesh):
  """Fresh state (replicated over the mesh), the optimizer and the learning-rate schedule."""
  schedule = optim.learning_rate_schedule(config.train.schedule, config.train.total_steps)
  image_size = tuple(config.data.image_size)
  params = jax.eval_shape(lambda: detector.init(jax.random.PRNGKey(0), image_size))["params"]
  tx = optim.build_optimizer(config.train.optimizer, schedule,
                             detector.frozen_parameters(params))
  create = jax.jit(lambda rng: create_state(
      detector, tx, rng, image_size, config.train.ema_decay > 0),
                   out_shardings=sharding.replicated(mesh))
  return create(jax.random.PRNGKey(config.seed)), tx, schedule


def make_train_step(detector, tx, schedule, ema_decay=0.0):
  """``(state, batch) -> (state, metrics)``: forward, the family's loss, gradients, optax."""

  def train_step(state, batch):
    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      outputs, model_state = detector.apply(variables, batch["image"], train=True,
                                            rng=jax.random.fold_in(state.rng, state.step))
      loss, metrics = detector.loss(outputs, batch)
      return loss, (metrics, model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_decay:
      ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                                ema_params, params)
    grad_norm = optax.global_norm(grads)
    params_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step),
                   all_finite=jnp.isfinite(loss) & jnp.isfinite(grad_norm) & params_finite)
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                              opt_state=opt_state, ema_params=ema_params)
    return new_state, metrics

  return train_step


def jit_train_step(detector, tx, schedule, ema_decay, mesh):
  """The train step compiled for ``mesh``: state replicated and donated, batch sharded on the
  data axis, metrics replicated."""
  return jax.jit(make_train_step(detector, tx, schedule, ema_decay),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)),
                 donate_argnums=(0,), compiler_options=detector.compiler_options())


def make_predict_step(detector, image_size, display=False):
  """``(variables, images) -> Detections`` in input pixels (``display``: the detector's
  :meth:`display_decode`, for people rather than metrics)."""
  decode = detector.display_decode if display else detector.decode

  def predict_step(variables, images):
    outputs, _ = detector.apply(variables, images, train=False)
    return decode(outputs, image_size)

  return predict_step


def predict_fn(detector, variables, image_size, mesh, display=False):
  """What the evaluator calls: ``predict(images)`` takes this host's rows of a batch (numpy
  ``[b, H, W, 3]``), dispatches the compiled predict step on the global batch and returns at
  once a function that fetches this host's detections (numpy ``boxes``, ``scores``,
  ``classes``, ``valid``), so that batches are dispatched before any is waited for."""
  step = jit_predict_step(detector, image_size, mesh, display)

  def predict(images):
    if images.shape[0] * jax.process_count() % mesh.size:
      raise ValueError(f"eval batch size {images.shape[0] * jax.process_count()} must be a "
                       f"multiple of the {mesh.size} devices")
    detections = step(variables, sharding.global_batch(images, mesh))
    return lambda: {field: sharding.local_rows(getattr(detections, field))
                    for field in ("boxes", "scores", "classes", "valid")}

  return predict


def jit_predict_step(detector, image_size, mesh, display=False):
  """The predict step compiled for ``mesh``, batch-sharded in and out: every device decodes and
  runs NMS for its own images, and each host keeps its own images' detections."""
  return jax.jit(make_predict_step(detector, image_size, display),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh),
                 compiler_options=detector.compiler_options())
