"""A family defined in this file, registered without editing jaxdet, trains through the real
loop: the seam between the family-agnostic core and the families."""
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxdet import config as config_lib
from jaxdet import detectors
from jaxdet import runtime
from jaxdet.detectors import base
from jaxdet.ops import nms
from jaxdet.train import loop


class ToyModel(nn.Module):
  """One 3x3 convolution to a box and a class score per class at every stride-8 cell."""
  num_classes: int

  @nn.compact
  def __call__(self, images, train=False):
    x = nn.avg_pool(images, (8, 8), strides=(8, 8))
    y = nn.Conv(4 + self.num_classes, (3, 3))(x)
    return {"cells": y.reshape(y.shape[0], -1, 4 + self.num_classes)}


class ToyDetector(base.Detector):
  """Regresses each truth's box at every cell (a loss only a test would want)."""

  def loss(self, outputs, batch):
    truth = jnp.sum(batch["boxes"] * batch["mask"][..., None], axis=1)     # [B, 4]
    error = outputs["cells"][..., :4] - truth[:, None, :] / 64.0
    loss = jnp.mean(error ** 2)
    return loss, {"box_loss": loss}

  def decode(self, outputs, image_size):
    cells = outputs["cells"]
    boxes = jnp.clip(cells[..., :4] * 64.0, 0, image_size[0])
    scores = nn.sigmoid(cells[..., 4:]).max(-1)
    return nms.Detections(boxes=boxes, scores=scores,
                          classes=jnp.argmax(cells[..., 4:], -1).astype(jnp.int32),
                          valid=jnp.ones(scores.shape, bool))


@detectors.register("toy_in_a_test")
def build_toy(model_config):
  return ToyDetector(ToyModel(model_config.num_classes), model_config.num_classes)


def test_a_family_registered_in_a_test_trains_two_steps_through_the_loop(scenes_dir, tmp_path):
  config = config_lib.base_config()
  config.model = ml_collections.ConfigDict(dict(family="toy_in_a_test", num_classes=3))
  runtime.use_coco_json_dir(config, scenes_dir)
  config.data.image_size = (64, 64)
  config.train.update(batch_size=8, total_steps=2, log_every=1, checkpoint_every=2)
  config.train.schedule.update(warmup_steps=1)
  config.eval.update(batch_size=8, metrics=("coco",))
  assert "toy_in_a_test" in detectors.available()
  run = loop.train(config, str(tmp_path))
  assert run.finished and int(run.state.step) == 2
  results = loop.run_evaluation(run.detector, run.state, config, run.mesh, run.issues,
                                run.writer, str(tmp_path))
  assert "coco/AP" in results
