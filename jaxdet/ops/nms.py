"""Static-shape, class-aware, batched greedy non-maximum suppression.

Greedy NMS keeps, in descending score order, every candidate that does not overlap
(IoU > ``iou_threshold``) an already-kept candidate of the same class. Written naively this is a
data-dependent loop over boxes, which does not fit XLA. ``batched_nms`` computes the *same*
result with static shapes, in the "tiled NMS" style of TF's ``non_max_suppression_padded``:

1. **Sort.** Per image, candidates are stably sorted by descending score (ties: lower input
   index first); padding (``valid=False``) goes last. The sorted arrays are padded with invalid
   entries to a multiple of the tile size ``T``.
2. **Tile loop.** A ``lax.while_loop`` walks over tiles of ``T`` sorted candidates. Its state is
   an output buffer of the kept boxes (at most ``K = min(max_output, N)`` per image, in score
   order) plus a per-image count. For each tile:

   a. *Suppression by earlier tiles*: a candidate is dropped if it has IoU > threshold with a
      same-class box already in the buffer (one ``[T, K]`` block IoU). Only the buffer matters:
      a box kept after the first ``K`` kept ones never reaches the output, so it cannot
      influence it either.
   b. *Self-suppression*: inside the tile, greedy NMS is the unique solution of
      ``keep_i = cand_i and not any_{j<i}(keep_j and over_ij)``, where ``over_ij`` is "same
      class and IoU > threshold". Iterating that map from ``keep = cand`` fixes at least one more
      leading entry per step (entry ``i`` only depends on entries ``j < i``), so it reaches the
      fixed point in at most ``T`` steps; we iterate until nothing changes, which on real
      detections takes a handful of steps. (The threshold is the caller's everywhere; the
      lineage this follows hard-codes 0.5 here.)
   c. *Append*: the surviving candidates are scattered into the buffer after the ones already
      there; anything past ``K`` is dropped.

   The loop stops after the last tile, or as soon as every image in the batch has ``K`` kept
   boxes.
3. **Output.** The buffer is padded from ``K`` to ``max_output``; slots that hold no kept box are
   ``valid=False`` with zero boxes, scores and classes.

IoU comes from ``box_ops.pairwise_iou``, which guards the division on its input side, so
zero-area, inverted or padding boxes give IoU 0, never NaN.

Everything is vectorised over the batch; the only loops are the two ``lax.while_loop``s, so the
function is jit-compatible with its keyword arguments static, e.g.
``jax.jit(batched_nms, static_argnames=("iou_threshold", "max_output", "tile_size"))``.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxdet.ops import boxes as box_ops


class Detections(NamedTuple):
  """Padded per-image detections; entries with ``valid=False`` are zero."""
  boxes: jax.Array    # [B, K, 4] float32 (x1, y1, x2, y2)
  scores: jax.Array   # [B, K] float32
  classes: jax.Array  # [B, K] int32
  valid: jax.Array    # [B, K] bool


def overlap_matrix(a_boxes, a_classes, b_boxes, b_classes, iou_threshold):
  """``[B, P, Q]`` bool: same class and IoU strictly above the threshold."""
  same_class = a_classes[:, :, None] == b_classes[:, None, :]
  return same_class & (box_ops.pairwise_iou(a_boxes, b_boxes) > iou_threshold)


def sort_by_score(boxes, scores, classes, valid):
  """Stable sort of each image by descending score, invalid entries last."""
  key = jnp.where(valid, -scores, jnp.inf)
  order = jnp.argsort(key, axis=-1, stable=True)
  boxes = jnp.take_along_axis(boxes, order[..., None], axis=1)
  scores, classes, valid = (jnp.take_along_axis(x, order, axis=1) for x in (scores, classes, valid))
  return boxes, scores, classes, valid


def pad_axis1(x, size):
  """Zero/False-pad axis 1 of ``x`` up to ``size``."""
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, size - x.shape[1])
  return jnp.pad(x, pad)


def self_suppress(candidates, overlaps):
  """Greedy NMS inside one tile, as a fixed point.

  ``candidates [B, T]`` are the tile's entries still alive, ``overlaps [B, T, T]`` the same-class
  IoU > threshold matrix. Iterates ``keep_i = cand_i & ~any_{j<i}(keep_j & over_ij)`` from
  ``keep = cand`` until it stops changing; the unique fixed point is the greedy result.
  """
  tile = candidates.shape[1]
  earlier = jnp.tril(jnp.ones((tile, tile), dtype=bool), k=-1)  # [i, j]: j < i
  overlaps = overlaps & earlier

  def step(keep):
    return candidates & ~jnp.any(overlaps & keep[:, None, :], axis=-1)

  def changed(state):
    keep, previous = state
    return jnp.any(keep != previous)

  def iterate(state):
    keep, _ = state
    return step(keep), keep

  keep, _ = lax.while_loop(changed, iterate, (step(candidates), candidates))
  return keep


def append_kept(buffer, count, keep, boxes, scores, classes):
  """Scatter the kept tile entries into ``buffer`` after its first ``count`` entries.

  Entries that are not kept, or would land past the buffer's end, are dropped. Returns the new
  buffer and the new per-image counts (capped at the capacity).
  """
  batch, capacity = buffer.scores.shape
  slot = count[:, None] + jnp.cumsum(keep, axis=1) - 1
  slot = jnp.where(keep, slot, capacity)  # out of range: dropped
  rows = jnp.arange(batch)[:, None]

  def put(dst, src):
    return dst.at[rows, slot].set(src, mode="drop")

  new_count = jnp.minimum(count + jnp.sum(keep, axis=1), capacity)
  new_buffer = Detections(boxes=put(buffer.boxes, boxes), scores=put(buffer.scores, scores),
                          classes=put(buffer.classes, classes),
                          valid=jnp.arange(capacity)[None, :] < new_count[:, None])
  return new_buffer, new_count


def batched_nms(boxes, scores, classes, valid, *, iou_threshold: float, max_output: int,
                tile_size: int = 256) -> Detections:
  """Class-aware greedy NMS on a padded batch (algorithm in the module docstring).

  Args:
    boxes: ``[B, N, 4]`` float32 (x1, y1, x2, y2).
    scores: ``[B, N]`` float32.
    classes: ``[B, N]`` int32.
    valid: ``[B, N]`` bool; False marks padding candidates.
    iou_threshold: a box is suppressed by a higher-scoring kept box of the same class with IoU
      strictly greater than this.
    max_output: number of output slots per image.
    tile_size: candidates processed per loop step (capped at ``N``).

  Returns:
    ``Detections`` of shape ``[B, max_output]``: the kept boxes in descending score order (ties:
    lower input index first), then invalid, all-zero padding.
  """
  if max_output < 0 or tile_size < 1:
    raise ValueError(f"need max_output >= 0 and tile_size >= 1, got {max_output}, {tile_size}")
  boxes = jnp.asarray(boxes, jnp.float32)
  scores = jnp.asarray(scores, jnp.float32)
  classes = jnp.asarray(classes, jnp.int32)
  valid = jnp.asarray(valid, bool)
  batch, num = scores.shape

  tile = max(1, min(tile_size, num))
  num_tiles = max(1, -(-num // tile))
  capacity = min(max_output, num)
  sorted_inputs = sort_by_score(boxes, scores, classes, valid)
  boxes_s, scores_s, classes_s, valid_s = (pad_axis1(x, num_tiles * tile) for x in sorted_inputs)

  def more_to_do(state):
    t, _, count = state
    return (t < num_tiles) & jnp.any(count < capacity)

  def process_tile(state):
    t, buffer, count = state
    t_boxes, t_scores, t_classes, t_valid = (
        lax.dynamic_slice_in_dim(x, t * tile, tile, axis=1)
        for x in (boxes_s, scores_s, classes_s, valid_s))
    by_kept = overlap_matrix(t_boxes, t_classes, buffer.boxes, buffer.classes, iou_threshold)
    suppressed = jnp.any(by_kept & buffer.valid[:, None, :], axis=-1)
    candidates = t_valid & ~suppressed & (count < capacity)[:, None]
    within = overlap_matrix(t_boxes, t_classes, t_boxes, t_classes, iou_threshold)
    keep = self_suppress(candidates, within)
    buffer, count = append_kept(buffer, count, keep, t_boxes, t_scores, t_classes)
    return t + 1, buffer, count

  empty = Detections(boxes=jnp.zeros((batch, capacity, 4), jnp.float32),
                     scores=jnp.zeros((batch, capacity), jnp.float32),
                     classes=jnp.zeros((batch, capacity), jnp.int32),
                     valid=jnp.zeros((batch, capacity), bool))
  init = (jnp.asarray(0, jnp.int32), empty, jnp.zeros((batch,), jnp.int32))
  _, buffer, _ = lax.while_loop(more_to_do, process_tile, init)
  return Detections(*(pad_axis1(x, max_output) for x in buffer))


def per_class_nms(boxes, scores, *, score_threshold: float, top_k: int, iou_threshold: float,
                  max_output: int, tile_size: int = 256) -> Detections:
  """NMS per class with a per-class candidate budget, then the best ``max_output`` of all
  classes: the rule of Caffe SSD's ``DetectionOutput`` (``confidence_threshold``, ``top_k``,
  ``nms_threshold``, ``keep_top_k``) and torchvision's SSD postprocessing. Unlike one global
  top-k of (box, class) pairs before NMS, a class with few high scores keeps its candidates
  when another class has many.

  For each image and class: the ``top_k`` boxes by score (ties: the lower box index), those
  with score ``> score_threshold`` enter greedy NMS at ``iou_threshold`` (:func:`batched_nms`,
  one batch row per image and class), which keeps at most ``min(top_k, max_output)``; of all
  classes' survivors the ``max_output`` best by score are returned (ties: the lower class).

  Args:
    boxes: ``[B, N, 4]`` float32, shared by every class.
    scores: ``[B, N, K]`` float32 per class.
  Returns:
    ``Detections`` of shape ``[B, max_output]``; ``classes`` index the ``K`` score columns.
  """
  batch, num_boxes, num_classes = scores.shape
  k = min(top_k, num_boxes)
  top_scores, top_index = lax.top_k(jnp.swapaxes(jnp.asarray(scores, jnp.float32), 1, 2), k)
  candidates = jnp.take_along_axis(jnp.asarray(boxes, jnp.float32)[:, None],
                                   top_index[..., None], axis=2)          # [B, K, k, 4]
  per_class = batched_nms(candidates.reshape(batch * num_classes, k, 4),
                          top_scores.reshape(batch * num_classes, k),
                          jnp.zeros((batch * num_classes, k), jnp.int32),
                          (top_scores > score_threshold).reshape(batch * num_classes, k),
                          iou_threshold=iou_threshold, max_output=min(k, max_output),
                          tile_size=tile_size)
  kept = per_class.scores.shape[1]
  ranked = jnp.where(per_class.valid, per_class.scores, -jnp.inf).reshape(batch, -1)
  _, best = lax.top_k(ranked, min(max_output, num_classes * kept))
  pick = lambda x: jnp.take_along_axis(  # invalid entries are zero already
      x.reshape(batch, num_classes * kept, *x.shape[2:]),
      best.reshape(*best.shape, *(1,) * (x.ndim - 2)), axis=1)
  valid = pick(per_class.valid)
  out = Detections(boxes=pick(per_class.boxes), scores=pick(per_class.scores),
                   classes=jnp.where(valid, best // kept, 0).astype(jnp.int32), valid=valid)
  return Detections(*(pad_axis1(x, max_output) for x in out))
