"""The backbone registry: a backbone registered outside jaxdet pretrains through the classifier
under the name its detector will give it; unknown names are refused."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxdet import config as config_lib
from jaxdet import detectors
from jaxdet.models import backbones


class TwoConvs(nn.Module):
  width: int
  num_classes: int = 0
  dtype: jnp.dtype = jnp.float32
  backend: str = "xla"

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name="conv1")(x))
    x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name="conv2")(x))
    out = {"stride4": x}
    if self.num_classes:
      out["logits"] = nn.Dense(self.num_classes, name="classifier")(jnp.mean(x, axis=(1, 2)))
    return out


def test_a_registered_backbone_pretrains_under_its_detectors_name(monkeypatch):
  monkeypatch.setattr(backbones, "REGISTRY", dict(backbones.REGISTRY))

  @backbones.register("two_convs", variable_name="trunk")
  def two_convs(settings, **module_args):
    return TwoConvs(width=settings["width"], **module_args)

  model = config_lib.classifier_model("two_convs", dict(width=6), num_classes=4)
  classifier = detectors.build(model)
  variables = classifier.init(jax.random.key(0), (16, 16))
  assert set(variables["params"]) == {"trunk"}
  assert variables["params"]["trunk"]["conv2"]["kernel"].shape == (3, 3, 6, 6)
  assert variables["params"]["trunk"]["classifier"]["kernel"].shape == (6, 4)
  outputs = classifier.model.apply(variables, jnp.ones((2, 16, 16, 3)))
  assert outputs["logits"].shape == (2, 4)
  features = backbones.build("two_convs", dict(width=6), dtype=jnp.float32, backend="xla")
  assert set(features.init(jax.random.key(0), jnp.ones((1, 16, 16, 3)))["params"]) == {
      "conv1", "conv2"}                                  # the detector's form: no class layer


def test_an_unknown_backbone_is_refused_with_the_choices():
  with pytest.raises(ValueError, match=r"backbone 'vgg19': choose from \(.*'darknet53'"):
    detectors.build(config_lib.classifier_model("vgg19", {}, num_classes=10))
