"""A tiny COCO-json folder written by the tests, with every kind of bad data in it.

Each good image is one solid background colour with a white filled rectangle on each of its
(non-crowd, known-category) boxes, so a test can recover both the record and its boxes from the
pixels of a batch, independently of the pipeline.
"""
import json
import os

import numpy as np
from PIL import Image

# Non-contiguous category ids, listed out of order on purpose: sorted by id -> labels 0, 1, 2.
CATEGORIES = [{"id": 9, "name": "bird"}, {"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}]
CLASS_NAMES = ("cat", "dog", "bird")
LABEL_OF_CATEGORY = {1: 0, 5: 1, 9: 2}
WHITE = (255, 255, 255)

# id -> file name, width, height, background colour (None: bad file), format.
IMAGES = {
    1: ("a.png", 64, 48, (200, 30, 30), "PNG"),
    2: ("b.jpg", 40, 60, (30, 160, 30), "JPEG"),
    3: ("c.png", 32, 32, (30, 30, 200), "PNG"),      # no annotations at all
    4: ("d.png", 50, 40, (180, 180, 30), "PNG"),
    5: ("corrupt.png", 20, 20, None, "corrupt"),     # random bytes
    7: ("missing.png", 40, 30, None, "missing"),     # listed, not on disk
}
GOOD_IDS = (1, 2, 3, 4)
BAD_IDS = (5, 7)

# (annotation id, image id, category id, [x, y, w, h], iscrowd)
ANNOTATIONS = [
    (10, 1, 5, [8, 4, 20, 16], 0),           # -> (8, 4, 28, 20), label 1
    (11, 1, 9, [40, 20, 16, 20], 0),         # -> (40, 20, 56, 40), label 2
    (12, 1, 1, [0, 0, 10, 10], 1),           # crowd: dropped silently
    (20, 2, 1, [5.5, 10.25, 20, 30], 0),     # -> (5.5, 10.25, 25.5, 40.25), label 0
    (40, 4, 9, [40, 30, 20, 20], 0),         # -> (40, 30, 60, 50): clipped to (40, 30, 50, 40)
    (41, 4, 1, [2, 2, 12, 8], 0),            # -> (2, 2, 14, 10), label 0
    (50, 5, 1, [1, 1, 5, 5], 0),
    (70, 7, 5, [3, 3, 10, 10], 0),
]

# Hand-converted ground truth of the good images as the pipeline must train on it (after
# sanitizing): image id -> (boxes (x1, y1, x2, y2) original pixels, labels).
TARGETS = {
    1: ([[8, 4, 28, 20], [40, 20, 56, 40]], [1, 2]),
    2: ([[5.5, 10.25, 25.5, 40.25]], [0]),
    3: (np.zeros((0, 4)), []),
    4: ([[40, 30, 50, 40], [2, 2, 14, 10]], [2, 0]),
}


def image_array(image_id):
  """The pixels written for a good image (before JPEG compression)."""
  _, width, height, colour, _ = IMAGES[image_id]
  array = np.empty((height, width, 3), np.uint8)
  array[...] = colour
  for box in np.asarray(TARGETS[image_id][0], np.float64).reshape(-1, 4):
    x1, y1, x2, y2 = (int(v) for v in np.floor(box))
    array[y1:y2, x1:x2] = WHITE
  return array


def write(root, layout="flat", train_split="train", val_split="val"):
  """Writes the folder; ``layout`` "flat" (``<split>.json`` + ``<split>/``) or "coco"
  (``annotations/instances_<split>.json`` + ``<split>/``). Both splits hold the same data."""
  rng = np.random.default_rng(0)
  for split in (train_split, val_split):
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    for image_id, (name, _, _, _, kind) in IMAGES.items():
      path = os.path.join(image_dir, name)
      if kind == "corrupt":
        with open(path, "wb") as f:
          f.write(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
      elif kind != "missing":
        Image.fromarray(image_array(image_id)).save(path, format=kind, quality=95)
    coco = {
        "images": [{"id": i, "file_name": v[0], "width": v[1], "height": v[2]}
                   for i, v in reversed(list(IMAGES.items()))],   # not sorted on purpose
        "categories": CATEGORIES,
        "annotations": [{"id": a, "image_id": i, "category_id": c, "bbox": b, "iscrowd": crowd,
                         "area": float(b[2] * b[3])} for a, i, c, b, crowd in ANNOTATIONS],
    }
    if layout == "flat":
      json_path = os.path.join(root, f"{split}.json")
    else:
      os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
      json_path = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(json_path, "w", encoding="utf-8") as f:
      json.dump(coco, f)
  return str(root)
