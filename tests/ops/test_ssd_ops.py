"""SSD default boxes, matching and hard negative mining against hand values and float64 loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import anchors
from jaxdet.ops import losses
from jaxdet.ops import matching
from tests.ops.test_boxes import brute_force_iou, random_boxes

SSD300_MAPS = ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1))
SSD300_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))


def test_scales_follow_equation_4():
  # s_l = 0.2 + 0.7 (l - 1) / 5, continued to l = 7 for the last extra box.
  np.testing.assert_allclose(anchors.ssd_scales(6), [0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])
  # conv4_3 at 0.1, the formula over the other five layers: step 0.7 / 4.
  np.testing.assert_allclose(anchors.ssd_scales(6, first_scale=0.1),
                             [0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.075])


def test_ssd300_has_8732_boxes_in_layer_order():
  grid = anchors.ssd_default_boxes((300, 300), SSD300_MAPS, SSD300_RATIOS, first_scale=0.1)
  assert grid.num_anchors == 8732
  assert grid.level_sizes == (5776, 2166, 600, 150, 36, 4)
  assert grid.anchors_per_cell == (4, 6, 6, 6, 4, 4)
  ssd512 = anchors.ssd_default_boxes(
      (512, 512), ((64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)),
      ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)), 0.15, 0.9, first_scale=0.07)
  assert ssd512.num_anchors == 24564


def test_specific_ssd300_boxes_by_hand():
  grid = anchors.ssd_default_boxes((300, 300), SSD300_MAPS, SSD300_RATIOS, first_scale=0.1)
  b = grid.boxes.astype(np.float64)
  c = 0.5 / 38 * 300                                   # first cell centre, 3.947 px
  np.testing.assert_allclose(b[0], [c - 15, c - 15, c + 15, c + 15], atol=1e-4)  # s = 0.1
  half = 300 * np.sqrt(0.1 * 0.2) / 2                  # s' = sqrt(0.1 * 0.2): 42.43 px
  np.testing.assert_allclose(b[1], [c - half, c - half, c + half, c + half], atol=1e-4)
  w, h = 30 * np.sqrt(2), 30 / np.sqrt(2)              # ratio 2: w = s sqrt(2), h = s / sqrt(2)
  np.testing.assert_allclose(b[2], [c - w / 2, c - h / 2, c + w / 2, c + h / 2], atol=1e-4)
  np.testing.assert_allclose(b[3], [c - h / 2, c - w / 2, c + h / 2, c + w / 2], atol=1e-4)
  # conv4_3 cell (row 1, column 2): centre ((2.5 / 38) 300, (1.5 / 38) 300).
  cx, cy = 2.5 / 38 * 300, 1.5 / 38 * 300
  np.testing.assert_allclose(b[4 * (38 + 2)], [cx - 15, cy - 15, cx + 15, cy + 15], atol=1e-4)
  # The single 1x1 cell: s_6 = 0.9 (270 px), s' = sqrt(0.9 * 1.075), ratio 2 and 1/2.
  last = b[-4:]
  s6, extra = 270.0, 300 * np.sqrt(0.9 * 1.075)
  np.testing.assert_allclose(last[0], [150 - s6 / 2, 150 - s6 / 2, 150 + s6 / 2, 150 + s6 / 2],
                             atol=1e-3)
  np.testing.assert_allclose(last[1], [150 - extra / 2] * 2 + [150 + extra / 2] * 2, atol=1e-3)
  w, h = 270 * np.sqrt(2), 270 / np.sqrt(2)
  np.testing.assert_allclose(last[2], [150 - w / 2, 150 - h / 2, 150 + w / 2, 150 + h / 2],
                             atol=1e-3)
  clipped = anchors.ssd_default_boxes((300, 300), SSD300_MAPS, SSD300_RATIOS, first_scale=0.1,
                                      clip=True).boxes
  np.testing.assert_allclose(clipped[-2], [0, 150 - h / 2, 300, 150 + h / 2], atol=1e-3)
  assert clipped.min() >= 0 and clipped.max() <= 300


def test_non_square_input_scales_width_and_height_separately():
  grid = anchors.ssd_default_boxes((200, 400), ((2, 4), (1, 2), (1, 1)), ((2,),) * 3, 0.2, 0.9,
                                  first_scale=0.1)
  # Cell (0, 0): centre (50, 50); s = 0.1 -> 40 px wide, 20 px high.
  np.testing.assert_allclose(grid.boxes[0], [30, 40, 70, 60], atol=1e-4)


def brute_force_ssd_match(boxes, gt, mask, threshold=0.5):
  n = len(boxes)
  labels, matched = np.zeros(n, int), np.zeros(n, int)
  valid = np.flatnonzero(mask)
  if valid.size == 0:
    return matched, labels
  iou = brute_force_iou(boxes, gt[valid])
  for a in range(n):
    best = int(np.argmax(iou[a]))
    matched[a], labels[a] = valid[best], int(iou[a, best] > threshold)
  for g in range(valid.size):                # bipartite step; a later truth wins a shared box
    if iou[:, g].max() > 0:
      a = int(np.argmax(iou[:, g]))
      matched[a], labels[a] = valid[g], 1
  return matched, labels


def test_ssd_match_against_brute_force():
  rng = np.random.default_rng(1)
  boxes = random_boxes(rng, 300).astype(np.float32)
  gt = random_boxes(rng, 4 * 6).reshape(4, 6, 4).astype(np.float32)
  gt[3, 1] = [200, 200, 230, 240]            # outside every default box: IoU 0, claims none
  gt[3, 2] = [50, 50, 50, 70]                # degenerate (zero width)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6, [1, 1, 1, 0, 0, 0]], bool)
  gt[~mask] = 0.0
  match = jax.jit(matching.ssd_match)(boxes, gt, mask)
  for b in range(4):
    want_matched, want_labels = brute_force_ssd_match(boxes.astype(np.float64),
                                                      gt[b].astype(np.float64), mask[b])
    np.testing.assert_array_equal(match.labels[b], want_labels)
    positive = want_labels == 1
    np.testing.assert_array_equal(np.asarray(match.matched_gt[b])[positive],
                                  want_matched[positive])
  assert not np.any(np.asarray(match.labels[2]))             # no truth: all negative


def test_ssd_match_forces_the_best_box_even_below_threshold():
  boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
  gt = np.array([[[0, 0, 30, 10]]], np.float32)             # IoU 1/3 with both boxes
  match = matching.ssd_match(boxes, gt, np.ones((1, 1), bool))
  np.testing.assert_array_equal(match.labels, [[1, 0]])     # only the (first) best box


def brute_force_hard_negatives(loss, negative, num_positive, ratio):
  keep = np.zeros_like(negative)
  for b in range(len(loss)):
    candidates = [i for i in np.argsort(-loss[b], kind="stable") if negative[b, i]]
    for i in candidates[:ratio * num_positive[b]]:
      keep[b, i] = True
  return keep


@pytest.mark.parametrize("ratio", [1, 3])
def test_hard_negatives_against_brute_force(ratio):
  rng = np.random.default_rng(2)
  loss = rng.exponential(size=(4, 50)).astype(np.float32)
  loss[0, 10:20] = 1.5                                      # ties: first position wins
  positive = rng.uniform(size=(4, 50)) < 0.1
  positive[1] = False                                       # no positives: no negatives
  positive[2, :40] = True                                   # fewer negatives than 3 x positives
  num_positive = positive.sum(1)
  got = jax.jit(losses.hard_negatives, static_argnums=3)(loss, ~positive, num_positive, ratio)
  want = brute_force_hard_negatives(loss, ~positive, num_positive, ratio)
  np.testing.assert_array_equal(got, want)
  assert not np.any(np.asarray(got)[1])


def test_softmax_cross_entropy_by_hand():
  logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
  got = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.bfloat16), jnp.array([2, 0]))
  want = [np.log(np.exp([1, 2, 3]).sum()) - 3, np.log(3.0)]
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-2)
