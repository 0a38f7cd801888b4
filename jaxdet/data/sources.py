"""Random-access detection datasets: TFDS (``coco/2017``, ``voc/2007``, ``voc/2012``, the
project's ``digit_scenes``) and folders in COCO-json format.

A source is a sequence of records in one format, the only place where dataset formats meet
jaxdet's conventions:

  ``source[i]`` -> dict(image: uint8 [h, w, 3] RGB, **source.annotations(i))
  ``source.annotations(i)`` -> dict(boxes: float64 [n, 4] (x1, y1, x2, y2) original pixels,
      labels: int64 [n] contiguous in [0, num_classes), ignore: bool [n] (COCO crowd / VOC
      difficult), area: float64 [n] (COCO's segment area where known, else box area),
      image_id: int, height: int, width: int)

Random access (not a stream) makes the input pipeline a pure function of the example index,
which is what lets a resumed run see exactly the batches it would have seen. Undecodable images
raise :class:`CorruptImageError` from ``source[i]``; the pipeline counts and skips them.

Nothing here downloads: a dataset that is not prepared gives an error saying how to prepare it.
"""
import dataclasses
import io
import json
import os

import numpy as np
from PIL import Image
from PIL import ImageOps

from jaxdet import errors


class CorruptImageError(ValueError):
  """An image that cannot be read or decoded; ``item`` names the file or record."""

  def __init__(self, message, item=None):
    super().__init__(message)
    self.item = item


class DatasetNotFoundError(errors.ReportedError, FileNotFoundError):
  """A dataset that is not prepared on this machine."""


# EXIF orientations that turn the stored image by 90 degrees (width and height swap).
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Modes PIL converts to RGB correctly: 1-bit, 8-bit grey, palette, with alpha (dropped, as
# OpenCV and torchvision do), CMYK (JPEG's Adobe CMYK included), YCbCr, LAB, HSV.
CONVERTIBLE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                     "YCbCr", "LAB", "HSV")


def sixteen_bit_to_8_bit(values):
  """Grey levels of 16-bit range [0, 65535] to [0, 255]: ``round(v / 257)``, so 65535 -> 255
  and 257 * k -> k exactly."""
  return np.round(np.asarray(values, np.float64) / 257.0).astype(np.uint8)


def to_rgb(image, what):
  """RGB uint8 array of a PIL image of any supported mode (:data:`CONVERTIBLE_MODES`, 16-bit
  grey, and 32-bit integer grey that holds 16-bit values, as some PNG readers give them)."""
  if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
    values = np.asarray(image)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise CorruptImageError(f"{what}: {image.mode} image with values outside the 16-bit range "
                              f"[{values.min()}, {values.max()}] is not supported", what)
    return np.repeat(sixteen_bit_to_8_bit(values)[..., None], 3, axis=-1)
  if image.mode not in CONVERTIBLE_MODES:
    raise CorruptImageError(f"{what}: image mode {image.mode} is not supported (supported: "
                            f"{', '.join(CONVERTIBLE_MODES + SIXTEEN_BIT_MODES)})", what)
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")      # PIL's route for palettes with a transparent entry
  return np.asarray(image.convert("RGB"))


def decode_image(encoded, what):
  """RGB uint8 array of an encoded image, turned upright by its EXIF orientation (as image
  viewers and annotation tools show it, so boxes drawn on it apply as they are);
  :class:`CorruptImageError` if it cannot be decoded or its mode is not supported."""
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      return to_rgb(ImageOps.exif_transpose(image), what)
  except CorruptImageError:
    raise
  except Exception as e:  # PIL raises many types for bad data
    raise CorruptImageError(f"cannot decode {what}: {e}", what) from e


def read_file(path):
  """Bytes of ``path``; :class:`CorruptImageError` if it cannot be read (missing, unreadable)."""
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise CorruptImageError(f"cannot read {path}: {e}", path) from e


def image_size_of(encoded, what):
  """(height, width) of the upright image (see :func:`decode_image`), read from the header."""
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      turned = image.getexif().get(EXIF_ORIENTATION_TAG) in TRANSPOSING_ORIENTATIONS
      return (image.width, image.height) if turned else (image.height, image.width)
  except Exception as e:  # PIL raises many types for bad data
    raise CorruptImageError(f"cannot read the header of {what}: {e}", what) from e


class Source:
  """Base of the random-access sources (see module doc)."""
  name: str
  class_names: tuple

  @property
  def num_classes(self):
    return len(self.class_names)

  def __len__(self):
    raise NotImplementedError

  def annotations(self, index):
    raise NotImplementedError

  def encoded_image(self, index):
    raise NotImplementedError

  def __getitem__(self, index):
    return self.with_image(self.encoded_image(index), self.annotations(index), index)

  def with_image(self, encoded, annotations, index):
    """The record: ``annotations`` with the decoded image; ``height``/``width`` are the decoded
    image's (an annotation file that states another size is overruled)."""
    image = decode_image(encoded, self.describe(index))
    return dict(annotations, image=image, height=image.shape[0], width=image.shape[1])

  def describe(self, index):
    """How messages name record ``index``: its file where it has one."""
    return f"{self.name}[{index}]"

  def max_boxes_per_image(self):
    """``(most training boxes of one image, its description)`` where the annotations are in
    memory (COCO-json); None where counting would read the whole dataset (TFDS)."""
    return None


# --------------------------------------------------------------------------------------------
# TFDS datasets.


@dataclasses.dataclass(frozen=True)
class TfdsFields:
  """Where a TFDS detection dataset keeps what a record needs (None: absent)."""
  image_id: str = None
  ignore: str = None
  area: str = None


TFDS_FIELDS = {
    "coco": TfdsFields(image_id="image/id", ignore="is_crowd", area="area"),
    "voc": TfdsFields(ignore="is_difficult"),
    "digit_scenes": TfdsFields(image_id="image/id"),
}

PREPARE_HELP = (
    "Prepare it once, apart from training, in array_record format (random access is what makes "
    "resumed runs exact):\n"
    "  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
    "data_dir='{data_dir}', file_format='array_record').download_and_prepare()\"\n"
    "or, with apache-beam installed (the tfds command line needs it):\n"
    "  tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
    "A TFRecord copy can be converted with `tfds convert_format` (also apache-beam).")


def random_access_tfds(name, split, data_dir=None):
  """``(builder, records)`` of a prepared TFDS dataset split, read with random access (images
  left encoded). The shipped ``digit_scenes`` and ``digit_crops`` are built on first use;
  anything else not prepared is a :class:`DatasetNotFoundError` saying how to prepare it."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from jaxdet.data import digit_scenes  # pylint: disable=import-outside-toplevel
  if name in digit_scenes.BUILDERS:
    builder = digit_scenes.prepare(data_dir, name)
  else:
    builder = tfds.builder(name, data_dir=data_dir)
  shown_dir = data_dir or "~/tensorflow_datasets"
  if not builder.is_prepared():
    raise DatasetNotFoundError(f"TFDS dataset {name!r} is not prepared in {shown_dir}. " +
                               PREPARE_HELP.format(name=name, data_dir=shown_dir))
  try:
    records = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
  except Exception as e:  # TFRecord-only copies have no random access
    raise DatasetNotFoundError(f"TFDS dataset {name!r} in {shown_dir} cannot be read with random "
                               f"access ({e}). " +
                               PREPARE_HELP.format(name=name, data_dir=shown_dir)) from e
  return builder, records


class TfdsSource(Source):
  """One split of a prepared TFDS detection dataset, read with random access."""

  def __init__(self, name, split, data_dir=None):
    family = name.split("/")[0]
    if family not in TFDS_FIELDS:
      raise ValueError(f"unsupported TFDS dataset {name!r}; supported: {sorted(TFDS_FIELDS)} "
                       "(or a COCO-json folder)")
    self.name, self.fields = f"{name}:{split}", TFDS_FIELDS[family]
    builder, self._records = random_access_tfds(name, split, data_dir)
    self.class_names = tuple(builder.info.features["objects"]["label"].names)

  def __len__(self):
    return len(self._records)

  def encoded_image(self, index):
    return self._records[index]["image"]

  def __getitem__(self, index):
    record = self._records[index]            # one read for both image and annotations
    return self.with_image(record["image"], self._annotations(record, index), index)

  def annotations(self, index):
    return self._annotations(self._records[index], index)

  def _annotations(self, record, index):
    objects = record["objects"]
    height, width = image_size_of(record["image"], f"{self.name}[{index}]")
    yxyx = np.asarray(objects["bbox"], np.float64).reshape(-1, 4)  # normalized (y1, x1, y2, x2)
    boxes = yxyx[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float64)
    n = len(boxes)
    f = self.fields
    area = (np.asarray(objects[f.area], np.float64) if f.area else
            (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return dict(boxes=boxes, labels=np.asarray(objects["label"], np.int64).reshape(n),
                ignore=(np.asarray(objects[f.ignore], bool).reshape(n) if f.ignore
                        else np.zeros(n, bool)),
                area=area.reshape(n),
                image_id=int(record[f.image_id]) if f.image_id else index,
                height=height, width=width)


# --------------------------------------------------------------------------------------------
# COCO-json folders.


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


# --------------------------------------------------------------------------------------------


def no_boxes(image_id, height, width):
  """The annotations of an image without objects."""
  return dict(boxes=np.zeros((0, 4)), labels=np.zeros(0, np.int64), ignore=np.zeros(0, bool),
              area=np.zeros(0), image_id=image_id, height=height, width=width)


class FileListSource(Source):
  """The user's image files, without annotations (scripts/predict.py); image id = position."""

  def __init__(self, paths, class_names):
    self.name, self.paths, self.class_names = "files", list(paths), tuple(class_names)

  def __len__(self):
    return len(self.paths)

  def encoded_image(self, index):
    return read_file(self.paths[index])

  def __getitem__(self, index):
    # One read: the decoded image gives the size (with_image sets it), no header pass needed.
    return self.with_image(self.encoded_image(index), no_boxes(index, 0, 0), index)

  def annotations(self, index):
    height, width = image_size_of(self.encoded_image(index), self.paths[index])
    return no_boxes(index, height, width)


class ConcatSource(Source):
  """Several sources with the same classes read as one; image ids become the global index so
  they stay unique (e.g. VOC2007 + VOC2012 trainval)."""

  def __init__(self, sources):
    names = {s.class_names for s in sources}
    if len(names) != 1:
      raise ValueError(f"cannot concatenate sources with different classes: {names}")
    self.sources = list(sources)
    self.name = ",".join(s.name for s in sources)
    self.class_names = sources[0].class_names
    self._offsets = np.cumsum([0] + [len(s) for s in sources])

  def __len__(self):
    return int(self._offsets[-1])

  def max_boxes_per_image(self):
    known = [s.max_boxes_per_image() for s in self.sources]
    return None if None in known else max(known, key=lambda k: k[0])

  def _locate(self, index):
    part = int(np.searchsorted(self._offsets, index, side="right") - 1)
    return self.sources[part], index - int(self._offsets[part])

  def encoded_image(self, index):
    source, local = self._locate(index)
    return source.encoded_image(local)

  def annotations(self, index):
    source, local = self._locate(index)
    return dict(source.annotations(local), image_id=index)


# --------------------------------------------------------------------------------------------
# Classification sources (YOLO9000's joint training): images with one image-level label.


def classification_annotations(label, image_id, height, width):
  """A classification record's annotations: no boxes, ``image_label`` the image's class."""
  return dict(no_boxes(image_id, height, width), image_label=int(label))


class TfdsClassificationSource(Source):
  """One split of a prepared TFDS classification dataset (``imagenet2012``, the project's
  ``digit_crops``), read with random access; records carry ``image_label``."""

  def __init__(self, name, split, data_dir=None):
    self.name = f"{name}:{split}"
    builder, self._records = random_access_tfds(name, split, data_dir)
    self.class_names = tuple(builder.info.features["label"].names)

  def __len__(self):
    return len(self._records)

  def encoded_image(self, index):
    return self._records[index]["image"]

  def __getitem__(self, index):
    record = self._records[index]
    image = decode_image(record["image"], f"{self.name}[{index}]")
    return dict(classification_annotations(record["label"], index, *image.shape[:2]), image=image)

  def annotations(self, index):
    record = self._records[index]
    height, width = image_size_of(record["image"], f"{self.name}[{index}]")
    return classification_annotations(record["label"], index, height, width)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class ImageFolderSource(Source):
  """A folder of class folders, ``<directory>/<class name>/<image files>`` (torchvision's
  ImageFolder layout): classes sorted by name, images sorted by path."""

  def __init__(self, directory):
    self.name = f"folder:{directory}"
    if not os.path.isdir(directory):
      raise DatasetNotFoundError(f"classification folder {directory!r} does not exist")
    self.class_names = tuple(sorted(d for d in os.listdir(directory)
                                    if os.path.isdir(os.path.join(directory, d))))
    self._items = [(os.path.join(directory, name, f), label)
                   for label, name in enumerate(self.class_names)
                   for f in sorted(os.listdir(os.path.join(directory, name)))
                   if f.lower().endswith(IMAGE_SUFFIXES)]
    if not self._items:
      raise DatasetNotFoundError(f"{directory!r} holds no images in class folders "
                                 "(<directory>/<class name>/<image files>)")

  def __len__(self):
    return len(self._items)

  def encoded_image(self, index):
    return read_file(self._items[index][0])

  def __getitem__(self, index):
    path, label = self._items[index]
    image = decode_image(read_file(path), path)
    return dict(classification_annotations(label, index, *image.shape[:2]), image=image)

  def annotations(self, index):
    path, label = self._items[index]
    return classification_annotations(label, index, *image_size_of(read_file(path), path))


def build_classification_source(spec, data_dir=None):
  """A classification source: ``"<tfds name>:<split>"`` (``imagenet2012:train``,
  ``digit_crops:train``) or ``"folder:<directory>"`` (:class:`ImageFolderSource`)."""
  name, _, rest = spec.partition(":")
  if name == "folder":
    return ImageFolderSource(rest)
  if not name or not rest:
    raise ValueError(f"classification spec {spec!r}: use '<tfds name>:<split>', e.g. "
                     "'imagenet2012:train', or 'folder:<directory>'")
  return TfdsClassificationSource(name, rest, data_dir)


class RelabeledSource(Source):
  """``source`` with its labels (and ``image_label``) renamed: class ``k`` becomes
  ``label_map[k]`` of ``class_names`` (e.g. YOLO9000's WordTree nodes, a coarse label where
  the map points at an inner node)."""

  def __init__(self, source, label_map, class_names):
    self.source, self.name, self.class_names = source, source.name, tuple(class_names)
    self.label_map = np.asarray(label_map, np.int64)
    if len(self.label_map) != source.num_classes:
      raise ValueError(f"label map of {source.name} has {len(self.label_map)} entries for its "
                       f"{source.num_classes} classes")

  def __len__(self):
    return len(self.source)

  def _relabel(self, record):
    def relabel(labels):  # labels out of range stay out of range (-1): counted and dropped later
      labels = np.asarray(labels, np.int64)
      known = (labels >= 0) & (labels < len(self.label_map))
      return np.where(known, self.label_map[np.where(known, labels, 0)], -1)

    record = dict(record, labels=relabel(record["labels"]))
    if "image_label" in record:
      record["image_label"] = int(relabel(record["image_label"]))
    return record

  def encoded_image(self, index):
    return self.source.encoded_image(index)

  def annotations(self, index):
    return self._relabel(self.source.annotations(index))

  def __getitem__(self, index):
    return self._relabel(self.source[index])


def build_source(spec, data_dir=None, coco_json_dir=None):
  """A source from a spec: comma-separated ``"<name>:<split>[+<split>...]"`` parts, where
  ``<name>`` is a TFDS name (``coco/2017``, ``voc/2007``, ``digit_scenes``) or ``coco_json`` (a
  split of the folder ``coco_json_dir``). E.g.
  ``"voc/2007:train+validation,voc/2012:train+validation"``.
  """
  parts = []
  for part in spec.split(","):
    name, _, splits = part.strip().rpartition(":")
    if not name or not splits:
      raise ValueError(f"dataset spec {spec!r}: each part must be '<name>:<split>', "
                       "e.g. 'coco/2017:train'")
    for split in splits.split("+"):
      if name == "coco_json":
        if not coco_json_dir:
          raise ValueError(f"{spec!r} needs a folder: pass --coco_json_dir "
                           "(config.data.coco_json_dir)")
        parts.append(CocoJsonSource(coco_json_dir, split))
      else:
        parts.append(TfdsSource(name, split, data_dir))
  return parts[0] if len(parts) == 1 else ConcatSource(parts)
