"""Parameter counts of the RetinaNet models against the reference implementations."""
import jax
import numpy as np

from experiments import retinanet as experiment
from jaxdet import detectors


def count(config, exclude_norm=False):
  det = detectors.build(config)
  shapes = jax.eval_shape(lambda rng: det.init(rng, (128, 128)), jax.random.PRNGKey(0))["params"]
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  return sum(int(np.prod(leaf.shape)) for path, leaf in flat
             if not (exclude_norm and any("bn" in str(p).lower() or "batchnorm" in str(p).lower()
                                          for p in path)))


def model(num_classes, backbone="resnet50", p6_input="C5"):
  config = experiment.model_config(num_classes, backbone)
  config.p6_input = p6_input
  return config


# Hand count of RetinaNet R50-FPN, A = 9:
RESNET50_CONV = 23_454_912    # torchvision resnet50 (25,557,032) - fc (2,049,000) - BN (53,120)
RESNET50_BN = 53_120
FPN_LATERAL = (512 + 1024 + 2048) * 256 + 3 * 256
FPN_OUTPUT = 3 * (9 * 256 * 256 + 256)
P7 = 9 * 256 * 256 + 256
SUBNET_TOWERS = 2 * 4 * (9 * 256 * 256 + 256)
BOX_OUTPUT = 9 * 256 * 9 * 4 + 9 * 4


def class_output(num_classes):
  return 9 * 256 * 9 * num_classes + 9 * num_classes


def test_torchvision_retinanet_resnet50_fpn_exactly():
  # torchvision's retinanet_resnet50_fpn: 91 classes, P6 from P5, frozen BN (buffers, not
  # parameters): 34,014,999 parameters (its model card).
  assert count(model(91, p6_input="P5"), exclude_norm=True) == 34_014_999


def test_paper_r50_fpn_80_classes_is_within_1_percent_of_34m_with_p6_from_p5():
  n = count(model(80, p6_input="P5"), exclude_norm=True)
  assert abs(n - 34_000_000) / 34_000_000 < 0.01


def test_paper_r50_fpn_80_classes_with_p6_from_c5():
  # The paper's P6 = 3x3 stride-2 conv on C5 (2048 channels in) instead of P5 (256):
  # + 9 * (2048 - 256) * 256 weights, 37,968,692 parameters with trainable BN.
  p6_c5 = 9 * 2048 * 256 + 256
  want = (RESNET50_CONV + RESNET50_BN + FPN_LATERAL + FPN_OUTPUT + p6_c5 + P7 + SUBNET_TOWERS
          + class_output(80) + BOX_OUTPUT)
  assert want == 37_968_692
  assert count(model(80)) == want


def test_resnet101_adds_17_bottlenecks():
  # ResNet-101 = ResNet-50 + 17 more 1024-wide stage-4 bottlenecks (torchvision: 44,549,160
  # with fc) -> 44,549,160 - 25,557,032 = 18,992,128 more parameters.
  assert count(model(80, "resnet101")) - count(model(80)) == 18_992_128
