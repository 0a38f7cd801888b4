"""Classification pretraining (YOLOv1 Sec. 2.2, YOLOv2 Sec. 3, YOLOv3 Sec. 2.4, RetinaNet's
ImageNet ResNets): the loss and top-k decode against float64 numpy, the trunks' names shared
with their detectors, top-k accuracy by hand, weight transfer by path, and a pretraining run
that starts a detector."""
from flax import traverse_util
import jax
import numpy as np
import pytest
from PIL import Image

from experiments import retinanet as retinanet_experiment
from experiments import ssd as ssd_experiment
from experiments import yolo_v1 as yolo_v1_experiment
from experiments import yolo_v2 as yolo_v2_experiment
from experiments import yolo_v3 as yolo_v3_experiment
from jaxdet import config as config_lib
from jaxdet import detectors
from jaxdet.evaluation import metrics
from jaxdet.models import yolo_v1_net
from jaxdet.train import checkpoint
from jaxdet.train import loop
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from tests.train.helpers import tiny_config


def classifier(variant="pretrain_test"):
  return detectors.build(yolo_v1_experiment.get_config(variant).model)


def softmax64(logits):
  z = np.exp(logits - logits.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def test_loss_is_the_mean_cross_entropy_and_reports_accuracy():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (6, 10)).astype(np.float32)
  labels = np.array([0, 3, 9, 3, 5, 1], np.int32)
  logits[1, 3] = 50.0                                      # certainly right
  loss, metrics = classifier().loss({"logits": logits}, {"image_label": labels})
  probabilities = softmax64(logits.astype(np.float64))
  expected = -np.mean([np.log(probabilities[i, k]) for i, k in enumerate(labels)])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  hits = sum(int(np.argmax(row) == k) for row, k in zip(logits, labels))
  assert float(metrics["top1_accuracy"]) == pytest.approx(hits / 6)


def test_decode_gives_the_five_most_probable_classes_over_the_whole_image():
  logits = np.random.default_rng(1).normal(0, 2, (3, 10)).astype(np.float32)
  dets = classifier().decode({"logits": logits}, (48, 64))
  probabilities = softmax64(logits.astype(np.float64))
  for i in range(3):
    order = np.argsort(-probabilities[i])[:5]
    np.testing.assert_array_equal(dets.classes[i], order)
    np.testing.assert_allclose(dets.scores[i], probabilities[i, order], rtol=1e-5)
  np.testing.assert_array_equal(dets.boxes, np.broadcast_to([0, 0, 64, 48], (3, 5, 4)))
  assert dets.valid.all()


def variable_shapes(experiment, variant):
  """``{"params/net/conv1_1/conv/kernel": shape, ...}`` of a variant, by ``eval_shape``."""
  config = experiment.get_config(variant)
  detector = detectors.build(config.model)
  variables = jax.eval_shape(lambda: detector.init(jax.random.key(0),
                                                   tuple(config.data.image_size)))
  return {k: v.shape for k, v in traverse_util.flatten_dict(variables, sep="/").items()}


@pytest.mark.parametrize("experiment, pretrain, detect", [
    (yolo_v1_experiment, "pretrain_digits", "tiny_digits"),
    (yolo_v1_experiment, "pretrain_imagenet", "yolo_v1_voc"),
    (yolo_v2_experiment, "darknet19_imagenet", "yolov2_voc_416"),
    (yolo_v3_experiment, "darknet53_imagenet", "yolov3_416_coco"),
    (retinanet_experiment, "resnet50_imagenet", "r50_fpn_coco_1x"),
    (retinanet_experiment, "resnet101_imagenet", "r101_fpn_coco_1x"),
    (retinanet_experiment, "pretrain_digits", "tiny_digits"),
    (retinanet_experiment, "pretrain_test", "tiny_test"),
    (ssd_experiment, "vgg16_imagenet", "ssd300_voc"),
    (ssd_experiment, "vgg16_imagenet", "ssd512_coco"),
    (ssd_experiment, "pretrain_test", "tiny_test")])
def test_a_pretrained_trunk_carries_its_detectors_names(experiment, pretrain, detect):
  """Every array of the classifier but its class layer has a twin (name and shape) in the
  detector: what ``config.train.init_from`` copies."""
  classifier_shapes = variable_shapes(experiment, pretrain)
  detector_shapes = variable_shapes(experiment, detect)
  shared = {n: s for n, s in classifier_shapes.items() if "/classifier/" not in n}
  assert len(shared) == len(classifier_shapes) - 2          # the class layer's kernel and bias
  assert all(detector_shapes.get(n) == s for n, s in shared.items())


def test_yolo_v1_pretrains_its_first_20_convolutions():
  stages = yolo_v1_net.leading_convs(yolo_v1_net.YOLO_STAGES, yolo_v1_net.PRETRAINED_CONVS)
  assert [len(s) for s in stages] == [1, 1, 4, 10, 4]      # Fig. 3: 24 = 20 + the last 4
  assert stages[-1] == ((512, 1, 1), (1024, 3, 1)) * 2
  with pytest.raises(ValueError, match="fewer than 30"):
    yolo_v1_net.leading_convs(yolo_v1_net.YOLO_STAGES, 30)


def test_a_classifier_refuses_detection_data():
  with pytest.raises(ValueError, match="classification images only"):
    classifier().training_labels(("cat",), None)


def test_top_k_accuracy_by_hand():
  gts = {1: {"image_label": 2}, 2: {"image_label": 0}, 3: {"image_label": 4}}
  detections = {i: {"labels": np.array(labels), "scores": np.array(scores)} for i, labels, scores
                in ((1, [2, 1, 0], [0.5, 0.3, 0.2]),      # top-1 hit
                    (2, [3, 0, 1], [0.2, 0.7, 0.1]),      # scores not sorted: 0 is the best
                    (3, [1, 0, 2], [0.6, 0.3, 0.1]))}     # 4 nowhere
  assert metrics.top_k_accuracy(detections, gts, 1) == pytest.approx(2 / 3)
  assert metrics.top_k_accuracy(detections, gts, 5) == pytest.approx(2 / 3)
  del detections[2]
  assert metrics.top_k_accuracy(detections, gts, 1) == pytest.approx(1 / 2)
  with pytest.raises(ValueError, match="one kind per run"):
    metrics.check(("coco", "top1"))


def test_transfer_copies_arrays_whose_path_and_shape_agree():
  zeros = lambda *shape: jax.numpy.zeros(shape)             # noqa: E731
  target = {"params": {"net": {"a": zeros(2), "b": zeros(3)}, "head": {"w": zeros(4)}},
            "batch_stats": {"net": {"mean": zeros(2)}}}
  source = {"params": {"net": {"a": np.ones(2), "b": np.ones(5), "x": np.ones(1)}},
            "batch_stats": {"net": {"mean": np.full(2, 7.0)}}}
  updated, copied, mismatched = checkpoint.transfer_matching(target, source)
  assert sorted(copied) == ["batch_stats/net/mean", "params/net/a"]
  assert mismatched == ["params/net/b"]
  np.testing.assert_array_equal(updated["params"]["net"]["a"], [1, 1])
  np.testing.assert_array_equal(updated["batch_stats"]["net"]["mean"], [7, 7])
  np.testing.assert_array_equal(updated["params"]["net"]["b"], [0, 0, 0])
  np.testing.assert_array_equal(updated["params"]["head"]["w"], [0, 0, 0, 0])


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
  """Two classes of 32x32 images: a bright square or a bright bar on noise."""
  root = tmp_path_factory.mktemp("shapes")
  for name, (y, x) in (("square", (slice(8, 24), slice(8, 24))),
                       ("bar", (slice(4, 28), slice(14, 18)))):
    (root / name).mkdir()
    for i in range(4):
      image = np.random.default_rng(i).integers(0, 80, (32, 32, 3)).astype(np.uint8)
      image[y, x] = 240
      Image.fromarray(image).save(root / name / f"{i}.png")
  return root


def pretraining_config(folder):
  config = yolo_v1_experiment.get_config("pretrain_test")
  config.unlock()
  config_lib.classification_recipe(config, f"folder:{folder}", f"folder:{folder}")
  config.model.num_classes = 2
  config.train.total_steps = 2
  config.lock()
  return config


def test_pretraining_starts_a_detector(shapes_folder, scenes_dir, tmp_path):
  """Train the classifier through the loop (accuracy evaluation), then start YOLOv1 from it:
  the shared convolutions (and their batch norm statistics) come from the classifier, the
  rest keeps the detector's own initialisation; a wrong workdir is an error."""
  pretrained = str(tmp_path / "pretrained")
  results = loop.train_and_evaluate(pretraining_config(shapes_folder), pretrained)
  assert set(results) == {"classification/top1", "classification/top5"}
  assert results["classification/top5"] == 1.0               # 2 classes: always in the top 5
  saved, _ = checkpoint.restore_arrays(pretrained)
  # Reading part of a checkpoint gives exactly those entries, the same arrays (init_from reads
  # params, EMA and batch statistics only, not the optimizer state).
  part, _ = checkpoint.restore_arrays(pretrained, parts=("params", "model_state"))
  assert sorted(part) == ["model_state", "params"] and "opt_state" in saved
  jax.tree.map(np.testing.assert_array_equal, part, {k: saved[k] for k in part})

  config = tiny_config(scenes_dir, yolo_v1_experiment, init_from=pretrained, total_steps=0)
  _, state, *_ = loop.train(config, str(tmp_path / "detector"))
  net, fresh = state.params["net"], state_lib.build_state(
      detectors.build(config.model), config, sharding.make_mesh())[0].params["net"]
  for layer in ("conv1_1", "conv2_1"):
    np.testing.assert_array_equal(net[layer]["conv"]["kernel"],
                                  saved["params"]["net"][layer]["conv"]["kernel"])
    np.testing.assert_array_equal(state.model_state["batch_stats"]["net"][layer]["bn"]["mean"],
                                  saved["model_state"]["batch_stats"]["net"][layer]["bn"]["mean"])
  for layer in ("conv3_1", "fc1", "output"):
    jax.tree.map(np.testing.assert_array_equal, net[layer], fresh[layer])

  unrelated = state.replace(params={"backbone": {"w": np.zeros(3)}}, model_state={})
  with pytest.raises(ValueError, match="no array of"):
    checkpoint.initialize_from(unrelated, pretrained)
