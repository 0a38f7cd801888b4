"""Image + box transforms in tf graph. Boxes are (x1, y1, x2, y2) pixels of the current image;
randomness is stateless, seeded per example, so a transform is a pure function of its seed."""
import tensorflow as tf


def random_horizontal_flip(image, boxes, seed):
  """Mirrors image and boxes with probability 1/2."""
  width = tf.cast(tf.shape(image)[1], boxes.dtype)
  flip = tf.random.stateless_uniform([], seed) < 0.5
  flipped_boxes = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]],
                           axis=1)
  return (tf.cond(flip, lambda: image[:, ::-1], lambda: image),
          tf.cond(flip, lambda: flipped_boxes, lambda: boxes))


LETTERBOX_FILL = 127.5        # darknet's canvas, 0.5 of full scale, in 0-255 units


def letterbox(image, height, width):
  """darknet's ``letterbox_image`` (src/image.c) in tf: the image scaled to fit ``height x
  width`` keeping its aspect ratio, the new size in whole pixels as darknet's integer arithmetic
  gives it, by corner-aligned bilinear interpolation (darknet's ``resize_image``), centred on a
  grey canvas (0.5). Returns ``(image [height, width, C] float32, scale [2], offset [2])``:
  ``scale = (s_y, s_x)`` input pixels per original pixel, ``offset = (top, left)`` in input
  pixels."""
  size = tf.shape(image)[:2]
  in_h, in_w = size[0], size[1]
  fits_width = width * in_h < height * in_w          # width / in_w < height / in_h
  new_h = tf.where(fits_width, in_h * width // in_w, height)
  new_w = tf.where(fits_width, width, in_w * height // in_h)
  resized = tf.compat.v1.image.resize_bilinear(tf.cast(image, tf.float32)[None],
                                               tf.stack([new_h, new_w]), align_corners=True)[0]
  top, left = (height - new_h) // 2, (width - new_w) // 2
  boxed = tf.pad(resized - LETTERBOX_FILL, [[top, height - new_h - top],
                                            [left, width - new_w - left], [0, 0]])
  scale = tf.cast(tf.stack([new_h, new_w]), tf.float32) / tf.cast(size, tf.float32)
  return boxed + LETTERBOX_FILL, scale, tf.cast(tf.stack([top, left]), tf.float32)


def resize_and_pad(image, boxes, height, width, keep_aspect_ratio=True):
  """Fits the image to ``height x width`` and scales the boxes alike.

  With ``keep_aspect_ratio`` the image is scaled to fit inside and the bottom and right are
  padded with zeros (the mean, once normalized); without, it is warped to exactly that size (as
  SSD and YOLO do).

  ``height`` and ``width`` may be tensors (multi-scale training).

  Returns ``(image [height, width, C] float32, boxes, scale [2])`` with ``scale = (s_y, s_x)``
  the input pixels per original pixel (equal up to rounding when the aspect ratio is kept).
  """
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  if keep_aspect_ratio:
    factor = tf.minimum(tf.cast(height, tf.float32) / size[0],
                        tf.cast(width, tf.float32) / size[1])
    new_size = tf.maximum(tf.cast(tf.round(size * factor), tf.int32), 1)
  else:
    new_size = tf.cast(tf.stack([height, width]), tf.int32)
  image = tf.image.resize(tf.cast(image, tf.float32), new_size, method="bilinear")
  image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)
  scale = tf.cast(new_size, tf.float32) / size
  boxes = boxes * tf.stack([scale[1], scale[0], scale[1], scale[0]])
  return image, boxes, scale
