"""What every detector inherits from jaxdet.detectors.base."""
import itertools

import flax.linen as nn
import pytest

from jaxdet.detectors import base


class OneConvolution(nn.Module):
  @nn.compact
  def __call__(self, images, train=False):
    return {"features": nn.Conv(8, (3, 3), padding="SAME")(images)}


class OneConvolutionDetector(base.Detector):
  def loss(self, outputs, batch):
    raise NotImplementedError("only the forward pass is costed")

  def decode(self, outputs, image_size):
    raise NotImplementedError("only the forward pass is costed")


def test_the_forward_cost_counts_each_multiply_add_inside_the_image_and_each_bias_add():
  height, width, channels_in, channels_out = 16, 12, 3, 8
  taps = sum(1 for y, x, dy, dx in itertools.product(range(height), range(width), (-1, 0, 1),
                                                     (-1, 0, 1))
             if 0 <= y + dy < height and 0 <= x + dx < width)   # SAME padding adds zeros only
  flops = 2 * taps * channels_in * channels_out + height * width * channels_out
  detector = OneConvolutionDetector(OneConvolution(), num_classes=1)
  assert detector.forward_gflop_per_image((height, width)) * 1e9 == pytest.approx(flops)
