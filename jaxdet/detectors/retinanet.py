"""RetinaNet: "Focal Loss for Dense Object Detection" (Lin, Goyal, Girshick, He, Dollar; ICCV 2017).

One file for the family: the heads (Sec. 4, Fig. 3), anchor assignment (Sec. 4 "Anchors"), the
focal loss (Sec. 3.3, Eq. 5) normalised by the number of positive anchors, and the inference
decoding of Sec. 4 "Inference" (top 1000 per level above 0.05, NMS 0.5, 100 detections).
The backbone is a ResNet (jaxdet.models.resnet) with the FPN of jaxdet.models.fpn.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet import detectors
from jaxdet.detectors import base
from jaxdet.models import backbones
from jaxdet.models import fpn as fpn_lib
from jaxdet.models import layers
from jaxdet.models import resnet
from jaxdet.ops import anchors as anchor_lib
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import losses
from jaxdet.ops import matching


def prior_bias(prior_prob):
  """b = -log((1 - pi) / pi): every anchor starts with foreground confidence ~pi (Sec. 4
  "Initialization"), so the many easy negatives do not swamp the first iterations."""
  return -math.log((1 - prior_prob) / prior_prob)


class RetinaNetHead(nn.Module):
  """Class and box subnets, each ``depth`` x (3x3 conv, ``width``, ReLU) and a 3x3 output conv,
  shared across all pyramid levels (Sec. 4 "Classification Subnet", "Box Regression Subnet").
  Convs are initialised with a Gaussian of sigma 0.01 and zero bias (Sec. 4 "Initialization")."""
  num_classes: int
  anchors_per_cell: int
  width: int = 256
  depth: int = 4
  prior_prob: float = 0.01
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  def _conv(self, features, name, bias_init=nn.initializers.zeros):
    return layers.conv(features, 3, use_bias=True, dtype=self.dtype, backend=self.backend,
                       kernel_init=nn.initializers.normal(0.01), bias_init=bias_init, name=name)

  def _subnet(self, prefix, out_per_anchor, bias_init=nn.initializers.zeros):
    tower = [self._conv(self.width, f"{prefix}_conv{i}") for i in range(self.depth)]
    output = self._conv(self.anchors_per_cell * out_per_anchor, f"{prefix}_output", bias_init)

    def apply(x):
      for conv in tower:
        x = nn.relu(conv(x))
      y = output(x).astype(jnp.float32)
      return y.reshape(y.shape[0], -1, out_per_anchor)  # [B, H*W*A, out]: anchor order
    return apply

  @nn.compact
  def __call__(self, pyramid):
    classify = self._subnet("cls", self.num_classes,
                            nn.initializers.constant(prior_bias(self.prior_prob)))
    regress = self._subnet("box", 4)
    return {"class_logits": jnp.concatenate([classify(p) for p in pyramid], axis=1),
            "box_deltas": jnp.concatenate([regress(p) for p in pyramid], axis=1)}


class RetinaNetModel(nn.Module):
  backbone: nn.Module
  fpn: nn.Module
  head: nn.Module

  def __call__(self, images, train=False):
    return self.head(self.fpn(self.backbone(images, train=train)))


class RetinaNet(base.Detector):
  """The RetinaNet family behind the :class:`base.Detector` interface."""

  def __init__(self, config):
    self.config = config
    dtype, backend = jnp.dtype(config.dtype), base.backend_of(config)
    # Configs saved before the FPN ablations existed had the whole pyramid.
    self.single_level = config.get("fpn_single_level", False)
    levels_per_cell = config.max_level - config.min_level + 1 if self.single_level else 1
    anchors_per_cell = (config.anchors.num_scales * len(config.anchors.aspect_ratios)
                        * levels_per_cell)
    model = RetinaNetModel(
        backbone=backbones.build("resnet", dict(architecture=config.backbone,
                                                norm=config.backbone_norm,
                                                freeze_at=config.freeze_at),
                                 dtype=dtype, backend=backend),
        fpn=fpn_lib.FPN(width=config.fpn_width, min_level=config.min_level,
                        max_level=config.max_level, p6_input=config.p6_input,
                        top_down=config.get("fpn_top_down", True),
                        lateral=config.get("fpn_lateral", True),
                        single_level=self.single_level, dtype=dtype, backend=backend),
        head=RetinaNetHead(num_classes=config.num_classes, anchors_per_cell=anchors_per_cell,
                           width=config.head_width, depth=config.head_depth,
                           prior_prob=config.prior_prob, dtype=dtype, backend=backend))
    super().__init__(model, config.num_classes, backend)

  def frozen_parameters(self, params):
    if self.config.backbone_norm == "batch_norm" and self.config.freeze_at == 0:
      return None
    return dict(jax.tree.map(lambda _: False, params), backbone=resnet.frozen_parameters(
        params["backbone"], self.config.backbone_norm, self.config.freeze_at))

  @functools.lru_cache(maxsize=16)
  def anchors(self, image_size):
    a = self.config.anchors
    return anchor_lib.retinanet_anchors(
        tuple(image_size), self.config.min_level, self.config.max_level, a.size, a.num_scales,
        tuple(a.aspect_ratios), self.single_level)

  def prior_shapes(self, image_size):
    return anchor_lib.box_shapes(self.anchors(tuple(image_size)).boxes)

  def assign(self, anchors, batch):
    """Per-anchor targets: focal-loss labels, box deltas, and the positive / valid masks."""
    m = self.config.matcher
    match = matching.max_iou_match(
        anchors, batch["boxes"], batch["mask"], positive_threshold=m.positive_threshold,
        negative_threshold=m.negative_threshold,
        allow_low_quality_matches=m.allow_low_quality_matches)
    positive = match.labels == matching.POSITIVE
    gt_labels = matching.gather_matched(batch["labels"], match.matched_gt)
    class_targets = jax.nn.one_hot(gt_labels, self.num_classes) * positive[..., None]
    box_targets = box_ops.encode_deltas(
        anchors, matching.gather_matched(batch["boxes"], match.matched_gt),
        tuple(self.config.loss.box_weights))
    return class_targets, box_targets, positive, match.labels != matching.IGNORE

  def loss(self, outputs, batch):
    """L = (sum FL over non-ignored anchors + sum smooth-L1 over positives) / num positives.

    The normaliser is the number of positive anchors in the *global* batch (Sec. 4 "Focal
    loss ... normalized by the number of anchors assigned to a ground-truth box"); under
    sharded jit the sums reduce across the mesh, so every device divides by the same number.
    """
    cfg = self.config.loss
    anchors = jnp.asarray(self.anchors(batch["image"].shape[1:3]).boxes)
    class_targets, box_targets, positive, valid = self.assign(anchors, batch)
    focal = losses.sigmoid_focal_loss(outputs["class_logits"], class_targets,
                                      cfg.focal_alpha, cfg.focal_gamma)
    class_loss = jnp.sum(jnp.where(valid[..., None], focal, 0.0))
    box_loss = base.positive_box_loss(outputs["box_deltas"], box_targets, positive,
                                      cfg.smooth_l1_beta)
    return base.normalized_loss(class_loss, box_loss, positive, cfg.box_loss_weight)

  def decode(self, outputs, image_size):
    """Sec. 4 "Inference": per level, the top ``pre_nms_topk`` (anchor, class) scores above
    ``score_threshold``; boxes decoded only for those, merged, class-aware NMS, top
    ``max_detections``."""
    cfg = self.config.decode
    grid = self.anchors(tuple(image_size))
    anchors = jnp.asarray(grid.boxes)
    scores = jax.nn.sigmoid(outputs["class_logits"])
    candidates = []
    start = 0
    for size in grid.level_sizes:
      level = slice(start, start + size)
      candidates.append(base.top_candidates(
          scores[:, level], outputs["box_deltas"][:, level], anchors[level], cfg.pre_nms_topk,
          tuple(self.config.loss.box_weights)))
      start += size
    boxes, top_scores, classes = (jnp.concatenate(c, axis=1) for c in zip(*candidates))
    return base.nms_detections(boxes, top_scores, classes, image_size, cfg)

@detectors.register("retinanet")
def build(config):
  return RetinaNet(config)
