"""Classification pretraining of the detectors' backbones, as their papers do before detecting:

* YOLOv1 (Sec. 2.2): "the first 20 convolutional layers from Figure 3 followed by a
  average-pooling layer and a fully connected layer", on ImageNet at 224x224;
* YOLOv2 (Sec. 3 "Training for classification"): Darknet-19 on ImageNet, 160 epochs at 224,
  then 10 epochs at 448 (Table 6: the 1x1 convolution to the classes, then global average
  pooling);
* YOLOv3 (Sec. 2.4, Table 2): Darknet-53 on ImageNet at 256;
* RetinaNet (Sec. 4 "Initialization"): ResNet-50/101 on ImageNet (He et al. 2016);
* SSD (Sec. 3 "Base network"): VGG-16 on ImageNet, here directly in SSD's reduced form (fc6
  and fc7 as convolutions, then global average pooling; the paper subsamples a full VGG-16's
  fully connected layers instead).

A classifier is one more family behind the :class:`base.Detector` interface, so it trains
through the same sharded step, pipeline, checkpoints and evaluation as the detectors:

* ``config.trunk`` names the network (``jaxdet.models.backbones``: the builder the detectors
  use), ``config.backbone`` holds its settings (those of the detector's backbone config:
  ``stages``, ``batch_norm``, widths, blocks);
* the trunk lives under the same name as in its detector (``net`` for YOLOv1, ``features`` for
  SSD, ``backbone`` for ResNet and Darknet-19/53), so a detector trained with
  ``config.train.init_from=<this run's workdir>`` starts from every array whose name and shape
  agree (``jaxdet.train.checkpoint``);
* training reads only classification images (``config.data.classification``: ``digit_crops``,
  ``imagenet2012``, ``folder:DIR``), the batches' ``image_label``;
* the loss is the softmax cross-entropy of the image's class, averaged over the global batch;
* ``decode`` gives the ``TOP_K`` most probable classes as boxes covering the whole image, so the
  evaluator's ``top1`` / ``top5`` accuracy and ``scripts/predict.py`` work unchanged.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet import detectors
from jaxdet.detectors import base
from jaxdet.models import backbones
from jaxdet.ops import losses

TOP_K = 5   # the classes decode() returns per image: ImageNet's top-5 accuracy


class ClassifierModel(nn.Module):
  make_trunk: callable     # () -> the trunk (jaxdet.models.backbones), named as in its detector

  @nn.compact
  def __call__(self, images, train=False):
    return {"logits": self.make_trunk()(images, train)["logits"]}


class Classifier(base.Detector):
  """An image classifier behind the :class:`base.Detector` interface (see the module doc)."""

  def __init__(self, config):
    self.config = config
    backend = base.backend_of(config)
    make_trunk = functools.partial(backbones.build, config.trunk, config.backbone,
                                   dtype=jnp.dtype(config.dtype), backend=backend,
                                   num_classes=config.num_classes,
                                   name=backbones.get(config.trunk).variable_name)
    super().__init__(ClassifierModel(make_trunk=make_trunk), config.num_classes, backend)

  def training_labels(self, detection_classes, classification_classes):
    if detection_classes is not None or classification_classes is None:
      raise ValueError("a classifier trains on classification images only: set "
                       "config.data.train='' and config.data.classification (e.g. "
                       "'digit_crops:train', 'imagenet2012:train' or 'folder:DIR')")
    return base.TrainingLabels(tuple(classification_classes))

  def loss(self, outputs, batch):
    """Mean over the global batch of ``-log softmax(logits)[image_label]``; the metrics add the
    batch's top-1 accuracy."""
    logits, labels = outputs["logits"], batch["image_label"]
    class_loss = jnp.mean(losses.softmax_cross_entropy(logits, labels))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    return class_loss, {"class_loss": class_loss, "top1_accuracy": accuracy}

  def decode(self, outputs, image_size):
    """The ``TOP_K`` most probable classes, best first, each a box over the whole input with
    its softmax probability as the score."""
    probabilities = jax.nn.softmax(outputs["logits"], axis=-1)
    scores, classes = jax.lax.top_k(probabilities, min(TOP_K, self.num_classes))
    height, width = image_size
    whole = jnp.asarray([0.0, 0.0, width, height], jnp.float32)
    return base.Detections(boxes=jnp.broadcast_to(whole, (*scores.shape, 4)), scores=scores,
                           classes=classes.astype(jnp.int32),
                           valid=jnp.ones(scores.shape, jnp.bool_))


@detectors.register("classifier")
def build(config):
  return Classifier(config)
