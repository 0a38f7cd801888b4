"""Anchor (prior box) generators. Host-side numpy: anchors depend only on static shapes, so they
are computed once per image size and enter jit as constants.

Anchor order, shared with every head that predicts per anchor: level-major (P3 first), then
row ``y``, then column ``x``, then the anchor shapes of one cell. A head output of shape
``[B, H, W, A * C]`` therefore flattens to ``[B, H * W * A, C]`` in the same order.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AnchorGrid:
  """Anchors for one network input size."""
  boxes: np.ndarray            # [N, 4] float32, (x1, y1, x2, y2) in input pixels
  level_sizes: tuple           # anchors per pyramid level, in order; sums to N
  anchors_per_cell: int

  @property
  def num_anchors(self):
    return int(self.boxes.shape[0])


def cell_anchor_shapes(base_size, octave_scales, aspect_ratios):
  """Width and height ``[A, 2]`` of the anchors of one cell, scale-major.

  An anchor of size ``s`` and aspect ratio ``r = h / w`` has area ``s^2``:
  ``w = s / sqrt(r)``, ``h = s * sqrt(r)``.
  """
  shapes = []
  for scale in octave_scales:
    size = base_size * scale
    for ratio in aspect_ratios:
      shapes.append((size / np.sqrt(ratio), size * np.sqrt(ratio)))
  return np.asarray(shapes, np.float64)


def grid_anchors(feature_height, feature_width, stride, shapes):
  """Anchors of ``shapes [A, 2]`` centred at ``((x + 0.5) stride, (y + 0.5) stride)``."""
  ys = (np.arange(feature_height, dtype=np.float64) + 0.5) * stride
  xs = (np.arange(feature_width, dtype=np.float64) + 0.5) * stride
  cy, cx = np.meshgrid(ys, xs, indexing="ij")
  centres = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)  # [H*W, 1, 2]
  half = shapes.reshape(1, -1, 2) / 2                        # [1, A, 2]
  boxes = np.concatenate([centres - half, centres + half], axis=-1)
  return boxes.reshape(-1, 4)


def retinanet_anchors(image_size, min_level=3, max_level=7, anchor_size=4.0, num_scales=3,
                      aspect_ratios=(0.5, 1.0, 2.0)):
  """RetinaNet anchors (Lin et al. 2017, Sec. 4 "Anchors").

  On level P_l (stride 2^l) the anchors have areas ``(anchor_size * 2^l)^2`` -- 32^2 on P3 to
  512^2 on P7 with the paper's ``anchor_size = 4`` -- at octave scales
  ``2^(i / num_scales)`` (2^0, 2^(1/3), 2^(2/3)) and aspect ratios {1:2, 1:1, 2:1}: A = 9.
  """
  height, width = image_size
  coarsest = 2 ** max_level
  if height % coarsest or width % coarsest:
    raise ValueError(f"image size {image_size} must be a multiple of 2^max_level = {coarsest} "
                     "so every pyramid level has an integer size")
  octave_scales = [2.0 ** (i / num_scales) for i in range(num_scales)]
  level_boxes = []
  for level in range(min_level, max_level + 1):
    stride = 2 ** level
    shapes = cell_anchor_shapes(anchor_size * stride, octave_scales, aspect_ratios)
    level_boxes.append(grid_anchors(height // stride, width // stride, stride, shapes))
  return AnchorGrid(boxes=np.concatenate(level_boxes).astype(np.float32),
                    level_sizes=tuple(len(b) for b in level_boxes),
                    anchors_per_cell=num_scales * len(aspect_ratios))
