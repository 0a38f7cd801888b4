"""YOLOv2: "YOLO9000: Better, Faster, Stronger" (Redmon & Farhadi, CVPR 2017), Sec. 2 "Better"
and Sec. 3 "Faster".

One file for the family: the detection head on Darknet-19 (Sec. 3 "Training for detection":
the classifier replaced by three 3x3 convolutions of 1024 filters and a final 1x1 convolution
to ``A (5 + K)`` outputs, with the passthrough layer of Sec. 2 "Fine-Grained Features" bringing
the 26x26 features in by space-to-depth), anchor priors from k-means (Sec. 2 "Dimension
Clusters", ``scripts/kmeans_anchors.py``), direct location prediction
``b = sigma(t) + c, p e^t`` (Sec. 2), objectness ``sigma(t_o)`` trained toward the IoU with the
truth, and classes by a softmax per anchor. Multi-scale training (Sec. 2) is the data pipeline's
``data.multi_scale_sizes``: the head is fully convolutional, so any multiple of 32 works.

Two forms of the passthrough (``passthrough_width``):
  * 0: the paper's, "turns the 26 x 26 x 512 feature map into a 13 x 13 x 2048 feature map"
    (Sec. 2), as darknet's cfg/yolo-voc.cfg released with the paper (Nov. 2016; the recipes');
  * 64: darknet's later cfg/yolo-voc.cfg (March 2017; yolov2-voc.cfg since 2018, with the
    released yolov2-voc.weights), a 1x1 convolution to 64 channels before the reorganisation
    (13 x 13 x 256).
How the passthrough reorganises (``reorg``): ``"space_to_depth"`` stacks each 2x2 patch into
channels, as the paper describes it (the recipes); ``"darknet"`` is what darknet's reorg layer
computes (``reorg_cpu`` in src/blas.c, called with ``forward=0``), which reads the ``C x H x W``
buffer as ``C/4 x 2H x 2W`` and so mixes positions; released darknet weights need it.
``head="darknet19"`` drops the three added convolutions and the passthrough: the 1x1 prediction
sits on Darknet-19's last layer, as darknet's cfg/yolo9000.cfg.

The steps of Table 2's path from YOLO to YOLOv2 are options (the recipes take every one):
``batch_norm=False`` (biases instead, everywhere), ``passthrough=False``, ``location=
"anchor_offset"`` (the RPN-style offsets that direct location prediction replaced,
``jaxdet.ops.boxes.LOCATIONS``), hand-picked ``priors`` instead of k-means ones, and no
``data.multi_scale_sizes``.

The paper does not write the loss out. It is darknet's region layer (``src/region_layer.c``,
``forward_region_layer``; the x, y and objectness deltas go through the sigmoid's derivative,
in the forward pass itself in 2016 and in ``backward_region_layer_gpu`` since March 2017),
summed over the slots of an image and averaged over the images of the global batch:

  L = sum_pos [ l_coord s ((sigma(t_x) - x*)^2 + (sigma(t_y) - y*)^2 + (t_w - t_w*)^2
                           + (t_h - t_h*)^2) / 2
              + l_obj (sigma(t_o) - IoU(b, truth))^2 / 2 + l_class CE(softmax(classes), k) ]
    + l_noobj sum_{unassigned, max IoU(b, truths) <= thresh} sigma(t_o)^2 / 2,

with ``l_coord = 1, l_obj = 5, l_noobj = 1, l_class = 1, thresh = 0.6`` (the cfg's scales,
``rescore=1``) and ``s = 2 - w h / (W H)`` (``loss.coord_area_weight``; the region layer of
Nov. 2016 has ``s = 1``). The halves make ``jax.grad`` of each term with respect to the raw
outputs equal darknet's delta (``scale * (target - output)``, the gradient of half the squared
error), so darknet's learning rates and weight decay apply unchanged. Darknet's class delta
``onehot - softmax`` is the gradient of the cross-entropy written here. Each truth has one slot:
the prior of the best shape IoU in the cell holding its centre
(``jaxdet.ops.matching.yolo_truth_slots``); on a shared slot the later truth wins, as darknet's
writes.

Deliberate deviations from darknet's region layer:
  * its extra term pulling every box toward its prior (scale 0.01) during the first 12,800
    images is not used: the loss does not see the training step;
  * darknet shuffles an image's truths when loading, so which of two truths on one slot wins is
    random there; here the later slot of the padded batch wins, deterministically.
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

STRIDE = 32                           # Darknet-19's output stride: 416 -> 13x13 (Sec. 2)


def space_to_depth(x, block=2):
  """The passthrough layer's reorganisation (Sec. 2 "Fine-Grained Features"): each ``block x
  block`` patch of ``[B, H, W, C]`` stacked into channels, ``[B, H / b, W / b, b^2 C]``
  (26x26x512 -> 13x13x2048). Channels go (row in patch, column in patch, channel)."""
  n, height, width, channels = x.shape
  x = x.reshape(n, height // block, block, width // block, block, channels)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, height // block, width // block,
                                               block * block * channels)


def darknet_reorg(x, block=2):
  """darknet's reorg layer (module docstring) on ``[B, H, W, C]`` -> ``[B, H / b, W / b, b^2 C]``:
  output channel ``k`` of input row ``j``, column ``i`` (in the ``C x H x W`` buffer) is input
  value ``(k mod C/b^2, b j + (k div C/b^2) div b, b i + (k div C/b^2) mod b)`` of the buffer
  read as ``C/b^2 x bH x bW``; the result buffer is then read as ``b^2 C x H/b x W/b``."""
  n, height, width, channels = x.shape
  chw = x.transpose(0, 3, 1, 2).reshape(n, channels // block**2, height, block, width, block)
  chw = chw.transpose(0, 3, 5, 1, 2, 4)          # (row in patch, column in patch, c2, j, i)
  out = chw.reshape(n, block**2 * channels, height // block, width // block)
  return out.transpose(0, 2, 3, 1)


REORGS = {"space_to_depth": space_to_depth, "darknet": darknet_reorg}
HEADS = ("yolov2", "darknet19")


class YOLOv2Model(nn.Module):
  """Darknet-19 and the detection head (module docstring); outputs per slot (row, column,
  prior), float32."""
  backbone: nn.Module                  # Darknet-19 (jaxdet.models.backbones)
  num_classes: int
  num_priors: int
  head: str = "yolov2"                 # or "darknet19": cfg/yolo9000.cfg, no added layers
  head_width: int = 1024               # the three added 3x3 convolutions (Sec. 3)
  passthrough_width: int = 64          # 1x1 reduction before space-to-depth; 0: none (paper)
  passthrough: bool = True             # False: no fine-grained features (Table 2's ablation)
  reorg: str = "space_to_depth"        # or "darknet": its reorg layer (module docstring)
  batch_norm: bool = True              # False: biases instead (Table 2's first column)
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  def __post_init__(self):
    if self.head not in HEADS:
      raise ValueError(f"model.head={self.head!r}: one of {HEADS}")
    if self.reorg not in REORGS:
      raise ValueError(f"model.reorg={self.reorg!r}: one of {tuple(REORGS)}")
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train=False):
    features = self.backbone(images.astype(self.dtype), train)
    x = features["stride32"]
    if self.head == "yolov2":
      conv = functools.partial(darknet.ConvBNLeaky, batch_norm=self.batch_norm,
                               dtype=self.dtype, backend=self.backend)
      for index in (1, 2):
        x = conv(self.head_width, 3, name=f"head{index}")(x, train)
      if self.passthrough:
        fine = features["stride16"]
        if self.passthrough_width:
          fine = conv(self.passthrough_width, 1, name="passthrough")(fine, train)
        x = jnp.concatenate([REORGS[self.reorg](fine), x], axis=-1)
      x = conv(self.head_width, 3, name="head3")(x, train)
    x = layers.conv(self.num_priors * (5 + self.num_classes), 1, use_bias=True, dtype=self.dtype,
                    backend=self.backend,
                    kernel_init=nn.initializers.normal(0.01), name="predict")(x)
    x = x.astype(jnp.float32).reshape(x.shape[0], -1, 5 + self.num_classes)
    return {"box_logits": x[..., :4], "objectness_logits": x[..., 4], "class_logits": x[..., 5:]}


class YOLOv2(base.Detector):
  """The YOLOv2 family behind the :class:`base.Detector` interface."""

  def __init__(self, config, class_outputs=None):
    """``class_outputs``: class logits per prior (default ``config.num_classes``; YOLO9000's
    WordTree has one per tree node)."""
    self.config = config
    # Priors in cells of the stride-32 map, darknet's unit: they scale with the input size.
    self.priors_cells = yolo_slots.read_priors(config, "priors_cells")
    # Configs saved before the Table 2 options existed lack them (jaxdet.train.resume).
    self.location = config.get("location", "logistic")
    box_ops.check_location(self.location)
    batch_norm = config.get("batch_norm", True)
    backend = base.backend_of(config)
    dtype = jnp.dtype(config.dtype)
    backbone = backbones.build("darknet19", dict(config.backbone.items(), batch_norm=batch_norm),
                               dtype=dtype, backend=backend)
    model = YOLOv2Model(backbone=backbone,
                        num_classes=class_outputs or config.num_classes,
                        num_priors=len(self.priors_cells),
                        head=config.head, head_width=config.head_width,
                        passthrough_width=config.passthrough_width,
                        passthrough=config.get("passthrough", True),
                        reorg=config.get("reorg", "space_to_depth"), batch_norm=batch_norm,
                        dtype=dtype, backend=backend)
    super().__init__(model, config.num_classes, backend)

  @functools.lru_cache(maxsize=16)
  def grid(self, image_size):
    height, width = image_size
    if height % STRIDE or width % STRIDE:
      raise ValueError(f"YOLOv2 input {image_size} must be multiples of {STRIDE}")
    return anchor_lib.yolo_grid(image_size, [(height // STRIDE, width // STRIDE)],
                                [self.priors_cells * STRIDE])

  def prior_shapes(self, image_size):
    return np.unique(self.grid(tuple(image_size)).prior_wh, axis=0)

  def class_loss(self, outputs, targets):
    """``[B, N]`` softmax cross-entropy of the assigned class at positive slots."""
    cross_entropy = losses.softmax_cross_entropy(outputs["class_logits"], targets.labels)
    return jnp.where(targets.positive, cross_entropy, 0.0)

  def loss(self, outputs, batch):
    """The region-layer loss of the module docstring, averaged over the global batch."""
    terms, targets = self.loss_terms(outputs, batch)
    return yolo_slots.per_image_sum(terms, targets.positive)

  def loss_terms(self, outputs, batch):
    """``(terms, targets)``: the four weighted terms of the loss per slot ``[B, N]`` and the
    slot targets."""
    cfg = self.config.loss
    grid = self.grid(tuple(batch["image"].shape[1:3]))
    targets = yolo_slots.slot_targets(grid, outputs["box_logits"], batch, cfg.coord_area_weight,
                                      self.location)
    objectness = jax.nn.sigmoid(outputs["objectness_logits"].astype(jnp.float32))
    unassigned = ~targets.positive & (targets.best_iou <= cfg.ignore_threshold)
    terms = {
        "coord_loss": cfg.coord_weight * yolo_slots.coordinate_loss(
            outputs["box_logits"], targets, location=self.location),
        "object_loss": cfg.object_weight * jnp.where(
            targets.positive, losses.half_squared_error(objectness, targets.assigned_iou), 0.0),
        "noobject_loss": cfg.noobject_weight * jnp.where(
            unassigned, losses.half_squared_error(objectness, 0.0), 0.0),
        "class_loss": cfg.class_weight * self.class_loss(outputs, targets)}
    return terms, targets

  def class_scores(self, outputs):
    """``[B, N, K]`` Pr(class | object) Pr(object) (Sec. 2, as YOLOv1's Eq. 1)."""
    return (jax.nn.sigmoid(outputs["objectness_logits"])[..., None]
            * jax.nn.softmax(outputs["class_logits"], axis=-1))

  def decode(self, outputs, image_size):
    """The top (slot, class) pairs by class score, boxes by direct location prediction, then
    class-aware NMS (darknet's ``detector valid``: threshold 0.005, NMS at IoU 0.45)."""
    return yolo_slots.decode_detections(self.grid(tuple(image_size)), outputs["box_logits"],
                                        self.class_scores(outputs), image_size,
                                        self.config.decode, location=self.location)


@detectors.register("yolo_v2")
def build(config):
  return YOLOv2(config)
