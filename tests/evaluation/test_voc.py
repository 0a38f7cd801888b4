"""Tests for jaxdet.evaluation.voc: every expected AP is worked out by hand below."""

import math

import numpy as np
import pytest

from jaxdet.evaluation.voc import evaluate_voc, voc_ap


def _gt(boxes, labels, difficult=None):
  boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
  labels = np.asarray(labels, dtype=np.int64)
  if difficult is None:
    difficult = np.zeros(len(labels), dtype=bool)
  return {"boxes": boxes, "labels": labels, "difficult": np.asarray(difficult, dtype=bool)}


def _det(boxes, scores, labels):
  return {
    "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
    "scores": np.asarray(scores, dtype=np.float64),
    "labels": np.asarray(labels, dtype=np.int64),
  }


def _single_class_ap(detections, ground_truths, **kwargs):
  return evaluate_voc(detections, ground_truths, num_classes=1, **kwargs)["AP_per_class"][0]


BOX_A = [0.0, 0.0, 10.0, 10.0]
BOX_B = [20.0, 20.0, 30.0, 30.0]


# ---------------------------------------------------------------- voc_ap


# Outcomes in score order TP, FP, TP, FP, TP with npos = 5:
#   cumulative tp = 1, 1, 2, 2, 3;  fp = 0, 1, 1, 2, 2
#   recall    = .2, .2, .4, .4, .6
#   precision = 1, 1/2, 2/3, 1/2, 3/5
RECALL = np.array([0.2, 0.2, 0.4, 0.4, 0.6])
PRECISION = np.array([1.0, 1 / 2, 2 / 3, 1 / 2, 3 / 5])


def test_all_point_ap_hand_worked_curve():
  # Envelope (running max from the right) at the recall change points:
  #   recall 0 -> .2 : 1;  .2 -> .4 : 2/3;  .4 -> .6 : 3/5;  .6 -> 1 : 0
  # AP = .2*1 + .2*2/3 + .2*3/5 + .4*0 = 15/75 + 10/75 + 9/75 = 34/75
  assert voc_ap(RECALL, PRECISION, use_07_metric=False) == pytest.approx(34 / 75, abs=1e-12)


def test_eleven_point_ap_hand_worked_curve():
  # max precision at recall >= t:
  #   t = 0, .1, .2 -> 1;  t = .3, .4 -> 2/3;  t = .5, .6 -> 3/5;  t = .7 .. 1 -> 0
  # AP = (3*1 + 2*2/3 + 2*3/5 + 4*0) / 11 = (45 + 20 + 18) / 15 / 11 = 83/165
  assert voc_ap(RECALL, PRECISION, use_07_metric=True) == pytest.approx(83 / 165, abs=1e-12)


def test_eleven_point_threshold_is_exact_decimal():
  # Recall exactly 3/10 reaches t = 0.3: t = 0, .1, .2, .3 -> 1, the rest -> 0.
  # AP = 4/11 (np.arange(0, 1.1, 0.1)[3] == 0.30000000000000004 would give 3/11).
  assert voc_ap(np.array([3 / 10]), np.array([1.0]), use_07_metric=True) == pytest.approx(
    4 / 11, abs=1e-12
  )
  # All-point: .3 * 1 + .7 * 0 = .3
  assert voc_ap(np.array([3 / 10]), np.array([1.0]), use_07_metric=False) == pytest.approx(
    0.3, abs=1e-12
  )


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_voc_ap_empty_curve_is_zero(use_07_metric):
  assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric) == 0.0


def test_voc_ap_rejects_mismatched_shapes():
  with pytest.raises(ValueError):
    voc_ap(np.zeros(2), np.zeros(3), use_07_metric=True)


# ---------------------------------------------------------- evaluate_voc


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_perfect_detections_give_ap_one(use_07_metric):
  ground_truths = {
    "img0": _gt([BOX_A, BOX_B], [0, 1]),
    "img1": _gt([BOX_B], [1]),
  }
  detections = {
    "img0": _det([BOX_A, BOX_B], [0.9, 0.8], [0, 1]),
    "img1": _det([BOX_B], [0.7], [1]),
  }
  result = evaluate_voc(detections, ground_truths, num_classes=2, use_07_metric=use_07_metric)
  np.testing.assert_allclose(result["AP_per_class"], [1.0, 1.0])
  assert result["mAP"] == pytest.approx(1.0)
  assert result["AP_per_class"].dtype == np.float64


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_no_detections_give_ap_zero(use_07_metric):
  ground_truths = {"img0": _gt([BOX_A], [0]), "img1": _gt([BOX_B], [0])}
  # img0 has an entry with zero boxes, img1 is missing from detections.
  detections = {"img0": _det(np.zeros((0, 4)), [], [])}
  result = evaluate_voc(detections, ground_truths, num_classes=1, use_07_metric=use_07_metric)
  assert result["AP_per_class"][0] == 0.0
  assert result["mAP"] == 0.0
  assert evaluate_voc({}, ground_truths, num_classes=1)["mAP"] == 0.0


def test_duplicate_detection_is_false_positive():
  # Two truths A, B. Scores: A (.9) TP, A again (.8) duplicate FP, B (.7) TP.
  #   recall = .5, .5, 1;  precision = 1, 1/2, 2/3
  # all-point: .5*1 + .5*2/3 = 5/6
  # 11-point : t = 0..0.5 (6 values) -> 1, t = .6..1 (5 values) -> 2/3
  #            (6 + 5*2/3) / 11 = 28/33
  # (Were the duplicate ignored, both would be 1.0.)
  ground_truths = {"img0": _gt([BOX_A, BOX_B], [0, 0])}
  detections = {"img0": _det([BOX_A, BOX_A, BOX_B], [0.9, 0.8, 0.7], [0, 0, 0])}
  assert _single_class_ap(detections, ground_truths, use_07_metric=False) == pytest.approx(5 / 6)
  assert _single_class_ap(detections, ground_truths, use_07_metric=True) == pytest.approx(28 / 33)


def test_detection_goes_to_highest_iou_truth_even_if_already_matched():
  # Truths A = [0,0,10,10] and C = [2,0,12,10]. Detection 1 = A exactly -> TP on A.
  # Detection 2 = [.5,0,10.5,10]: IoU with A = 95/105 ~ .905, with C = 85/115 ~ .739.
  # Like the devkit, it is assigned to A (highest IoU), which is taken -> FP; it does
  # not fall back to the unmatched C.
  #   recall = .5, .5;  precision = 1, 1/2  ->  all-point AP = .5*1 + .5*0 = .5
  ground_truths = {"img0": _gt([BOX_A, [2.0, 0.0, 12.0, 10.0]], [0, 0])}
  detections = {"img0": _det([BOX_A, [0.5, 0.0, 10.5, 10.0]], [0.9, 0.8], [0, 0])}
  assert _single_class_ap(detections, ground_truths, use_07_metric=False) == pytest.approx(0.5)


def test_difficult_truths_are_ignored():
  # A is normal, B is difficult -> npos = 1.
  # Scores: B (.9) ignored (neither TP nor FP), A (.8) TP.
  #   counted curve: recall = 1, precision = 1 -> AP = 1 for both metrics.
  # (If B counted in npos: AP .5; if the .9 detection were an FP: precision 1/2.)
  ground_truths = {"img0": _gt([BOX_A, BOX_B], [0, 0], difficult=[False, True])}
  detections = {"img0": _det([BOX_B, BOX_A], [0.9, 0.8], [0, 0])}
  assert _single_class_ap(detections, ground_truths, use_07_metric=False) == pytest.approx(1.0)
  assert _single_class_ap(detections, ground_truths, use_07_metric=True) == pytest.approx(1.0)


def test_undetected_difficult_truth_does_not_lower_recall():
  # npos = 1 (only A); A detected -> recall 1, precision 1 -> AP 1.
  ground_truths = {"img0": _gt([BOX_A, BOX_B], [0, 0], difficult=[False, True])}
  detections = {"img0": _det([BOX_A], [0.9], [0])}
  assert _single_class_ap(detections, ground_truths, use_07_metric=False) == pytest.approx(1.0)


def test_class_with_only_difficult_truths_is_nan():
  ground_truths = {"img0": _gt([BOX_A, BOX_B], [0, 1], difficult=[False, True])}
  detections = {"img0": _det([BOX_A, BOX_B], [0.9, 0.9], [0, 1])}
  result = evaluate_voc(detections, ground_truths, num_classes=2)
  assert result["AP_per_class"][0] == pytest.approx(1.0)
  assert math.isnan(result["AP_per_class"][1])
  assert result["mAP"] == pytest.approx(1.0)


def test_detection_below_iou_threshold_is_false_positive():
  # Truth [0,0,10,10], detection [0,0,10,30]: IoU = 100 / 300 = 1/3 < .5 -> FP.
  # recall = 0, precision = 0 -> AP 0.
  ground_truths = {"img0": _gt([BOX_A], [0])}
  detections = {"img0": _det([[0.0, 0.0, 10.0, 30.0]], [0.9], [0])}
  assert _single_class_ap(detections, ground_truths) == 0.0
  # With a threshold of .3 the same detection is a TP.
  assert _single_class_ap(detections, ground_truths, iou_threshold=0.3) == pytest.approx(1.0)


def test_iou_exactly_at_threshold_is_true_positive():
  # Truth [0,0,10,10], detection [0,0,10,20]: IoU = 100 / 200 = .5 exactly.
  # VOCevaldet.m tests ovmax >= minoverlap, so it is a TP at .5 ...
  ground_truths = {"img0": _gt([BOX_A], [0])}
  detections = {"img0": _det([[0.0, 0.0, 10.0, 20.0]], [0.9], [0])}
  assert _single_class_ap(detections, ground_truths, iou_threshold=0.5) == pytest.approx(1.0)
  # ... and an FP for any threshold above it.
  assert _single_class_ap(detections, ground_truths, iou_threshold=0.5 + 1e-9) == 0.0


def test_iou_uses_continuous_coordinates():
  # Truth [0,0,10,10], detection [0,0,10,21]:
  #   continuous IoU       = 100 / 210           ~ .476 < .5 -> FP, AP 0
  #   devkit (+1 pixels)   = 11*11 / (11*22)     = .5        -> would be a TP
  ground_truths = {"img0": _gt([BOX_A], [0])}
  detections = {"img0": _det([[0.0, 0.0, 10.0, 21.0]], [0.9], [0])}
  assert _single_class_ap(detections, ground_truths) == 0.0


def test_class_without_ground_truth_is_nan_and_excluded_from_map():
  # Class 0: perfect -> AP 1.
  # Class 1: no truths (one stray detection) -> NaN.
  # Class 2: truths A, B in img1; detections FP (.9, on img0) then TP on A (.8):
  #   recall = 0, .5; precision = 0, 1/2
  #   all-point: envelope at 0 -> .5 is 1/2, .5 -> 1 is 0  ->  AP = .5 * 1/2 = 1/4
  # mAP = (1 + 1/4) / 2 = 5/8
  ground_truths = {
    "img0": _gt([BOX_A], [0]),
    "img1": _gt([BOX_A, BOX_B], [2, 2]),
  }
  detections = {
    "img0": _det([BOX_A, BOX_B, BOX_B], [0.9, 0.5, 0.9], [0, 1, 2]),
    "img1": _det([BOX_A], [0.8], [2]),
  }
  result = evaluate_voc(detections, ground_truths, num_classes=3, use_07_metric=False)
  ap = result["AP_per_class"]
  assert ap.shape == (3,)
  assert ap[0] == pytest.approx(1.0)
  assert math.isnan(ap[1])
  assert ap[2] == pytest.approx(1 / 4)
  assert result["mAP"] == pytest.approx(5 / 8)


def test_no_positives_anywhere_gives_nan_map():
  result = evaluate_voc({}, {"img0": _gt(np.zeros((0, 4)), [])}, num_classes=2)
  assert np.isnan(result["AP_per_class"]).all()
  assert math.isnan(result["mAP"])


def test_false_positives_on_image_without_truths_lower_precision():
  # img0: truth A, detected at score .5 (TP). img1: no truths at all, one
  # detection at score .9 (FP).  Score order: FP, TP.
  #   recall = 0, 1;  precision = 0, 1/2
  # all-point: 1 * 1/2 = 1/2.  11-point: every t has max precision 1/2 -> 1/2.
  # (Without img1's detection both would be 1.)
  ground_truths = {"img0": _gt([BOX_A], [0]), "img1": _gt(np.zeros((0, 4)), [])}
  detections = {
    "img0": _det([BOX_A], [0.5], [0]),
    "img1": _det([BOX_A], [0.9], [0]),
  }
  assert _single_class_ap(detections, ground_truths, use_07_metric=False) == pytest.approx(0.5)
  assert _single_class_ap(detections, ground_truths, use_07_metric=True) == pytest.approx(0.5)


def test_equal_scores_keep_input_order():
  # Same score for an FP (img1, listed first) and a TP (img0): the stable sort
  # keeps FP first -> recall 0, 1; precision 0, 1/2 -> all-point AP 1/2.
  # Listing img0 first gives TP, FP -> recall 1, 1; precision 1, 1/2 -> AP 1.
  ground_truths = {"img0": _gt([BOX_A], [0]), "img1": _gt(np.zeros((0, 4)), [])}
  fp_first = {"img1": _det([BOX_A], [0.7], [0]), "img0": _det([BOX_A], [0.7], [0])}
  tp_first = {"img0": _det([BOX_A], [0.7], [0]), "img1": _det([BOX_A], [0.7], [0])}
  assert _single_class_ap(fp_first, ground_truths, use_07_metric=False) == pytest.approx(0.5)
  assert _single_class_ap(tp_first, ground_truths, use_07_metric=False) == pytest.approx(1.0)


def test_detections_for_unknown_image_raise():
  with pytest.raises(ValueError, match="without ground truth"):
    evaluate_voc({"other": _det([BOX_A], [0.9], [0])}, {"img0": _gt([BOX_A], [0])}, 1)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_invalid_iou_threshold_raises(threshold):
  with pytest.raises(ValueError, match="iou_threshold"):
    evaluate_voc({}, {"img0": _gt([BOX_A], [0])}, 1, iou_threshold=threshold)
