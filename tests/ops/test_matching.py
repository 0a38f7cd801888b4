"""Max-IoU matcher against a brute-force float64 loop over anchors and boxes."""
import jax
import numpy as np

from jaxdet.ops import matching
from tests.ops.test_boxes import brute_force_iou, random_boxes


def brute_force_match(anchors, gt, mask, pos=0.5, neg=0.4, low_quality=True):
  n = len(anchors)
  labels, matched = np.zeros(n, int), np.zeros(n, int)
  valid = np.flatnonzero(mask)
  if valid.size == 0:
    return matched, labels
  iou = brute_force_iou(anchors, gt[valid])
  for a in range(n):
    best = int(np.argmax(iou[a]))
    matched[a] = valid[best]
    labels[a] = 1 if iou[a, best] >= pos else (0 if iou[a, best] < neg else -1)
  if low_quality:
    for g in range(len(valid)):
      top = iou[:, g].max()
      if top > 0:
        for a in np.flatnonzero(iou[:, g] == top):
          labels[a] = 1
  return matched, labels


def test_matches_brute_force_on_random_padded_batch():
  rng = np.random.default_rng(0)
  anchors = random_boxes(rng, 300).astype(np.float32)
  gt = random_boxes(rng, 3 * 6).reshape(3, 6, 4).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
  gt[~mask] = 0.0                                    # padding
  match = jax.jit(matching.max_iou_match)(anchors, gt, mask)
  for b in range(3):
    want_matched, want_labels = brute_force_match(anchors.astype(np.float64),
                                                  gt[b].astype(np.float64), mask[b])
    np.testing.assert_array_equal(match.labels[b], want_labels)
    positive = want_labels == 1
    np.testing.assert_array_equal(np.asarray(match.matched_gt[b])[positive], want_matched[positive])
  assert not np.any(np.asarray(match.labels[2]) == 1)   # no boxes: every anchor negative
  assert np.all(np.asarray(match.labels[2]) == 0)


def test_thresholds_and_low_quality_hand_case():
  anchors = np.array([[0, 0, 10, 10],    # IoU 1 with gt0 -> positive
                      [0, 0, 10, 5],     # IoU 0.5 with gt0 -> positive (>= 0.5)
                      [0, 0, 10, 4.5],   # IoU 0.45 -> ignore
                      [0, 0, 10, 3],     # IoU 0.3 -> negative
                      [50, 50, 60, 60],  # IoU 0.25 with gt1, its best -> low-quality positive
                      [100, 100, 110, 110]], np.float32)
  gt = np.array([[[0, 0, 10, 10], [50, 50, 70, 70], [0, 0, 0, 0]]], np.float32)
  mask = np.array([[True, True, False]])
  match = matching.max_iou_match(anchors, gt, mask)
  np.testing.assert_array_equal(match.labels[0], [1, 1, -1, 0, 1, 0])
  np.testing.assert_array_equal(match.matched_gt[0, [0, 1, 4]], [0, 0, 1])
  no_low = matching.max_iou_match(anchors, gt, mask, allow_low_quality_matches=False)
  np.testing.assert_array_equal(no_low.labels[0], [1, 1, -1, 0, 0, 0])


def test_degenerate_and_out_of_image_truth_never_matches():
  anchors = np.array([[0, 0, 10, 10], [10, 10, 20, 20]], np.float32)
  gt = np.array([[[5, 5, 5, 9], [-50, -50, -40, -40]]], np.float32)   # zero width; far outside
  match = matching.max_iou_match(anchors, gt, np.ones((1, 2), bool))
  np.testing.assert_array_equal(match.labels[0], [0, 0])


def test_gather_matched():
  values = np.arange(2 * 3).reshape(2, 3)
  idx = np.array([[2, 0], [1, 1]])
  np.testing.assert_array_equal(matching.gather_matched(values, idx), [[2, 0], [4, 4]])
  boxes = np.arange(2 * 3 * 4).reshape(2, 3, 4)
  np.testing.assert_array_equal(matching.gather_matched(boxes, idx)[1, 0], boxes[1, 1])
