"""YOLOv1 augmentation (jaxdet/data/augment.py, "yolo"): HSV against colorsys, the geometry
against a numpy re-derivation and on boxes of unique colours, parameter ranges, determinism."""
import colorsys

import numpy as np
import pytest
import tensorflow as tf

from jaxdet import config as config_lib
from jaxdet.data import augment
from tests.data.test_augment import COLOURS, MEAN, coloured_scene, random_image, seed_of, seeds_of

IMAGE = tf.TensorSpec([None, None, 3], tf.float32)
BOXES = tf.TensorSpec([None, 4], tf.float32)
SCALAR = tf.TensorSpec([], tf.float32)


@tf.function(input_signature=[IMAGE, BOXES, tf.TensorSpec([None], tf.int32),
                              tf.TensorSpec([7, 2], tf.int64), SCALAR, SCALAR, SCALAR, SCALAR])
def yolo(image, boxes, labels, seeds, jitter, saturation, exposure, hue):
  return augment.yolo_augment(image, boxes, labels, seeds, jitter=jitter, saturation=saturation,
                              exposure=exposure, hue=hue)


scale_and_translate = tf.function(augment.scale_and_translate,
                                  input_signature=[IMAGE, BOXES, SCALAR, SCALAR, SCALAR])


def numpy(outputs):
  return [np.asarray(x) for x in outputs]


def test_hsv_matches_colorsys():
  image = random_image(np.random.default_rng(0), 5, 7)
  for saturation, exposure, hue in [(1.4, 0.7, 0.0), (0.68, 1.5, 0.1), (1.0, 1.0, -0.05)]:
    got = augment.apply_hsv(image, saturation, exposure, hue).numpy()
    want = np.empty(image.shape)
    for index in np.ndindex(image.shape[:2]):
      h, s, v = colorsys.rgb_to_hsv(*(image[index].astype(np.float64) / 255.0))
      want[index] = colorsys.hsv_to_rgb((h + hue) % 1.0, min(s * saturation, 1.0),
                                        min(v * exposure, 1.0))
    np.testing.assert_allclose(got, want * 255.0, atol=0.05)


def test_sampled_parameters_stay_in_their_ranges():
  factors = {"saturation": [], "exposure": []}
  for i in range(200):
    params = {k: float(v) for k, v in augment.sample_hsv(
        seed_of(i), saturation=1.5, exposure=1.25, hue=0.1).items()}
    assert 1 / 1.5 <= params["saturation"] <= 1.5 and 1 / 1.25 <= params["exposure"] <= 1.25
    assert -0.1 <= params["hue"] <= 0.1
    for k in factors:
      factors[k].append(params[k])
    scale, dx, dy = (float(v) for v in augment.sample_scale_translation(seed_of(i), 0.2))
    assert 0.8 <= scale <= 1.2 and -0.2 <= dx <= 0.2 and -0.2 <= dy <= 0.2
  for values in factors.values():          # darknet's rand_scale: shrink or grow, 1/2 each
    assert 70 <= sum(v > 1 for v in values) <= 130
  identity = augment.sample_hsv(seed_of(0), saturation=1.0, exposure=1.0, hue=0.0)
  assert {k: float(v) for k, v in identity.items()} == {"saturation": 1.0, "exposure": 1.0,
                                                       "hue": 0.0}


@pytest.mark.parametrize("scale,dx,dy", [(1.0, 0.0, 0.0), (1.2, 0.1, -0.13), (0.8, -0.2, 0.2),
                                         (0.9, 0.05, 0.0)])
def test_scale_and_translate_matches_a_numpy_rederivation(scale, dx, dy):
  """Integer sizes and offsets as documented: new = round(size * scale), top-left =
  round((size - new) / 2 + shift * size); the scaled image's pixels land there, the rest is the
  mean, and boxes move with them."""
  height, width = 30, 40
  image = random_image(np.random.default_rng(1), height, width)
  boxes = np.float32([[0, 0, 40, 30], [5, 6, 17, 21]])
  out, moved = numpy(scale_and_translate(image, boxes, scale, dx, dy))
  assert out.shape == (height, width, 3)
  new_h, new_w = round(height * scale), round(width * scale)
  top = int(np.round((height - new_h) / 2 + dy * height))
  left = int(np.round((width - new_w) / 2 + dx * width))
  fx, fy = new_w / width, new_h / height
  np.testing.assert_allclose(moved, boxes * [fx, fy, fx, fy] + [left, top, left, top],
                             rtol=1e-6, atol=1e-4)
  scaled = tf.image.resize(image, [new_h, new_w]).numpy()
  expected = np.empty_like(out)
  expected[...] = MEAN
  ys, xs = slice(max(top, 0), min(top + new_h, height)), slice(max(left, 0), min(left + new_w,
                                                                                  width))
  expected[ys, xs] = scaled[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]
  np.testing.assert_array_equal(out, expected)


def test_boxes_still_cover_their_colour():
  """Identity colours: every kept box (shrunk by 1 px for the bilinear blend at its border)
  holds its own colour."""
  image, boxes, labels = coloured_scene(np.random.default_rng(2))
  kept = 0
  for i in range(25):
    out_image, out_boxes, out_labels = numpy(yolo(image, boxes, labels, seeds_of(i), 0.2, 1.0,
                                                  1.0, 0.0))
    assert out_image.shape == image.shape and len(out_labels) == len(out_boxes)
    x1, y1, x2, y2 = out_boxes.T
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= 90) & (0 <= y1) & (y1 < y2) & (y2 <= 60))
    for (bx1, by1, bx2, by2), label in zip(out_boxes, out_labels):
      top, left = int(np.ceil(by1)) + 1, int(np.ceil(bx1)) + 1
      inner = out_image[top:max(int(np.floor(by2)) - 1, top),
                        left:max(int(np.floor(bx2)) - 1, left)]
      np.testing.assert_allclose(inner.reshape(-1, 3), np.broadcast_to(
          COLOURS[label], (inner.size // 3, 3)), atol=1e-3)
      kept += 1
  assert kept > 100


def test_photometric_changes_colours_not_geometry():
  image, boxes, labels = coloured_scene(np.random.default_rng(3))
  for i in range(5):
    plain = numpy(yolo(image, boxes, labels, seeds_of(i), 0.2, 1.0, 1.0, 0.0))
    distorted = numpy(yolo(image, boxes, labels, seeds_of(i), 0.2, 1.5, 1.5, 0.0))
    np.testing.assert_array_equal(distorted[1], plain[1])
    np.testing.assert_array_equal(distorted[2], plain[2])
    assert not np.array_equal(distorted[0], plain[0])
    assert distorted[0].min() >= 0.0 and distorted[0].max() <= 255.0


def test_same_seeds_same_output_other_seeds_differ():
  image, boxes, labels = coloured_scene(np.random.default_rng(4))
  runs = [[numpy(yolo(image, boxes, labels, seeds_of(i), 0.2, 1.5, 1.5, 0.1)) for i in range(4)]
          for _ in range(2)]
  for a, b in zip(*runs):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  first = runs[0]
  assert all(not np.array_equal(first[i][0], first[j][0]) for i in range(4) for j in range(i))


def test_boxes_moved_out_of_the_image_are_dropped_and_no_boxes_is_fine():
  image = random_image(np.random.default_rng(5), 40, 40)
  boxes = np.float32([[0, 0, 4, 4], [18, 18, 22, 22]])
  out, moved = numpy(scale_and_translate(image, boxes, 1.0, 0.2, 0.2))   # shifted by 8 px
  np.testing.assert_array_equal(moved, boxes + 8)
  out_image, out_boxes, out_labels = numpy(augment.yolo_augment(
      image, np.float32([[0, 0, 3, 3], [36, 36, 40, 40]]), np.int32([0, 1]), seeds_of(0),
      jitter=0.0, saturation=1.0, exposure=1.0, hue=0.0))
  assert len(out_labels) == 2                           # jitter 0: the geometry is the identity
  np.testing.assert_allclose(out_image, image, atol=1e-3)
  for i in range(20):
    _, out_boxes, out_labels = numpy(yolo(image, np.zeros((0, 4), np.float32),
                                          np.zeros((0,), np.int32), seeds_of(i), 0.2, 1.5,
                                          1.5, 0.0))
    assert out_boxes.shape == (0, 4) and out_labels.shape == (0,)
  dropped = 0
  for i in range(40):                    # a corner box leaves the image under some shifts
    _, _, out_labels = numpy(yolo(image, np.float32([[0, 0, 3, 3]]), np.int32([7]),
                                  seeds_of(i), 0.2, 1.0, 1.0, 0.0))
    dropped += len(out_labels) == 0
  assert 0 < dropped < 40


def test_build_from_the_config():
  fn = augment.build(config_lib.augmentation("yolo"))     # the paper's values (Sec. 2.2)
  assert fn.func is augment.yolo_augment and fn.keywords == {
      "jitter": 0.2, "saturation": 1.5, "exposure": 1.5, "hue": 0.0}
  for key, value in [("jitter", 1.0), ("saturation", 0.9), ("exposure", 0.5), ("hue", 0.6)]:
    with pytest.raises(ValueError, match=f"data.augment.{key}={value}"):
      augment.build(config_lib.augmentation("yolo", **{key: value}))
