"""Tiny COCO-json folders for tests: coloured rectangles on noise, exact boxes, 3 classes."""
import json
import os

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 1, "name": "red"}, {"id": 5, "name": "green"}, {"id": 9, "name": "blue"}]
COLOURS = {1: (230, 30, 30), 5: (30, 230, 30), 9: (30, 30, 230)}


def scene(rng, height, width, max_objects=3):
  image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
  annotations = []
  for _ in range(rng.integers(0, max_objects + 1)):
    w, h = (int(v) for v in rng.integers(8, min(height, width) // 2, 2))
    x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    category = CATEGORIES[rng.integers(len(CATEGORIES))]["id"]
    image[y:y + h, x:x + w] = COLOURS[category]
    annotations.append({"bbox": [x, y, w, h], "category_id": category, "area": w * h,
                        "iscrowd": 0})
  return image, annotations


def write_coco_json_folder(root, splits=(("train", 16), ("val", 8)), size=(48, 64), seed=0):
  """Writes ``root/<split>.json`` + ``root/<split>/*.png``; returns ``root``."""
  rng = np.random.default_rng(seed)
  for split, count in splits:
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
      image, anns = scene(rng, *size)
      name = f"{split}_{i:04d}.png"
      Image.fromarray(image).save(os.path.join(root, split, name))
      image_id = 100 + i
      images.append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
      for ann in anns:
        annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id))
    with open(os.path.join(root, f"{split}.json"), "w", encoding="utf-8") as f:
      json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
  return str(root)
