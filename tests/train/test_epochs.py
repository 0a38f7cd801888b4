"""Schedules in epochs (``train.epochs``, ``train.schedule.decay_epochs``) become steps from the
training set's size when a run starts: the fine-tuning recipes on a user's data."""
import pytest

from jaxdet import config as config_lib
from jaxdet import errors
from jaxdet.train import loop
from tests.train.helpers import tiny_config
from tests.weights.recipes import load_config


def test_epochs_become_steps_by_hand_numbers():
  c = config_lib.base_config()
  c.train.batch_size = 16
  c.train.epochs = 12.0
  c.train.schedule.decay_epochs = (8.0, 11.0)
  resolved = config_lib.steps_from_epochs(c, 1000)        # 62.5 steps per epoch
  assert resolved.train.total_steps == 750
  assert tuple(resolved.train.schedule.decay_steps) == (500, 688)   # 687.5 rounds to even
  assert c.train.total_steps == 1000                      # the given config is left alone
  assert config_lib.steps_from_epochs(config_lib.base_config(), 0).train.total_steps == 1000
  c.train.epochs = 0.0
  with pytest.raises(errors.InvalidSetupError, match="decay_epochs needs train.epochs"):
    config_lib.steps_from_epochs(c, 1000)


def test_a_run_counts_its_training_images(scenes_dir):
  config = tiny_config(scenes_dir)                         # 16 training images
  config.unlock()
  config.train.batch_size = 8
  config.train.epochs = 2.0
  config.train.schedule.decay_epochs = (1.0,)
  resolved = loop.with_steps_from_epochs(config)
  assert resolved.train.total_steps == 4
  assert tuple(resolved.train.schedule.decay_steps) == (2,)


@pytest.mark.parametrize("family", ["retinanet", "ssd", "yolo_v2", "yolo_v3"])
def test_each_family_has_a_finetune_recipe_in_epochs(family):
  c = load_config(f"experiments/{family}.py:finetune")
  assert c.train.epochs > max(c.train.schedule.decay_epochs) > 0
  darknet_input = family in ("yolo_v2", "yolo_v3")        # for darknet's weights
  assert (tuple(c.data.pixel_std) == config_lib.DARKNET_PIXEL_STD) == darknet_input
