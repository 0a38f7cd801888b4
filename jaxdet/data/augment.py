"""Training augmentations in tf graph, a registry by name: SSD's (Liu et al., ECCV 2016, Sec. 2.2
and 3.6) and YOLOv1's (Redmon et al., CVPR 2016, Sec. 2.2), the one YOLOv2/v3 and the
classifiers reuse.

``config.data.augment`` names one and holds its options (``name="yolo", jitter=0.2, ...``): the
registered function's keyword-only arguments, whose defaults are the paper's values. A family
with an augmentation of its own registers it with ``@augment.register("name")``; the shared
config schema holds no augmentation's knobs.

SSD's steps follow the authors' Caffe pipeline (``ssd_pascal.py``: distort, expand, batch sampler)
and its ssd.pytorch port (``augmentations.SSDAugmentation``): photometric distortion, zoom-out
("expand"), min-IoU random crop. The horizontal flip is the pipeline's own
(``data_config.random_flip``). Images are float32 RGB 0-255 of any size, boxes (x1, y1, x2, y2)
pixels of the current image. All randomness is stateless: the result is a pure function of the
seeds, so ``jaxdet.data.pipeline`` stays resumable at any example.
"""
import functools
import inspect
import math

import tensorflow as tf

from jaxdet.data import pipeline

# Photometric distortions (Sec. 2.2 cites Howard 2013; ranges of the authors' Caffe
# ``distort_param`` and of ssd.pytorch), each step applied with probability 1/2.
BRIGHTNESS_DELTA = 32.0               # added to every channel, 0-255 units
CONTRAST_RANGE = (0.5, 1.5)           # pixels scaled (Caffe convertTo), not about the mean
SATURATION_RANGE = (0.5, 1.5)         # HSV saturation scaled
# Degrees, ssd.pytorch's (float HSV, hue in [0, 360)). Caffe's hue_delta 18 is in OpenCV's 8-bit
# hue units (0-180), i.e. 36 degrees.
HUE_DELTA = 18.0

# Min-IoU crop (Sec. 2.2): the whole image (+inf: no patch qualifies), a patch with jaccard
# overlap >= 0.1, 0.3, 0.5, 0.7 or 0.9 with some object, or any patch (0.0), chosen uniformly.
MIN_IOU_CHOICES = (math.inf, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
NUM_TRIALS = 50                       # candidate patches per image (Caffe's max_trials)
PATCH_SCALE = (0.3, 1.0)              # patch side / image side (ssd.pytorch): 0.09-1 of the area
PATCH_ASPECT = (0.5, 2.0)             # patch height / width (Sec. 2.2: "between 1/2 and 2")

REGISTRY = {}     # name -> (augment(image, boxes, labels, seeds, **options), check(**options))


def register(name, check=None):
  """Decorator: registers ``augment(image, boxes, labels, seeds, *, <options>)`` (``seeds [k,
  2]`` stateless seeds; returns ``(image float32 0-255, boxes, labels)``) as ``name``.
  ``check(**options)`` raises ``ValueError`` for option values it refuses, before training."""

  def add(augment):
    REGISTRY[name] = (augment, check)
    return augment

  return add


def options_of(augment):
  """``{option: default}`` of a registered function's keyword-only arguments."""
  return {p.name: p.default for p in inspect.signature(augment).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _width_height(image):
  return tf.stack([tf.shape(image)[1], tf.shape(image)[0]])


def _coin(seed):
  return tf.random.stateless_uniform([], seed) < 0.5


def _uniform(seed, low, high):
  return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


# ------------------------------------------------------------------- Photometric distortion.


def sample_photometric(seed):
  """Random distortion parameters; a step not drawn (probability 1/2 each) gets its identity."""
  s = tf.random.experimental.stateless_split(seed, 9)
  return dict(
      brightness_delta=tf.where(_coin(s[0]), _uniform(s[1], -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA),
                                0.0),
      contrast=tf.where(_coin(s[2]), _uniform(s[3], *CONTRAST_RANGE), 1.0),
      saturation=tf.where(_coin(s[4]), _uniform(s[5], *SATURATION_RANGE), 1.0),
      hue_delta=tf.where(_coin(s[6]), _uniform(s[7], -HUE_DELTA, HUE_DELTA), 0.0),
      contrast_first=_coin(s[8]))


def _clip(image):
  return tf.clip_by_value(image, 0.0, 255.0)


def _scale_contrast(image, factor):
  return _clip(image * factor)


def _adjust_saturation(image, factor):
  return tf.cond(factor != 1.0,
                 lambda: _clip(tf.image.adjust_saturation(image / 255.0, factor) * 255.0),
                 lambda: image)


def _adjust_hue(image, degrees):
  return tf.cond(degrees != 0.0,
                 lambda: _clip(tf.image.adjust_hue(image / 255.0, degrees / 360.0) * 255.0),
                 lambda: image)


def apply_photometric(image, brightness_delta, contrast, saturation, hue_delta, contrast_first):
  """Brightness, then contrast before or after (saturation, hue); clipped to 0-255 after each
  step as Caffe's uint8 images are."""
  image = _clip(image + brightness_delta)
  image = _scale_contrast(image, tf.where(contrast_first, contrast, 1.0))
  image = _adjust_hue(_adjust_saturation(image, saturation), hue_delta)
  return _scale_contrast(image, tf.where(contrast_first, 1.0, contrast))


def photometric_distort(image, seed):
  """Random brightness, contrast, saturation and hue (Sec. 2.2, Howard 2013); shape kept."""
  return apply_photometric(image, **sample_photometric(seed))


# ---------------------------------------------------------------------------- Zoom out.


def place_on_canvas(image, boxes, canvas_height, canvas_width, top, left):
  """``image`` at (``top``, ``left``) of a canvas filled with ``pipeline.PIXEL_MEAN`` (0 once
  normalized); boxes shifted alike. Pixels are copied exactly."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  paddings = [[top, canvas_height - height - top], [left, canvas_width - width - left], [0, 0]]
  inside = tf.pad(tf.ones([height, width, 1], tf.bool), paddings)
  canvas = tf.where(inside, tf.pad(image, paddings), tf.constant(pipeline.PIXEL_MEAN, tf.float32))
  shift = tf.cast(tf.stack([left, top, left, top]), boxes.dtype)
  return canvas, boxes + shift


def expand(image, boxes, seed, *, max_ratio):
  """Zoom out with probability 1/2 (Sec. 3.6): a canvas ``r ~ U[1, max_ratio]`` times the image
  size, the image at a uniform integer offset (Caffe's ExpandImage)."""
  s = tf.random.experimental.stateless_split(seed, 4)
  size = tf.shape(image)[:2]
  ratio = _uniform(s[1], 1.0, max_ratio)
  canvas = tf.maximum(tf.cast(tf.cast(size, tf.float32) * ratio, tf.int32), size)
  offset = tf.cast(tf.random.stateless_uniform([2], s[2]) * tf.cast(canvas - size, tf.float32),
                   tf.int32)
  return tf.cond(_coin(s[0]),
                 lambda: place_on_canvas(image, boxes, canvas[0], canvas[1], offset[0], offset[1]),
                 lambda: (image, boxes))


# ----------------------------------------------------------------------- Min-IoU crop.


def sample_candidates(seed, height, width, num=NUM_TRIALS):
  """``num`` integer-valued patches (x1, y1, x2, y2) float32 inside a ``height x width`` image:
  width and height each a uniform ``PATCH_SCALE`` fraction of the image's, position uniform."""
  u = tf.random.stateless_uniform([num, 4], seed)
  size = tf.cast(tf.stack([width, height]), tf.float32)
  low, high = PATCH_SCALE
  wh = size * (low + (high - low) * u[:, :2])
  x1y1 = u[:, 2:] * (size - wh)
  return tf.concat([tf.floor(x1y1), tf.minimum(tf.floor(x1y1 + wh), size)], axis=1)


def box_centres(boxes):
  return (boxes[:, :2] + boxes[:, 2:]) / 2.0


def centres_inside(patches, boxes):
  """[m, n]: the centre of box j lies strictly inside patch i (ssd.pytorch's test)."""
  c = box_centres(boxes)[None]
  return tf.reduce_all((c > patches[:, None, :2]) & (c < patches[:, None, 2:]), axis=-1)


def _area(boxes):
  return tf.reduce_prod(tf.maximum(boxes[:, 2:] - boxes[:, :2], 0.0), axis=-1)


def iou(patches, boxes):
  """[m, n] jaccard overlap (0 where the union is empty)."""
  lo = tf.maximum(patches[:, None, :2], boxes[None, :, :2])
  hi = tf.minimum(patches[:, None, 2:], boxes[None, :, 2:])
  inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)
  union = _area(patches)[:, None] + _area(boxes)[None] - inter
  return tf.math.divide_no_nan(inter, union)


def acceptable(patches, boxes, min_iou):
  """[m] candidates usable as a crop: non-empty, aspect h / w in ``PATCH_ASPECT``, IoU with some
  box >= ``min_iou`` (Caffe's SatisfySampleConstraint), and some box centre inside it."""
  wh = patches[:, 2:] - patches[:, :2]
  aspect = tf.math.divide_no_nan(wh[:, 1], wh[:, 0])
  shape_ok = (wh[:, 0] > 0) & (wh[:, 1] > 0) & (aspect >= PATCH_ASPECT[0]) & (
      aspect <= PATCH_ASPECT[1])
  overlap_ok = tf.reduce_any(iou(patches, boxes) >= min_iou, axis=1)
  return shape_ok & overlap_ok & tf.reduce_any(centres_inside(patches, boxes), axis=1)


def crop_to_patch(image, boxes, labels, patch):
  """The ``patch`` of the image; the boxes whose centres lie inside it, clipped to it, in its
  coordinates (Sec. 2.2: "keep the overlapped part ... if the center of it is in the patch")."""
  x1, y1, x2, y2 = tf.unstack(tf.cast(patch, tf.int32))
  keep = centres_inside(patch[None], boxes)[0]
  boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)
  clipped = tf.concat([tf.maximum(boxes[:, :2], patch[:2]), tf.minimum(boxes[:, 2:], patch[2:])],
                      axis=1)
  return image[y1:y2, x1:x2], clipped - tf.tile(patch[:2], [2]), labels


def crop_to_first_acceptable(image, boxes, labels, candidates, min_iou):
  """Crops to the first acceptable candidate, else keeps everything (also when there are no
  boxes). Returns ``(image, boxes, labels, patch)``, ``patch`` the whole image if uncropped."""
  ok = acceptable(candidates, boxes, min_iou)
  found = tf.reduce_any(ok)
  size = tf.cast(_width_height(image), tf.float32)
  patch = tf.where(found, candidates[tf.argmax(tf.cast(ok, tf.int32))],
                   tf.concat([tf.zeros([2]), size], axis=0))
  image, boxes, labels = tf.cond(found, lambda: crop_to_patch(image, boxes, labels, patch),
                                 lambda: (image, boxes, labels))
  return image, boxes, labels, patch


def min_iou_crop(image, boxes, labels, seed):
  """SSD's random crop (Sec. 2.2): a uniform choice of ``MIN_IOU_CHOICES``, then the first of
  ``NUM_TRIALS`` candidates that qualifies. Returns ``(image, boxes, labels, patch)``."""
  s = tf.random.experimental.stateless_split(seed, 2)
  choice = tf.random.stateless_uniform([], s[0], maxval=len(MIN_IOU_CHOICES), dtype=tf.int32)
  min_iou = tf.gather(tf.constant(MIN_IOU_CHOICES, tf.float32), choice)
  candidates = sample_candidates(s[1], tf.shape(image)[0], tf.shape(image)[1])
  return crop_to_first_acceptable(image, boxes, labels, candidates, min_iou)


# --------------------------------------------------------------------------------- SSD.


def clip_and_drop_empty(image, boxes, labels):
  """Boxes clipped to the image; those left without area dropped. A no-op for sanitized boxes;
  guards against unsanitized input (before) and float round-off on thin boxes (after)."""
  size = tf.cast(tf.tile(_width_height(image), [2]), boxes.dtype)
  boxes = tf.clip_by_value(boxes, 0.0, size)
  keep = tf.reduce_all(boxes[:, 2:] > boxes[:, :2], axis=1)
  return tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)


def check_ssd(expand_max_ratio):
  if expand_max_ratio < 1.0:
    raise ValueError(f"data.augment.expand_max_ratio={expand_max_ratio} must be >= 1")


@register("ssd", check_ssd)
def ssd_augment(image, boxes, labels, seeds, *, expand_max_ratio=4.0):
  """SSD's training augmentation (Sec. 2.2, 3.6): photometric distortion, zoom out with
  probability 1/2 up to ``expand_max_ratio`` (4 in the authors' code, 16 in Sec. 3.6), min-IoU
  crop. Boxes are clipped to the image first and empty ones dropped. ``seeds [k >= 3, 2]``
  independent stateless seeds. Returns ``(image float32 [h, w, 3] 0-255, boxes [m, 4],
  labels [m])``, m <= n."""
  image = tf.cast(image, tf.float32)
  boxes, labels = clip_and_drop_empty(image, boxes, labels)
  image = photometric_distort(image, seeds[0])
  image, boxes = expand(image, boxes, seeds[1], max_ratio=expand_max_ratio)
  image, boxes, labels, _ = min_iou_crop(image, boxes, labels, seeds[2])
  boxes, labels = clip_and_drop_empty(image, boxes, labels)
  return tf.ensure_shape(image, [None, None, 3]), boxes, labels


# -------------------------------------------------------------------------------- YOLO.
# YOLOv1 (Redmon et al., CVPR 2016, Sec. 2.2): "random scaling and translations of up to 20% of
# the original image size ... randomly adjust the exposure and saturation of the image by up to
# a factor of 1.5 in the HSV color space"; darknet's ``load_data_region`` and
# ``random_distort_image``, whose hue shift is an option (0 in the paper).


def rand_scale(seed, limit):
  """Darknet's ``rand_scale``: ``u ~ U[1, limit]``, or ``1 / u`` with probability 1/2."""
  s = tf.random.experimental.stateless_split(seed, 2)
  factor = _uniform(s[0], 1.0, limit)
  return tf.where(_coin(s[1]), factor, 1.0 / factor)


def sample_hsv(seed, *, saturation, exposure, hue):
  """Saturation and exposure (value) factors in ``[1 / limit, limit]``, hue shift
  ``U[-hue, hue]`` (fraction of the colour circle)."""
  s = tf.random.experimental.stateless_split(seed, 3)
  return dict(saturation=rand_scale(s[0], saturation), exposure=rand_scale(s[1], exposure),
              hue=_uniform(s[2], -hue, hue))


def apply_hsv(image, saturation, exposure, hue):
  """In HSV: S and V scaled (clipped to [0, 1]), H shifted modulo 1; back to RGB 0-255."""
  h, s, v = tf.unstack(tf.image.rgb_to_hsv(image / 255.0), axis=-1)
  hsv = tf.stack([tf.math.floormod(h + hue, 1.0), tf.clip_by_value(s * saturation, 0.0, 1.0),
                  tf.clip_by_value(v * exposure, 0.0, 1.0)], axis=-1)
  return _clip(tf.image.hsv_to_rgb(hsv) * 255.0)


def sample_scale_translation(seed, jitter):
  """``(scale, dx, dy)``: ``scale ~ U[1 - jitter, 1 + jitter]``, shifts ``U[-jitter, jitter]``
  in fractions of the image width and height."""
  u = tf.random.stateless_uniform([3], seed, minval=-jitter, maxval=jitter)
  return 1.0 + u[0], u[1], u[2]


def scale_and_translate(image, boxes, scale, dx, dy):
  """The image resized by ``scale`` about its centre and shifted by ``(dx, dy)`` of its size,
  on a canvas of its own size: what leaves the canvas is cropped, what it uncovers is filled
  with ``pipeline.PIXEL_MEAN`` (as ``place_on_canvas``). Boxes alike, not yet clipped."""
  size = tf.shape(image)[:2]
  new = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
  factor = tf.cast(new, tf.float32) / tf.cast(size, tf.float32)                     # (y, x)
  scaled = tf.image.resize(image, new, method="bilinear")
  boxes = boxes * tf.stack([factor[1], factor[0], factor[1], factor[0]])
  # Top-left of the scaled image on the canvas, (y, x); negative: cropped on that side.
  offset = tf.cast(tf.round(tf.cast(size - new, tf.float32) / 2.0
                            + tf.stack([dy, dx]) * tf.cast(size, tf.float32)), tf.int32)
  before, after = tf.maximum(offset, 0), tf.maximum(size - new - offset, 0)
  padded = new + before + after
  canvas, boxes = place_on_canvas(scaled, boxes, padded[0], padded[1], before[0], before[1])
  crop = tf.maximum(-offset, 0)
  shift = tf.cast(tf.stack([crop[1], crop[0], crop[1], crop[0]]), boxes.dtype)
  return canvas[crop[0]:crop[0] + size[0], crop[1]:crop[1] + size[1]], boxes - shift


def check_yolo(jitter, saturation, exposure, hue):
  if not (0.0 <= jitter < 1.0 and saturation >= 1.0 and exposure >= 1.0 and 0.0 <= hue <= 0.5):
    raise ValueError(f"data.augment.jitter={jitter} must be in [0, 1), data.augment.saturation="
                     f"{saturation} and data.augment.exposure={exposure} >= 1, "
                     f"data.augment.hue={hue} in [0, 0.5]")


@register("yolo", check_yolo)
def yolo_augment(image, boxes, labels, seeds, *, jitter=0.2, saturation=1.5, exposure=1.5,
                 hue=0.0):
  """YOLOv1's training augmentation (Sec. 2.2): HSV saturation and exposure by factors in
  ``[1 / s, s]`` (and an optional hue shift), then random scaling (``1 +- jitter``) and
  translation (up to ``jitter`` of the image size) on a canvas of the original size. The HSV
  step comes first so the uncovered canvas stays exactly the mean (0 once normalized). Boxes
  are clipped to the image and those left empty dropped. ``seeds [k >= 2, 2]``. Returns
  ``(image float32 [h, w, 3] 0-255, boxes [m, 4], labels [m])``, m <= n, same h and w."""
  image = tf.cast(image, tf.float32)
  boxes, labels = clip_and_drop_empty(image, boxes, labels)
  image = apply_hsv(image, **sample_hsv(seeds[1], saturation=saturation, exposure=exposure,
                                        hue=hue))
  image, boxes = scale_and_translate(image, boxes, *sample_scale_translation(seeds[0], jitter))
  boxes, labels = clip_and_drop_empty(image, boxes, labels)
  return tf.ensure_shape(image, [None, None, 3]), boxes, labels


def build(augment_config):
  """The augmentation ``(image, boxes, labels, seeds) -> (image, boxes, labels)`` that
  ``config.data.augment`` names, with its options (unset ones at their defaults); None for
  ``name=""`` (whatever the options). Unknown names and options, and values the augmentation
  refuses, are a ``ValueError`` naming them."""
  options = dict(augment_config)
  name = options.pop("name", "")
  if not name:              # --config.data.augment.name= turns a recipe's augmentation off
    return None
  if name not in REGISTRY:
    raise ValueError(f"data.augment.name={name!r} is unknown; registered: {sorted(REGISTRY)}")
  augment, check = REGISTRY[name]
  known = options_of(augment)
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ValueError(f"data.augment: {unknown} are not options of the {name!r} augmentation; "
                     f"its options: {sorted(known)}")
  options = {**known, **options}
  missing = sorted(k for k, v in options.items() if v is inspect.Parameter.empty)
  if missing:
    raise ValueError(f"data.augment: the {name!r} augmentation needs {missing}")
  if check is not None:
    check(**options)
  return functools.partial(augment, **options)
