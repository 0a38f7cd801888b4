"""Assignment of ground truth to anchors, vectorized over a padded batch.

Ground truth arrives padded (DESIGN.md): ``boxes [B, M, 4]``, ``mask [B, M]``. Padded slots
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


def ssd_match(default_boxes, gt_boxes, gt_mask, *, threshold=0.5):
  """SSD's matching strategy (Liu et al. 2016, Sec. 2.2 "Matching strategy").

  First every truth is matched to the default box with its best IoU (the MultiBox bipartite
  step; a truth overlapping no box at all, IoU 0, claims none); then every other default box is
  matched to its best truth when that IoU is ``> threshold`` (0.5). The rest are negatives: SSD
  has no ignore band. When two truths claim the same box as their best, the higher slot wins.

  Returns a :class:`Match` with labels POSITIVE or NEGATIVE.
  """
  iou, best_iou, matched_gt = best_truths(default_boxes, gt_boxes, gt_mask)
  best_box = jnp.argmax(iou, axis=1)                            # [B, M]
  claims = ((jnp.arange(iou.shape[1])[None, :, None] == best_box[:, None, :])
            & gt_mask[:, None, :] & (jnp.max(iou, axis=1) > 0)[:, None, :])
  claimed = jnp.any(claims, axis=-1)
  claimant = jnp.argmax(jnp.where(claims, jnp.arange(iou.shape[2]), -1), axis=-1)
  matched_gt = jnp.where(claimed, claimant, matched_gt).astype(jnp.int32)
  labels = jnp.where(claimed | (best_iou > threshold), POSITIVE, NEGATIVE)
  return Match(matched_gt=matched_gt, labels=labels.astype(jnp.int32))


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
