"""SSD default boxes, matching and hard negative mining against hand values and float64 loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import anchors
from jaxdet.ops import losses
from jaxdet.ops import matching
from tests.ops.test_boxes import random_boxes

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


def test_released_ssd300_geometry_by_hand():
  """Caffe's PriorBox with ssd_pascal.py's sizes and steps: pixel sizes, centres at
  (i + 0.5) step."""
  grid = anchors.ssd_default_boxes(
      (300, 300), SSD300_MAPS, SSD300_RATIOS, min_sizes=(30, 60, 111, 162, 213, 264),
      max_sizes=(60, 111, 162, 213, 264, 315), steps=(8, 16, 32, 64, 100, 300))
  assert grid.num_anchors == 8732
  b = grid.boxes.astype(np.float64)
  np.testing.assert_allclose(b[0], [4 - 15, 4 - 15, 4 + 15, 4 + 15], atol=1e-4)   # centre 4
  half = np.sqrt(30 * 60) / 2
  np.testing.assert_allclose(b[1], [4 - half, 4 - half, 4 + half, 4 + half], atol=1e-4)
  # conv4_3 cell (row 1, column 2): centre (2.5 x 8, 1.5 x 8) = (20, 12).
  np.testing.assert_allclose(b[4 * (38 + 2)], [5, -3, 35, 27], atol=1e-4)
  # The 3x3 map (step 100): cell (row 0, column 2) at (250, 50), ratio 3 of 213 px.
  first_3x3 = 5776 + 2166 + 600 + 150
  w, h = 213 * np.sqrt(2), 213 / np.sqrt(2)
  np.testing.assert_allclose(b[first_3x3 + 4 * 2 + 2], [250 - w / 2, 50 - h / 2, 250 + w / 2,
                                                        50 + h / 2], atol=1e-3)
  # The 1x1 map: centre 150, 264 px and sqrt(264 x 315).
  extra = np.sqrt(264 * 315)
  np.testing.assert_allclose(b[-4], [150 - 132, 150 - 132, 150 + 132, 150 + 132], atol=1e-3)
  np.testing.assert_allclose(b[-3], [150 - extra / 2] * 2 + [150 + extra / 2] * 2, atol=1e-3)
  with pytest.raises(ValueError, match="min_sizes and max_sizes"):
    anchors.ssd_default_boxes((300, 300), SSD300_MAPS, SSD300_RATIOS, min_sizes=(30,),
                              max_sizes=(60,))
  with pytest.raises(ValueError, match="steps"):
    anchors.ssd_default_boxes((300, 300), SSD300_MAPS, SSD300_RATIOS, steps=(8, 16))


def test_non_square_input_scales_width_and_height_separately():
  grid = anchors.ssd_default_boxes((200, 400), ((2, 4), (1, 2), (1, 1)), ((2,),) * 3, 0.2, 0.9,
                                  first_scale=0.1)
  # Cell (0, 0): centre (50, 50); s = 0.1 -> 40 px wide, 20 px high.
  np.testing.assert_allclose(grid.boxes[0], [30, 40, 70, 60], atol=1e-4)


def jaccard_overlap(a, b):
  """Caffe's ``JaccardOverlap`` (bbox_util.cpp) of two (x1, y1, x2, y2) boxes, float64."""
  if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
    return 0.0
  inter = (min(a[2], b[2]) - max(a[0], b[0])) * (min(a[3], b[3]) - max(a[1], b[1]))
  size = lambda box: 0.0 if box[2] < box[0] or box[3] < box[1] else (
      (box[2] - box[0]) * (box[3] - box[1]))
  return inter / (size(a) + size(b) - inter)


def caffe_match_bbox(gt_boxes, pred_boxes, overlap_threshold=0.5):
  """A line-by-line port of ``MatchBBox`` (weiliu89/caffe branch ssd, bbox_util.cpp) with
  ``match_type: PER_PREDICTION``: each prediction's ground-truth index, -1 for none."""
  match_indices = [-1] * len(pred_boxes)
  overlaps = {}                                      # map<int, map<int, float>>, ordered by key
  for i, pred in enumerate(pred_boxes):
    for j, gt in enumerate(gt_boxes):
      overlap = jaccard_overlap(pred, gt)
      if overlap > 1e-6:
        overlaps.setdefault(i, {})[j] = overlap
  gt_pool = list(range(len(gt_boxes)))
  while gt_pool:                                     # bipartite matching
    max_idx, max_gt_idx, max_overlap = -1, -1, -1.0
    for i in sorted(overlaps):
      if match_indices[i] != -1:
        continue
      for j in gt_pool:
        if j in overlaps[i] and overlaps[i][j] > max_overlap:
          max_idx, max_gt_idx, max_overlap = i, j, overlaps[i][j]
    if max_idx == -1:
      break
    match_indices[max_idx] = max_gt_idx
    gt_pool.remove(max_gt_idx)
  for i in sorted(overlaps):                         # PER_PREDICTION
    if match_indices[i] != -1:
      continue
    max_gt_idx, max_overlap = -1, -1.0
    for j in range(len(gt_boxes)):
      if j in overlaps[i] and overlaps[i][j] >= overlap_threshold and (
          overlaps[i][j] > max_overlap):
        max_gt_idx, max_overlap = j, overlaps[i][j]
    if max_gt_idx != -1:
      match_indices[i] = max_gt_idx
  return np.asarray(match_indices)


def brute_force_ssd_match(boxes, gt, mask, threshold=0.5):
  """``(matched truth slot [N], positive [N])`` of Caffe's matcher over the real truths."""
  valid = np.flatnonzero(mask)
  indices = caffe_match_bbox(gt[valid], boxes, threshold)
  positive = indices >= 0
  return np.where(positive, np.append(valid, 0)[indices], 0), positive.astype(int)


def assert_matches_caffe(boxes, gt, mask):
  match = jax.jit(matching.ssd_match)(boxes, gt, mask)
  for b in range(len(gt)):
    want_matched, want_labels = brute_force_ssd_match(boxes.astype(np.float64),
                                                      gt[b].astype(np.float64), mask[b])
    np.testing.assert_array_equal(match.labels[b], want_labels, err_msg=f"image {b}")
    np.testing.assert_array_equal(np.where(want_labels == 1, match.matched_gt[b], -1),
                                  np.where(want_labels == 1, want_matched, -1),
                                  err_msg=f"image {b}")
  return match


def test_ssd_match_against_caffe_on_random_boxes():
  rng = np.random.default_rng(1)
  boxes = random_boxes(rng, 300).astype(np.float32)
  gt = random_boxes(rng, 4 * 6).reshape(4, 6, 4).astype(np.float32)
  gt[3, 1] = [200, 200, 230, 240]            # outside every default box: IoU 0, claims none
  gt[3, 2] = [50, 50, 50, 70]                # degenerate (zero width)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6, [1, 1, 1, 0, 0, 0]], bool)
  gt[~mask] = 0.0
  match = assert_matches_caffe(boxes, gt, mask)
  assert not np.any(np.asarray(match.labels[2]))             # no truth: all negative


def test_ssd_match_collisions_against_caffe():
  """Image 0: truths 0 and 1 have the same best box (0); Caffe gives it to the higher overlap
  (truth 1, IoU 1) and truth 0 its next best box, so both keep a positive. Image 1: a truth
  whose best IoU ties between boxes 1 and 2 (the lower box wins), and box 3 at exactly 0.5 with
  truth 0 (matched: >= 0.5). Image 2: padding between truths and a zero-area truth."""
  boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 20, 10, 30],
                    [0, 0, 12, 10], [60, 60, 70, 70]], np.float32)
  gt = np.zeros((3, 4, 4), np.float32)
  mask = np.zeros((3, 4), bool)
  gt[0, :2] = [[0, 0, 10, 11], [0, 0, 10, 10]]
  mask[0, :2] = True
  gt[1, :2] = [[0, 20, 10, 40], [25, 0, 45, 10]]
  mask[1, :2] = True
  gt[2, [0, 2, 3]] = [[60, 60, 70, 71], [5, 5, 5, 9], [40, 0, 50, 10]]
  mask[2, [0, 2, 3]] = True
  match = assert_matches_caffe(boxes, gt, mask)
  labels, matched = np.asarray(match.labels), np.asarray(match.matched_gt)
  assert labels[0, 0] == 1 and matched[0, 0] == 1            # the higher overlap wins box 0
  assert labels[0, 4] == 1 and matched[0, 4] == 0            # truth 0 falls back to box 4
  assert labels[1, 1] == 1 and labels[1, 2] == 0             # the tie: the lower box
  assert labels[1, 3] == 1 and matched[1, 3] == 0            # IoU exactly 0.5
  assert set(matched[2][labels[2] == 1]) == {0, 3}           # padded / zero-area: never


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
