"""train_dataset / eval_dataset on the COCO-json folder of tests/data/coco_folder.py.

Each good image there is a solid colour with white rectangles on its boxes, so a batch example
tells which record it came from (its colour) and where its boxes must be (its white pixels); the
expected boxes after resize + pad (+ flip) are worked out by hand below for image_size 24 x 32.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from jaxdet import config as config_lib
from jaxdet.data import pipeline
from jaxdet.data import sanitize
from jaxdet.data import sources
from tests.data import coco_folder

HEIGHT, WIDTH = 24, 32
MEAN = np.array([123.675, 116.28, 103.53])     # ImageNet RGB statistics, 0-255
STD = np.array([58.395, 57.12, 57.375])

# Resize factor min(24 / h, 32 / w) by hand: image 1 (64 x 48) 0.5; image 2 (40 x 60) 0.4;
# image 3 (32 x 32) 0.75; image 4 (50 x 40) 0.6; image 5 (20 x 20) 1.2; image 7 (40 x 30) 0.8.
SCALE = {1: 0.5, 2: 0.4, 3: 0.75, 4: 0.6, 5: 1.2, 7: 0.8}
VALID_WIDTH = {1: 32, 2: 16, 3: 24, 4: 30, 5: 24, 7: 32}      # all resized heights are 24
# image id -> (boxes in the batch unflipped, boxes flipped, labels); flipping mirrors the
# original image (x -> w - x), then scales.
EXPECTED = {
    1: ([[4, 2, 14, 10], [20, 10, 28, 20]],          # (8,4,28,20), (40,20,56,40) x 0.5
        [[18, 2, 28, 10], [4, 10, 12, 20]],          # (36,4,56,20), (8,20,24,40) x 0.5
        [1, 2]),
    2: ([[2.2, 4.1, 10.2, 16.1]],                    # (5.5,10.25,25.5,40.25) x 0.4
        [[5.8, 4.1, 13.8, 16.1]],                    # (14.5,10.25,34.5,40.25) x 0.4
        [0]),
    3: (np.zeros((0, 4)), np.zeros((0, 4)), []),
    4: ([[24, 18, 30, 24], [1.2, 1.2, 8.4, 6]],      # clipped (40,30,50,40), (2,2,14,10) x 0.6
        [[0, 18, 6, 24], [21.6, 1.2, 28.8, 6]],      # (0,30,10,40), (36,2,48,10) x 0.6
        [2, 0]),
}


def data_config(**overrides):
  config = config_lib.base_config().data        # the real schema, defaults included
  config.update({"image_size": (HEIGHT, WIDTH), "max_boxes": 4, "random_flip": True, **overrides})
  return config


@pytest.fixture(scope="module")
def source(coco_dir):
  return sources.CocoJsonSource(coco_dir, "train")


def train_batches(source, num_batches, *, global_batch=4, start_example=0, seed=0,
                  issues=None, config=None, **kwargs):
  ds = pipeline.train_dataset(source, config or data_config(), num_classes=3,
                              global_batch_size=global_batch, start_example=start_example,
                              seed=seed, issues=issues or sanitize.DataIssues(), **kwargs)
  return list(ds.take(num_batches).as_numpy_iterator())


def eval_batches(source, batch_size, issues=None, **kwargs):
  ds = pipeline.eval_dataset(source, data_config(), batch_size=batch_size,
                             issues=issues or sanitize.DataIssues(), **kwargs)
  return list(ds.as_numpy_iterator())


def unnormalize(image):
  return np.asarray(image, np.float64) * STD + MEAN


def identify(image):
  """Id of the good image an example shows, from its background colour."""
  pixels = unnormalize(image)
  fractions = {}
  for image_id in coco_folder.GOOD_IDS:
    colour = np.array(coco_folder.IMAGES[image_id][3])
    valid = pixels[:, :VALID_WIDTH[image_id]]
    fractions[image_id] = np.mean(np.all(np.abs(valid - colour) < 8, axis=-1))
  best = max(fractions, key=fractions.get)
  assert fractions[best] > 0.4, fractions
  return best


def assert_trees_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def concat_batches(*hosts):
  return [{k: np.concatenate([h[i][k] for h in hosts]) for k in hosts[0][i]}
          for i in range(len(hosts[0]))]


def test_train_batch_shapes_and_dtypes(source):
  batch = train_batches(source, 1, config=data_config(max_boxes=5))[0]
  assert batch["image"].shape == (4, HEIGHT, WIDTH, 3) and batch["image"].dtype == np.float32
  assert batch["boxes"].shape == (4, 5, 4) and batch["boxes"].dtype == np.float32
  assert batch["labels"].shape == (4, 5) and batch["labels"].dtype == np.int32
  assert batch["mask"].shape == (4, 5) and batch["mask"].dtype == bool
  # Normalized: a 0-255 image maps into [-mean/std, (255-mean)/std].
  assert batch["image"].min() >= (-MEAN / STD).min() - 1e-4
  assert batch["image"].max() <= ((255 - MEAN) / STD).max() + 1e-4
  # Padding of the box budget: zeros, label 0, mask False, after the real boxes.
  for b in range(4):
    n = len(EXPECTED[identify(batch["image"][b])][2])
    np.testing.assert_array_equal(batch["mask"][b], np.arange(5) < n)
    assert np.all(batch["boxes"][b, n:] == 0) and np.all(batch["labels"][b, n:] == 0)


def white_mask(image):
  return np.all(unnormalize(image) > 200, axis=-1)


def test_train_boxes_follow_resize_pad_and_flip(source):
  batches = train_batches(source, 6)
  flips = {False: 0, True: 0}
  for batch in batches:
    for image, boxes, labels, mask in zip(batch["image"], batch["boxes"], batch["labels"],
                                          batch["mask"]):
      image_id = identify(image)
      plain, flipped, expected_labels = EXPECTED[image_id]
      np.testing.assert_array_equal(labels[mask], expected_labels)
      got = boxes[mask]
      is_flipped = not np.allclose(got, np.reshape(plain, (-1, 4)), atol=1e-4)
      if is_flipped:
        np.testing.assert_allclose(got, np.reshape(flipped, (-1, 4)), atol=1e-4)
      if len(expected_labels) and not np.allclose(plain, flipped):
        flips[is_flipped] += 1
      # The padding right of the resized image is the mean: 0 once normalized.
      np.testing.assert_array_equal(image[:, VALID_WIDTH[image_id]:], 0)
      # White pixels (the drawn objects) lie within their boxes (1 px for resampling blur),
      # and every box holds some.
      white = white_mask(image)
      near_box = np.zeros_like(white)
      for x1, y1, x2, y2 in got:
        near_box[max(0, int(np.floor(y1)) - 1):int(np.ceil(y2)) + 1,
                 max(0, int(np.floor(x1)) - 1):int(np.ceil(x2)) + 1] = True
        assert white[int(np.ceil(y1)):int(np.floor(y2)), int(np.ceil(x1)):int(np.floor(x2))].all()
      assert not np.any(white & ~near_box)
      if image_id == 1:   # exact downscale by 2: each output pixel averages a 2 x 2 block
        original = coco_folder.image_array(1).astype(np.float64)
        if is_flipped:
          original = original[:, ::-1]
        expected = (original.reshape(24, 2, 32, 2, 3).mean(axis=(1, 3)) - MEAN) / STD
        np.testing.assert_allclose(image, expected, atol=1e-4)
  assert flips[False] > 0 and flips[True] > 0, flips


def test_train_without_random_flip_never_flips(source):
  for batch in train_batches(source, 3, config=data_config(random_flip=False)):
    for image, boxes, mask in zip(batch["image"], batch["boxes"], batch["mask"]):
      plain = np.reshape(EXPECTED[identify(image)][0], (-1, 4))
      np.testing.assert_allclose(boxes[mask], plain, atol=1e-4)


def test_corrupt_and_missing_images_are_counted_and_replaced(source):
  issues = sanitize.DataIssues()
  batches = train_batches(source, 4, global_batch=3, issues=issues)  # 2 epochs of 6 records
  ids = [identify(image) for batch in batches for image in batch["image"]]
  assert len(ids) == 12 and set(ids) <= set(coco_folder.GOOD_IDS)
  # The first epoch shows each good image once at its own position, and a bad position shows
  # the image of the next position.
  first_epoch = ids[:6]
  assert sorted(set(first_epoch)) == list(coco_folder.GOOD_IDS)
  assert sum(ids[p] == ids[p + 1] for p in range(6)) >= 2
  # Counted per file and box, not per read: each bad file and image 4's box leaving the image
  # once, although two epochs read them twice.
  expected = {k: 0 for k in sanitize.ISSUE_KINDS}
  expected.update(corrupt_image=2, box_clipped=1)
  assert issues.snapshot() == expected
  assert issues.items("corrupt_image") == sorted(
      os.path.join(source.image_root, name) for name in ("corrupt.png", "missing.png"))


def test_record_loader_counts_exactly_per_record(source):
  # Counts known by hand: image 1 has a crowd box (not counted) and one box over the budget;
  # image 4 one box to clip and one over the budget; image 1 read again adds nothing.
  issues = sanitize.DataIssues()
  loader = pipeline.RecordLoader(source, 3, 1, 0, issues, shuffle=False)
  image, boxes, labels, _ = loader.train_example(0)     # image 1: 2 good boxes, budget 1
  np.testing.assert_array_equal(image, coco_folder.image_array(1))
  np.testing.assert_array_equal(boxes, [[8, 4, 28, 20]])
  np.testing.assert_array_equal(labels, [1])
  loader.train_example(3)                            # image 4: 1 clipped, 1 truncated
  image, boxes, labels, _ = loader.train_example(4)     # corrupt -> missing -> wraps to image 1
  np.testing.assert_array_equal(image, coco_folder.image_array(1))
  expected = {k: 0 for k in sanitize.ISSUE_KINDS}
  expected.update(corrupt_image=2, box_clipped=1, boxes_truncated=2)
  assert issues.snapshot() == expected


def test_max_boxes_truncation_counted(source):
  issues = sanitize.DataIssues()
  batches = train_batches(source, 3, issues=issues, config=data_config(max_boxes=1))
  over_budget = {}                                      # image id -> its boxes beyond the first
  for batch in batches:
    assert batch["boxes"].shape == (4, 1, 4)
    for image, labels, mask in zip(batch["image"], batch["labels"], batch["mask"]):
      expected_labels = EXPECTED[identify(image)][2]
      assert mask.sum() == min(1, len(expected_labels))
      if mask[0]:
        assert labels[0] == expected_labels[0]           # the first boxes are kept
      over_budget[identify(image)] = max(len(expected_labels) - 1, 0)
  assert sum(over_budget.values()) > 0
  assert issues.snapshot()["boxes_truncated"] == sum(over_budget.values())


def test_same_seed_same_batches_other_seed_other_batches(source):
  first = train_batches(source, 3, seed=5)
  assert_trees_equal(first, train_batches(source, 3, seed=5))
  other = train_batches(source, 3, seed=6)
  assert any(not np.array_equal(a[k], b[k]) for a, b in zip(first, other) for k in a)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_resuming_at_a_batch_boundary_continues_the_same_stream(source, k):
  uninterrupted = train_batches(source, k + 3, seed=3)
  resumed = train_batches(source, 3, start_example=k * 4, seed=3)
  assert_trees_equal(resumed, uninterrupted[k:])


@pytest.mark.parametrize("start_batch", [0, 3])
def test_two_hosts_read_the_two_halves_of_each_global_batch(source, start_batch):
  start = start_batch * 4
  single = train_batches(source, 4, start_example=start, seed=1)
  hosts = [train_batches(source, 4, start_example=start, seed=1, process_index=p,
                         process_count=2) for p in range(2)]
  assert hosts[0][0]["image"].shape[0] == 2
  assert_trees_equal(concat_batches(*hosts), single)


def test_train_dataset_rejects_bad_positions_and_sizes(source):
  with pytest.raises(ValueError, match="not a multiple"):
    train_batches(source, 1, start_example=2)
  with pytest.raises(ValueError, match="not divisible"):
    train_batches(source, 1, global_batch=3, process_count=2)
  with pytest.raises(ValueError, match="empty"):
    pipeline.RecordLoader(coco_folder_source_of_nothing(), 3, 4, 0, sanitize.DataIssues())


def coco_folder_source_of_nothing():

  class Empty(sources.Source):
    name, class_names = "empty", ("a",)

    def __len__(self):
      return 0

  return Empty()


def test_augment_hook_gets_0_255_images_and_independent_seeds(source):
  seen = {}

  def augment(image, boxes, labels, seeds):
    seen["seeds"] = seeds.shape
    tf.debugging.assert_greater_equal(tf.reduce_min(image), 0.0)
    tf.debugging.assert_less_equal(tf.reduce_max(image), 255.0)
    return tf.zeros_like(image) + 255.0, boxes + 1.0, labels

  batch = train_batches(source, 1, augment=augment, config=data_config(random_flip=False))[0]
  assert tuple(seen["seeds"]) == (7, 2)
  # A white 64 x 48 image (the only size that fills 24 x 32 exactly) or padding elsewhere.
  white = (255 - MEAN) / STD
  assert np.allclose(batch["image"][:, :, :16], white.astype(np.float32), atol=1e-4)


def test_eval_one_pass_in_order_padded_to_whole_batches(source):
  issues = sanitize.DataIssues()
  batches = eval_batches(source, 4, issues=issues)
  assert len(batches) == 2
  batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert batch["image"].shape == (8, HEIGHT, WIDTH, 3) and batch["image"].dtype == np.float32
  # Records 5 and 7 (corrupt, missing) and the two padding slots are skipped, id -1.
  np.testing.assert_array_equal(batch["image_id"], [1, 2, 3, 4, -1, -1, -1, -1])
  np.testing.assert_array_equal(batch["skip"], [False] * 4 + [True] * 4)
  expected_scale = [[SCALE[i]] * 2 for i in (1, 2, 3, 4)]
  np.testing.assert_allclose(batch["scale"][:4], expected_scale, rtol=1e-6)
  # Image 1 exactly: each pixel the mean of a 2 x 2 block, normalized; padding right is 0.
  original = coco_folder.image_array(1).astype(np.float64)
  expected = (original.reshape(24, 2, 32, 2, 3).mean(axis=(1, 3)) - MEAN) / STD
  np.testing.assert_allclose(batch["image"][0], expected, atol=1e-4)
  for row, image_id in enumerate((1, 2, 3, 4)):
    np.testing.assert_array_equal(batch["image"][row][:, VALID_WIDTH[image_id]:], 0)
  # The corrupt and missing images are counted once each; padding slots count nothing.
  expected_counts = {k: 0 for k in sanitize.ISSUE_KINDS}
  expected_counts["corrupt_image"] = 2
  assert issues.snapshot() == expected_counts


@pytest.mark.parametrize("batch_size,batches,padded", [(3, 2, 0), (5, 2, 4), (8, 1, 2)])
def test_eval_padding_per_batch_size(source, batch_size, batches, padded):
  result = eval_batches(source, batch_size)
  assert len(result) == batches
  skip = np.concatenate([b["skip"] for b in result])
  assert len(skip) == batches * batch_size and skip.sum() == padded + 2   # + corrupt, missing
  assert not skip[:4].any()


def test_eval_two_hosts_read_the_two_halves_of_each_batch(source):
  single = eval_batches(source, 4)
  hosts = [eval_batches(source, 4, process_index=p, process_count=2) for p in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 2
  assert_trees_equal(concat_batches(*hosts), single)
  with pytest.raises(ValueError, match="not divisible"):
    eval_batches(source, 3, process_count=2)


def test_multi_scale_sizes_change_per_period_and_resume_and_shard_alike(source):
  config = data_config(multi_scale_sizes=(16, 24, 32, 40), multi_scale_every=2,
                       keep_aspect_ratio=False)
  batches = train_batches(source, 12, seed=2, config=config)
  sizes = [b["image"].shape[1:3] for b in batches]
  assert all(h == w and h in (16, 24, 32, 40) for h, w in sizes)
  assert all(sizes[2 * p] == sizes[2 * p + 1] for p in range(6))   # a size per 2 batches
  assert len(set(sizes)) > 1
  for b in batches:                               # boxes scaled with the warped image
    assert b["boxes"][b["mask"]].max(initial=0) <= b["image"].shape[1]
  # Resumed mid-period, and on two hosts: the same sizes for the same global batches.
  resumed = train_batches(source, 3, start_example=3 * 4, seed=2, config=config)
  assert_trees_equal(resumed, batches[3:6])
  hosts = [train_batches(source, 4, seed=2, config=config, process_index=p, process_count=2)
           for p in range(2)]
  assert_trees_equal(concat_batches(*hosts), batches[:4])
