"""SSD: "SSD: Single Shot MultiBox Detector" (Liu, Anguelov, Erhan, Szegedy, Reed, Fu, Berg;
ECCV 2016).

One file for the family: the per-map 3x3 predictors (Sec. 2.1 "Convolutional predictors"),
default boxes (Sec. 2.2, ``jaxdet.ops.anchors.ssd_default_boxes``: Eq. 4, or the released
models' pixel sizes and steps), the matching strategy and the MultiBox loss with hard negative
mining (Sec. 2.2, Eq. 1-3), and the inference of Sec. 3 (confidence threshold 0.01, per-class
NMS at IoU 0.45, top 200 per image). The feature extractor is the atrous VGG-16 of
``jaxdet.models.vgg``.

The authors' Caffe (weiliu89/caffe, branch ssd) is the reference where the paper is brief:
matching is its ``MatchBBox`` (greedy bipartite, then every box at IoU >= 0.5;
``jaxdet.ops.matching.ssd_match``), decoding its ``DetectionOutput`` (400 candidates per class
before NMS, ``jaxdet.ops.nms.per_class_nms``), hard negatives its ``MAX_NEGATIVE`` mining
(the background loss ranks them, at most 3 per positive per image), the loss normalised by the
matched boxes (``normalization: VALID``). Deliberate deviations:
  * N, the normaliser, counts the positives of the whole global batch; Caffe counts those of
    each GPU's batch (with N = 0 both give a loss of 0);
  * boxes are clipped to the image before NMS, as torchvision's SSD; Caffe suppresses the
    unclipped boxes, which differs only for boxes past the border.

Class index 0 of the confidence outputs is the background; dataset class ``k`` is output
``k + 1``. Box offsets are encoded as in the paper (Eq. 2) with the Caffe models' "variances"
(0.1, 0.1, 0.2, 0.2): ``t_cx = (g_cx - d_cx) / (0.1 d_w)``, ``t_w = log(g_w / d_w) / 0.2``,
i.e. the R-CNN deltas of ``jaxdet.ops.boxes.encode_deltas`` with weights (10, 10, 5, 5).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet import detectors
from jaxdet.detectors import base
from jaxdet.models import backbones
from jaxdet.models import conv as conv_lib
from jaxdet.models import layers
from jaxdet.models import vgg
from jaxdet.ops import anchors as anchor_lib
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import losses
from jaxdet.ops import matching
from jaxdet.ops import nms

# Caffe's "xavier" filler, which the authors use for every layer they add to VGG-16.
xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class ConvWeights(nn.Module):
  """A 3x3 convolution's kernel and bias, named and initialised as ``nn.Conv``'s, for a caller
  that applies several convolutions of one input as one."""
  features: int

  @nn.compact
  def __call__(self, in_features):
    return (self.param("kernel", xavier, (3, 3, in_features, self.features)),
            self.param("bias", nn.initializers.zeros, (self.features,)))


class SSDHead(nn.Module):
  """One 3x3 conv per feature map for the ``K + 1`` class scores and one for the 4 offsets of
  each of its default boxes (Sec. 2.1, Fig. 2); not shared across maps. The two convolutions
  of a map run as one with their kernels side by side (same values; on CPU the thin box
  predictor's gradients cost less inside the wider convolution)."""
  num_classes: int                 # K, without the background
  boxes_per_cell: tuple            # default boxes per cell, per map
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  def _predict(self, x, boxes, index):
    """``[B, H*W*A, K + 1]`` class logits and ``[B, H*W*A, 4]`` offsets, in default-box order."""
    widths = (boxes * (self.num_classes + 1), boxes * 4)
    kernels, biases = zip(*(ConvWeights(width, name=f"{kind}_{index}")(x.shape[-1])
                            for kind, width in zip(("cls", "box"), widths)))
    y = layers.CONV_OF_BACKEND[self.backend](
        x.astype(self.dtype), jnp.concatenate(kernels, axis=-1).astype(self.dtype), (1, 1),
        ((1, 1), (1, 1)), dimension_numbers=conv_lib.NHWC)
    y = (y + jnp.concatenate(biases).astype(self.dtype)).astype(jnp.float32)
    logits, deltas = jnp.split(y, widths[:1], axis=-1)
    return (logits.reshape(y.shape[0], -1, self.num_classes + 1),
            deltas.reshape(y.shape[0], -1, 4))

  @nn.compact
  def __call__(self, feature_maps):
    if len(feature_maps) != len(self.boxes_per_cell):
      raise ValueError(f"{len(feature_maps)} feature maps but default boxes for "
                       f"{len(self.boxes_per_cell)}")
    logits, deltas = zip(*(self._predict(x, boxes, i)
                           for i, (x, boxes) in enumerate(zip(feature_maps, self.boxes_per_cell))))
    return {"class_logits": jnp.concatenate(logits, axis=1),
            "box_deltas": jnp.concatenate(deltas, axis=1)}


class SSDModel(nn.Module):
  features: nn.Module
  head: nn.Module

  def __call__(self, images, train=False):
    return self.head(self.features(images, train=train))

  def feature_maps(self, images):
    return self.features(images, train=False)


def boxes_per_cell(aspect_ratios):
  """2 ratio-1 boxes plus ``r`` and ``1 / r`` for each extra ratio: 4 or 6 (Sec. 2.2)."""
  return tuple(2 + 2 * len(r) for r in aspect_ratios)


class SSD(base.Detector):
  """The SSD family behind the :class:`base.Detector` interface."""

  def __init__(self, config):
    self.config = config
    dtype, backend = jnp.dtype(config.dtype), base.backend_of(config)
    features = backbones.build("ssd_vgg16", config.base, dtype=dtype, backend=backend)
    head = SSDHead(num_classes=config.num_classes,
                   boxes_per_cell=boxes_per_cell(config.default_boxes.aspect_ratios), dtype=dtype,
                   backend=backend)
    super().__init__(SSDModel(features=features, head=head), config.num_classes, backend)

  def frozen_parameters(self, params):
    if not self.config.base.freeze_at:
      return None
    return dict(jax.tree.map(lambda _: False, params), features=vgg.frozen_parameters(
        params["features"], self.config.base.freeze_at))

  @functools.lru_cache(maxsize=16)
  def feature_sizes(self, image_size):
    """``(rows, cols)`` of each feature map for inputs of ``image_size``, by shape inference."""
    dummy = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
    maps, _ = jax.eval_shape(lambda x: self.model.init_with_output(
        jax.random.PRNGKey(0), x, method=SSDModel.feature_maps), dummy)
    return tuple(tuple(m.shape[1:3]) for m in maps)

  @functools.lru_cache(maxsize=16)
  def default_boxes(self, image_size):
    d = self.config.default_boxes
    return anchor_lib.ssd_default_boxes(
        tuple(image_size), self.feature_sizes(tuple(image_size)),
        tuple(tuple(r) for r in d.aspect_ratios), d.s_min, d.s_max,
        d.first_scale if d.first_scale > 0 else None, d.clip, tuple(d.min_sizes),
        tuple(d.max_sizes), tuple(d.steps))

  def prior_shapes(self, image_size):
    return anchor_lib.box_shapes(self.default_boxes(tuple(image_size)).boxes)

  def assign(self, default_boxes, batch):
    """Per-box targets: class index (0 = background), encoded offsets, positive mask."""
    match = matching.ssd_match(default_boxes, batch["boxes"], batch["mask"],
                               threshold=self.config.matcher.threshold)
    positive = match.labels == matching.POSITIVE
    gt_labels = matching.gather_matched(batch["labels"], match.matched_gt)
    class_targets = jnp.where(positive, gt_labels + 1, 0)
    box_targets = box_ops.encode_deltas(
        default_boxes, matching.gather_matched(batch["boxes"], match.matched_gt),
        tuple(self.config.loss.box_weights))
    return class_targets, box_targets, positive

  def loss(self, outputs, batch):
    """Eq. 1: L = (L_conf + alpha L_loc) / N, N the matched default boxes.

    L_conf (Eq. 3) is the softmax cross-entropy over the positives and the hard negatives (at
    most 3 per positive in each image, ranked by their background loss); L_loc (Eq. 2) is the
    smooth L1 of the offsets of the positives. N counts the positives of the *global* batch, as
    RetinaNet's normaliser; with N = 0 the loss is 0 (no positive, so no negative either).
    """
    cfg = self.config.loss
    default_boxes = jnp.asarray(self.default_boxes(batch["image"].shape[1:3]).boxes)
    class_targets, box_targets, positive = self.assign(default_boxes, batch)
    cross_entropy = losses.softmax_cross_entropy(outputs["class_logits"], class_targets)
    hard_negative = losses.hard_negatives(cross_entropy, ~positive, jnp.sum(positive, axis=1),
                                          cfg.neg_pos_ratio)
    class_loss = jnp.sum(jnp.where(positive | hard_negative, cross_entropy, 0.0))
    box_loss = base.positive_box_loss(outputs["box_deltas"], box_targets, positive,
                                      cfg.smooth_l1_beta)
    return base.normalized_loss(class_loss, box_loss, positive, cfg.alpha)

  def decode(self, outputs, image_size):
    """Sec. 3 (inference): softmax scores of the K object classes above ``score_threshold``
    (0.01), NMS per class at IoU 0.45, the best ``max_detections`` (200) per image. With
    ``decode.per_class_topk`` (400), Caffe's ``DetectionOutput`` rule (``nms.per_class_nms``):
    each class keeps its own 400 best boxes before its NMS; with 0, one top
    ``pre_nms_topk`` of (box, class) pairs over all classes, then class-aware NMS. Boxes are
    clipped to the image before NMS, as torchvision's SSD (Caffe suppresses the unclipped
    boxes)."""
    cfg = self.config.decode
    default_boxes = jnp.asarray(self.default_boxes(tuple(image_size)).boxes)
    scores = jax.nn.softmax(outputs["class_logits"], axis=-1)[..., 1:]
    box_weights = tuple(self.config.loss.box_weights)
    if not cfg.per_class_topk:
      boxes, top_scores, classes = base.top_candidates(
          scores, outputs["box_deltas"], default_boxes, cfg.pre_nms_topk, box_weights)
      return base.nms_detections(boxes, top_scores, classes, image_size, cfg)
    boxes = box_ops.decode_deltas(default_boxes[None], outputs["box_deltas"], box_weights)
    return nms.per_class_nms(box_ops.clip_boxes(boxes, *image_size), scores,
                             score_threshold=cfg.score_threshold, top_k=cfg.per_class_topk,
                             iou_threshold=cfg.nms_iou_threshold,
                             max_output=cfg.max_detections)


@detectors.register("ssd")
def build(config):
  return SSD(config)
