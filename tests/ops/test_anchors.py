"""RetinaNet anchors against the paper's numbers and hand-computed boxes."""
import numpy as np
import pytest

from jaxdet.ops import anchors


def test_counts_levels_and_order():
  grid = anchors.retinanet_anchors((512, 512))
  # P3..P7 on 512: 64^2, 32^2, 16^2, 8^2, 4^2 cells, 9 anchors each.
  assert grid.level_sizes == tuple(9 * s * s for s in (64, 32, 16, 8, 4))
  assert grid.num_anchors == 9 * (4096 + 1024 + 256 + 64 + 16) == 49104
  assert grid.anchors_per_cell == (9,) * 5


def test_areas_are_32_to_512_squared_with_octave_scales():
  grid = anchors.retinanet_anchors((256, 384))
  areas = (grid.boxes[:, 2] - grid.boxes[:, 0]) * (grid.boxes[:, 3] - grid.boxes[:, 1])
  start = 0
  for level, size in zip(range(3, 8), grid.level_sizes):
    base = 32 * 2 ** (level - 3)
    cell_areas = areas[start:start + 9]
    expected = [(base * 2 ** (i / 3)) ** 2 for i in range(3) for _ in range(3)]
    np.testing.assert_allclose(cell_areas, expected, rtol=1e-5)
    start += size


def test_first_cell_hand_computed():
  grid = anchors.retinanet_anchors((128, 128))
  # P3 cell (0, 0): centre (4, 4); size 32, ratio h/w = 1/2: w = 32 * sqrt(2), h = 32 / sqrt(2).
  w, h = 32 * np.sqrt(2), 32 / np.sqrt(2)
  np.testing.assert_allclose(grid.boxes[0], [4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2], rtol=1e-6)
  np.testing.assert_allclose(grid.boxes[1], [4 - 16, 4 - 16, 4 + 16, 4 + 16], rtol=1e-6)
  # The next cell to the right is 8 pixels further (x fastest after the anchor shapes).
  np.testing.assert_allclose(grid.boxes[9] - grid.boxes[0], [8, 0, 8, 0], atol=1e-5)
  # Row 1 starts after the 16 cells of row 0.
  np.testing.assert_allclose(grid.boxes[16 * 9] - grid.boxes[0], [0, 8, 0, 8], atol=1e-5)


def test_the_finest_level_alone_holds_every_levels_shapes_in_each_cell():
  grid = anchors.retinanet_anchors((128, 128), 3, 5, single_level=True)
  # P3's 16 x 16 cells, each with 3 levels x 9 shapes, level-major within the cell.
  assert grid.level_sizes == (16 * 16 * 27,) and grid.anchors_per_cell == (27,)
  widths, heights = (grid.boxes[:27, 2:] - grid.boxes[:27, :2]).T
  sizes = np.sqrt(widths * heights)
  np.testing.assert_allclose(sizes, [32 * 2 ** (level + i / 3) for level in range(3)
                                     for i in range(3) for _ in range(3)], rtol=1e-5)
  centres = (grid.boxes[:, :2] + grid.boxes[:, 2:]) / 2
  np.testing.assert_allclose(centres[:27], 4.0, atol=1e-4)              # cell (0, 0) of stride 8
  np.testing.assert_allclose(centres[27] - centres[0], [8, 0], atol=1e-4)


def test_rejects_sizes_not_multiple_of_coarsest_stride():
  with pytest.raises(ValueError, match="multiple of 2\\^max_level"):
    anchors.retinanet_anchors((500, 512))
