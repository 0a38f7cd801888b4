"""Assignment of ground truth to anchors, vectorized over a padded batch.

Ground truth arrives padded (docs/design.md): ``boxes [B, M, 4]``, ``mask [B, M]``. Padded slots
never match anything.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.ops import boxes as box_ops

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


class Match(NamedTuple):
  matched_gt: jax.Array  # [B, N] int32 index of the best ground-truth slot (meaningful if positive)
  labels: jax.Array      # [B, N] int32: POSITIVE, NEGATIVE or IGNORE


def best_truths(anchors, gt_boxes, gt_mask):
  """``(iou [B, N, M], best IoU [B, N], its truth slot [B, N])`` of every anchor; padded slots
  have IoU -1, so they are never an anchor's best."""
  iou = box_ops.pairwise_iou(anchors[None], gt_boxes)
  iou = jnp.where(gt_mask[:, None, :], iou, -1.0)
  return iou, jnp.max(iou, axis=-1), jnp.argmax(iou, axis=-1).astype(jnp.int32)


def max_iou_match(anchors, gt_boxes, gt_mask, *, positive_threshold=0.5, negative_threshold=0.4,
                  allow_low_quality_matches=True):
  """Max-IoU matcher of RetinaNet (Lin et al. 2017, Sec. 4 "Anchors"), as in Faster R-CNN.

  An anchor is positive when its best IoU with a truth is ``>= positive_threshold`` (0.5),
  negative when ``< negative_threshold`` (0.4) and ignored in between. With
  ``allow_low_quality_matches`` every truth also claims the anchors that reach its highest IoU
  (ties included, IoU > 0), so no truth is left without an anchor; such an anchor keeps its own
  best truth as target (Detectron / torchvision behaviour).

  Args:
    anchors: ``[N, 4]`` anchors shared by the batch.
    gt_boxes: ``[B, M, 4]`` padded ground truth.
    gt_mask: ``[B, M]`` True for real boxes.
  """
  iou, best_iou, matched_gt = best_truths(anchors, gt_boxes, gt_mask)
  labels = jnp.where(best_iou >= positive_threshold, POSITIVE,
                     jnp.where(best_iou < negative_threshold, NEGATIVE, IGNORE))
  if allow_low_quality_matches:
    best_per_gt = jnp.max(iou, axis=1, keepdims=True)             # [B, 1, M]
    reaches_best = (iou == best_per_gt) & (best_per_gt > 0)
    labels = jnp.where(jnp.any(reaches_best, axis=-1), POSITIVE, labels)
  return Match(matched_gt=matched_gt, labels=labels.astype(jnp.int32))


CAFFE_MIN_OVERLAP = 1e-6   # bbox_util.cpp's MatchBBox keeps only overlaps above this


def column_best(overlap, box_taken):
  """Per truth, the best overlap ``[B, M]`` with a box not yet taken and that box ``[B, M]``
  (the lowest index among equals; -1 overlap where none is left)."""
  available = jnp.where(box_taken[:, :, None], -1.0, overlap)
  return jnp.max(available, axis=1), jnp.argmax(available, axis=1).astype(jnp.int32)


def greedy_bipartite(overlap):
  """SSD's bipartite step as Caffe's ``MatchBBox`` does it (weiliu89/caffe, branch ssd,
  src/caffe/util/bbox_util.cpp): repeatedly take the highest overlap among the truths and boxes
  not yet matched, the lowest box index and then the lowest truth index among equals, assign
  the pair and remove both, until no overlap is left. ``overlap [B, N, M]`` holds -1 for pairs
  that may not match (padding, overlaps <= 1e-6). Returns ``[B, N]`` int32: each box's truth,
  -1 for none.

  Each step needs only the per-truth best box (``column_best``); those are recomputed, a full
  ``[B, N, M]`` pass, only in a step whose removed box was another truth's best. The loop runs
  once per matched truth of the fullest image, plus one."""
  batch, num_boxes, num_truths = overlap.shape
  rows = jnp.arange(batch)
  no_box = jnp.zeros((batch, num_boxes), bool)

  def step(state):
    matched, box_taken, truth_done, best, best_box, _ = state
    value = jnp.where(truth_done, -1.0, best)
    top = jnp.max(value, axis=1)                                        # [B]
    # Among the truths at the top value, the lowest box, then the lowest truth.
    box_key = jnp.where(value == top[:, None], best_box, num_boxes)
    truth = jnp.argmin(box_key, axis=1).astype(jnp.int32)
    box = best_box[rows, truth]
    found = top > 0
    matched = matched.at[rows, box].set(jnp.where(found, truth, matched[rows, box]))
    box_taken = box_taken.at[rows, box].set(box_taken[rows, box] | found)
    truth_done = truth_done.at[rows, truth].set(truth_done[rows, truth] | found)
    stale = jnp.any(found[:, None] & ~truth_done & (best_box == box[:, None]))
    best, best_box = jax.lax.cond(stale, column_best, lambda *_: (best, best_box), overlap,
                                  box_taken)
    return matched, box_taken, truth_done, best, best_box, jnp.any(found)

  best, best_box = column_best(overlap, no_box)
  init = (jnp.full((batch, num_boxes), -1, jnp.int32), no_box,
          jnp.zeros((batch, num_truths), bool), best, best_box, jnp.asarray(True))
  return jax.lax.while_loop(lambda state: state[-1], step, init)[0]


def ssd_match(default_boxes, gt_boxes, gt_mask, *, threshold=0.5):
  """SSD's matching strategy (Liu et al. 2016, Sec. 2.2 "Matching strategy") as the authors'
  Caffe implements it (``MatchBBox`` with ``match_type: PER_PREDICTION``): first the greedy
  bipartite matching of :func:`greedy_bipartite`, which gives every truth that overlaps some
  box a box of its own, even when its best box is another truth's; then every box still
  unmatched goes to its best truth when that IoU is ``>= threshold`` (0.5; the lowest truth
  index among equals). The rest are negatives: SSD has no ignore band. Padded and zero-area
  truths, and overlaps of at most 1e-6, never match.

  Returns a :class:`Match` with labels POSITIVE or NEGATIVE.
  """
  iou = box_ops.pairwise_iou(default_boxes[None], gt_boxes)
  overlap = jnp.where(gt_mask[:, None, :] & (iou > CAFFE_MIN_OVERLAP), iou, -1.0)
  bipartite = greedy_bipartite(overlap)
  best_truth = jnp.argmax(overlap, axis=-1)
  matched_gt = jnp.where(bipartite >= 0, bipartite, best_truth)
  positive = (bipartite >= 0) | (jnp.max(overlap, axis=-1) >= threshold)
  return Match(matched_gt=matched_gt.astype(jnp.int32),
               labels=jnp.where(positive, POSITIVE, NEGATIVE).astype(jnp.int32))


def gather_matched(values, matched_gt):
  """``values [B, M, ...]`` gathered at ``matched_gt [B, N]`` -> ``[B, N, ...]``."""
  index = matched_gt.reshape(matched_gt.shape + (1,) * (values.ndim - 2))
  return jnp.take_along_axis(values, index, axis=1)


def shape_iou(wh_a, wh_b):
  """IoU ``[..., P]`` of boxes of sizes ``wh_a [..., 2]`` and ``wh_b [P, 2]`` placed on the
  same centre: the "IoU of shapes" YOLOv2 uses to pick a truth's prior (0 for empty pairs)."""
  inter = jnp.prod(jnp.minimum(wh_a[..., None, :], wh_b), axis=-1)
  union = jnp.prod(wh_a, axis=-1)[..., None] + jnp.prod(wh_b, axis=-1) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def yolo_truth_slots(grid, gt_boxes, gt_mask):
  """The one prediction slot responsible for each truth (YOLOv2 Sec. 2 "Dimension Clusters" /
  "Direct location prediction"; YOLOv3 Sec. 2.1: "one bounding box prior for each ground truth
  object"): the prior (of every map) whose shape has the highest IoU with the truth's, then the
  cell of that prior's map holding the truth's centre.

  Args:
    grid: a ``jaxdet.ops.anchors.YoloGrid``.
    gt_boxes: ``[B, M, 4]`` padded ground truth, input pixels.
    gt_mask: ``[B, M]`` True for real boxes (empty boxes are ignored too).
  Returns:
    ``[B, M]`` int32: each truth's slot, -1 for padding and empty boxes.
  """
  gt_boxes = gt_boxes.astype(jnp.float32)
  wh = gt_boxes[..., 2:] - gt_boxes[..., :2]
  prior = jnp.argmax(shape_iou(wh, jnp.asarray(grid.priors)), axis=-1)   # [B, M]
  tables = grid.level_tables()
  level = jnp.asarray(grid.prior_level)[prior]
  first_slot, cols, rows, per_cell, first_prior = jnp.moveaxis(
      jnp.asarray(tables[:, :5].astype(np.int32))[level], -1, 0)
  stride = jnp.asarray(tables[:, 5:].astype(np.float32))[level]           # [B, M, 2]
  cell = jnp.floor((gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2 / stride).astype(jnp.int32)
  cell_x = jnp.clip(cell[..., 0], 0, cols - 1)
  cell_y = jnp.clip(cell[..., 1], 0, rows - 1)
  slot = first_slot + (cell_y * cols + cell_x) * per_cell + prior - first_prior
  real = gt_mask & jnp.all(wh > 0, axis=-1)
  return jnp.where(real, slot, -1).astype(jnp.int32)


def yolo_assign(grid, truth_slots):
  """``[B, N]`` int32: the truth each prediction slot is responsible for, -1 for none, from
  :func:`yolo_truth_slots`' ``truth_slots [B, M]``. Two truths landing on the same slot: the
  later truth slot wins, as darknet's region and yolo layers, which write the truths in order,
  keep the last."""
  batch_size, num_truths = truth_slots.shape
  truth_index = jnp.where(truth_slots >= 0, jnp.arange(num_truths, dtype=jnp.int32), -1)
  owner = jnp.full((batch_size, grid.num_anchors), -1, jnp.int32)
  # A scatter-max is order independent, so the result is deterministic on every backend; a
  # padded truth's slot -1 is out of range and dropped.
  rows = jnp.arange(batch_size)[:, None]
  return owner.at[rows, jnp.where(truth_slots >= 0, truth_slots, grid.num_anchors)].max(
      truth_index, mode="drop")
