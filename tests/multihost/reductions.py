"""What the reduction test computes, on several hosts (reductions_worker.py) and on one device."""
import jax

BATCH = 8


def global_batch_and_config():
  """The tiny RetinaNet and a batch of 8 images whose second half has no objects at all."""
  from experiments import retinanet  # pylint: disable=import-outside-toplevel
  from tests.train import helpers  # pylint: disable=import-outside-toplevel
  config = retinanet.get_config("tiny_test")
  config.unlock()
  config.model.num_classes = 3
  batch = helpers.random_batch(BATCH, seed=3)
  batch["mask"][BATCH // 2:] = False
  return batch, config


def forward_and_loss(detector, variables, batch):
  """``(loss, num_positive, batch_stats)`` of a training forward pass."""
  outputs, model_state = detector.apply(variables, batch["image"], train=True)
  loss, metrics = detector.loss(outputs, batch)
  return loss, metrics["num_positive"], model_state["batch_stats"]


def flat_statistics(batch_stats):
  """``{"layer/.../mean": array}`` of a batch_stats tree."""
  return {"/".join(str(getattr(k, "key", k)) for k in path): value
          for path, value in jax.tree_util.tree_leaves_with_path(batch_stats)}
