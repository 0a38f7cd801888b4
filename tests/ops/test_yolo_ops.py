"""YOLO slot grid, direct location prediction and one-slot-per-truth assignment, by hand and by
brute-force loops."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import anchors
from jaxdet.ops import boxes as box_ops
from jaxdet.ops import matching

# Two maps over a 64 x 96 input: 2 x 3 cells (stride 32) with two priors, 4 x 6 (stride 16)
# with one.
GRID = anchors.yolo_grid((64, 96), [(2, 3), (4, 6)], [[(40, 30), (20, 50)], [(10, 10)]])


def test_grid_order_is_level_row_column_prior():
  assert GRID.num_anchors == 2 * 3 * 2 + 4 * 6 and GRID.level_sizes == (12, 24)
  # Slot 7 = level 0, row 1, column 0, prior 1; slot 12 + 9 = level 1, row 1, column 3.
  np.testing.assert_array_equal(GRID.cell_xy[7], [0, 1])
  np.testing.assert_array_equal(GRID.prior_wh[7], [20, 50])
  np.testing.assert_array_equal(GRID.stride[7], [32, 32])
  np.testing.assert_array_equal(GRID.cell_xy[21], [3, 1])
  np.testing.assert_array_equal(GRID.prior_wh[21], [10, 10])
  np.testing.assert_array_equal(GRID.stride[21], [16, 16])


def test_decode_by_hand_and_encode_inverts_it():
  logit = lambda p: math.log(p / (1 - p))
  # Cell (2, 1) of stride 32, prior 40 x 30: centre (2.25, 1.5) cells = (72, 48) px, size
  # (40 e^0.5, 30 e^-1).
  t = jnp.array([[logit(0.25), logit(0.5), 0.5, -1.0]], jnp.float32)
  box = box_ops.yolo_decode(t, GRID.cell_xy[10:11], GRID.stride[10:11], GRID.prior_wh[10:11])
  w, h = 40 * math.exp(0.5), 30 * math.exp(-1.0)
  np.testing.assert_allclose(box[0], [72 - w / 2, 48 - h / 2, 72 + w / 2, 48 + h / 2], rtol=1e-6)
  target = box_ops.yolo_encode(box, GRID.cell_xy[10:11], GRID.stride[10:11],
                               GRID.prior_wh[10:11])
  np.testing.assert_allclose(target[0], [0.25, 0.5, 0.5, -1.0], atol=1e-5)


def test_the_other_locations_by_hand_and_encode_inverts_them():
  # Cell (2, 1) of stride 32 (centre (80, 48) px), prior 40 x 30.
  slot = (GRID.cell_xy[10:11], GRID.stride[10:11], GRID.prior_wh[10:11])
  for location, t, centre in (("anchor_offset", [0.5, -0.2], (80 + 0.5 * 40, 48 - 0.2 * 30)),
                              ("linear", [1.25, -0.5], ((2 + 1.25) * 32, (1 - 0.5) * 32))):
    box = box_ops.yolo_decode(jnp.array([[*t, 0.0, 0.0]]), *slot, location=location)
    np.testing.assert_allclose(box[0], [centre[0] - 20, centre[1] - 15, centre[0] + 20,
                                        centre[1] + 15], rtol=1e-6)
    np.testing.assert_allclose(box_ops.yolo_encode(box, *slot, location=location)[0],
                               [*t, 0.0, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="model.location='sigmoid'"):
    box_ops.yolo_decode(jnp.zeros((1, 4)), *slot, location="sigmoid")


def test_shape_iou_by_hand():
  # 40 x 55 against 40 x 30: 1200 / 2200; against 20 x 50: 1000 / 2200.
  np.testing.assert_allclose(matching.shape_iou(jnp.array([40.0, 55.0]), GRID.priors[:2]),
                             [1200 / 2200, 1000 / 2200], rtol=1e-6)


def brute_force_assign(grid, boxes, mask):
  """Loops: best prior by centred IoU over every prior, the cell of its map holding the centre;
  a later truth overwrites an earlier one on the same slot."""
  owner = -np.ones((len(boxes), grid.num_anchors), int)
  for b in range(len(boxes)):
    for m in range(boxes.shape[1]):
      x1, y1, x2, y2 = boxes[b, m]
      w, h = x2 - x1, y2 - y1
      if not mask[b, m] or w <= 0 or h <= 0:
        continue
      ious = [min(w, pw) * min(h, ph) / (w * h + pw * ph - min(w, pw) * min(h, ph))
              for pw, ph in grid.priors]
      prior = int(np.argmax(ious))
      level = grid.prior_level[prior]
      first_prior = int(np.sum(grid.prior_level < level))
      per_cell = int(np.sum(grid.prior_level == level))
      rows, cols = grid.feature_sizes[level]
      first_slot = sum(grid.level_sizes[:level])
      stride_y, stride_x = 64 / rows, 96 / cols
      cx = min(int(((x1 + x2) / 2) // stride_x), cols - 1)
      cy = min(int(((y1 + y2) / 2) // stride_y), rows - 1)
      owner[b, first_slot + (cy * cols + cx) * per_cell + prior - first_prior] = m
  return owner


def test_assign_matches_brute_force_with_collisions_and_padding():
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 60, (4, 12, 2))
  wh = rng.uniform(4, 60, (4, 12, 2))
  boxes = np.concatenate([xy, np.minimum(xy + wh, [96, 64])], -1).astype(np.float32)
  mask = rng.uniform(size=(4, 12)) < 0.7
  mask[2] = False                                           # an image without objects
  boxes[3, 1] = boxes[3, 0] + [1, 1, 1, 1]                  # same cell and prior: 1 wins
  mask[3] = np.arange(12) < 2
  boxes[1, 4] = [30, 30, 30, 40]                            # empty box: never assigned
  mask[1, 4] = True
  owner = jax.jit(lambda b, m: matching.yolo_assign(GRID, matching.yolo_truth_slots(GRID, b, m)))(
      boxes, mask)
  want = brute_force_assign(GRID, boxes, mask)
  np.testing.assert_array_equal(owner, want)
  assert 0 not in np.asarray(owner[3]) and 1 in np.asarray(owner[3])
  assert np.all(np.asarray(owner[2]) == -1) and 4 not in np.asarray(owner[1])
