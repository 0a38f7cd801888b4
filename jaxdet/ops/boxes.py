"""Box formats, areas, IoU and the R-CNN box encoding.

Convention (docs/design.md): inside jaxdet a box is float32 ``(x1, y1, x2, y2)`` in pixels of the
network input, continuous coordinates (no "+1" on widths). Other formats are converted at the
edges (data/ and evaluation/) with the helpers below.

Every function is pure, works on any leading batch shape and is safe to differentiate on padded
(all-zero) boxes: divisions and logarithms guard their *inputs*, so the branch a ``jnp.where``
discards never produces a NaN gradient.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

# Detectron's clamp on the predicted log-scale, log(1000 / 16): keeps exp() finite for wild
# predictions early in training (Girshick, Detectron, box_utils.BBOX_XFORM_CLIP).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes):
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes):
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_area(boxes):
  """Area of (x1, y1, x2, y2) boxes; inverted boxes have area 0."""
  width = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  height = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return width * height


def host_iou(box, boxes):
  """IoU of one (x1, y1, x2, y2) box with each row of ``boxes [n, 4]``, in numpy float64 on the
  host (evaluation, dataset generation); a pair whose union has zero area gets 0."""
  box, boxes = np.asarray(box, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4)
  top_left = np.maximum(box[:2], boxes[:, :2])
  bottom_right = np.minimum(box[2:], boxes[:, 2:])
  inter_w, inter_h = np.clip(bottom_right - top_left, 0.0, None).T
  intersection = inter_w * inter_h
  box_area = (box[2] - box[0]) * (box[3] - box[1])
  union = box_area + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - intersection
  return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def pairwise_iou(boxes_a, boxes_b):
  """IoU matrix ``[..., N, M]`` between ``boxes_a [..., N, 4]`` and ``boxes_b [..., M, 4]``.

  Pairs whose union is empty (two degenerate boxes) get IoU 0.
  """
  a = boxes_a[..., :, None, :]
  b = boxes_b[..., None, :, :]
  inter_w = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
  inter_h = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0.0)
  intersection = inter_w * inter_h
  union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - intersection
  has_union = union > 0
  return jnp.where(has_union, intersection / jnp.where(has_union, union, 1.0), 0.0)


def clip_boxes(boxes, height, width):
  """Clips boxes to the image ``[0, width] x [0, height]``."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([jnp.clip(x1, 0, width), jnp.clip(y1, 0, height),
                    jnp.clip(x2, 0, width), jnp.clip(y2, 0, height)], axis=-1)


def encode_deltas(anchors, boxes, weights=(1.0, 1.0, 1.0, 1.0)):
  """R-CNN box regression targets (Girshick et al. 2014, Appendix C; Ren et al. 2015, Eq. 2).

  t_x = w_x (x - x_a) / w_a,  t_y = w_y (y - y_a) / h_a,
  t_w = w_w log(w / w_a),     t_h = w_h log(h / h_a),
  with (x, y, w, h) box centre and size, ``weights`` = (w_x, w_y, w_w, w_h) (the inverse of the
  "variances" of SSD). Degenerate boxes (padding) are guarded to a tiny positive size so the
  logarithm stays finite; callers mask those targets out.
  """
  anchor = xyxy_to_cxcywh(anchors)
  box = xyxy_to_cxcywh(boxes)
  eps = 1e-6
  anchor_w = jnp.maximum(anchor[..., 2], eps)
  anchor_h = jnp.maximum(anchor[..., 3], eps)
  wx, wy, ww, wh = weights
  return jnp.stack([
      wx * (box[..., 0] - anchor[..., 0]) / anchor_w,
      wy * (box[..., 1] - anchor[..., 1]) / anchor_h,
      ww * jnp.log(jnp.maximum(box[..., 2], eps) / anchor_w),
      wh * jnp.log(jnp.maximum(box[..., 3], eps) / anchor_h),
  ], axis=-1)


def decode_deltas(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0), scale_clip=BBOX_XFORM_CLIP):
  """Inverse of :func:`encode_deltas`; the log-scales are clamped at ``scale_clip``."""
  anchor = xyxy_to_cxcywh(anchors)
  wx, wy, ww, wh = weights
  dx, dy, dw, dh = jnp.moveaxis(deltas, -1, 0)
  cx = dx / wx * anchor[..., 2] + anchor[..., 0]
  cy = dy / wy * anchor[..., 3] + anchor[..., 1]
  w = jnp.exp(jnp.minimum(dw / ww, scale_clip)) * anchor[..., 2]
  h = jnp.exp(jnp.minimum(dh / wh, scale_clip)) * anchor[..., 3]
  return cxcywh_to_xyxy(jnp.stack([cx, cy, w, h], axis=-1))


# How a YOLO head's (t_x, t_y) place a box's centre (``location``):
#   "logistic": b = sigma(t) + c in cells, YOLOv2's direct location prediction (Sec. 2) and
#     YOLOv3's (Sec. 2.1);
#   "linear": b = t + c, YOLOv3 Sec. 5's "linear x, y predictions instead of logistic";
#   "anchor_offset": b = a + t p in pixels, the anchor's centre a moved by t times the prior's
#     size: the region proposal network's offsets that YOLOv2 replaced (Sec. 2, "Direct location
#     prediction") and YOLOv3 tried again (Sec. 5, "anchor box x, y offset predictions").
LOCATIONS = ("logistic", "linear", "anchor_offset")


def check_location(location):
  if location not in LOCATIONS:
    raise ValueError(f"model.location={location!r}: one of {LOCATIONS}")


def yolo_decode(t, cell_xy, stride, prior_wh, location="logistic", scale_clip=BBOX_XFORM_CLIP):
  """A YOLO head's boxes: the centre by ``location`` (above; Redmon & Farhadi 2017, Sec. 2,
  "Direct location prediction", is "logistic"), ``b_w = p_w e^{t_w}``, ``b_h = p_h e^{t_h}``,
  returned as (x1, y1, x2, y2) input pixels. ``t [..., N, 4]``; ``cell_xy``, ``stride``,
  ``prior_wh`` (pixels) ``[N, 2]`` (a ``jaxdet.ops.anchors.YoloGrid``); the log-scales are
  clamped at ``scale_clip``."""
  check_location(location)
  t = t.astype(jnp.float32)
  if location == "anchor_offset":
    centre = (cell_xy + 0.5) * stride + t[..., :2] * prior_wh
  else:
    offset = jax.nn.sigmoid(t[..., :2]) if location == "logistic" else t[..., :2]
    centre = (offset + cell_xy) * stride
  size = prior_wh * jnp.exp(jnp.minimum(t[..., 2:], scale_clip))
  return jnp.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def yolo_encode(boxes, cell_xy, stride, prior_wh, location="logistic"):
  """Targets of :func:`yolo_decode` for ``boxes [..., 4]`` at slots of ``cell_xy``, ``stride``,
  ``prior_wh`` (broadcast against the boxes): the centre's target (for "logistic" the target of
  ``sigma(t_x), sigma(t_y)``, the offset in its cell, in [0, 1) for the cell holding it; else of
  ``t_x, t_y`` themselves) and ``(t_w, t_h) = log(w / p_w, h / p_h)``. Degenerate boxes
  (padding) get a tiny size, so the log stays finite."""
  check_location(location)
  box = xyxy_to_cxcywh(boxes)
  if location == "anchor_offset":
    centre = (box[..., :2] - (cell_xy + 0.5) * stride) / prior_wh
  else:
    centre = box[..., :2] / stride - cell_xy
  log_scale = jnp.log(jnp.maximum(box[..., 2:], 1e-6) / prior_wh)
  return jnp.concatenate([centre, log_scale], axis=-1)
