"""COCO evaluation plumbing: format conversions by hand, pycocotools on hand-built cases."""
import numpy as np
import pytest

from jaxdet.evaluation import coco
from jaxdet.evaluation import evaluator
from jaxdet.evaluation import metrics


def gt(boxes, labels, ignore=None, height=100, width=200):
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  n = len(boxes)
  return dict(boxes=boxes, labels=np.asarray(labels), height=height, width=width,
              ignore=np.zeros(n, bool) if ignore is None else np.asarray(ignore),
              area=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def det(boxes, scores, labels):
  return dict(boxes=np.asarray(boxes, np.float64).reshape(-1, 4), scores=np.asarray(scores),
              labels=np.asarray(labels))


def test_ground_truth_dataset_format():
  dataset = coco.ground_truth_dataset({7: gt([[10, 20, 40, 80]], [1], [True])}, ("a", "b"), (3, 9))
  assert dataset["images"] == [{"id": 7, "height": 100, "width": 200}]
  assert dataset["annotations"] == [{"id": 1, "image_id": 7, "category_id": 9,
                                     "bbox": [10.0, 20.0, 30.0, 60.0], "area": 1800.0,
                                     "iscrowd": 1}]
  assert dataset["categories"] == [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}]


def test_out_of_range_truth_is_left_out():
  dataset = coco.ground_truth_dataset({1: gt([[0, 0, 5, 5], [1, 1, 9, 9]], [-1, 0])}, ("a",), (1,))
  assert [a["bbox"] for a in dataset["annotations"]] == [[1.0, 1.0, 8.0, 8.0]]


def test_detection_results_format():
  results = coco.detection_results({4: det([[1, 2, 5, 10]], [0.5], [1])}, (1, 2))
  assert results == [{"image_id": 4, "category_id": 2, "bbox": [1.0, 2.0, 4.0, 8.0],
                      "score": 0.5}]


def evaluate(gts, dets, num_classes=2):
  names = tuple(str(i) for i in range(num_classes))
  ids = tuple(range(1, num_classes + 1))
  return coco.evaluate_coco(coco.ground_truth_dataset(gts, names, ids),
                            coco.detection_results(dets, ids))[0]


def test_perfect_detections_give_ap_1():
  gts = {1: gt([[10, 10, 60, 60], [100, 20, 180, 90]], [0, 1]), 2: gt([[5, 5, 50, 40]], [1])}
  dets = {1: det([[10, 10, 60, 60], [100, 20, 180, 90]], [0.9, 0.8], [0, 1]),
          2: det([[5, 5, 50, 40]], [0.7], [1])}
  stats = evaluate(gts, dets)
  assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def test_half_recall_hand_value():
  # Class 0 has two truths; one detected exactly (score 0.9), one missed. Precision is 1 up to
  # recall 0.5 and no point reaches more: 101-point AP = 51 / 101 at every IoU threshold.
  gts = {1: gt([[10, 10, 60, 60], [100, 20, 180, 90]], [0, 0])}
  stats = evaluate(gts, {1: det([[10, 10, 60, 60]], [0.9], [0])}, num_classes=1)
  assert stats["AP"] == pytest.approx(51 / 101)


def test_no_detections_is_zero_not_a_crash():
  stats, table = coco.evaluate_coco(coco.ground_truth_dataset({1: gt([[0, 0, 9, 9]], [0])},
                                                              ("a",), (1,)), [])
  assert stats["AP"] == 0.0 and "no detections" in table


def test_to_original_pixels():
  # Input pixels (scale s_y = 0.5, s_x = 0.25) back to the original, clipped to 100 x 200.
  boxes = evaluator.to_original_pixels(np.array([[10.0, 10.0, 60.0, 60.0]]), (0.5, 0.25), 100, 200)
  np.testing.assert_allclose(boxes, [[40, 20, 200, 100]])


def test_score_reports_voc_with_difficult_ignored():
  class Source:
    class_names = ("a", "b")
    num_classes = 2
  gts = {1: gt([[10, 10, 60, 60], [100, 20, 180, 90]], [0, 1], ignore=[False, True])}
  dets = {1: det([[10, 10, 60, 60], [100, 20, 180, 90]], [0.9, 0.8], [0, 1])}
  results, report = metrics.score(dets, gts, Source(), ("voc07", "voc12"))
  # Class 1's only truth is difficult: no positives, excluded from the mean.
  assert results["voc07/mAP"] == pytest.approx(1.0) and results["voc12/mAP"] == pytest.approx(1.0)
  assert "VOC07" in report and "VOC12" in report
  with pytest.raises(ValueError, match="unknown metrics"):
    metrics.score(dets, gts, Source(), ("map",))
