"""Configs and batches shared by the training tests."""
import numpy as np

from experiments import retinanet
from jaxdet import runtime


def tiny_config(scenes_dir, experiment=retinanet, **train_overrides):
  """``tiny_test`` of ``experiment`` (RetinaNet by default) on the fake COCO-json folder (3
  classes, 64x64 inputs)."""
  config = experiment.get_config("tiny_test")
  config.unlock()
  runtime.use_coco_json_dir(config, scenes_dir)
  for key, value in train_overrides.items():
    config.train[key] = value
  config.lock()
  return config


def random_batch(batch_size, image_size=64, max_boxes=16, num_classes=3, seed=0):
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, image_size - 20, (batch_size, max_boxes, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(6, 20, (batch_size, max_boxes, 2))], -1)
  mask = rng.uniform(size=(batch_size, max_boxes)) < 0.3
  return {"image": rng.normal(size=(batch_size, image_size, image_size, 3)).astype(np.float32),
          "boxes": np.where(mask[..., None], boxes, 0).astype(np.float32),
          "labels": np.where(mask, rng.integers(0, num_classes, mask.shape), 0).astype(np.int32),
          "mask": mask}
