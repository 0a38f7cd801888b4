"""Sources made of others: several read as one, and one with its labels renamed."""
import numpy as np

from jaxdet.data.sources.base import Source


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

  def read(self, index):
    source, local = self._locate(index)
    encoded, annotations = source.read(local)
    return encoded, dict(annotations, image_id=index)

  def describe(self, index):
    source, local = self._locate(index)
    return source.describe(local)


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

  def read(self, index):
    encoded, annotations = self.source.read(index)
    return encoded, self._relabel(annotations)

  def describe(self, index):
    return self.source.describe(index)
