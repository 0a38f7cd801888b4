"""The torchvision parity cases, shared by ``make_fixtures.py`` (which runs torchvision, the
reference) and the tests (which run jaxdet and compare with the fixtures, or with torchvision
live).

Each case is a torchvision architecture built with ``weights=None`` and given a state dict of
random values from a seed (``jaxdet.weights.torchvision.random_state_dict``: every tensor,
batch norm statistics included; ``load_state_dict(strict=True)`` proves its names and shapes
are torchvision's), fed the two photographs scikit-learn ships, resized and normalised with
the ImageNet statistics. A fixture holds, per image and input size, the logits in full (ResNet)
and a sketch of each compared map (``SKETCH`` fixed random projections of the flattened map, so
that a relative difference of the maps shows in the sketches): ResNet's C2..C5, VGG-16's
conv4_3 and conv5_3 (before their ReLU; SSD's reduced fc6/fc7 have no torchvision counterpart,
their decimation is tested by index); the small size's last map in full too.
"""
import dataclasses
import pathlib

import jax
import numpy as np
from PIL import Image

from jaxdet import config as config_lib
from jaxdet import detectors
from jaxdet.models import backbones
from jaxdet.weights import trees
from tests.weights.recipes import load_config
from jaxdet.weights import torchvision

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
RESNET_LEVELS = ("C2", "C3", "C4", "C5")
VGG_LEVELS = ("conv4_3", "conv5_3")
VGG_FEATURE_INDEX = {"conv4_3": 21, "conv5_3": 28}
SKETCH = 32
SIZES = (64, 224)          # small, and the full ImageNet input


@dataclasses.dataclass(frozen=True)
class Case:
  architecture: str
  config: str           # the classifier recipe the import targets
  seed: int

  @property
  def levels(self):
    return VGG_LEVELS if self.architecture == "vgg16" else RESNET_LEVELS

  def fixture(self, name):
    return FIXTURES / f"torchvision_{name}.npz"


CASES = {
    "resnet50": Case("resnet50", "experiments/retinanet.py:resnet50_imagenet", seed=2),
    "resnet101": Case("resnet101", "experiments/retinanet.py:resnet101_imagenet", seed=3),
    "vgg16": Case("vgg16", "experiments/ssd.py:vgg16_imagenet", seed=4),
}


def photographs(size):
  """``[2, size, size, 3]`` float32: china.jpg and flower.jpg resized (bilinear) and
  normalised as jaxdet's pipeline and torchvision's transforms do."""
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  images = [np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)
            for image in datasets.load_sample_images().images]
  mean, std = np.float32(config_lib.PIXEL_MEAN), np.float32(config_lib.PIXEL_STD)
  return np.stack([(image - mean) / std for image in images])


def names_and_state_dict(case):
  """``(names, state dict)``: the case's torchvision name map and its random state dict (with
  VGG-16's fc8, which the import leaves out, so that torchvision takes it)."""
  config = load_config(case.config)
  detector = detectors.build(config.model)
  shapes = jax.eval_shape(lambda: detector.init(jax.random.PRNGKey(0), (64, 64)))
  variable_shapes = {(collection,) + path: leaf.shape
                     for collection in shapes for path, leaf in
                     trees.flatten(shapes[collection]).items()}
  if case.architecture == "vgg16":
    names = torchvision.vgg16_names()
  else:
    names = torchvision.resnet_names(case.architecture)
  state_dict = torchvision.random_state_dict(names, variable_shapes, case.seed)
  if case.architecture == "vgg16":
    rng = np.random.default_rng(case.seed + 1)
    state_dict["classifier.6.weight"] = rng.normal(0, 0.01, (1000, 4096)).astype(np.float32)
    state_dict["classifier.6.bias"] = np.zeros(1000, np.float32)
  return names, state_dict


def jaxdet_features(case, state_dict, names, images):
  """The compared maps (NHWC) and ResNet's logits of the jaxdet trunk with the imported state
  dict."""
  config = load_config(case.config)
  trunk = backbones.build(config.model.trunk, config.model.backbone, dtype=np.float32,
                          backend="xla", num_classes=config.model.num_classes)
  arrays = torchvision.to_variables(state_dict, names, torchvision.VGG16_DROPPED)
  # The trunk alone: its variables without the classifier model's "backbone" level.
  variables = trees.unflatten({(path[0],) + path[2:]: a for path, a in arrays.items()})
  if case.architecture != "vgg16":
    outputs = jax.jit(trunk.apply)(variables, images)
    return {k: np.asarray(outputs[k]) for k in case.levels + ("logits",)}
  variables["params"]["classifier"] = {"kernel": np.zeros((1024, 1000), np.float32),
                                       "bias": np.zeros(1000, np.float32)}
  _, state = jax.jit(lambda v, x: trunk.apply(
      v, x, capture_intermediates=lambda module, _: module.name in VGG_LEVELS))(variables, images)
  return {k: np.asarray(state["intermediates"][k]["__call__"][0]) for k in case.levels}


def torchvision_features(case, state_dict, images):
  """The compared maps (NHWC) and ResNet's logits of torchvision's model with ``state_dict``."""
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision as tv  # pylint: disable=import-outside-toplevel
  model = getattr(tv.models, case.architecture)(weights=None).eval()
  model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                        strict=True)
  if case.architecture == "vgg16":
    layers = [model.features[VGG_FEATURE_INDEX[level]] for level in case.levels]
  else:
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
  captured = {}                    # copied: VGG's in-place ReLU would overwrite the output
  for level, layer in zip(case.levels, layers):
    layer.register_forward_hook(
        lambda module, inputs, output, level=level: captured.__setitem__(level, output.clone()))
  with torch.no_grad():
    logits = model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
  features = {k: v.numpy().transpose(0, 2, 3, 1) for k, v in captured.items()}
  return features if case.architecture == "vgg16" else {**features, "logits": logits.numpy()}


def sketch(features):
  """``[B, SKETCH]`` fixed random projections of each image's flattened map."""
  flat = features.reshape(features.shape[0], -1).astype(np.float64)
  projection = np.random.default_rng(flat.shape[1]).normal(size=(flat.shape[1], SKETCH))
  return flat @ projection / np.sqrt(flat.shape[1])


def summary(case, features, size):
  """What a fixture keeps of ``features`` at input ``size`` (module docstring)."""
  kept = {f"{size}/logits": features["logits"]} if "logits" in features else {}
  kept.update({f"{size}/{level}_sketch": sketch(features[level]) for level in case.levels})
  if size == SIZES[0]:
    kept[f"{size}/{case.levels[-1]}"] = features[case.levels[-1]]
  return kept
