"""The source interface, image decoding and the records' shared forms (see
``jaxdet.data.sources``)."""
import io

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

  def read(self, index):
    """``(encoded image, annotations)`` of record ``index``; a source whose storage holds both
    in one record reads it once. ``height``/``width`` may be left 0: the decoded image sets
    them."""
    return self.encoded_image(index), self.annotations(index)

  def __getitem__(self, index):
    """The record: the annotations with the decoded image; ``height``/``width`` are the
    decoded image's (an annotation file that states another size is overruled)."""
    encoded, annotations = self.read(index)
    image = decode_image(encoded, self.describe(index))
    return dict(annotations, image=image, height=image.shape[0], width=image.shape[1])

  def describe(self, index):
    """How messages name record ``index``: its file where it has one."""
    return f"{self.name}[{index}]"

  def max_boxes_per_image(self):
    """``(most training boxes of one image, its description)`` where the annotations are in
    memory (COCO-json); None where counting would read the whole dataset (TFDS)."""
    return None


def no_boxes(image_id, height, width):
  """The annotations of an image without objects."""
  return dict(boxes=np.zeros((0, 4)), labels=np.zeros(0, np.int64), ignore=np.zeros(0, bool),
              area=np.zeros(0), image_id=image_id, height=height, width=width)



def classification_annotations(label, image_id, height, width):
  """A classification record's annotations: no boxes, ``image_label`` the image's class."""
  return dict(no_boxes(image_id, height, width), image_label=int(label))
