"""SSD augmentation (jaxdet/data/augment.py) against numpy re-derivations and hand-worked cases.

Photometric steps are recomputed with ``colorsys``; zoom out and crop are checked pixel by pixel
on synthetic images whose boxes carry unique colours, and the crop's patch choice by a numpy
float64 loop over the same candidates.
"""
import colorsys

import numpy as np
import pytest
import tensorflow as tf

from jaxdet import config as config_lib
from jaxdet.data import augment
from jaxdet.data import pipeline
from jaxdet.data import sanitize
from jaxdet.data import sources
from tests.ops.test_boxes import brute_force_iou

MEAN = np.float32([123.675, 116.28, 103.53])     # ImageNet RGB means, 0-255
IMAGE = tf.TensorSpec([None, None, 3], tf.float32)
BOXES = tf.TensorSpec([None, 4], tf.float32)
LABELS = tf.TensorSpec([None], tf.int32)
SEED = tf.TensorSpec([2], tf.int64)

# Traced once for every shape (as in tf.data), which also keeps the many-seed loops fast.
ssd = tf.function(augment.ssd_augment, input_signature=[IMAGE, BOXES, LABELS,
                                                        tf.TensorSpec([7, 2], tf.int64)])
photometric = tf.function(augment.photometric_distort, input_signature=[IMAGE, SEED])
sample_photometric = tf.function(augment.sample_photometric, input_signature=[SEED])
expand = tf.function(lambda image, boxes, seed: augment.expand(image, boxes, seed, max_ratio=4.0),
                     input_signature=[IMAGE, BOXES, SEED])
min_iou_crop = tf.function(augment.min_iou_crop, input_signature=[IMAGE, BOXES, LABELS, SEED])
crop_to_first = tf.function(augment.crop_to_first_acceptable, input_signature=[
    IMAGE, BOXES, LABELS, BOXES, tf.TensorSpec([], tf.float32)])


def seeds_of(i, k=7):
  return tf.random.experimental.stateless_split(tf.stack([tf.cast(i, tf.int64), 17]), k)


def seed_of(i):
  return tf.constant([i, 29], tf.int64)


def numpy(outputs):
  return [np.asarray(x) for x in outputs]


def random_image(rng, height, width):
  image = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
  image[0, 0], image[-1, -1] = 0.0, 255.0          # the extremes, for the clipping
  return image


def coloured_scene(rng, height=60, width=90):
  """Black image with one box per cell of a 2 x 3 grid (so boxes never overlap), integer
  coordinates, box i filled with colour ``COLOURS[i]`` and labelled i."""
  image = np.zeros((height, width, 3), np.float32)
  boxes = []
  for i in range(6):
    row, col = divmod(i, 3)
    cell_h, cell_w = height // 2, width // 3
    h, w = (int(v) for v in rng.integers(4, [cell_h, cell_w]))
    y1 = row * cell_h + int(rng.integers(0, cell_h - h + 1))
    x1 = col * cell_w + int(rng.integers(0, cell_w - w + 1))
    boxes.append([x1, y1, x1 + w, y1 + h])
    image[y1:y1 + h, x1:x1 + w] = COLOURS[i]
  return image, np.float32(boxes), np.arange(6, dtype=np.int32)


COLOURS = np.float32([[250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10],
                      [10, 250, 250], [250, 10, 250]])


# ------------------------------------------------------------------------------ SSD.


def test_same_seeds_same_output_other_seeds_differ():
  image, boxes, labels = coloured_scene(np.random.default_rng(0))
  first = [numpy(ssd(image, boxes, labels, seeds_of(i))) for i in range(6)]
  again = [numpy(ssd(image, boxes, labels, seeds_of(i))) for i in range(6)]
  # Inside tf.data (graph mode, dynamic shapes and seeds) likewise; graph rewrites of tf.function
  # may round differently (1 ulp), so across the two only closeness is asserted.
  ds = tf.data.Dataset.from_tensors((image, boxes, labels)).repeat(6).enumerate().map(
      lambda i, x: augment.ssd_augment(*x, seeds_of(i)), num_parallel_calls=2)
  in_data, in_data_again = (list(ds.as_numpy_iterator()) for _ in range(2))
  for a, b, c, d in zip(first, again, in_data, in_data_again):
    for w, x, y, z in zip(a, b, c, d):
      np.testing.assert_array_equal(w, x)
      np.testing.assert_array_equal(y, z)
      np.testing.assert_allclose(w, y, atol=1e-3)
  for i in range(6):
    for j in range(i):
      assert first[i][0].shape != first[j][0].shape or not np.array_equal(first[i][0],
                                                                          first[j][0])


CASES = {  # name -> (height, width, boxes, labels): plain, tiny, thin, empty, unsanitized
    "plain": (60, 80, [[10, 10, 30, 40], [50, 20, 75, 55], [0, 0, 80, 60]], [0, 1, 2]),
    "one_pixel": (1, 1, [[0, 0, 1, 1]], [4]),
    "thin": (2, 50, [[0, 0, 50, 2], [10, 0.5, 10.001, 1.5]], [1, 3]),
    "no_boxes": (30, 30, np.zeros((0, 4)), []),
    "degenerate": (40, 40, [[5, 5, 5, 20], [-10, -10, 10, 10], [50, 50, 60, 60],
                            [39.5, 0, 40, 40]], [0, 1, 2, 3]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_stay_inside_the_image_over_many_seeds(case):
  height, width, boxes, labels = CASES[case]
  image = random_image(np.random.default_rng(1), height, width)
  boxes, labels = np.float32(boxes).reshape(-1, 4), np.int32(labels)
  sizes = set()
  for i in range(25):
    out_image, out_boxes, out_labels = numpy(ssd(image, boxes, labels, seeds_of(i)))
    h, w, channels = out_image.shape
    sizes.add((h, w))
    assert channels == 3 and h >= 1 and w >= 1 and out_image.dtype == np.float32
    assert np.all(np.isfinite(out_image)) and out_image.min() >= 0 and out_image.max() <= 255
    assert out_boxes.shape == (len(out_labels), 4) and len(out_labels) <= len(labels)
    assert set(out_labels.tolist()) <= set(labels.tolist())
    x1, y1, x2, y2 = out_boxes.T
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= w) & (0 <= y1) & (y1 < y2) & (y2 <= h))
    if case == "degenerate":       # zero width, fully outside the image: never targets
      assert not set(out_labels.tolist()) & {0, 2}
  assert len(sizes) > 1, sizes     # zoom out and crop changed the size for some seeds


# ---------------------------------------------------------------------------- Photometric.


def numpy_photometric(image, brightness_delta, contrast, saturation, hue_delta, contrast_first):
  """Caffe's order, float64: brightness; contrast before or after saturation + hue in HSV."""
  x = np.clip(image.astype(np.float64) + brightness_delta, 0, 255)
  if contrast_first:
    x = np.clip(x * contrast, 0, 255)
  out = np.empty_like(x)
  for index in np.ndindex(x.shape[:2]):
    h, s, v = colorsys.rgb_to_hsv(*(x[index] / 255.0))
    s = min(max(s * saturation, 0.0), 1.0)
    h = (h + hue_delta / 360.0) % 1.0
    out[index] = np.clip(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0, 0, 255)
  if not contrast_first:
    out = np.clip(out * contrast, 0, 255)
  return out


@pytest.mark.parametrize("params", [
    dict(brightness_delta=20.0, contrast=1.3, saturation=0.6, hue_delta=12.0,
         contrast_first=True),
    dict(brightness_delta=-30.0, contrast=0.7, saturation=1.45, hue_delta=-17.5,
         contrast_first=False),
    dict(brightness_delta=0.0, contrast=1.5, saturation=1.0, hue_delta=0.0,
         contrast_first=False),
])
def test_apply_photometric_matches_colorsys(params):
  image = random_image(np.random.default_rng(2), 5, 7)
  got = augment.apply_photometric(image, **params).numpy()
  np.testing.assert_allclose(got, numpy_photometric(image, **params), atol=0.05)


def test_photometric_identity_parameters_keep_the_image_exactly():
  image = random_image(np.random.default_rng(3), 5, 7)
  got = augment.apply_photometric(image, 0.0, 1.0, 1.0, 0.0, True).numpy()
  np.testing.assert_array_equal(got, image)


def test_photometric_distort_samples_each_step_half_the_time_within_its_range():
  identity = dict(brightness_delta=0.0, contrast=1.0, saturation=1.0, hue_delta=0.0)
  ranges = dict(brightness_delta=(-32, 32), contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                hue_delta=(-18, 18))
  drawn = {k: 0 for k in identity}
  contrast_first = 0
  for i in range(200):
    params = {k: v.numpy() for k, v in sample_photometric(seed_of(i)).items()}
    contrast_first += bool(params["contrast_first"])
    for k, (low, high) in ranges.items():
      assert low <= params[k] <= high, (k, params[k])
      drawn[k] += params[k] != identity[k]
  for k, count in drawn.items():
    assert 70 <= count <= 130, (k, count)          # Binomial(200, 1/2): mean 100, sd 7
  assert 70 <= contrast_first <= 130


def test_photometric_distort_keeps_shape_and_range_and_matches_its_parameters():
  image = random_image(np.random.default_rng(4), 6, 9)
  image[1] = 255.0                                 # saturated rows stress the clipping
  image[2] = 0.0
  changed = 0
  for i in range(20):
    got = photometric(image, seed_of(i)).numpy()
    assert got.shape == image.shape and got.dtype == np.float32
    assert got.min() >= 0.0 and got.max() <= 255.0
    params = {k: v.numpy() for k, v in sample_photometric(seed_of(i)).items()}
    np.testing.assert_allclose(got, numpy_photometric(image, **params), atol=0.05)
    changed += not np.array_equal(got, image)
  assert changed >= 15


# ------------------------------------------------------------------------------- Expand.


def test_place_on_canvas_hand_checked():
  image = random_image(np.random.default_rng(5), 4, 5)
  boxes = np.float32([[0, 0, 5, 4], [1.5, 0.5, 3, 2]])
  canvas, shifted = augment.place_on_canvas(image, boxes, 9, 12, 3, 6)   # top 3, left 6
  expected = np.empty((9, 12, 3), np.float32)
  expected[...] = MEAN
  expected[3:7, 6:11] = image
  np.testing.assert_array_equal(canvas, expected)
  np.testing.assert_array_equal(shifted, [[6, 3, 11, 7], [7.5, 3.5, 9, 5]])
  # Once normalized the fill is exactly 0 and the pixels under the box equal the original's.
  normalized = pipeline.normalize(canvas).numpy()
  assert np.all(normalized[:3] == 0) and np.all(normalized[:, :6] == 0)
  assert np.all(normalized[7:] == 0) and np.all(normalized[:, 11:] == 0)
  np.testing.assert_array_equal(canvas.numpy()[3:7, 6:11], image)


def test_expand_places_the_image_at_the_box_shift_on_a_mean_canvas():
  height, width = 6, 8
  image = random_image(np.random.default_rng(6), height, width)
  boxes = np.float32([[0, 0, 8, 6], [2, 1, 5, 4]])
  expanded = 0
  for i in range(40):
    canvas, shifted = numpy(expand(image, boxes, seed_of(i)))
    h, w, _ = canvas.shape
    assert height <= h < 4 * height and width <= w < 4 * width
    # One ratio r in [1, 4) gives both sides: h = floor(6 r), w = floor(8 r).
    assert max(h / height, w / width) < min((h + 1) / height, (w + 1) / width)
    shift = shifted - boxes
    left, top = shift[0, 0], shift[0, 1]
    np.testing.assert_array_equal(shift, np.tile([[left, top]], (2, 2)))
    left, top = int(left), int(top)
    assert left == shift[0, 0] and 0 <= left <= w - width and 0 <= top <= h - height
    np.testing.assert_array_equal(canvas[top:top + height, left:left + width], image)
    for x1, y1, x2, y2 in shifted.astype(int):     # the pixels under each box, unchanged
      np.testing.assert_array_equal(canvas[y1:y2, x1:x2],
                                    image[y1 - top:y2 - top, x1 - left:x2 - left])
    fill = np.ones((h, w), bool)
    fill[top:top + height, left:left + width] = False
    assert np.all(canvas[fill] == MEAN)
    expanded += (h, w) != (height, width)
  assert 10 <= expanded <= 30, expanded            # probability 1/2


# --------------------------------------------------------------------------------- Crop.


def overlaps_some_box(patch, boxes, min_iou):
  iou = brute_force_iou(np.float64(patch)[None], np.float64(boxes).reshape(-1, 4))
  return bool(np.any(iou >= min_iou))


def centre_inside(patch, box):
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  return patch[0] < cx < patch[2] and patch[1] < cy < patch[3]


def numpy_acceptable(patch, boxes, min_iou):
  w, h = patch[2] - patch[0], patch[3] - patch[1]
  return (w > 0 and h > 0 and 0.5 <= h / w <= 2
          and overlaps_some_box(patch, boxes, min_iou)
          and any(centre_inside(patch, b) for b in boxes))


def numpy_crop(image, boxes, labels, patch):
  """Expected crop of ``patch`` by a loop over the boxes."""
  x1, y1, x2, y2 = (int(v) for v in patch)
  kept = [i for i, box in enumerate(boxes) if centre_inside(patch, box)]
  out = [[max(boxes[i][0], x1) - x1, max(boxes[i][1], y1) - y1,
          min(boxes[i][2], x2) - x1, min(boxes[i][3], y2) - y1] for i in kept]
  return image[y1:y2, x1:x2], np.float32(out).reshape(-1, 4), labels[kept]


def test_crop_hand_checked_candidates():
  image = random_image(np.random.default_rng(7), 100, 100)
  boxes = np.float32([[10, 10, 30, 30], [60, 60, 90, 90]])     # areas 400, 900
  labels = np.int32([0, 1])
  candidates = np.float32([
      [0, 0, 80, 20],       # aspect 1/4: never
      [0, 0, 15, 15],       # no centre inside (IoU with box 0 is 25 / 600)
      [0, 0, 40, 40],       # box 0's centre; IoU 400 / 1600 = 0.25
      [55, 55, 95, 95],     # box 1's centre; IoU 900 / 1600 = 0.5625
      [10, 10, 30, 30],     # box 0 itself: IoU 1
  ])
  expected = {0.0: 2, 0.1: 2, 0.3: 3, 0.5: 3, 0.7: 4, 0.9: 4, np.inf: None}
  for min_iou, index in expected.items():
    out_image, out_boxes, out_labels, patch = numpy(
        crop_to_first(image, boxes, labels, candidates, min_iou))
    if index is None:     # nothing qualifies: the whole image, everything kept
      np.testing.assert_array_equal(patch, [0, 0, 100, 100])
      np.testing.assert_array_equal(out_image, image)
      np.testing.assert_array_equal(out_boxes, boxes)
      continue
    np.testing.assert_array_equal(patch, candidates[index], err_msg=str(min_iou))
  _, out_boxes, out_labels, _ = numpy(crop_to_first(image, boxes, labels, candidates, 0.5))
  np.testing.assert_array_equal(out_boxes, [[5, 5, 35, 35]])   # box 1 in patch [55, 55, ...]
  np.testing.assert_array_equal(out_labels, [1])


def test_crop_takes_the_first_acceptable_of_the_sampled_candidates():
  rng = np.random.default_rng(8)
  found = {min_iou: 0 for min_iou in augment.MIN_IOU_CHOICES}
  for i in range(12):
    height, width = (int(v) for v in rng.integers(20, 120, 2))
    xy = rng.uniform(0, [width, height], (3, 2))
    wh = rng.uniform(2, [width, height], (3, 2))
    boxes = np.float32(np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1))
    boxes = boxes[:int(rng.integers(0, 4))]
    labels = np.arange(len(boxes), dtype=np.int32)
    image = random_image(rng, height, width)
    candidates = augment.sample_candidates(seed_of(i), height, width).numpy()
    assert candidates.shape == (augment.NUM_TRIALS, 4)
    np.testing.assert_array_equal(candidates, np.floor(candidates))
    size = np.float32([width, height])
    assert np.all(candidates[:, :2] >= 0) and np.all(candidates[:, 2:] <= size)
    assert np.all(candidates[:, 2:] - candidates[:, :2] > 0.3 * size - 1)
    for min_iou in augment.MIN_IOU_CHOICES:
      out = numpy(crop_to_first(image, boxes, labels, candidates, min_iou))
      firsts = [j for j, c in enumerate(candidates) if numpy_acceptable(c, boxes, min_iou)]
      if not firsts:
        np.testing.assert_array_equal(out[3], [0, 0, width, height])
        for got, want in zip(out, (image, boxes, labels)):
          np.testing.assert_array_equal(got, want)
        continue
      found[min_iou] += 1
      patch = candidates[firsts[0]]
      np.testing.assert_array_equal(out[3], patch)
      assert overlaps_some_box(patch, boxes, min_iou)
      for got, want in zip(out, numpy_crop(image, boxes, labels, patch)):
        np.testing.assert_array_equal(got, want)
  assert found[np.inf] == 0 and found[0.0] > 0 and found[0.5] > 0, found


def test_min_iou_crop_keeps_the_boxes_with_centres_inside_and_their_pixels():
  image, boxes, labels = coloured_scene(np.random.default_rng(9))
  cropped = 0
  for i in range(40):
    out_image, out_boxes, out_labels, patch = numpy(min_iou_crop(image, boxes, labels,
                                                                 seed_of(i)))
    want_image, want_boxes, want_labels = numpy_crop(image, boxes, labels, patch)
    np.testing.assert_array_equal(out_image, want_image)
    np.testing.assert_array_equal(out_boxes, want_boxes)
    np.testing.assert_array_equal(out_labels, want_labels)
    assert len(out_labels) > 0
    w, h = patch[2:] - patch[:2]
    if (w, h) != (90, 60):
      cropped += 1
      assert 0.5 <= h / w <= 2 and w >= 0.3 * 90 - 1 and h >= 0.3 * 60 - 1
    for (x1, y1, x2, y2), label in zip(out_boxes.astype(int), out_labels):
      assert x2 > x1 and y2 > y1
      assert np.all(out_image[y1:y2, x1:x2] == COLOURS[label])
  assert 20 <= cropped < 40, cropped              # the whole image is 1 of 7 choices


def test_min_iou_crop_without_boxes_keeps_the_whole_image():
  image = random_image(np.random.default_rng(10), 20, 30)
  for i in range(10):
    out_image, out_boxes, out_labels, patch = numpy(min_iou_crop(
        image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), seed_of(i)))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(patch, [0, 0, 30, 20])
    assert out_boxes.shape == (0, 4) and out_labels.shape == (0,)


# --------------------------------------------------------------------- Config and pipeline.


def test_build_from_the_config():
  data = config_lib.base_config().data
  assert augment.build(data.augment) is None                 # no augmentation by default
  fn = augment.build(config_lib.augmentation("ssd", expand_max_ratio=16.0))
  assert fn.func is augment.ssd_augment and fn.keywords == {"expand_max_ratio": 16.0}
  assert augment.build(config_lib.augmentation("ssd")).keywords == {"expand_max_ratio": 4.0}
  with pytest.raises(ValueError, match=r"name='yolo_v9' is unknown; registered: .*'ssd', 'yolo'"):
    augment.build(config_lib.augmentation("yolo_v9"))
  with pytest.raises(ValueError, match=r"\['jitter'\] are not options of the 'ssd' .*"
                                       r"\['expand_max_ratio'\]"):
    augment.build(config_lib.augmentation("ssd", jitter=0.2))
  with pytest.raises(ValueError, match="expand_max_ratio=0.5 must be >= 1"):
    augment.build(config_lib.augmentation("ssd", expand_max_ratio=0.5))
  # A recipe's augmentation is turned off by its name alone (an ablation's cell).
  assert augment.build(config_lib.augmentation("", expand_max_ratio=4.0)) is None


def test_an_augmentation_registered_outside_jaxdet_runs_in_the_pipeline(coco_dir, monkeypatch):
  monkeypatch.setattr(augment, "REGISTRY", dict(augment.REGISTRY))

  @augment.register("grey", check=lambda level: None)
  def grey(image, boxes, labels, seeds, *, level):
    del seeds
    return tf.fill(tf.shape(image), tf.constant(level, tf.float32)), boxes, labels

  with pytest.raises(ValueError, match=r"'grey' augmentation needs \['level'\]"):
    augment.build(config_lib.augmentation("grey"))
  cfg = config_lib.base_config()
  cfg.data.image_size, cfg.data.max_boxes, cfg.data.random_flip = (24, 32), 4, False
  cfg.data.augment = config_lib.augmentation("grey", level=128.0)
  ds = pipeline.train_dataset(sources.CocoJsonSource(coco_dir, "train"), cfg.data,
                              num_classes=3, global_batch_size=2, start_example=0, seed=0,
                              issues=sanitize.DataIssues(), augment=augment.build(cfg.data.augment))
  batch = next(ds.as_numpy_iterator())
  for channel in np.moveaxis(batch["image"], -1, 0):   # normalized per channel
    values = channel[channel != 0]                     # 0: the padding around the image
    assert values.size and np.ptp(values) < 1e-5       # one value: every pixel was 128


def test_train_dataset_with_ssd_augmentation(coco_dir):
  cfg = config_lib.base_config()
  cfg.data.image_size, cfg.data.max_boxes = (24, 32), 4
  cfg.data.augment = config_lib.augmentation("ssd")
  source = sources.CocoJsonSource(coco_dir, "train")

  def batches(fn):
    ds = pipeline.train_dataset(source, cfg.data, num_classes=3, global_batch_size=4,
                                start_example=0, seed=0, issues=sanitize.DataIssues(),
                                augment=fn)
    return list(ds.take(4).as_numpy_iterator())

  augmented, plain = batches(augment.build(cfg.data.augment)), batches(None)
  for batch, reference in zip(augmented, plain):
    assert batch["image"].shape == (4, 24, 32, 3) and np.all(np.isfinite(batch["image"]))
    for boxes, labels, mask, n in zip(batch["boxes"], batch["labels"], batch["mask"],
                                      reference["mask"].sum(axis=1)):
      assert mask.sum() <= n                       # the crop only drops boxes
      np.testing.assert_array_equal(mask, np.arange(4) < mask.sum())
      x1, y1, x2, y2 = boxes[mask].T
      assert np.all((0 <= x1) & (x1 < x2) & (x2 <= 32) & (0 <= y1) & (y1 < y2) & (y2 <= 24))
      assert np.all((labels[mask] >= 0) & (labels[mask] < 3))
      assert np.all(boxes[~mask] == 0) and np.all(labels[~mask] == 0)
  assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(augmented, plain))
