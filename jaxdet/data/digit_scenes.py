"""``digit_scenes``: the project's default detection dataset, composed offline from real images.

No detection dataset ships with the packages this project may install, so scenes are composed
from real images that do: the 1,797 handwritten digits of scikit-learn (UCI optdigits, 8x8,
16 grey levels) are pasted at several scales and colours onto crops of the two real photographs
bundled with scikit-learn (``china.jpg``, ``flower.jpg``). Boxes are the tight extent of each
digit's strokes, so they are exact; classes are the digits 0-9.

Generation is deterministic (seeded per example) and needs no network. Train and test use
disjoint writers' digits (the first 1,500 digits vs the rest) and disjoint halves of each
photograph, so the test split measures generalisation, not memorisation.

Built as a TFDS ``GeneratorBasedBuilder`` in ``array_record`` format, so it is read through the
same ``tfds`` random-access path as COCO and VOC. The feature names follow TFDS ``coco``.
"""
import logging

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from jaxdet.ops import boxes as box_ops

NUM_CLASSES = 10
TRAIN_DIGITS = 1500                  # digits [0, 1500) for train, [1500, 1797) for test
CANVAS_RANGE = (96, 160)             # canvas height and width, pixels, drawn independently
DIGIT_HEIGHT_RANGE = (16, 48)        # pasted digit height, pixels
OBJECTS_RANGE = (1, 6)               # digits per scene, inclusive
MAX_OVERLAP_IOU = 0.1                # placements overlapping an earlier digit more are redrawn
STROKE_THRESHOLD = 0.25              # alpha above which a pixel counts as stroke for the box
SPLIT_SIZES = {"train": 3000, "test": 500}
SPLIT_SEEDS = {"train": 0, "test": 1}
# ``digit_crops``: one large digit per image, an image-level label (ImageNet-like).
CROP_CANVAS_RANGE = (64, 128)
CROP_DIGIT_HEIGHT_RANGE = (16, 48)
CROP_SPLIT_SEEDS = {"train": 2, "test": 3}


def _sklearn_sources():
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  digits = datasets.load_digits()
  photos = datasets.load_sample_images().images
  return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64), photos


def _background(rng, photos, split, height, width):
  """A random crop of one photo's half reserved for ``split``, rescaled to the canvas."""
  photo = photos[rng.integers(len(photos))]
  half = photo.shape[1] // 2
  photo = photo[:, :half] if split == "train" else photo[:, half:]
  scale = rng.uniform(1.0, 2.5)
  crop_h = min(photo.shape[0], int(height * scale))
  crop_w = min(photo.shape[1], int(width * scale))
  y0 = rng.integers(photo.shape[0] - crop_h + 1)
  x0 = rng.integers(photo.shape[1] - crop_w + 1)
  crop = Image.fromarray(photo[y0:y0 + crop_h, x0:x0 + crop_w])
  return np.asarray(crop.resize((width, height), Image.BILINEAR), np.float32)


def _paste_digit(canvas, rng, digit, box_xyxy):
  """Alpha-blends ``digit`` (8x8 in [0, 1]) into ``box_xyxy`` in a colour contrasting the
  background there; returns the tight box of its strokes."""
  x1, y1, x2, y2 = box_xyxy
  alpha = np.asarray(Image.fromarray(digit).resize((x2 - x1, y2 - y1), Image.BILINEAR))
  alpha = np.clip(alpha, 0.0, 1.0)[..., None]
  region = canvas[y1:y2, x1:x2]
  dark_background = region.mean() < 128
  colour = rng.uniform(190, 255, size=3) if dark_background else rng.uniform(0, 65, size=3)
  canvas[y1:y2, x1:x2] = (1 - alpha) * region + alpha * colour
  ys, xs = np.nonzero(alpha[..., 0] > STROKE_THRESHOLD)
  return (x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1)


def compose_scene(seed, split, digit_images, digit_labels, photos, canvas_range=None,
                  digit_height_range=None, objects_range=None):
  """One scene: ``(image uint8 [h, w, 3], boxes [n, 4] (x1, y1, x2, y2) pixels, labels [n])``;
  the ranges default to ``digit_scenes``' (``CANVAS_RANGE``, ...)."""
  canvas_range = canvas_range or CANVAS_RANGE
  digit_height_range = digit_height_range or DIGIT_HEIGHT_RANGE
  objects_range = objects_range or OBJECTS_RANGE
  rng = np.random.default_rng(seed)
  height, width = (int(v) for v in rng.integers(canvas_range[0], canvas_range[1] + 1, size=2))
  canvas = _background(rng, photos, split, height, width)
  pool = np.arange(TRAIN_DIGITS) if split == "train" else np.arange(TRAIN_DIGITS, len(digit_labels))
  boxes, labels = [], []
  for _ in range(rng.integers(objects_range[0], objects_range[1] + 1)):
    for _attempt in range(20):
      box_h = int(rng.integers(digit_height_range[0], digit_height_range[1] + 1))
      box_w = max(8, int(box_h * rng.uniform(0.7, 1.1)))
      if box_h > height or box_w > width:
        continue
      x1, y1 = int(rng.integers(width - box_w + 1)), int(rng.integers(height - box_h + 1))
      cell = (x1, y1, x1 + box_w, y1 + box_h)
      if np.all(box_ops.host_iou(cell, boxes) <= MAX_OVERLAP_IOU):
        index = pool[rng.integers(len(pool))]
        boxes.append(_paste_digit(canvas, rng, digit_images[index], cell))
        labels.append(int(digit_labels[index]))
        break
  return (np.clip(canvas, 0, 255).astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
          np.asarray(labels, np.int64))


DIGIT_LABEL = tfds.features.ClassLabel(names=[str(d) for d in range(NUM_CLASSES)])


class _DigitsBuilder(tfds.core.GeneratorBasedBuilder):
  """What the shipped datasets share: offline composition from scikit-learn's files, PNG
  images with an id, the splits of ``SPLIT_SIZES``. Subclasses give ``description``,
  ``label_features`` and ``_generate_examples``."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  description = None
  label_features = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "image/id": np.int64,
            **self.label_features,
        }),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # composed offline from scikit-learn's bundled files
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}


class DigitScenes(_DigitsBuilder):
  """Handwritten digits composed onto real photographs, with exact boxes (see module doc)."""

  description = __doc__
  label_features = {"objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature(),
                                                       "label": DIGIT_LABEL})}

  def _generate_examples(self, split):
    digit_images, digit_labels, photos = _sklearn_sources()
    for i in range(SPLIT_SIZES[split]):
      image, boxes, labels = compose_scene([SPLIT_SEEDS[split], i], split, digit_images,
                                           digit_labels, photos)
      height, width = image.shape[:2]
      # TFDS BBoxFeature: normalized (ymin, xmin, ymax, xmax).
      bboxes = [tfds.features.BBox(ymin=b[1] / height, xmin=b[0] / width, ymax=b[3] / height,
                                   xmax=b[2] / width) for b in boxes]
      yield i, {"image": image, "image/id": i,
                "objects": {"bbox": bboxes, "label": labels}}


class DigitCrops(_DigitsBuilder):
  """The classification counterpart of ``digit_scenes`` (YOLO9000's joint training, Sec. 4):
  one digit of 16-48 px on a 64-128 px photo crop, labelled per image like ``imagenet2012``
  (``image``, ``label``). Same writers and photo halves per split as ``digit_scenes``; other
  seeds, so no crop repeats a scene."""

  description = __doc__
  label_features = {"label": DIGIT_LABEL}

  def _generate_examples(self, split):
    digit_images, digit_labels, photos = _sklearn_sources()
    for i in range(SPLIT_SIZES[split]):
      image, _, labels = compose_scene([CROP_SPLIT_SEEDS[split], i], split, digit_images,
                                       digit_labels, photos, CROP_CANVAS_RANGE,
                                       CROP_DIGIT_HEIGHT_RANGE, (1, 1))
      yield i, {"image": image, "image/id": i, "label": int(labels[0])}


BUILDERS = {"digit_scenes": DigitScenes, "digit_crops": DigitCrops}


def prepare(data_dir=None, name="digit_scenes"):
  """Builds ``digit_scenes`` (or ``digit_crops``) into ``data_dir`` if it is not there yet
  (offline, ~1 minute)."""
  builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    logging.getLogger("jaxdet").info(
        "composing %s into %s (once, offline; nothing is downloaded)", name, builder.data_dir)
    builder.download_and_prepare()
  return builder
