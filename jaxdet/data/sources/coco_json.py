"""Folders of images with a COCO "instances" json: the layouts COCO exporters write."""
import json
import os

import numpy as np

from jaxdet import errors
from jaxdet.data.sources.base import DatasetNotFoundError
from jaxdet.data.sources.base import read_file
from jaxdet.data.sources.base import Source


def annotation_file_of(directory, split):
  """The annotation file of ``split`` in a COCO-json folder: COCO's
  ``annotations/instances_<split>.json``, ``annotations/<split>.json`` or ``<split>.json``."""
  if not os.path.isdir(directory):
    raise DatasetNotFoundError(f"COCO-json folder {directory!r} does not exist")
  candidates = [os.path.join(directory, "annotations", f"instances_{split}.json"),
                os.path.join(directory, "annotations", f"{split}.json"),
                os.path.join(directory, f"{split}.json")]
  found = next((c for c in candidates if os.path.isfile(c)), None)
  if found is None:
    raise DatasetNotFoundError(f"no annotations for split {split!r} in COCO-json folder "
                               f"{directory!r}: expected one of {candidates}")
  return found


def image_roots(directory, split):
  """Where a COCO-json folder's exporters put the images of ``split``, in the order searched;
  a ``file_name`` may hold sub-folders below one of them, or be an absolute path."""
  return [os.path.join(directory, split), os.path.join(directory, "images", split),
          os.path.join(directory, "images"), directory]


IMAGES_PROBED = 8      # the first images whose files locate a split's image folder


def find_image_root(directory, split, file_names, annotation_file):
  """The first of :func:`image_roots` that holds one of the first :data:`IMAGES_PROBED`
  ``file_names``; none is a :class:`DatasetNotFoundError` naming the files and folders tried."""
  roots = image_roots(directory, split)
  probed = file_names[:IMAGES_PROBED]
  for root in roots:
    if any(os.path.isfile(os.path.join(root, name)) for name in probed):
      return root
  if not probed:
    return roots[0]
  raise DatasetNotFoundError(
      f"no image of {annotation_file} found: looked for {listed_names(probed)} in "
      f"{', '.join(roots)} (a file_name may also be an absolute path or hold sub-folders below "
      "one of these)")


def listed_names(names, limit=3):
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(repr(n) for n in names[:limit]) + more


def find_coco_json(directory, split):
  """``(annotation file, image root)`` of ``split`` in a COCO-json folder. Accepted layouts:
  the annotations in ``annotations/instances_<split>.json``, ``annotations/<split>.json`` or
  ``<split>.json``; the images in ``<split>/``, ``images/<split>/``, ``images/`` or the folder
  itself (:func:`image_roots`), found from the first images' ``file_name``."""
  annotation_file = annotation_file_of(directory, split)
  coco = read_json(annotation_file)
  names = [im["file_name"] for im in sorted(coco.get("images", []), key=lambda im: im["id"])]
  return annotation_file, find_image_root(directory, split, names, annotation_file)


def read_json(path):
  """The parsed json of ``path``; a malformed file is a ValueError naming it and the position."""
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise errors.InvalidSetupError(
          f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e


def coco_json_splits(directory):
  """``(train split, eval split)`` of a COCO-json folder: ``train``/``val`` or COCO's
  ``train2017``/``val2017``."""
  for train, val in (("train", "val"), ("train2017", "val2017")):
    try:
      annotation_file_of(directory, train), annotation_file_of(directory, val)
      return train, val
    except DatasetNotFoundError:
      if not os.path.isdir(directory):
        raise
  raise DatasetNotFoundError(
      f"{directory!r} is not a COCO-json folder: expected train.json + val.json or "
      "annotations/instances_train.json + annotations/instances_val.json (images in train/ and "
      "val/, images/train/ and images/val/, or images/), or COCO's "
      "annotations/instances_train2017.json + annotations/instances_val2017.json with "
      "train2017/ and val2017/")


def check_references(coco, annotation_file, label_of):
  """Refuses annotations of unknown categories (naming the ids) or of images not listed in
  ``images`` (counting them): a typo there would otherwise train on silently dropped boxes."""
  annotations = coco.get("annotations", [])
  unknown = sorted({a["category_id"] for a in annotations if a["category_id"] not in label_of})
  if unknown:
    raise errors.InvalidSetupError(
        f"{annotation_file}: annotations use category_id {listed_names(unknown)}, not among the "
        f"file's categories (ids {sorted(label_of)})")
  listed_ids = {im["id"] for im in coco["images"]}
  orphans = [a for a in annotations if a["image_id"] not in listed_ids]
  if orphans:
    raise errors.InvalidSetupError(
        f"{annotation_file}: {len(orphans)} annotations refer to an image_id not in 'images' "
        f"(e.g. {orphans[0]['image_id']})")


class CocoJsonSource(Source):
  """A folder of images with a COCO "instances" json (see :func:`find_coco_json`).

  Categories are sorted by id and numbered 0..K-1; boxes are ``[x, y, w, h]`` in the json.
  """

  def __init__(self, directory, split):
    self.name = f"coco_json:{directory}:{split}"
    self.annotation_file = annotation_file_of(directory, split)
    coco = read_json(self.annotation_file)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    self.class_names = tuple(c["name"] for c in categories)
    self.category_ids = tuple(c["id"] for c in categories)
    label_of = {cid: i for i, cid in enumerate(self.category_ids)}
    check_references(coco, self.annotation_file, label_of)
    self._images = sorted(coco["images"], key=lambda im: im["id"])
    self.image_root = find_image_root(directory, split, [im["file_name"] for im in self._images],
                                      self.annotation_file)
    per_image = {im["id"]: [] for im in self._images}
    for ann in coco.get("annotations", []):
      per_image[ann["image_id"]].append(ann)
    self._annotations = [self._arrays(per_image[im["id"]], label_of) for im in self._images]

  @staticmethod
  def _arrays(anns, label_of):
    xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    return dict(boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
                labels=np.asarray([label_of[a["category_id"]] for a in anns], np.int64),
                ignore=np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool),
                area=np.asarray([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns],
                                np.float64))

  def max_boxes_per_image(self):
    counts = [int(np.sum(~a["ignore"])) for a in self._annotations]   # crowd boxes aside
    if not counts:
      return 0, None
    most = int(np.argmax(counts))
    return counts[most], f"{self.describe(most)} (image id {self._images[most]['id']})"

  def path(self, index):
    return os.path.join(self.image_root, self._images[index]["file_name"])

  def describe(self, index):
    return self.path(index)

  def __len__(self):
    return len(self._images)

  def encoded_image(self, index):
    return read_file(self.path(index))

  def annotations(self, index):
    image = self._images[index]
    return dict(image_id=int(image["id"]), height=int(image["height"]), width=int(image["width"]),
                **self._annotations[index])
