"""Resizing: letterbox (aspect kept, padded) and warp (SSD/YOLO), by hand values."""
import numpy as np
import pytest
import tensorflow as tf

from jaxdet.data import transforms


@pytest.mark.parametrize("keep,want_scale,want_box", [
    (True, (0.8, 0.8), [8.0, 4.0, 24.0, 20.0]),       # fits 80 wide into 64: 40x80 -> 32x64
    (False, (1.6, 0.8), [8.0, 8.0, 24.0, 40.0]),      # warped: y x1.6, x x0.8
])
def test_resize_keeps_or_warps_the_aspect_ratio(keep, want_scale, want_box):
  image = np.zeros((40, 80, 3), np.float32)
  image[5:25, 10:30] = 255.0                          # the box's pixels
  boxes = tf.constant([[10.0, 5.0, 30.0, 25.0]])
  out, out_boxes, scale = transforms.resize_and_pad(tf.constant(image), boxes, 64, 64, keep)
  assert out.shape == (64, 64, 3)
  np.testing.assert_allclose(scale, want_scale, rtol=1e-6)
  np.testing.assert_allclose(out_boxes[0], want_box, rtol=1e-6)
  x1, y1, x2, y2 = (int(v) for v in want_box)
  assert np.all(out.numpy()[y1 + 1:y2 - 1, x1 + 1:x2 - 1] > 250)   # the pixels moved with it
  if keep:
    assert np.all(out.numpy()[32:] == 0)              # padded below the 32 resized rows
