"""Tests for jaxdet.ops.nms against an independent brute-force float64 oracle."""

import functools

import jax
import numpy as np
import pytest

from jaxdet.ops.nms import Detections, batched_nms, overlap_matrix, per_class_nms

STATIC = ("iou_threshold", "max_output", "tile_size")
jit_nms = jax.jit(batched_nms, static_argnames=STATIC)


# ----------------------------------------------------------------------------
# Oracle: plain-Python greedy NMS in float64, one image at a time.
# ----------------------------------------------------------------------------


def oracle_iou(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)

  def area(x):
    return max(x[2] - x[0], 0.0) * max(x[3] - x[1], 0.0)
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  inter = iw * ih
  union = area(a) + area(b) - inter
  return inter / union if union > 0 else 0.0


def oracle_nms_image(boxes, scores, classes, valid, iou_threshold, max_output):
  """Greedy class-aware NMS; returns kept input indices in output order."""
  candidates = [i for i in range(len(scores)) if valid[i]]
  order = sorted(candidates, key=lambda i: (-float(scores[i]), i))
  kept = []
  for i in order:
    if len(kept) == max_output:
      break
    if all(
      classes[i] != classes[k] or oracle_iou(boxes[i], boxes[k]) <= iou_threshold
      for k in kept
    ):
      kept.append(i)
  return kept


def oracle_nms(boxes, scores, classes, valid, iou_threshold, max_output):
  """Batched oracle producing padded numpy arrays in the Detections layout."""
  batch = scores.shape[0]
  out = Detections(
    boxes=np.zeros((batch, max_output, 4), np.float32),
    scores=np.zeros((batch, max_output), np.float32),
    classes=np.zeros((batch, max_output), np.int32),
    valid=np.zeros((batch, max_output), bool),
  )
  for b in range(batch):
    image = (boxes[b], scores[b], classes[b], valid[b])
    kept = oracle_nms_image(*image, iou_threshold, max_output)
    n = len(kept)
    out.boxes[b, :n] = boxes[b, kept]
    out.scores[b, :n] = scores[b, kept]
    out.classes[b, :n] = classes[b, kept]
    out.valid[b, :n] = True
  return out


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def random_batch(seed, batch=3, num=300, num_classes=3, tie_levels=None):
  """Detector-like candidates: jittered copies of a few objects per image.

  The jitter spreads the IoUs between candidates of one object over roughly
  0.2-0.95, so suppression chains (A beats B, B would beat C) are common.
  """
  rng = np.random.default_rng(seed)
  num_objects = 12
  centers = rng.uniform(20, 200, size=(batch, num_objects, 2))
  sizes = rng.uniform(10, 60, size=(batch, num_objects, 2))
  owner = rng.integers(0, num_objects, size=(batch, num))
  rows = np.arange(batch)[:, None]
  size = sizes[rows, owner] * rng.uniform(0.7, 1.3, size=(batch, num, 2))
  center = centers[rows, owner] + sizes[rows, owner] * rng.normal(0, 0.15, size=(batch, num, 2))
  boxes = np.concatenate([center - size / 2, center + size / 2], axis=-1).astype(np.float32)
  scores = rng.uniform(0, 1, size=(batch, num)).astype(np.float32)
  if tie_levels is not None:
    scores = (np.floor(scores * tie_levels) / tie_levels).astype(np.float32)
  classes = ((owner + rng.integers(0, 2, size=(batch, num))) % num_classes).astype(np.int32)
  valid = rng.uniform(size=(batch, num)) < 0.85
  valid[-1] = False  # an image with no valid candidate at all
  return boxes, scores, classes, valid


def assert_detections_equal(got, want):
  got = jax.tree.map(np.asarray, got)
  np.testing.assert_array_equal(got.valid, want.valid)
  np.testing.assert_array_equal(got.boxes, want.boxes)
  np.testing.assert_array_equal(got.scores, want.scores)
  np.testing.assert_array_equal(got.classes, want.classes)
  assert got.boxes.dtype == np.float32 and got.scores.dtype == np.float32
  assert got.classes.dtype == np.int32 and got.valid.dtype == np.bool_


def run_and_check(inputs, **kwargs):
  got = jit_nms(*inputs, **kwargs)
  oracle_kwargs = {k: v for k, v in kwargs.items() if k != "tile_size"}
  want = oracle_nms(*inputs, **oracle_kwargs)
  assert_detections_equal(got, want)
  return got


def single_image(boxes, scores, classes=None):
  """Wrap one image's list inputs into a B=1 batch with all entries valid."""
  boxes = np.asarray(boxes, np.float32)[None]
  scores = np.asarray(scores, np.float32)[None]
  if classes is None:
    classes = np.zeros(scores.shape, np.int32)
  classes = np.asarray(classes, np.int32).reshape(scores.shape)
  return boxes, scores, classes, np.ones(scores.shape, bool)


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_output", [40, 350])  # 350 > N: output is padded
def test_random_batches_match_oracle(seed, max_output):
  inputs = random_batch(seed)  # N=300, tile 64 -> 5 tiles, last one partial
  got = run_and_check(inputs, iou_threshold=0.5, max_output=max_output, tile_size=64)
  assert got.boxes.shape == (3, max_output, 4)
  assert not np.asarray(got.valid[-1]).any()


def test_score_ties_lower_index_wins():
  inputs = random_batch(3, tie_levels=5)  # many exactly tied scores
  run_and_check(inputs, iou_threshold=0.5, max_output=40, tile_size=64)
  # Identical boxes and scores: only the first (lowest index) survives.
  boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
  got = jit_nms(*single_image(boxes, [0.5, 0.5, 0.5], [7, 7, 7]), iou_threshold=0.5, max_output=3)
  np.testing.assert_array_equal(got.valid[0], [True, False, False])
  np.testing.assert_array_equal(got.classes[0], [7, 0, 0])


def test_thresholds_below_and_above_half():
  inputs = random_batch(4, num=200, num_classes=2)
  counts = {}
  for thr in (0.3, 0.45, 0.7):
    got = run_and_check(inputs, iou_threshold=thr, max_output=200, tile_size=32)
    counts[thr] = int(np.asarray(got.valid).sum())
  assert counts[0.3] < counts[0.45] < counts[0.7]

  # A pair with IoU 0.6 and a pair with IoU 0.35, each pair inside one tile:
  # a hard-coded 0.5 in the self-suppression would get 0.3 and 0.7 wrong.
  # Two 10x10 boxes shifted by s along x have IoU (10 - s) / (10 + s):
  # s = 2.5 -> 7.5/12.5 = 0.6;  s = 130/27 -> (140/27)/(400/27) = 0.35.
  s = 130 / 27
  boxes = [[0, 0, 10, 10], [2.5, 0, 12.5, 10], [50, 0, 60, 10], [50 + s, 0, 60 + s, 10]]
  inputs = single_image(boxes, [0.9, 0.8, 0.7, 0.6])
  for thr, want in [(0.3, [0, 2]), (0.4, [0, 2, 3]), (0.7, [0, 1, 2, 3])]:
    got = run_and_check(inputs, iou_threshold=thr, max_output=5, tile_size=2)
    np.testing.assert_array_equal(got.valid[0], np.arange(5) < len(want))
    np.testing.assert_array_equal(got.boxes[0, : len(want)], np.float32(boxes)[want])


def test_class_aware():
  boxes = [[0, 0, 10, 10], [1, 1, 10, 10]]  # IoU = 81/100 = 0.81
  got = jit_nms(*single_image(boxes, [0.9, 0.8], [1, 2]), iou_threshold=0.5, max_output=2)
  np.testing.assert_array_equal(got.valid[0], [True, True])
  np.testing.assert_array_equal(got.classes[0], [1, 2])
  got = jit_nms(*single_image(boxes, [0.9, 0.8], [1, 1]), iou_threshold=0.5, max_output=2)
  np.testing.assert_array_equal(got.valid[0], [True, False])


def test_iou_equal_to_threshold_is_not_suppressed():
  boxes = [[0, 0, 10, 10], [0, 0, 10, 5]]  # IoU = 50/100 = 0.5 exactly
  got = run_and_check(single_image(boxes, [0.9, 0.8]), iou_threshold=0.5, max_output=2)
  np.testing.assert_array_equal(got.valid[0], [True, True])


def test_hand_computed_case():
  # All boxes are 10 high, so IoU only depends on the x extents.
  # A=[0,10]  B=[1,11]  C=[5,15]  D=[20,30]x[20,30] (disjoint from all)
  # IoU(A,B) = 90/110  = 0.818
  # IoU(A,C) = 50/150  = 0.333
  # IoU(B,C) = 60/140  = 0.429
  # Input order is shuffled; scores A=.9 > B=.8 > C=.7 > D=.6.
  a, b, c, d = [0, 0, 10, 10], [1, 0, 11, 10], [5, 0, 15, 10], [20, 20, 30, 30]
  inputs = single_image([c, d, a, b], [0.7, 0.6, 0.9, 0.8], [3, 3, 3, 3])
  cases = {
    0.4: [a, c, d],  # chain: A drops B; C (0.333 with A) survives B's 0.429
    0.3: [a, d],  # C suppressed by A too
    0.9: [a, b, c, d],  # nothing overlaps enough
  }
  for thr, want in cases.items():
    got = run_and_check(inputs, iou_threshold=thr, max_output=5, tile_size=2)
    n = len(want)
    np.testing.assert_array_equal(got.valid[0], np.arange(5) < n)
    np.testing.assert_array_equal(got.boxes[0, :n], np.float32(want))
    np.testing.assert_array_equal(got.boxes[0, n:], 0.0)
    np.testing.assert_array_equal(got.scores[0, n:], 0.0)


@pytest.mark.parametrize("tile_size", [3, 64])
def test_chain_fixed_point_equals_greedy(tile_size):
  # A suppresses B, B would suppress C, but B is gone so C is kept.
  # Boxes of width 10 shifted by 2 each: IoU(i, i+1) = 8/12 = 0.667,
  # IoU(i, i+2) = 6/14 = 0.429. With threshold 0.5 greedy keeps every even
  # box; suppressing by all higher boxes regardless of keep would keep only
  # box 0. tile_size=3 puts the chain across tile boundaries too.
  num = 20
  boxes = [[2 * i, 0, 2 * i + 10, 10] for i in range(num)]
  scores = [1.0 - 0.01 * i for i in range(num)]
  inputs = single_image(boxes, scores)
  got = run_and_check(inputs, iou_threshold=0.5, max_output=num, tile_size=tile_size)
  np.testing.assert_array_equal(got.boxes[0, : num // 2, 0], np.arange(0, 2 * num, 4))
  assert int(np.asarray(got.valid).sum()) == num // 2


def test_degenerate_inputs_produce_no_nan():
  boxes = np.array(
    [
      [
        [5, 5, 5, 5],  # point
        [5, 5, 5, 5],  # identical point: union 0
        [0, 3, 10, 3],  # zero height line
        [10, 10, 0, 0],  # inverted
        [-1e4, -1e4, -9e3, -9e3],  # far outside any image
        [-1e4, -1e4, -9e3, -9e3],  # duplicate of it: suppressed
        [0, 0, 0, 0],  # same as the padding boxes
      ],
      [[0, 0, 0, 0]] * 7,  # an image with no valid candidates
    ],
    np.float32,
  )
  scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0.5] * 7], np.float32)
  classes = np.zeros((2, 7), np.int32)
  valid = np.array([[True] * 7, [False] * 7])
  inputs = (boxes, scores, classes, valid)
  got = run_and_check(inputs, iou_threshold=0.5, max_output=10, tile_size=4)
  # The outputs cannot reveal a NaN IoU (NaN > threshold is just False), so
  # run the IoU step (NMS's only division) op by op under debug_nans, which
  # checks every intermediate.
  with jax.debug_nans(True), jax.disable_jit():
    overlap_matrix(boxes, classes, boxes, classes, 0.5)
  for leaf in (got.boxes, got.scores):
    assert np.isfinite(np.asarray(leaf)).all()
  np.testing.assert_array_equal(np.asarray(got.valid).sum(axis=1), [6, 0])
  # No candidates at all, and no output slots at all.
  empty = (boxes[:, :0], scores[:, :0], classes[:, :0], valid[:, :0])
  got = jit_nms(*empty, iou_threshold=0.5, max_output=3)
  assert got.boxes.shape == (2, 3, 4) and not np.asarray(got.valid).any()
  got = jit_nms(*inputs, iou_threshold=0.5, max_output=0)
  assert got.boxes.shape == (2, 0, 4)


def test_jit_matches_eager():
  inputs = random_batch(5, batch=2, num=70)
  kwargs = dict(iou_threshold=0.45, max_output=30, tile_size=16)
  eager = batched_nms(*inputs, **kwargs)
  jitted = jax.jit(functools.partial(batched_nms, **kwargs))(*inputs)
  assert_detections_equal(jitted, jax.tree.map(np.asarray, eager))


def test_batch_equals_images_alone():
  inputs = random_batch(6, batch=4, num=150)
  kwargs = dict(iou_threshold=0.5, max_output=25, tile_size=32)
  batched = jax.tree.map(np.asarray, jit_nms(*inputs, **kwargs))
  for b in range(4):
    alone = jit_nms(*(x[b : b + 1] for x in inputs), **kwargs)
    assert_detections_equal(alone, jax.tree.map(lambda x: x[b : b + 1], batched))


# ----------------------------------------------------------------------------
# Per-class NMS against a loop of Caffe SSD's DetectionOutput.
# ----------------------------------------------------------------------------


def caffe_detection_output(boxes, scores, confidence_threshold, nms_threshold, top_k,
                           keep_top_k):
  """Caffe's ``DetectionOutputLayer::Forward_cpu`` for one image (weiliu89/caffe, branch ssd):
  ``ApplyNMSFast`` per class (``GetMaxScoreIndex``: scores above the threshold, stable-sorted
  descending, the first ``top_k``; keep a box whose overlap with every kept one is <= the
  threshold), then the ``keep_top_k`` best of all classes. Returns (score, class, box index)
  in descending score."""
  detections = []
  for c in range(scores.shape[1]):
    ranked = sorted([(s, i) for i, s in enumerate(scores[:, c]) if s > confidence_threshold],
                    key=lambda pair: -pair[0])[:top_k]
    kept = []
    for _, i in ranked:
      if all(oracle_iou(boxes[i], boxes[k]) <= nms_threshold for k in kept):
        kept.append(i)
    detections += [(scores[i, c], c, i) for i in kept]
  detections.sort(key=lambda d: -d[0])
  return detections[:keep_top_k] if len(detections) > keep_top_k else detections


def assert_per_class_matches_caffe(boxes, scores, **rule):
  got = jax.jit(functools.partial(per_class_nms, **rule))(boxes, scores)
  for b in range(len(scores)):
    want = caffe_detection_output(boxes[b].astype(np.float64), scores[b].astype(np.float64),
                                  rule["score_threshold"], rule["iou_threshold"], rule["top_k"],
                                  rule["max_output"])
    n = len(want)
    assert int(np.sum(got.valid[b])) == n and np.all(got.valid[b, :n])
    np.testing.assert_allclose(got.scores[b, :n], [d[0] for d in want], rtol=1e-6)
    np.testing.assert_array_equal(got.classes[b, :n], [d[1] for d in want])
    np.testing.assert_array_equal(got.boxes[b, :n], boxes[b, [d[2] for d in want]])
  return got


def test_per_class_nms_matches_caffe_on_random_scores():
  """Random boxes with distinct scores; top_k (30) and keep_top_k (40) both bind."""
  rng = np.random.default_rng(3)
  xy = rng.uniform(0, 200, (2, 120, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (2, 120, 2))], -1).astype(np.float32)
  scores = rng.permutation(2 * 120 * 4).reshape(2, 120, 4).astype(np.float32) / 960
  assert_per_class_matches_caffe(boxes, scores, score_threshold=0.2, top_k=30,
                                 iou_threshold=0.45, max_output=40)


def test_per_class_nms_keeps_a_class_that_a_global_top_k_drops():
  """Class 0 scores 40 separate boxes at 0.5-0.9; class 1 only one box, at 0.3. One global top
  20 of (box, class) pairs keeps only class 0; the per-class rule keeps class 1's box."""
  boxes = np.asarray([[[20 * i, 0, 20 * i + 10, 10] for i in range(40)]], np.float32)
  scores = np.zeros((1, 40, 2), np.float32)
  scores[0, :, 0] = np.linspace(0.9, 0.5, 40)
  scores[0, 7, 1] = 0.3
  got = assert_per_class_matches_caffe(boxes, scores, score_threshold=0.01, top_k=400,
                                       iou_threshold=0.45, max_output=200)
  assert int(np.sum(got.valid)) == 41 and 1 in np.asarray(got.classes[0, :41])
  _, top_index = jax.lax.top_k(scores.reshape(1, -1), 20)
  assert not np.any(np.asarray(top_index) % 2 == 1)        # the global top 20: class 0 only
