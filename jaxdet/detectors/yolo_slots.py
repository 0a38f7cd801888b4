"""Target assignment, the box-coordinate loss and decoding shared by YOLOv2, YOLO9000 and
YOLOv3 (and the per-image loss normalisation of every YOLO family).

A YOLOv2/v3 head predicts, at every slot of a ``jaxdet.ops.anchors.YoloGrid`` (cell x prior),
``t = (t_x, t_y, t_w, t_h)``, an objectness logit ``t_o`` and class logits. Each truth is
assigned to exactly one slot (``jaxdet.ops.matching.yolo_truth_slots``); the coordinate loss
compares YOLOv2's parametrisation (the sigmoid offsets in the cell and the log scales) with the
truth's, weighted by ``2 - w h / (W H)`` so that small boxes count more (darknet's region layer
since March 2017 and its yolo layer). Squared errors are halved (``losses.half_squared_error``):
their gradients are then darknet's deltas.
"""
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet.detectors import base
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import losses
from jaxdet.ops import matching


class SlotTargets(NamedTuple):
  """Targets of every prediction slot ``[B, N, ...]``; only ``positive`` slots carry a truth."""
  positive: jax.Array        # [B, N] bool: the slot is responsible for a truth
  labels: jax.Array          # [B, N] int32 dataset class of that truth (0 elsewhere)
  box_targets: jax.Array     # [B, N, 4] yolo_encode's targets (0 elsewhere)
  coord_weight: jax.Array    # [B, N] 2 - w h / (W H) of the truth, or 1 (0 elsewhere)
  assigned_iou: jax.Array    # [B, N] IoU of the predicted box with its truth (0 elsewhere)
  best_iou: jax.Array        # [B, N] highest IoU of the predicted box with any truth
  truth_slots: jax.Array     # [B, M] int32 slot of each truth, -1 for padding


def slot_targets(grid, box_logits, batch, area_weighted=True, location="logistic"):
  """Assigns the truths of ``batch`` (``boxes [B, M, 4]``, ``labels``, ``mask``) to the slots of
  ``grid`` and measures the predicted boxes (``box_logits [B, N, 4]`` placed by ``location``,
  ``jaxdet.ops.boxes.LOCATIONS``; not differentiated) against them. ``area_weighted``: the
  coordinate weight is ``2 - w h / (W H)`` (darknet's region layer since March 2017, its yolo
  layer), else 1 (the region layer of Nov. 2016)."""
  cell_xy, stride, prior_wh = (jnp.asarray(a) for a in (grid.cell_xy, grid.stride, grid.prior_wh))
  gt_boxes = batch["boxes"].astype(jnp.float32)
  truth_slots = matching.yolo_truth_slots(grid, gt_boxes, batch["mask"])
  owner = matching.yolo_assign(grid, truth_slots)
  positive = owner >= 0
  slot_truth = matching.gather_matched(gt_boxes, jnp.maximum(owner, 0))      # [B, N, 4]
  labels = matching.gather_matched(batch["labels"], jnp.maximum(owner, 0))
  box_targets = box_ops.yolo_encode(slot_truth, cell_xy, stride, prior_wh, location)
  height, width = batch["image"].shape[1:3]
  relative_area = box_ops.box_area(slot_truth) / (height * width)
  predicted = box_ops.yolo_decode(jax.lax.stop_gradient(box_logits), cell_xy, stride, prior_wh,
                                  location)
  iou = box_ops.pairwise_iou(predicted, gt_boxes)                            # [B, N, M]
  iou = jnp.where(batch["mask"][:, None, :], iou, 0.0)
  assigned_iou = jnp.take_along_axis(iou, jnp.maximum(owner, 0)[..., None], axis=-1)[..., 0]
  return SlotTargets(
      positive=positive,
      labels=jnp.where(positive, labels, 0).astype(jnp.int32),
      box_targets=jnp.where(positive[..., None], box_targets, 0.0),
      coord_weight=jnp.where(positive, 2.0 - relative_area if area_weighted else 1.0, 0.0),
      assigned_iou=jnp.where(positive, assigned_iou, 0.0),
      best_iou=jnp.max(iou, axis=-1, initial=0.0),
      truth_slots=truth_slots)


def coordinate_loss(box_logits, targets, xy_loss="squared", location="logistic"):
  """``[B, N]``: the coordinate weight times ``E_xy + [(t_w - w*)^2 + (t_h - h*)^2] / 2`` at the
  positive slots, 0 elsewhere, with ``E_xy``, for the "logistic" ``location``,

  * ``"squared"``: ``[(sigma(t_x) - x*)^2 + (sigma(t_y) - y*)^2] / 2``, darknet's region layer
    (YOLOv2), whose delta ``x* - sigma(t_x)`` is back-propagated through the sigmoid;
  * ``"logistic"``: the binary cross-entropy of ``sigma(t_x)`` with the soft target ``x*`` (and
    y), darknet's yolo layer (YOLOv3), which passes ``x* - sigma(t_x)`` to ``t_x`` without the
    sigmoid's derivative: that is this term's gradient;

  and for the "linear" and "anchor_offset" locations (no sigmoid) ``[(t_x - x*)^2 + (t_y -
  y*)^2] / 2`` whatever ``xy_loss``.
  """
  box_logits = box_logits.astype(jnp.float32)
  xy_logits, xy_targets = box_logits[..., :2], targets.box_targets[..., :2]
  if location != "logistic":
    xy_error = losses.half_squared_error(xy_logits, xy_targets)
  elif xy_loss == "squared":
    xy_error = losses.half_squared_error(jax.nn.sigmoid(xy_logits), xy_targets)
  elif xy_loss == "logistic":
    xy_error = losses.binary_cross_entropy(xy_logits, xy_targets)
  else:
    raise ValueError(f"xy_loss={xy_loss!r}: 'squared' or 'logistic'")
  wh_error = losses.half_squared_error(box_logits[..., 2:], targets.box_targets[..., 2:])
  error = jnp.sum(xy_error, axis=-1) + jnp.sum(wh_error, axis=-1)
  return jnp.where(targets.positive, targets.coord_weight * error, 0.0)


def slot_label_union(targets, labels, num_classes):
  """``[B, N, K]`` multi-hot: the classes of every truth assigned to each slot (``labels [B,
  M]``). darknet's yolo layer writes a second truth's class into a slot that already has one
  without clearing the first (``delta_yolo_class``), so a shared slot learns both."""
  batch_size, num_slots = targets.positive.shape
  rows = jnp.arange(batch_size)[:, None]
  slots = jnp.where(targets.truth_slots >= 0, targets.truth_slots, num_slots)
  union = jnp.zeros((batch_size, num_slots, num_classes), jnp.float32)
  return union.at[rows, slots, labels].max(1.0, mode="drop")


def decode_detections(grid, box_logits, scores, image_size, decode_config, classes=None,
                      location="logistic"):
  """Detections from per-slot class ``scores [B, N, K]`` (already the products with objectness):
  the ``decode_config.pre_nms_topk`` best (slot, class) pairs, their boxes by
  :func:`jaxdet.ops.boxes.yolo_decode` at ``location``, then ``base.nms_detections``.
  ``classes [B, N, K]`` names the class of each score (default: its column)."""
  batch_size, num_slots, num_classes = scores.shape
  top_scores, top_index = jax.lax.top_k(scores.reshape(batch_size, -1),
                                        min(decode_config.pre_nms_topk, num_slots * num_classes))
  slot = top_index // num_classes
  t = jnp.take_along_axis(box_logits, slot[..., None], axis=1)
  boxes = box_ops.yolo_decode(t, *(jnp.asarray(a)[slot] for a in (grid.cell_xy, grid.stride,
                                                                    grid.prior_wh)), location)
  if classes is None:
    top_classes = top_index % num_classes
  else:
    top_classes = jnp.take_along_axis(classes.reshape(batch_size, -1), top_index, axis=1)
  return base.nms_detections(boxes, top_scores, top_classes.astype(jnp.int32), image_size,
                             decode_config)


def per_image_sum(terms, positive):
  """``(loss, metrics)`` of the YOLO families from their loss ``terms`` (per slot ``[B, ...]``,
  or already summed) and ``positive [B, ...]``: each term's sum over slots and images divided
  by the number of images of the global batch (darknet scales its update by the batch size),
  plus ``num_positive``; the loss is the sum of the terms."""
  num_images = positive.shape[0]
  metrics = {name: jnp.sum(value) / num_images for name, value in terms.items()}
  metrics["num_positive"] = jnp.sum(positive).astype(jnp.float32)
  return sum(metrics[name] for name in terms), metrics


def read_priors(config, key):
  """The priors of ``config.priors``, or of the JSON ``config.priors_file`` written by
  ``scripts/kmeans_anchors.py`` (its ``key`` list: "priors_cells" or "priors_pixels")."""
  if not config.priors_file:
    return np.asarray(config.priors, np.float32)
  with open(config.priors_file, encoding="utf-8") as f:
    written = json.load(f)
  if key not in written:
    raise ValueError(f"{config.priors_file} has no {key!r}; write it with "
                     "scripts/kmeans_anchors.py")
  return np.asarray(written[key], np.float32)
