"""tf.data input pipelines: a pure function of (seed, global example index).

Training reads the global example stream g = 0, 1, 2, ...; example g is record
``permutation(seed, epoch)[g mod n]`` with ``epoch = g // n``, and its augmentation draws from
stateless random ops seeded with ``(seed, g)``. So the pipeline started at any position yields
exactly the batches an uninterrupted run would have seen there: the checkpoint stores only the
position (``examples_seen``). Each host reads its own slice of every global batch.

Record loading and annotation sanitizing run in Python (``tf.numpy_function``; PIL decodes
with the GIL released); everything after -- augmentation, resize, pad, normalize -- is tf graph.
"""
import functools

import numpy as np
import tensorflow as tf

from jaxdet import config as config_lib
from jaxdet.data import sanitize
from jaxdet.data import sources as sources_lib
from jaxdet.data import transforms

# tf.data runs on the host only: keep TensorFlow off the accelerators JAX owns.
tf.config.set_visible_devices([], "GPU")

PIXEL_MEAN = config_lib.PIXEL_MEAN      # the canvas of augmentations that pad (0 once normalized)


class RecordLoader:
  """Loads sanitized records by global example index (runs inside tf.data worker threads)."""

  def __init__(self, source, num_classes, max_boxes, seed, issues, shuffle=True, stream=()):
    if len(source) == 0:
      raise ValueError(f"dataset {source.name} is empty")
    self.source, self.num_classes, self.max_boxes = source, num_classes, max_boxes
    self.seed, self.issues, self.shuffle, self.stream = seed, issues, shuffle, tuple(stream)

    self.permutation = functools.lru_cache(maxsize=2)(self._permutation)

  def _permutation(self, epoch):
    """The order of epoch ``epoch``; ``stream`` tells apart the orders of several sources read
    with one seed (joint training)."""
    return np.random.default_rng([self.seed, epoch, *self.stream]).permutation(len(self.source))

  def record_index(self, position):
    epoch, offset = divmod(int(position), len(self.source))
    return int(self.permutation(epoch)[offset]) if self.shuffle else offset

  def load(self, position, usable=lambda record: True):
    """Record at stream ``position``; an undecodable one (or one ``usable`` refuses, counted by
    it) is counted and replaced by the record at the next position (keeping one example per
    position keeps resumption exact)."""
    n = len(self.source)
    for step in range(n):
      index = self.record_index(position + step)
      try:
        record = self.source[index]
      except sources_lib.CorruptImageError as e:
        self.issues.add("corrupt_image", 1, str(e), e.item)
        continue
      if usable(record):
        return record
    raise RuntimeError(f"no usable image in {self.source.name}")

  def targets(self, record, where):
    boxes, labels, _ = sanitize.sanitize_annotations(record, self.num_classes, self.issues, where)
    if len(boxes) > self.max_boxes:
      self.issues.add("boxes_truncated", len(boxes) - self.max_boxes,
                      f"{where}: {len(boxes)} boxes, budget {self.max_boxes}", where)
      boxes, labels = boxes[:self.max_boxes], labels[:self.max_boxes]
    return boxes, labels

  def train_example(self, position):
    """``(image, boxes, labels, image_label = -1)`` of a detection record."""
    record = self.load(position)
    boxes, labels = self.targets(record, f"{self.source.name} image {record['image_id']}")
    return record["image"], boxes, labels, np.int32(-1)

  def classification_example(self, position):
    """``(image, no boxes, no labels, image_label)`` of a classification record; an image label
    out of ``[0, num_classes)`` is counted (``label_out_of_range``) and the record skipped."""
    def usable(record):
      if 0 <= record["image_label"] < self.num_classes:
        return True
      where = f"{self.source.name} image {record['image_id']}"
      self.issues.add("label_out_of_range", 1, f"{where}: image label {record['image_label']} "
                      f"not in [0, {self.num_classes})", where)
      return False

    record = self.load(position, usable)
    return (record["image"], np.zeros((0, 4), np.float32), np.zeros(0, np.int32),
            np.int32(record["image_label"]))

  def eval_example(self, index, is_padded):
    """``(image, image_id, skip)`` of record ``index``. Padding slots and undecodable images
    (counted) are skipped: a 1x1 blank with ``skip`` set, which the evaluator leaves out."""
    if not is_padded:
      try:
        record = self.source[int(index)]
        return record["image"], np.int64(record["image_id"]), False
      except sources_lib.CorruptImageError as e:
        self.issues.add("corrupt_image", 1, str(e), e.item)
    return np.zeros((1, 1, 3), np.uint8), np.int64(-1), True


class JointLoader:
  """Detection and classification examples in one stream (YOLO9000's joint training, Sec. 4):
  of every ``classification + detection`` consecutive stream positions (``ratio``), the first
  ``detection`` are detection examples and the rest classification ones, each source read in
  its own shuffled order. A pure function of the position, like :class:`RecordLoader`. Without
  a detection loader (a classifier) the ratio is ``(1, 0)``: classification examples only."""

  def __init__(self, detection, classification, ratio):
    self.detection, self.classification = detection, classification
    self.classification_share, self.detection_share = (int(r) for r in ratio)
    if (min(self.classification_share, self.detection_share) < 0
        or (self.detection_share > 0) != (detection is not None)):
      raise ValueError(f"classification:detection ratio {tuple(ratio)} needs non-negative "
                       "shares and a positive detection share exactly when there are detection "
                       "images")

  def train_example(self, position):
    cycle, offset = divmod(int(position), self.classification_share + self.detection_share)
    if offset < self.detection_share:
      return self.detection.train_example(cycle * self.detection_share + offset)
    return self.classification.classification_example(
        cycle * self.classification_share + offset - self.detection_share)


def normalize(image, data_config=None):
  """RGB 0-255 -> the network's input: ``(image - data.pixel_mean) / data.pixel_std`` (ImageNet
  statistics when ``data_config`` is None or predates the keys)."""
  get = data_config.get if data_config is not None else lambda key, default: default
  mean = get("pixel_mean", config_lib.PIXEL_MEAN)
  std = get("pixel_std", config_lib.PIXEL_STD)
  return (tf.cast(image, tf.float32) - tuple(mean)) / tuple(std)


def pad_targets(boxes, labels, max_boxes):
  n = tf.shape(boxes)[0]
  pad = max_boxes - n
  return {"boxes": tf.pad(boxes, [[0, pad], [0, 0]]),
          "labels": tf.pad(labels, [[0, pad]]),
          "mask": tf.range(max_boxes) < n}


def _options():
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


def multi_scale_sizer(data_config, global_batch_size, seed):
  """``g -> (height, width)``: the input size of the global batch holding example ``g``.

  ``data_config.image_size`` unless ``data_config.multi_scale_sizes`` is set: then every
  ``multi_scale_every`` batches a size is drawn uniformly from those (square) sizes, as YOLOv2's
  multi-scale training (Sec. 2 "Multi-Scale Training": a multiple of 32 from 320 to 608 every 10
  batches). The draw is a stateless function of ``(seed, period)``, so every host picks the
  same size for a batch and a resumed run the same sizes as an uninterrupted one; each size is
  compiled once by ``jit``.
  """
  sizes = tuple(int(s) for s in data_config.multi_scale_sizes)
  if not sizes:
    height, width = data_config.image_size
    return lambda g: (height, width)
  if min(sizes) <= 0 or data_config.multi_scale_every <= 0:
    raise ValueError(f"data.multi_scale_sizes={sizes} and data.multi_scale_every="
                     f"{data_config.multi_scale_every} must be positive")
  table = tf.constant(sizes, tf.int32)
  examples_per_period = tf.constant(global_batch_size * data_config.multi_scale_every, tf.int64)

  def input_size(g):
    period = g // examples_per_period
    choice = tf.random.stateless_uniform([], tf.stack([tf.cast(seed, tf.int64), -1 - period]),
                                         maxval=len(sizes), dtype=tf.int32)
    return table[choice], table[choice]

  return input_size


def train_dataset(source, data_config, *, num_classes, global_batch_size, start_example, seed,
                  issues, process_index=0, process_count=1, augment=None, classification=None,
                  classification_ratio=(4, 1)):
  """Infinite batches for this host from global example ``start_example`` (a batch boundary).

  With a ``classification`` source (records with ``image_label``, labels in
  ``[0, num_classes)`` as the detection labels) the stream interleaves both
  (:class:`JointLoader`, ``classification_ratio = (classification, detection)``) and batches
  carry ``image_label [B]``: the class of a classification image, -1 for a detection image.
  Classification images have no boxes (an empty mask) and the same augmentation. With
  ``source=None`` (a classifier) the stream holds classification images only.

  ``augment(image, boxes, labels, seeds) -> (image, boxes, labels)`` is the training
  augmentation (tf graph, ``jaxdet.data.augment.build(data_config.augment)``): image float32
  0-255, boxes pixels of it, ``seeds [7, 2]`` independent stateless seeds; it may change the
  image size and drop boxes with their labels. Random horizontal flip is always available
  through ``data_config.random_flip``, after the augmentation.
  """
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} not divisible by {process_count} hosts")
  if start_example % global_batch_size:
    raise ValueError(f"start_example {start_example} is not a multiple of the global batch")
  local = global_batch_size // process_count
  input_size = multi_scale_sizer(data_config, global_batch_size, seed)
  loader = (RecordLoader(source, num_classes, data_config.max_boxes, seed, issues)
            if source is not None else None)
  if classification is not None:
    loader = JointLoader(loader, RecordLoader(classification, num_classes, 0, seed, issues,
                                              stream=(1,)),
                         classification_ratio if loader is not None else (1, 0))
  elif loader is None:
    raise ValueError("no training images: give a detection or a classification source")

  def position(j):  # j-th example of this host -> global stream position
    return (j // local) * global_batch_size + process_index * local + j % local

  def load_and_transform(g):
    image, boxes, labels, image_label = tf.numpy_function(
        loader.train_example, [g], [tf.uint8, tf.float32, tf.int32, tf.int32], stateful=False)
    image = tf.cast(tf.ensure_shape(image, [None, None, 3]), tf.float32)  # 0-255
    boxes = tf.ensure_shape(boxes, [None, 4])
    labels = tf.ensure_shape(labels, [None])
    seeds = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), g]), 8)
    if augment is not None:
      image, boxes, labels = augment(image, boxes, labels, seeds[1:])
    if data_config.random_flip:
      image, boxes = transforms.random_horizontal_flip(image, boxes, seeds[0])
    height, width = input_size(g)
    image, boxes, _ = transforms.resize_and_pad(normalize(image, data_config), boxes, height,
                                                 width, data_config.keep_aspect_ratio)
    example = {"image": image, **pad_targets(boxes, labels, data_config.max_boxes)}
    if classification is not None:
      example["image_label"] = tf.ensure_shape(image_label, [])
    return example

  start_local = start_example // process_count
  ds = tf.data.Dataset.range(start_local, np.iinfo(np.int64).max).map(position)
  ds = ds.map(load_and_transform, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())


def eval_dataset(source, data_config, *, batch_size, issues, process_index=0, process_count=1):
  """One pass over ``source`` in order, padded to whole batches.

  Yields ``image``, ``image_id``, ``scale [2]`` (input pixels per original pixel, (y, x)),
  ``offset [2]`` (where the image starts in the input, (y, x): 0 but with
  ``data.eval_letterbox``, darknet's centred letterbox) and ``skip``: padding, or an
  undecodable image (counted), to leave out of the evaluation, as the MLPerf reference pads its
  eval set. Ground truth is read from the source by the evaluator.
  """
  if batch_size % process_count:
    raise ValueError(f"eval batch {batch_size} not divisible by {process_count} hosts")
  local = batch_size // process_count
  height, width = data_config.image_size
  loader = RecordLoader(source, 1, 0, 0, issues, shuffle=False)
  n = len(source)
  total = -(-n // batch_size) * batch_size

  def load_and_transform(i):
    image, image_id, skip = tf.numpy_function(loader.eval_example, [tf.minimum(i, n - 1), i >= n],
                                              [tf.uint8, tf.int64, tf.bool], stateful=False)
    image = tf.ensure_shape(image, [None, None, 3])
    if data_config.get("eval_letterbox", False):
      image, scale, offset = transforms.letterbox(image, height, width)
      image = normalize(image, data_config)
    else:
      image, _, scale = transforms.resize_and_pad(normalize(image, data_config), tf.zeros([0, 4]),
                                                  height, width, data_config.keep_aspect_ratio)
      offset = tf.zeros([2])
    return {"image": image, "image_id": tf.ensure_shape(image_id, []),
            "scale": scale, "offset": offset, "skip": tf.ensure_shape(skip, [])}

  ds = tf.data.Dataset.range(total)
  ds = ds.filter(lambda i: (i // local) % process_count == process_index)
  ds = ds.map(load_and_transform, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options())
