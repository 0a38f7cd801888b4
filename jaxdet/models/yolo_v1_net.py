"""The YOLOv1 network (Redmon, Divvala, Girshick, Farhadi 2016, "You Only Look Once: Unified,
Real-Time Object Detection", Sec. 2.1 "Network Design", Fig. 3) and Fast YOLO's (Sec. 2).

YOLO: 24 convolutions and 2 fully connected layers. Inspired by GoogLeNet, but instead of its
inception modules 1x1 reduction layers followed by 3x3 convolutions (as Lin et al.'s Network in
Network); leaky ReLU with slope 0.1 after every layer but the last, which is linear (Sec. 2.2,
Eq. 2); dropout with rate 0.5 after the first connected layer (Sec. 2.2). The last layer
predicts the ``S x S x (5B + K)`` tensor (7 x 7 x 30 on PASCAL VOC).

Fast YOLO: 9 convolutions with fewer filters, otherwise the same (Sec. 2).

Pretraining (Sec. 2.2): "the first 20 convolutional layers from Figure 3 followed by a
average-pooling layer and a fully connected layer", trained on ImageNet at 224x224:
``YOLOv1Classifier`` over ``leading_convs(YOLO_STAGES, 20)`` (darknet's cfg/extraction.cfg). Its
convolutions carry the detection network's names, so a detector initialised from it
(``config.train.init_from``) starts from them; the last four convolutions and the connected
layers are "added with randomly initialized weights".

The layer lists are those of darknet's cfg/yolo.cfg and cfg/yolo-tiny.cfg as released with the
paper (Nov 2015); today's cfg/yolov1.cfg replaces the 4096-wide layer by a locally connected one
and adds batch norm. The paper has no batch norm, so ``batch_norm`` is off in its recipes; it is
an option (conv without bias + batch norm + leaky, ``darknet.ConvBNLeaky``) that helps the small
variants train from scratch.
"""
import flax.linen as nn
import jax.numpy as jnp

from jaxdet.models import darknet
from jaxdet.models import layers

# (output channels, kernel size, stride) of each convolution, stage by stage; a 2x2 stride-2
# max-pool precedes every stage but the first. Fig. 3 / darknet cfg/yolo.cfg (2015).
YOLO_STAGES = (
    ((64, 7, 2),),
    ((192, 3, 1),),
    ((128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1)),
    ((256, 1, 1), (512, 3, 1)) * 4 + ((512, 1, 1), (1024, 3, 1)),
    ((512, 1, 1), (1024, 3, 1)) * 2 + ((1024, 3, 1), (1024, 3, 2), (1024, 3, 1), (1024, 3, 1)),
)
# Hidden fully connected layers (width, activation) before the output layer; dropout follows the
# last of them.
YOLO_FC = ((4096, "leaky"),)

# Fast YOLO: nine 3x3 convolutions, six max-pools (448 -> 7), darknet cfg/yolo-tiny.cfg (2015),
# whose connected part is a linear 256-wide layer, then a leaky 4096-wide one.
FAST_YOLO_STAGES = (((16, 3, 1),), ((32, 3, 1),), ((64, 3, 1),), ((128, 3, 1),),
                    ((256, 3, 1),), ((512, 3, 1),), ((1024, 3, 1), (1024, 3, 1), (1024, 3, 1)))
FAST_YOLO_FC = ((256, "linear"), (4096, "leaky"))

# Sec. 2.2: the classifier pretrained on ImageNet holds the first 20 of the 24 convolutions.
PRETRAINED_CONVS = 20

ACTIVATIONS = {"leaky": lambda x: nn.leaky_relu(x, darknet.LEAKY_SLOPE), "linear": lambda x: x}


def leading_convs(stages, count):
  """The stages holding the first ``count`` convolutions of ``stages`` (the last one cut)."""
  kept, left = [], count
  for convs in stages:
    if left <= 0:
      break
    kept.append(tuple(convs[:left]))
    left -= len(kept[-1])
  if left > 0:
    raise ValueError(f"the network has {count - left} convolutions, fewer than {count}")
  return tuple(kept)


def conv_stages(x, stages, batch_norm, dtype, backend, train):
  """The convolutions of ``stages`` named ``conv<stage>_<index>``, a 2x2 stride-2 max-pool
  before every stage but the first (call inside a compact module)."""
  for stage, convs in enumerate(stages, start=1):
    if stage > 1:
      x = layers.max_pool(x, 2, 2, padding=((0, 0), (0, 0)), backend=backend)
    for index, (channels, kernel, stride) in enumerate(convs, start=1):
      x = darknet.ConvBNLeaky(channels, kernel, stride, batch_norm=batch_norm, dtype=dtype,
                              backend=backend, name=f"conv{stage}_{index}")(x, train)
  return x


class YOLOv1Net(nn.Module):
  """Images ``[B, H, W, 3]`` -> the prediction tensor ``[B, S, S, outputs_per_cell]`` float32.

  The connected layers fix the input size: the network is initialised for one image size and
  only accepts that one (448x448 gives the paper's 7x7 final conv map)."""
  grid_size: int                     # S
  outputs_per_cell: int              # 5B + K
  stages: tuple = YOLO_STAGES
  fc_layers: tuple = YOLO_FC
  dropout_rate: float = 0.5          # after the last hidden connected layer (Sec. 2.2)
  batch_norm: bool = False           # the paper: none
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train=False):
    x = conv_stages(x, self.stages, self.batch_norm, self.dtype, self.backend, train)
    x = x.reshape(x.shape[0], -1)
    for index, (width, activation) in enumerate(self.fc_layers, start=1):
      x = ACTIVATIONS[activation](nn.Dense(width, dtype=self.dtype, name=f"fc{index}")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.grid_size ** 2 * self.outputs_per_cell, dtype=self.dtype, name="output")(x)
    return x.astype(jnp.float32).reshape(x.shape[0], self.grid_size, self.grid_size,
                                         self.outputs_per_cell)


class YOLOv1Classifier(nn.Module):
  """The pretraining network of Sec. 2.2: ``stages`` (the first 20 convolutions), global
  average pooling and a connected layer to ``num_classes`` logits (``{"logits": [B, K]}``)."""
  num_classes: int
  stages: tuple
  batch_norm: bool = False
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"          # jaxdet.models.backend

  @nn.compact
  def __call__(self, x, train=False):
    x = conv_stages(x, self.stages, self.batch_norm, self.dtype, self.backend, train)
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
    return {"logits": logits.astype(jnp.float32)}
