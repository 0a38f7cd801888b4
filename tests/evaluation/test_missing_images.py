"""Evaluation images that cannot be read: refused by default (AP would change silently), or
scored without them when allowed, the report saying so first and last."""
import jax
import pytest

from experiments import retinanet
from jaxdet import detectors
from jaxdet import runtime
from jaxdet.data import sanitize
from jaxdet.data import sources
from jaxdet.evaluation import evaluator
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from tests.data import coco_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """An untrained tiny RetinaNet and the val split of tests/data/coco_folder.py, whose images 5
  (undecodable) and 7 (not on disk) cannot be read; each has one box."""
  root = coco_folder.write(tmp_path_factory.mktemp("coco"))
  config = retinanet.get_config("tiny_test")
  config.unlock()
  runtime.use_coco_json_dir(config, root)
  config.eval.metrics = ("coco", "voc07")
  config.eval.batch_size = 2
  mesh = sharding.make_mesh(jax.devices()[:2])
  detector = detectors.build(config.model)
  state, _, _ = state_lib.build_state(detector, config, mesh)
  source = sources.CocoJsonSource(root, "val")
  return config, detector, state, mesh, source


def predict_of(setup):
  config, detector, state, mesh, _ = setup
  return state_lib.predict_fn(detector, state.eval_variables(), tuple(config.data.image_size),
                              mesh)


def test_unreadable_evaluation_images_are_refused_with_their_names(setup):
  config, *_, source = setup
  with pytest.raises(evaluator.MissingImagesError) as refused:
    evaluator.evaluate(predict_of(setup), source, config, sanitize.DataIssues())
  message = str(refused.value)
  assert "2 of 6 evaluation images (2 ground-truth boxes) could not be read" in message
  assert source.path(4) in message and source.path(5) in message      # corrupt.png, missing.png
  assert "allow_missing_images" in message


def test_allowed_missing_images_are_scored_without_them_and_said_loudly(setup):
  config, *_, source = setup
  allowed = config.copy_and_resolve_references()
  allowed.eval.allow_missing_images = True
  results, report = evaluator.evaluate(predict_of(setup), source, allowed,
                                       sanitize.DataIssues())
  assert results["images_left_out"] == 2 and results["boxes_left_out"] == 2
  lines = report.strip().splitlines()
  for line in (lines[0], lines[-1]):
    assert line.startswith("WARNING: NOT THE FULL EVALUATION SET: 2 of 6 evaluation images")
  assert "COCO box AP (4 images)" in report
