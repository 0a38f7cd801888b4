"""The interface every detector family implements; train/ and evaluation/ use nothing else.

A family (one file in jaxdet/detectors/) builds a ``Detector`` from its config:
  * ``model``: a Flax module, ``model.apply(variables, images, train=...) -> outputs`` (a dict
    of arrays, float32);
  * ``loss(outputs, batch) -> (scalar, metrics)``: target assignment and the paper's loss, on the
    padded batch of docs/design.md (``image [B,H,W,3]``, ``boxes [B,M,4]``, ``labels [B,M]``,
    ``mask [B,M]``), normalised over the *global* batch;
  * ``decode(outputs, image_size) -> Detections``: boxes in input pixels after NMS, static shape.
"""
import abc
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxdet.models import backend as backend_lib
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import losses
from jaxdet.ops import nms
from jaxdet.ops.nms import Detections  # noqa: F401  (re-exported: the decode() return type)


class TrainingLabels(NamedTuple):
  """The loss's label names, and for each training set the label of each of its classes (None:
  its classes are the labels, unchanged)."""
  names: tuple
  detection: Optional[tuple] = None
  classification: Optional[tuple] = None


class Detector(abc.ABC):
  """Base class of the detector families."""

  def __init__(self, model, num_classes, backend="xla"):
    self.model = model
    self.num_classes = num_classes
    self.backend = backend     # the model's (jaxdet.models.backend): the steps' compiler options

  def compiler_options(self):
    """``jax.jit``'s ``compiler_options`` for this model's train and predict steps."""
    return backend_lib.compiler_options(self.backend)

  def init(self, rng, image_size):
    """Variables (``params`` and e.g. ``batch_stats``) for inputs of ``image_size = (h, w)``."""
    dummy = jnp.zeros((1, *image_size, 3), jnp.float32)
    return self.model.init(rng, dummy, train=False)

  def apply(self, variables, images, train=False, rng=None):
    """Forward pass -> ``(outputs, updated non-parameter collections)``; ``rng`` feeds
    stochastic layers (dropout) in training."""
    if train:
      rngs = {"dropout": rng} if rng is not None else {}
      return self.model.apply(variables, images, train=True, mutable=["batch_stats"], rngs=rngs)
    return self.model.apply(variables, images, train=False), {}

  def forward_gflop_per_image(self, image_size):
    """The inference forward pass's cost in GFLOP per image at ``image_size`` (XLA's cost
    analysis of the lowered program; nothing is initialised or run)."""
    images = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: self.init(jax.random.key(0), tuple(image_size)))
    lowered = jax.jit(lambda v, x: self.apply(v, x)[0]).lower(variables, images)
    return lowered.cost_analysis()["flops"] / 1e9

  def frozen_parameters(self, params):
    """A tree of bools over ``params``, True where the optimizer must not change the parameter
    (a frozen backbone part, frozen batch norm); ``None`` when everything trains."""
    del params
    return None

  def training_labels(self, detection_classes, classification_classes):
    """The labels the loss reads, given the class names of the detection and classification
    training sets (None: no such set): a :class:`TrainingLabels`. Only families that train on
    classification images (YOLO9000) accept them; a family may rename labels (YOLO9000: to tree
    nodes), and the training loop relabels the sources accordingly."""
    if classification_classes is not None:
      raise ValueError(f"{type(self).__name__} does not train on classification images; unset "
                       "config.data.classification")
    return TrainingLabels(tuple(detection_classes))

  @abc.abstractmethod
  def loss(self, outputs, batch):
    """Returns ``(loss, metrics)``; ``loss`` is a float32 scalar."""

  @abc.abstractmethod
  def decode(self, outputs, image_size):
    """Returns :class:`Detections` in input-pixel ``(x1, y1, x2, y2)``."""

  def display_decode(self, outputs, image_size):
    """The detections to show a user (scripts/predict.py); by default :meth:`decode`'s. A
    family may label them otherwise (YOLO9000: tree nodes), named by :meth:`display_names`."""
    return self.decode(outputs, image_size)

  def prior_shapes(self, image_size):
    """``[K, 2]`` (width, height) in input pixels of the anchors / default boxes / priors that
    truths are matched to at ``image_size`` (a start-up check compares them with the data's
    boxes); None for a family without any (YOLOv1)."""
    del image_size
    return None

  def display_names(self, class_names):
    """Names of :meth:`display_decode`'s classes, given the dataset's ``class_names``."""
    return tuple(class_names)


def backend_of(config):
  """The concrete backend of a model config (``model.backend``, "auto" when absent: configs
  saved before it existed)."""
  return backend_lib.resolve(config.get("backend", "auto"))


def safe_normalizer(count):
  """``max(1, count)`` as float32: the loss of a batch without positives is its raw sum (0 for
  the positive-only terms) rather than NaN."""
  return jnp.maximum(jnp.asarray(count, jnp.float32), 1.0)


def positive_box_loss(box_deltas, box_targets, positive, beta):
  """Sum of the smooth-L1 box loss over the positives' offsets. The targets of the other anchors
  (matched to padding, possibly non-finite) are zeroed before the subtraction, so neither the
  loss nor its gradient sees them."""
  box_error = box_deltas - jnp.where(positive[..., None], box_targets, 0.0)
  return jnp.sum(jnp.where(positive[..., None], losses.smooth_l1(box_error, beta), 0.0))


def normalized_loss(class_loss, box_loss, positive, box_weight):
  """``(class_loss + box_weight * box_loss) / max(1, N)`` with N the positives of the *global*
  batch (under sharded jit the sums reduce across the mesh, so every device divides by the same
  number), and the metrics every family logs."""
  num_positive = jnp.sum(positive)
  normalizer = safe_normalizer(num_positive)
  class_loss, box_loss = class_loss / normalizer, box_loss / normalizer
  return class_loss + box_weight * box_loss, {
      "class_loss": class_loss, "box_loss": box_loss,
      "num_positive": num_positive.astype(jnp.float32)}


def top_candidates(scores, box_deltas, anchors, k, box_weights):
  """The ``k`` best (anchor, class) pairs of ``scores [B, N, K]``: ``(boxes [B, k, 4], scores,
  classes)``, the boxes decoded from ``box_deltas [B, N, 4]`` at ``anchors [N, 4]`` for those
  pairs only."""
  batch_size, num_anchors, num_classes = scores.shape
  top_scores, top_index = jax.lax.top_k(scores.reshape(batch_size, -1),
                                        min(k, num_anchors * num_classes))
  anchor_index = top_index // num_classes
  deltas = jnp.take_along_axis(box_deltas, anchor_index[..., None], axis=1)
  boxes = box_ops.decode_deltas(anchors[anchor_index], deltas, box_weights)
  return boxes, top_scores, (top_index % num_classes).astype(jnp.int32)


def nms_detections(boxes, scores, classes, image_size, decode_config):
  """Candidates clipped to the image; class-aware NMS over those above the score threshold."""
  boxes = box_ops.clip_boxes(boxes, *image_size)
  return nms.batched_nms(boxes, scores, classes, scores > decode_config.score_threshold,
                         iou_threshold=decode_config.nms_iou_threshold,
                         max_output=decode_config.max_detections)
