"""YOLOv1: "You Only Look Once: Unified, Real-Time Object Detection" (Redmon, Divvala, Girshick,
Farhadi; CVPR 2016).

One file for the family: the unified detection of Sec. 2 (an S x S grid, B boxes and K
conditional class probabilities per cell), the target assignment and sum-squared loss of
Sec. 2.2 (Eq. 3) and the inference of Sec. 2.3 (class-specific confidences, Eq. 1, then
non-maximal suppression). The network is ``jaxdet.models.yolo_v1_net``.

Output layout (``outputs["grid"]``, float32 ``[batch, S, S, 5B + K]``): per cell, B boxes of
``(x, y, sqrt_w, sqrt_h, C)`` then the K class scores. ``x, y`` are the offsets of the box
centre in its cell (0..1, as the paper); ``sqrt_w, sqrt_h`` are the square roots of the width
and height normalized by the image: the network predicts the square roots directly, as darknet's
detection layer with ``sqrt=1`` (the released cfg), so the loss term of Eq. 3,
``(sqrt w - sqrt w_hat)^2``, is a plain squared error on an output and stays finite and
differentiable everywhere (``w = sqrt_w^2``). ``C`` is the box's confidence, regressed to
``IoU(pred, truth)`` (Sec. 2); the class scores are the conditional class probabilities
``Pr(Class_k | Object)``, regressed with squared error like everything else (no softmax: the
paper's "sum-squared error", darknet's ``softmax=0``). All outputs are linear (Sec. 2.2).

Target assignment (Sec. 2.2), jit-compiled and vectorized over the padded batch:
  * a truth belongs to the cell that contains its centre;
  * two truths whose centres fall in one cell: the cell takes the one of larger area, on equal
    areas the lower slot. (Darknet shuffles the truths and keeps the first one written, so its
    choice is random; ours is deterministic and does not depend on the slot order.)
  * the responsible predictor of a cell is the one of its B boxes with the highest IoU with the
    truth, computed in image coordinates on the stop-gradient predictions; ties go to the lower
    index. When all B boxes miss the truth (IoU 0 for every one, common early in training) the
    one nearest in ``(cx, cy, w, h)`` normalized by the image wins, darknet's RMSE fallback,
    so the B predictors still specialize.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet import config as config_lib
from jaxdet import detectors
from jaxdet.detectors import base
from jaxdet.detectors import yolo_slots
from jaxdet.models import yolo_v1_net
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import losses


class YOLOv1Model(nn.Module):
  net: nn.Module

  def __call__(self, images, train=False):
    return {"grid": self.net(images, train=train)}


def split_grid(grid, boxes_per_cell):
  """``[..., S, S, 5B + K]`` -> box outputs ``[..., S, S, B, 4]`` (x, y, sqrt_w, sqrt_h),
  confidences ``[..., S, S, B]`` and class scores ``[..., S, S, K]``."""
  per_box = grid[..., :5 * boxes_per_cell].reshape(*grid.shape[:-1], boxes_per_cell, 5)
  return per_box[..., :4], per_box[..., 4], grid[..., 5 * boxes_per_cell:]


def cell_corners(grid_size):
  """``[S, S, 2]``: (column, row) of each cell, the cell's top-left corner in cell units."""
  rows, cols = jnp.meshgrid(jnp.arange(grid_size), jnp.arange(grid_size), indexing="ij")
  return jnp.stack([cols, rows], axis=-1).astype(jnp.float32)


def box_outputs_to_cxcywh(box_outputs):
  """Box outputs ``[..., S, S, B, 4]`` -> ``(cx, cy, w, h)`` normalized by the image (0..1):
  ``cx = (col + x) / S``, ``w = sqrt_w^2`` (darknet's ``convert_yolo_detections``)."""
  grid_size = box_outputs.shape[-3]
  centre = (cell_corners(grid_size)[:, :, None, :] + box_outputs[..., :2]) / grid_size
  return jnp.concatenate([centre, jnp.square(box_outputs[..., 2:])], axis=-1)


def to_pixels_xyxy(cxcywh, image_size):
  """Normalized ``(cx, cy, w, h)`` -> pixel ``(x1, y1, x2, y2)`` of an ``(h, w)`` image."""
  height, width = image_size
  scale = jnp.asarray([width, height, width, height], jnp.float32)
  return box_ops.cxcywh_to_xyxy(cxcywh * scale)


def normalized_cxcywh(boxes, image_size):
  """Pixel ``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)`` normalized by the image."""
  height, width = image_size
  return box_ops.xyxy_to_cxcywh(boxes) / jnp.asarray([width, height, width, height], jnp.float32)


def assign_cells(boxes, mask, image_size, grid_size):
  """Which truth each cell holds (Sec. 2: "the grid cell that contains the centre").

  ``boxes [B, M, 4]`` pixels, ``mask [B, M]``. Returns ``(has_object [B, S, S] bool, slot
  [B, S, S] int32)``: the slot of the truth the cell takes (0 where ``has_object`` is False);
  among the truths of one cell the largest wins, on equal areas the lower slot."""
  batch, max_boxes = mask.shape
  centre = normalized_cxcywh(boxes, image_size)[..., :2] * grid_size
  col_row = jnp.clip(jnp.floor(centre), 0, grid_size - 1).astype(jnp.int32)
  cell = col_row[..., 1] * grid_size + col_row[..., 0]                        # [B, M]
  member = (cell[..., None] == jnp.arange(grid_size ** 2)) & mask[..., None]  # [B, M, S*S]
  area = box_ops.box_area(boxes)
  key = jnp.where(member, area[..., None], -1.0)
  slot = jnp.argmax(key, axis=1).astype(jnp.int32)     # the first maximum: the lower slot
  has_object = jnp.any(member, axis=1)
  shape = (batch, grid_size, grid_size)
  return has_object.reshape(shape), jnp.where(has_object, slot, 0).reshape(shape)


def responsible_boxes(pred_cxcywh, truth_cxcywh, image_size):
  """``[B, S, S, nb]`` one-hot of each cell's responsible predictor and the IoUs of its ``nb``
  boxes with the cell's truth (Sec. 2.2: "the predictor with the highest current IoU"), both on
  stop-gradient predictions. With no overlap at all, the box nearest in normalized
  ``(cx, cy, w, h)`` (darknet's fallback)."""
  pred = jax.lax.stop_gradient(pred_cxcywh)
  pred_xyxy = to_pixels_xyxy(pred, image_size)
  truth_xyxy = to_pixels_xyxy(truth_cxcywh, image_size)
  iou = box_ops.pairwise_iou(pred_xyxy, truth_xyxy[..., None, :])[..., 0]      # [B, S, S, nb]
  distance = jnp.sum(jnp.square(pred - truth_cxcywh[..., None, :]), axis=-1)
  best = jnp.where(jnp.max(iou, axis=-1) > 0, jnp.argmax(iou, axis=-1),
                   jnp.argmin(distance, axis=-1))
  return jax.nn.one_hot(best, pred.shape[-2], dtype=jnp.bool_), iou


class YOLOv1(base.Detector):
  """The YOLOv1 family behind the :class:`base.Detector` interface."""

  def __init__(self, config):
    self.config = config
    self.grid_size, self.boxes_per_cell = config.grid_size, config.boxes_per_cell
    net_config = config.net
    backend = base.backend_of(config)
    net = yolo_v1_net.YOLOv1Net(
        grid_size=config.grid_size,
        outputs_per_cell=5 * config.boxes_per_cell + config.num_classes,
        stages=config_lib.nested_tuples(net_config.stages),
        fc_layers=config_lib.nested_tuples(net_config.fc_layers),
        dropout_rate=net_config.dropout_rate, batch_norm=net_config.batch_norm,
        dtype=jnp.dtype(config.dtype), backend=backend)
    super().__init__(YOLOv1Model(net=net), config.num_classes, backend)

  def loss(self, outputs, batch):
    """Half of Eq. 3, normalized by the number of images of the global batch.

    ``lambda_coord * sum_ij 1_ij^obj [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2
    + (sqrt h - sqrt h^)^2]`` over the responsible boxes, ``+ sum_ij 1_ij^obj (C - C^)^2`` with
    ``C^ = IoU(pred, truth)`` (stop-gradient), ``+ lambda_noobj sum_ij 1_ij^noobj C^2``,
    ``+ sum_i 1_i^obj sum_k (p_i(k) - p^_i(k))^2`` with ``p^`` the one-hot of the cell's class.

    ``1_ij^noobj`` is, by default, every box that is not responsible (darknet's detection
    layer: the other boxes of a cell with an object are pushed to 0 too). With
    ``loss.confidence_per_cell`` it is the cell's indicator ``1 - 1_i^obj`` for each of its B
    boxes, Eq. 3 read with its confidence ``C_i`` indexed by the cell: the B confidences of a
    cell without objects are penalized towards 0, while in a cell with an object only the
    responsible box's confidence enters the loss.

    Every squared error is halved: darknet's detection layer (src/detection_layer.c)
    back-propagates ``scale * (target - output)``, the gradient of half the squared error, so
    ``jax.grad`` of each term equals darknet's delta and the paper's learning rates and weight
    decay carry over unchanged. The sum is divided by the number of images, as darknet's SGD
    update divides the summed gradient by the batch; under sharded jit the shape is the global
    one, so every device divides by the same number. The metrics are the four weighted terms
    (they add up to the loss) and ``num_positive``, the responsible boxes of the batch.
    """
    cfg = self.config.loss
    grid = outputs["grid"].astype(jnp.float32)
    image_size = batch["image"].shape[1:3]
    box_outputs, confidence, class_scores = split_grid(grid, self.boxes_per_cell)
    pred_cxcywh = box_outputs_to_cxcywh(box_outputs)

    has_object, slot = assign_cells(batch["boxes"], batch["mask"], image_size, self.grid_size)
    batch_index = jnp.arange(grid.shape[0])[:, None, None]
    truth_cxcywh = normalized_cxcywh(batch["boxes"][batch_index, slot], image_size)
    responsible, iou = responsible_boxes(pred_cxcywh, truth_cxcywh, image_size)
    responsible &= has_object[..., None]

    # Targets of the responsible box: centre offset in the cell, square roots of the size. Cells
    # without an object hold slot 0's (or padding's) values; every use below is masked.
    offset = truth_cxcywh[..., :2] * self.grid_size - cell_corners(self.grid_size)
    sqrt_size = jnp.sqrt(jnp.maximum(truth_cxcywh[..., 2:], 0.0))
    box_target = jnp.concatenate([offset, sqrt_size], axis=-1)[..., None, :]   # [B, S, S, 1, 4]
    coord_error = jnp.sum(losses.half_squared_error(box_outputs, box_target), axis=-1)
    coord_loss = cfg.lambda_coord * jnp.sum(jnp.where(responsible, coord_error, 0.0))

    # C^ = IoU of the stop-gradient prediction: a constant target.
    object_loss = jnp.sum(jnp.where(responsible, losses.half_squared_error(confidence, iou), 0.0))
    if cfg.confidence_per_cell:
      no_object = jnp.broadcast_to(~has_object[..., None], responsible.shape)
    else:
      no_object = ~responsible
    noobject_loss = cfg.lambda_noobj * jnp.sum(
        jnp.where(no_object, losses.half_squared_error(confidence, 0.0), 0.0))

    class_target = jax.nn.one_hot(batch["labels"][batch_index, slot], self.num_classes)
    class_error = jnp.sum(losses.half_squared_error(class_scores, class_target), axis=-1)
    class_loss = jnp.sum(jnp.where(has_object, class_error, 0.0))

    return yolo_slots.per_image_sum({"coord_loss": coord_loss, "object_loss": object_loss,
                                     "noobject_loss": noobject_loss, "class_loss": class_loss},
                                    responsible)

  def decode(self, outputs, image_size):
    """Sec. 2 (Eq. 1) at test time: the class-specific confidence of box j of cell i for class
    k is ``C_ij * Pr(Class_k | Object)_i``; every (box, class) pair above ``score_threshold`` is
    a candidate for class-aware non-maximal suppression (Sec. 2.3), which keeps the best
    ``max_detections`` per image. Boxes are clipped to the image."""
    grid = outputs["grid"].astype(jnp.float32)
    batch = grid.shape[0]
    box_outputs, confidence, class_scores = split_grid(grid, self.boxes_per_cell)
    boxes = to_pixels_xyxy(box_outputs_to_cxcywh(box_outputs), image_size)
    scores = confidence[..., None] * class_scores[..., None, :]           # [B, S, S, nb, K]
    boxes = jnp.broadcast_to(boxes[..., None, :], (*scores.shape, 4)).reshape(batch, -1, 4)
    classes = jnp.broadcast_to(jnp.arange(self.num_classes, dtype=jnp.int32), scores.shape)
    return base.nms_detections(boxes, scores.reshape(batch, -1), classes.reshape(batch, -1),
                               tuple(image_size), self.config.decode)


@detectors.register("yolo_v1")
def build(config):
  return YOLOv1(config)
