"""YOLOv3: "YOLOv3: An Incremental Improvement" (Redmon & Farhadi, 2018).

One file for the family: Darknet-53 features (``jaxdet.models.darknet.Darknet53``, Sec. 2.4),
predictions at three scales with an upsample-and-concatenate neck (Sec. 2.3, darknet's
cfg/yolov3.cfg), the loss of Sec. 2.1-2.2 and the decoding of darknet's evaluation.

Every slot of the three maps predicts ``t_x, t_y, t_w, t_h``, an objectness logit and ``K``
class logits (Sec. 2.3: "N x N x [3 * (4 + 1 + 80)]"), boxes by YOLOv2's direct location
prediction (Sec. 2.1, ``jaxdet.ops.boxes.yolo_decode``). The 9 k-means priors are fixed in
input pixels (darknet's yolo layer divides them by the network size, so they do not scale with
the input), 3 per scale: the smallest at stride 8. Outputs and slots are ordered level-major
from stride 8 to stride 32, then row, column, prior (``jaxdet.ops.anchors.YoloGrid``).

The loss is darknet's yolo layer (src/yolo_layer.c, ``forward_yolo_layer``; its backward pass
adds the deltas to the raw outputs as they are), each term's ``jax.grad`` with respect to the
raw outputs equal to darknet's delta. The paper and the code differ in three places:
  * coordinates (``loss.coord_loss``): the paper says "sum of squared error loss" (Sec. 2.1),
    ``"sse"`` here, YOLOv2's halved squared errors on ``sigma(t_x), sigma(t_y), t_w, t_h``
    (``yolo_slots.coordinate_loss``). darknet passes ``scale (x* - sigma(t_x))`` to ``t_x``
    without the sigmoid's derivative, the gradient of a binary cross-entropy on ``sigma(t_x)``,
    and ``scale (t_w* - t_w)`` to ``t_w``: ``"darknet"``, what the recipes use, since it trained
    the published models. ``scale = 2 - w h / (W H)`` in both;
  * the ignore threshold: the paper says 0.5 (Sec. 2.1), as cfg/yolov3.cfg released with it
    (2018-03-25); that cfg says 0.7 since 2018-05-06 (``loss.ignore_threshold``; the recipes:
    0.5);
  * a slot assigned two truths learns the classes of both (darknet's ``delta_yolo_class`` adds
    the later class to the earlier one's), its box and objectness the later truth's.
Objectness and classes are binary cross-entropies in both (Sec. 2.1, 2.2), as darknet's
``target - sigma(t)`` deltas on the raw logits.

Sec. 5's "things we tried that didn't work" are options: ``model.location="anchor_offset"``
(x, y as multiples of the prior's size) or ``"linear"`` (no logistic; ``jaxdet.ops.boxes``),
``loss.objectness_loss="focal"`` and the dual IoU thresholds
(``loss.objectness_positive_iou=0.7``, ``loss.ignore_threshold=0.3``).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import detectors
from jaxdet.detectors import base
from jaxdet.detectors import yolo_slots
from jaxdet.models import backbones
from jaxdet.models import darknet
from jaxdet.models import layers
from jaxdet.ops import anchors as anchor_lib
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import losses

STRIDES = (8, 16, 32)   # Sec. 2.3: three scales, the last map and two 2x upsampled ones


class DetectionBlock(nn.Module):
  """yolov3.cfg's five alternating convolutions (1x1 ``width``, 3x3 ``2 width``, x2, then 1x1
  ``width``) -- the "few more convolutional layers" of Sec. 2.3 -- returning both the route
  (the last 1x1 output, sent up to the next finer scale) and the prediction: 3x3 ``2 width``
  then a linear 1x1 convolution with bias to ``outputs`` channels."""
  width: int
  outputs: int
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train):
    for index, (channels, kernel) in enumerate([(self.width, 1), (2 * self.width, 3)] * 2
                                               + [(self.width, 1)], start=1):
      x = darknet.ConvBNLeaky(channels, kernel, dtype=self.dtype,
                              backend=self.backend, name=f"conv{index}")(x, train)
    y = darknet.ConvBNLeaky(2 * self.width, 3, dtype=self.dtype,
                            backend=self.backend, name="conv6")(x, train)
    y = layers.conv(self.outputs, 1, use_bias=True, dtype=self.dtype,
                    backend=self.backend, name="predict")(y)
    return x, y.astype(jnp.float32)


class YOLOv3Model(nn.Module):
  """Darknet-53 and the three-scale head of Sec. 2.3 / yolov3.cfg: the stride-32 map feeds a
  :class:`DetectionBlock`; its route goes through a 1x1 conv (the next scale's width), a
  nearest 2x upsampling and is concatenated with the backbone's stride-16 map, which feeds the
  next block; once more for stride 8."""
  backbone: nn.Module
  num_classes: int
  priors_per_cell: int = 3
  neck_widths: tuple = (128, 256, 512)     # the 1x1 widths at strides 8, 16, 32
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, images, train=False):
    feature_sizes(images.shape[1:3])                    # the maps must align for the concats
    features = self.backbone(images, train=train)
    per_slot = 5 + self.num_classes
    route, predictions = None, []
    for level in reversed(range(len(STRIDES))):          # coarse to fine, as the cfg
      x = features[f"stride{STRIDES[level]}"]
      if route is not None:
        route = darknet.ConvBNLeaky(self.neck_widths[level], 1, dtype=self.dtype,
                                    backend=self.backend,
                                    name=f"lateral{STRIDES[level]}")(route, train)
        x = jnp.concatenate([layers.upsample_nearest_2x(route), x], axis=-1)
      route, y = DetectionBlock(self.neck_widths[level], self.priors_per_cell * per_slot,
                                dtype=self.dtype,
                                backend=self.backend, name=f"head{STRIDES[level]}")(x, train)
      predictions.insert(0, y.reshape(y.shape[0], -1, per_slot))   # [B, H*W*A, 5 + K]
    y = jnp.concatenate(predictions, axis=1)
    return {"box_logits": y[..., :4], "objectness_logits": y[..., 4], "class_logits": y[..., 5:]}


def feature_sizes(image_size):
  """``(rows, cols)`` of the stride-8, 16 and 32 maps; the input must be a multiple of 32."""
  height, width = image_size
  if height % STRIDES[-1] or width % STRIDES[-1]:
    raise ValueError(f"YOLOv3 needs an image size that is a multiple of 32, got {image_size}")
  return tuple((height // s, width // s) for s in STRIDES)


COORD_LOSSES = {"darknet": "logistic", "sse": "squared"}   # -> yolo_slots.coordinate_loss


def objectness_terms(logits, positive, negative, config):
  """``(object, no-object)`` sums of the objectness loss: target 1 at the ``positive`` slots, 0
  at the ``negative`` ones (logistic regression, Sec. 2.1), or the focal loss of Sec. 5 with
  ``config.objectness_loss = "focal"``."""
  targets = positive.astype(jnp.float32)
  if config.objectness_loss == "bce":
    per_slot = losses.binary_cross_entropy(logits, targets)
  elif config.objectness_loss == "focal":
    per_slot = losses.sigmoid_focal_loss(logits, targets, config.focal_alpha, config.focal_gamma)
  else:
    raise ValueError(f"loss.objectness_loss={config.objectness_loss!r}: 'bce' or 'focal'")
  return (jnp.sum(jnp.where(positive, per_slot, 0.0)),
          jnp.sum(jnp.where(negative, per_slot, 0.0)))


def class_term(logits, targets, labels, num_classes):
  """Independent logistic classifiers (Sec. 2.2: "we simply use independent logistic
  classifiers", binary cross-entropy, no softmax) against the classes of the truths assigned to
  each positive slot (``yolo_slots.slot_label_union`` of ``labels [B, M]``)."""
  class_targets = yolo_slots.slot_label_union(targets, labels, num_classes)
  bce = losses.binary_cross_entropy(logits, class_targets)
  return jnp.sum(jnp.where(targets.positive[..., None], bce, 0.0))


class YOLOv3(base.Detector):
  """The YOLOv3 family behind the :class:`base.Detector` interface."""

  def __init__(self, config):
    self.config = config
    self.location = config.get("location", "logistic")   # absent from configs saved before it
    box_ops.check_location(self.location)
    dtype, backend = jnp.dtype(config.dtype), base.backend_of(config)
    backbone = backbones.build("darknet53", config.backbone, dtype=dtype, backend=backend)
    masks = tuple(tuple(m) for m in config.priors_per_level)
    if len(masks) != len(STRIDES) or len({len(m) for m in masks}) != 1:
      raise ValueError(f"priors_per_level needs 3 equal-sized masks, got {masks}")
    priors = yolo_slots.read_priors(config, "priors_pixels")
    self.priors_per_level = tuple(tuple(tuple(priors[i]) for i in m) for m in masks)
    model = YOLOv3Model(backbone=backbone, num_classes=config.num_classes,
                        priors_per_cell=len(masks[0]), neck_widths=tuple(config.neck_widths),
                        dtype=dtype, backend=backend)
    super().__init__(model, config.num_classes, backend)

  @functools.lru_cache(maxsize=16)
  def grid(self, image_size):
    """The :class:`jaxdet.ops.anchors.YoloGrid` of inputs of ``image_size`` (cached)."""
    return anchor_lib.yolo_grid(tuple(image_size), feature_sizes(tuple(image_size)),
                                self.priors_per_level)

  def prior_shapes(self, image_size):
    return np.unique(self.grid(tuple(image_size)).prior_wh, axis=0)

  def loss(self, outputs, batch):
    """Sec. 2.1-2.2 with darknet's yolo layer:

    * coordinates: ``yolo_slots.coordinate_loss`` in the form of ``loss.coord_loss`` (module
      docstring) at the slot assigned to each truth (one prior per truth, the best by shape IoU
      of all nine);
    * objectness: logistic regression, target 1 at the assigned slots, 0 at the others except
      those whose predicted box overlaps a truth by more than ``ignore_threshold`` (0.5), which
      are ignored; or the focal loss (Sec. 5). With ``objectness_positive_iou`` > 0, Sec. 5's
      dual thresholds: a slot whose box overlaps a truth by at least that much is a positive
      too (Faster R-CNN's .7, with ``ignore_threshold`` .3);
    * classes: binary cross-entropy of independent logistic classifiers at the assigned slots.

    Each term is summed over the slots and divided by the number of images in the *global*
    batch (darknet's convention), so a batch without objects still trains the no-object term.
    """
    cfg = self.config.loss
    if cfg.coord_loss not in COORD_LOSSES:
      raise ValueError(f"loss.coord_loss={cfg.coord_loss!r}: one of {tuple(COORD_LOSSES)}")
    grid = self.grid(batch["image"].shape[1:3])
    targets = yolo_slots.slot_targets(grid, outputs["box_logits"], batch,
                                      location=self.location)
    # Sec. 5's dual thresholds: a slot whose box overlaps a truth by objectness_positive_iou
    # is an objectness positive too (0: off, as the paper settled).
    positive_iou = cfg.get("objectness_positive_iou", 0.0)
    object_positive = targets.positive | ((targets.best_iou >= positive_iou) & (positive_iou > 0))
    ignored = ~object_positive & (targets.best_iou > cfg.ignore_threshold)
    object_loss, noobject_loss = objectness_terms(
        outputs["objectness_logits"], object_positive, ~object_positive & ~ignored, cfg)
    terms = {"coord_loss": cfg.coord_weight * yolo_slots.coordinate_loss(
                 outputs["box_logits"], targets, COORD_LOSSES[cfg.coord_loss], self.location),
             "object_loss": cfg.object_weight * object_loss,
             "noobject_loss": cfg.noobject_weight * noobject_loss,
             "class_loss": cfg.class_weight * class_term(outputs["class_logits"], targets,
                                                         batch["labels"], self.num_classes)}
    return yolo_slots.per_image_sum(terms, targets.positive)

  def decode(self, outputs, image_size):
    """:meth:`class_scores`, then ``yolo_slots.decode_detections``:
    the top ``pre_nms_topk`` pairs above ``score_threshold`` and class-aware NMS at
    ``nms_iou_threshold`` (darknet's COCO evaluation: thresh .005, nms .45)."""
    return yolo_slots.decode_detections(self.grid(tuple(image_size)), outputs["box_logits"],
                                        self.class_scores(outputs), tuple(image_size),
                                        self.config.decode, location=self.location)

  def class_scores(self, outputs):
    """``[B, N, K]`` class scores ``sigma(t_o) sigma(t_c)``: objectness times the independent
    logistic classifiers (Sec. 2.2)."""
    return (jax.nn.sigmoid(outputs["objectness_logits"].astype(jnp.float32))[..., None]
            * jax.nn.sigmoid(outputs["class_logits"].astype(jnp.float32)))


@detectors.register("yolo_v3")
def build(config):
  return YOLOv3(config)
