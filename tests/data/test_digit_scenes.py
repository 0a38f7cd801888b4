"""digit_scenes: scene composition checked against the pixels it produces, with backgrounds and
digits chosen by the test so that every stroke can be told apart from the background."""
import numpy as np
import pytest

from jaxdet import config as config_lib
from jaxdet.data import digit_scenes
from jaxdet.data import sources

BACKGROUND = 100                 # a constant photo: its resized crops are constant too
NUM_DIGITS = 1797                # scikit-learn's digits


@pytest.fixture(scope="module")
def real_digits():
  return digit_scenes._sklearn_sources()  # pylint: disable=protected-access


def constant_photos(value=BACKGROUND):
  return [np.full((427, 640, 3), value, np.uint8)]


def solid_digits():
  """Every digit is a fully opaque 8x8 square: its stroke box is its whole cell."""
  return np.ones((NUM_DIGITS, 8, 8), np.float32)


def block_digits():
  """Every digit is an opaque block (rows 2-5, columns 1-6) on a transparent 8x8 square."""
  digits = np.zeros((NUM_DIGITS, 8, 8), np.float32)
  digits[:, 2:6, 1:7] = 1.0
  return digits


def union_of_boxes(boxes, height, width):
  covered = np.zeros((height, width), bool)
  for x1, y1, x2, y2 in np.asarray(boxes, np.int64):
    covered[y1:y2, x1:x2] = True
  return covered


def check_scene_invariants(image, boxes, labels, max_label=9):
  height, width = image.shape[:2]
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  assert digit_scenes.CANVAS_RANGE[0] <= height <= digit_scenes.CANVAS_RANGE[1]
  assert digit_scenes.CANVAS_RANGE[0] <= width <= digit_scenes.CANVAS_RANGE[1]
  assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
  assert 1 <= len(labels) <= digit_scenes.OBJECTS_RANGE[1]
  assert np.all(boxes == np.round(boxes))                   # whole pixels
  assert np.all(boxes[:, :2] >= 0)
  assert np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
  assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
  assert np.all((labels >= 0) & (labels <= max_label))


@pytest.mark.parametrize("split", ["train", "test"])
def test_compose_scene_deterministic_per_seed(real_digits, split):
  digits, labels, photos = real_digits
  first = digit_scenes.compose_scene([3, 7], split, digits, labels, photos)
  again = digit_scenes.compose_scene([3, 7], split, digits, labels, photos)
  other = digit_scenes.compose_scene([3, 8], split, digits, labels, photos)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert first[0].shape != other[0].shape or np.any(first[0] != other[0])


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_scenes_boxes_inside_canvas_labels_in_range(real_digits, split):
  digits, labels, photos = real_digits
  seen = set()
  for i in range(40):
    image, boxes, scene_labels = digit_scenes.compose_scene([5, i], split, digits, labels, photos)
    check_scene_invariants(image, boxes, scene_labels)
    seen.update(scene_labels.tolist())
  assert len(seen) >= 8   # the classes are all represented, not one digit repeated


def test_real_digit_boxes_tightly_enclose_strokes(real_digits, monkeypatch):
  # On a constant background of 100 (dark, so each digit is painted in a colour c with every
  # channel in [190, 255]) a pixel of alpha a becomes trunc(100 + a (c - 100)); its largest
  # channel excess d satisfies floor(90 a) <= d <= 155 a. Strokes (a > 0.25) thus have d >= 22,
  # and d >= 39 only happens on strokes. Digits are kept apart so strokes do not overlap.
  monkeypatch.setattr(digit_scenes, "MAX_OVERLAP_IOU", 0.0)
  digits, labels, _ = real_digits
  for i in range(30):
    image, boxes, scene_labels = digit_scenes.compose_scene(
        [11, i], "train", digits, labels, constant_photos())
    check_scene_invariants(image, boxes, scene_labels)
    excess = (image.astype(np.int64) - BACKGROUND).max(axis=2)
    height, width = excess.shape
    # Every sure stroke pixel lies in a box.
    assert not np.any((excess >= 39) & ~union_of_boxes(boxes, height, width))
    for x1, y1, x2, y2 in boxes.astype(np.int64):
      inside = excess[y1:y2, x1:x2]
      assert inside.max() >= 39                      # the box holds a digit
      # Tight: each of its four edges touches a stroke.
      assert inside[0].max() >= 22 and inside[-1].max() >= 22
      assert inside[:, 0].max() >= 22 and inside[:, -1].max() >= 22


def test_solid_digits_boxes_are_exactly_the_changed_pixels(monkeypatch):
  monkeypatch.setattr(digit_scenes, "MAX_OVERLAP_IOU", 0.0)
  labels = np.arange(NUM_DIGITS) % 10
  for i in range(30):
    image, boxes, scene_labels = digit_scenes.compose_scene(
        [12, i], "train", solid_digits(), labels, constant_photos())
    check_scene_invariants(image, boxes, scene_labels)
    changed = np.any(image != BACKGROUND, axis=2)
    np.testing.assert_array_equal(changed, union_of_boxes(boxes, *changed.shape))
    for x1, y1, x2, y2 in boxes.astype(np.int64):
      cell = image[y1:y2, x1:x2].reshape(-1, 3)
      assert np.all(cell == cell[0]) and np.all(cell >= 190)   # one bright opaque colour


def test_block_digit_box_matches_alpha_recovered_from_pixels(monkeypatch):
  # One digit per scene, opaque inside a block: the block's interior shows the digit's colour c
  # exactly, so every pixel's alpha is (pixel - 100) / (c - 100), within 1/90 (uint8 rounding).
  # The box must hold every pixel with alpha > 0.25 + 0.02, and each of its edges must reach a
  # pixel with alpha > 0.25 - 0.02.
  monkeypatch.setattr(digit_scenes, "OBJECTS_RANGE", (1, 1))
  labels = np.arange(NUM_DIGITS) % 10
  for i in range(30):
    image, boxes, scene_labels = digit_scenes.compose_scene(
        [13, i], "train", block_digits(), labels, constant_photos())
    check_scene_invariants(image, boxes, scene_labels)
    assert len(boxes) == 1
    pixels = image.astype(np.float64)
    excess = np.abs(pixels - BACKGROUND).sum(axis=2)
    colour = pixels.reshape(-1, 3)[np.argmax(excess)]
    alpha = ((pixels - BACKGROUND) / (colour - BACKGROUND)).mean(axis=2)
    assert np.sum(alpha > 0.99) >= 4    # the opaque block's interior
    x1, y1, x2, y2 = boxes[0].astype(np.int64)
    inside = union_of_boxes(boxes, *image.shape[:2])
    assert not np.any((alpha > 0.27) & ~inside)
    box_alpha = alpha[y1:y2, x1:x2]
    assert box_alpha[0].max() > 0.23 and box_alpha[-1].max() > 0.23
    assert box_alpha[:, 0].max() > 0.23 and box_alpha[:, -1].max() > 0.23


@pytest.mark.parametrize("split,low,high", [("train", 0, 1500), ("test", 1500, NUM_DIGITS)])
def test_train_and_test_use_disjoint_digits_and_photo_halves(split, low, high):
  # Labels are the digit indices here, so the scene tells which digits it drew from.
  photo = np.empty((427, 640, 3), np.uint8)
  photo[:, :320] = 60      # the train half
  photo[:, 320:] = 200     # the test half
  background = 60 if split == "train" else 200
  drawn = set()
  for i in range(60):
    image, boxes, indices = digit_scenes.compose_scene(
        [21, i], split, solid_digits(), np.arange(NUM_DIGITS), [photo])
    assert np.all((indices >= low) & (indices < high))
    drawn.update(indices.tolist())
    outside = ~union_of_boxes(boxes, *image.shape[:2])
    assert np.all(image[outside] == background)
  assert len(drawn) > 50


SIZES = {"train": 3, "test": 2}


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory):
  """digit_scenes built once, with tiny splits, into a temporary data_dir."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(digit_scenes, "SPLIT_SIZES", dict(SIZES))
    builder = digit_scenes.prepare(data_dir)
    assert builder.is_prepared()
  return data_dir


@pytest.mark.parametrize("split", ["train", "test"])
def test_built_dataset_matches_composed_scenes(built_dir, real_digits, split):
  digits, labels, photos = real_digits
  source = sources.build_source(f"digit_scenes:{split}", data_dir=built_dir)
  assert isinstance(source, sources.TfdsSource)
  assert len(source) == SIZES[split] and source.num_classes == 10
  assert source.class_names == tuple(str(d) for d in range(10))
  ids = []
  for index in range(len(source)):
    record = source[index]
    # TFDS shuffles records when it builds: the example number is kept as the image id.
    i = record["image_id"]
    ids.append(i)
    image, boxes, scene_labels = digit_scenes.compose_scene(
        [digit_scenes.SPLIT_SEEDS[split], i], split, digits, labels, photos)
    np.testing.assert_array_equal(record["image"], image)                     # PNG: lossless
    assert (record["height"], record["width"]) == image.shape[:2]
    # TFDS stores normalized float32 (ymin, xmin, ymax, xmax): back to pixels within 1e-4.
    np.testing.assert_allclose(record["boxes"], boxes, atol=1e-4)
    np.testing.assert_array_equal(record["labels"], scene_labels)
    assert not record["ignore"].any()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(record["area"], area, rtol=1e-4)
  assert sorted(ids) == list(range(SIZES[split]))


def test_built_dataset_concat_spec(built_dir):
  source = sources.build_source("digit_scenes:train+test", data_dir=built_dir)
  assert len(source) == 5
  assert [source.annotations(i)["image_id"] for i in range(5)] == [0, 1, 2, 3, 4]


def test_built_dataset_feeds_the_pipelines(built_dir):
  from jaxdet.data import pipeline  # pylint: disable=import-outside-toplevel
  from jaxdet.data import sanitize  # pylint: disable=import-outside-toplevel
  source = sources.build_source("digit_scenes:train", data_dir=built_dir)
  config = config_lib.base_config().data
  config.update(dict(image_size=(64, 64), max_boxes=8, random_flip=True))
  issues = sanitize.DataIssues()
  ds = pipeline.train_dataset(source, config, num_classes=10, global_batch_size=2,
                              start_example=0, seed=0, issues=issues)
  scene_sizes = sorted(len(source.annotations(i)["labels"]) for i in range(len(source)))
  for batch in ds.take(3).as_numpy_iterator():
    assert batch["image"].shape == (2, 64, 64, 3)
    for boxes, labels, mask in zip(batch["boxes"], batch["labels"], batch["mask"]):
      assert mask.sum() in scene_sizes
      valid = boxes[mask]
      assert np.all(valid[:, :2] >= 0) and np.all(valid[:, 2:] <= 64 + 1e-4)
      assert np.all(valid[:, 2:] > valid[:, :2])
      assert np.all((labels[mask] >= 0) & (labels[mask] < 10))
  assert all(v == 0 for v in issues.snapshot().values())   # exact boxes: nothing to repair

  batches = list(pipeline.eval_dataset(source, config, batch_size=2,
                                       issues=issues).as_numpy_iterator())
  ids = np.concatenate([b["image_id"] for b in batches])
  padded = np.concatenate([b["skip"] for b in batches])
  assert sorted(ids[~padded].tolist()) == [0, 1, 2] and padded.tolist() == [False] * 3 + [True]
