"""Prepared TFDS datasets read with random access: detection (``coco/2017``, ``voc/2007``,
``voc/2012``, the project's ``digit_scenes``) and classification (``imagenet2012``,
``digit_crops``)."""
import dataclasses

import numpy as np

from jaxdet.data.sources.base import classification_annotations
from jaxdet.data.sources.base import DatasetNotFoundError
from jaxdet.data.sources.base import image_size_of
from jaxdet.data.sources.base import Source


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

  def read(self, index):
    record = self._records[index]            # one read for both image and annotations
    return record["image"], self._annotations(record, index)

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

  def read(self, index):
    record = self._records[index]
    return record["image"], classification_annotations(record["label"], index, 0, 0)

  def annotations(self, index):
    record = self._records[index]
    height, width = image_size_of(record["image"], f"{self.name}[{index}]")
    return classification_annotations(record["label"], index, height, width)
