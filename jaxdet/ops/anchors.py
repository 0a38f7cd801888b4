"""Anchor (prior box) generators. Host-side numpy: anchors depend only on static shapes, so they
are computed once per image size and enter jit as constants.

Anchor order, shared with every head that predicts per anchor: level-major (P3 first), then
row ``y``, then column ``x``, then the anchor shapes of one cell. A head output of shape
``[B, H, W, A * C]`` therefore flattens to ``[B, H * W * A, C]`` in the same order.
"""
import dataclasses

import numpy as np


def box_shapes(boxes):
  """The distinct (width, height) of ``[N, 4]`` (x1, y1, x2, y2) boxes."""
  boxes = np.asarray(boxes, np.float64)
  return np.unique(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], -1), axis=0)


@dataclasses.dataclass(frozen=True)
class AnchorGrid:
  """Anchors for one network input size."""
  boxes: np.ndarray            # [N, 4] float32, (x1, y1, x2, y2) in input pixels
  level_sizes: tuple           # anchors per pyramid level, in order; sums to N
  anchors_per_cell: tuple      # anchors per feature-map cell, per level

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
  """Anchors of ``shapes [A, 2]`` centred at ``((x + 0.5) s_x, (y + 0.5) s_y)``; ``stride`` is
  ``s`` for both axes or ``(s_y, s_x)``."""
  stride_y, stride_x = np.broadcast_to(np.asarray(stride, np.float64), (2,))
  ys = (np.arange(feature_height, dtype=np.float64) + 0.5) * stride_y
  xs = (np.arange(feature_width, dtype=np.float64) + 0.5) * stride_x
  cy, cx = np.meshgrid(ys, xs, indexing="ij")
  centres = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)  # [H*W, 1, 2]
  half = shapes.reshape(1, -1, 2) / 2                        # [1, A, 2]
  boxes = np.concatenate([centres - half, centres + half], axis=-1)
  return boxes.reshape(-1, 4)


def retinanet_anchors(image_size, min_level=3, max_level=7, anchor_size=4.0, num_scales=3,
                      aspect_ratios=(0.5, 1.0, 2.0), single_level=False):
  """RetinaNet anchors (Lin et al. 2017, Sec. 4 "Anchors").

  On level P_l (stride 2^l) the anchors have areas ``(anchor_size * 2^l)^2`` -- 32^2 on P3 to
  512^2 on P7 with the paper's ``anchor_size = 4`` -- at octave scales
  ``2^(i / num_scales)`` (2^0, 2^(1/3), 2^(2/3)) and aspect ratios {1:2, 1:1, 2:1}: A = 9.
  ``single_level``: the shapes of every level in each cell of P_min alone (the FPN paper's
  Table 1 f), level-major within the cell.
  """
  height, width = image_size
  coarsest = 2 ** max_level
  if height % coarsest or width % coarsest:
    raise ValueError(f"image size {image_size} must be a multiple of 2^max_level = {coarsest} "
                     "so every pyramid level has an integer size")
  octave_scales = [2.0 ** (i / num_scales) for i in range(num_scales)]
  shapes = {level: cell_anchor_shapes(anchor_size * 2 ** level, octave_scales, aspect_ratios)
            for level in range(min_level, max_level + 1)}
  if single_level:
    shapes = {min_level: np.concatenate(list(shapes.values()))}
  level_boxes = [grid_anchors(height // 2 ** level, width // 2 ** level, 2 ** level, cell)
                 for level, cell in shapes.items()]
  return AnchorGrid(boxes=np.concatenate(level_boxes).astype(np.float32),
                    level_sizes=tuple(len(b) for b in level_boxes),
                    anchors_per_cell=tuple(len(cell) for cell in shapes.values()))


def ssd_scales(num_layers, s_min=0.2, s_max=0.9, first_scale=None):
  """Default-box scales ``s_1 .. s_{L+1}`` of SSD (Liu et al. 2016, Sec. 2.2, Eq. 4).

  ``s_l = s_min + (s_max - s_min) (l - 1) / (L - 1)``; the formula continued one step gives
  ``s_{L+1}``, which only the extra ratio-1 box ``sqrt(s_L s_{L+1})`` of the last layer uses.
  With ``first_scale`` the first layer (conv4_3) gets that scale instead and the formula spans
  the remaining ``L - 1`` layers: the paper's PASCAL setting, 0.1 on conv4_3 (Sec. 3.1), whose
  ``s_{L+1}`` is 1.075 for SSD300. (The authors' ssd_pascal.py floors the step to whole
  percents, 17 instead of 17.5, and ends at 315 px = 1.05: :func:`ssd_default_boxes`'
  ``min_sizes`` / ``max_sizes`` give that geometry.)
  """
  formula_layers = num_layers - (first_scale is not None)
  if formula_layers < 2:
    raise ValueError(f"need at least 2 layers on the scale formula, got {formula_layers}")
  step = (s_max - s_min) / (formula_layers - 1)
  scales = [s_min + step * k for k in range(formula_layers + 1)]
  return ([first_scale] if first_scale is not None else []) + scales


def ssd_cell_shapes(size, next_size, aspect_ratios):
  """``(w, h)`` of one cell's default boxes ``[A, 2]`` (Sec. 2.2): ratio 1 at ``size``, ratio
  1 at ``sqrt(size next_size)``, then each ratio ``r`` and ``1 / r`` of ``aspect_ratios``, with
  ``w = size sqrt(r)``, ``h = size / sqrt(r)`` (Caffe's PriorBox order)."""
  shapes = [(size, size), (np.sqrt(size * next_size),) * 2]
  for ratio in aspect_ratios:
    for r in (ratio, 1.0 / ratio):
      shapes.append((size * np.sqrt(r), size / np.sqrt(r)))
  return np.asarray(shapes, np.float64)


def ssd_default_boxes(image_size, feature_sizes, aspect_ratios, s_min=0.2, s_max=0.9,
                      first_scale=None, clip=False, min_sizes=(), max_sizes=(), steps=()):
  """SSD default boxes (Liu et al. 2016, Sec. 2.2) for ``image_size = (H, W)``.

  Layer ``l`` with an ``m x n`` feature map puts ``2 + 2 len(aspect_ratios[l])`` boxes (4 or 6)
  on every cell. Two geometries:

  * the paper's: sizes ``s_l`` of Eq. 4 (:func:`ssd_scales`) relative to the image, centres
    ``((j + 0.5) / n, (i + 0.5) / m)`` scaled by the image size;
  * the released models' (Caffe's ssd_pascal.py and PriorBox layer): explicit ``min_sizes`` and
    ``max_sizes`` per layer in input pixels (the ratio-1 boxes of ``min`` and
    ``sqrt(min max)``), and with ``steps`` the centres ``((j + 0.5) step, (i + 0.5) step)``
    in pixels (SSD300: 8, 16, 32, 64, 100, 300, so conv4_3's 38 centres span 4..300 rather than
    300 / 38 apart).

  ``clip`` clips the corners to the image, Caffe's ``clip: true``; the released models use
  ``clip: false``, so boxes of the coarse layers extend past the borders. (torchvision's
  ``DefaultBoxGenerator(clip=True)`` clamps the normalised centre, width and height instead.)
  SSD300: 38^2 x 4 + 19^2 x 6 + 10^2 x 6 + 5^2 x 6 + 3^2 x 4 + 1 x 4 = 8732 boxes.
  """
  height, width = image_size
  layers = len(feature_sizes)
  if len(aspect_ratios) != layers:
    raise ValueError(f"{layers} feature maps but {len(aspect_ratios)} ratio lists")
  if min_sizes:
    if not len(min_sizes) == len(max_sizes) == layers:
      raise ValueError(f"{layers} feature maps need as many min_sizes and max_sizes, got "
                       f"{len(min_sizes)} and {len(max_sizes)}")
    sizes, unit = list(zip(min_sizes, max_sizes)), (1.0, 1.0)
  else:
    scales = ssd_scales(layers, s_min, s_max, first_scale)
    sizes, unit = list(zip(scales, scales[1:])), (width, height)
  if steps and len(steps) != layers:
    raise ValueError(f"{layers} feature maps but {len(steps)} steps")
  level_boxes, per_cell = [], []
  for level, ((rows, cols), ratios) in enumerate(zip(feature_sizes, aspect_ratios)):
    shapes = ssd_cell_shapes(*sizes[level], ratios) * unit
    stride = steps[level] if steps else (height / rows, width / cols)
    level_boxes.append(grid_anchors(rows, cols, stride, shapes))
    per_cell.append(len(shapes))
  boxes = np.concatenate(level_boxes)
  if clip:
    boxes = np.clip(boxes, 0, [width, height, width, height])
  return AnchorGrid(boxes=boxes.astype(np.float32),
                    level_sizes=tuple(len(b) for b in level_boxes),
                    anchors_per_cell=tuple(per_cell))


@dataclasses.dataclass(frozen=True)
class YoloGrid:
  """The prediction slots of a YOLOv2/v3 head for one input size, in the anchor order of this
  module (level, row, column, prior). Each slot predicts one box from its cell and prior
  (YOLOv2 Sec. 2 "Direct location prediction")."""
  cell_xy: np.ndarray          # [N, 2] float32 (c_x, c_y): the slot's cell, in cells
  stride: np.ndarray           # [N, 2] float32 (s_x, s_y): input pixels per cell
  prior_wh: np.ndarray         # [N, 2] float32 (p_w, p_h): the slot's prior, input pixels
  priors: np.ndarray           # [P, 2] float32 every prior, levels in order
  prior_level: np.ndarray      # [P] int32 level of each prior
  level_sizes: tuple           # slots per level
  feature_sizes: tuple         # (rows, cols) per level

  @property
  def num_anchors(self):
    return int(self.cell_xy.shape[0])

  def level_tables(self):
    """Per level ``(first slot, cols, rows, priors per cell, first prior, stride_x, stride_y)``
    as an ``[L, 7]`` float64 table, for vectorized slot arithmetic in the matcher."""
    firsts = np.cumsum((0,) + self.level_sizes[:-1])
    counts = np.bincount(self.prior_level, minlength=len(self.level_sizes))
    first_prior = np.cumsum(np.concatenate([[0], counts[:-1]]))
    rows = []
    for level, (height, width) in enumerate(self.feature_sizes):
      stride = self.stride[firsts[level]]
      rows.append((firsts[level], width, height, counts[level], first_prior[level], *stride))
    return np.asarray(rows, np.float64)


def yolo_grid(image_size, feature_sizes, priors_per_level):
  """The slots of a YOLO head with maps of ``feature_sizes`` ((rows, cols), finest stride last
  or first, as the head emits them) over an input of ``image_size`` (height, width), and
  ``priors_per_level`` ((w, h) pairs in input pixels) for each map (YOLOv2: one map, 5 priors;
  YOLOv3: three maps, 3 of the 9 priors each, Sec. 2.3)."""
  if len(feature_sizes) != len(priors_per_level):
    raise ValueError(f"{len(feature_sizes)} feature maps but priors for {len(priors_per_level)}")
  height, width = image_size
  cells, strides, prior_wh, level_sizes, levels = [], [], [], [], []
  for level, ((rows, cols), priors) in enumerate(zip(feature_sizes, priors_per_level)):
    priors = np.asarray(priors, np.float64).reshape(-1, 2)
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    cell = np.repeat(np.stack([xs, ys], -1).reshape(-1, 1, 2), len(priors), axis=1)
    cells.append(cell.reshape(-1, 2))
    strides.append(np.broadcast_to([width / cols, height / rows], (rows * cols * len(priors), 2)))
    prior_wh.append(np.tile(priors, (rows * cols, 1)))
    level_sizes.append(rows * cols * len(priors))
    levels.append(np.full(len(priors), level))
  all_priors = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in priors_per_level])
  return YoloGrid(cell_xy=np.concatenate(cells).astype(np.float32),
                  stride=np.concatenate(strides).astype(np.float32),
                  prior_wh=np.concatenate(prior_wh).astype(np.float32),
                  priors=all_priors.astype(np.float32),
                  prior_level=np.concatenate(levels).astype(np.int32),
                  level_sizes=tuple(level_sizes), feature_sizes=tuple(map(tuple, feature_sizes)))
