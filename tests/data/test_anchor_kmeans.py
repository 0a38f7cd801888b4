"""Anchor k-means with distance 1 - IoU (YOLOv2's dimension clusters) and its script."""
import json

import numpy as np
import pytest

from jaxdet.data import anchor_kmeans
from tests.scripts.test_scripts import run

SHAPES = np.array([[12.0, 12.0], [60.0, 20.0], [25.0, 90.0]])


def clustered_boxes(per_cluster=100, noise=0.05, seed=0):
  rng = np.random.default_rng(seed)
  return np.concatenate([shape * rng.uniform(1 - noise, 1 + noise, (per_cluster, 2))
                         for shape in SHAPES])


def test_corner_iou_by_hand():
  iou = anchor_kmeans.corner_iou([[2.0, 2.0], [3.0, 3.0]], [[4.0, 1.0], [3.0, 3.0]])
  # (2x2 vs 4x1): overlap 2x1 = 2, union 4 + 4 - 2 = 6.  (3x3 vs 4x1): 3 / (9 + 4 - 3).
  np.testing.assert_allclose(iou, [[2 / 6, 4 / 9], [3 / 10, 1.0]])


def test_mean_best_iou_matches_a_loop():
  rng = np.random.default_rng(1)
  wh, centroids = rng.uniform(1, 50, (40, 2)), rng.uniform(1, 50, (4, 2))
  best = []
  for w, h in wh:
    best.append(max(min(w, cw) * min(h, ch) / (w * h + cw * ch - min(w, cw) * min(h, ch))
                    for cw, ch in centroids))
  assert anchor_kmeans.mean_best_iou(wh, centroids) == pytest.approx(np.mean(best), rel=1e-12)


def test_recovers_known_clusters_and_the_elbow_is_at_their_number():
  wh = clustered_boxes()
  centroids, iou = anchor_kmeans.kmeans_anchors(wh, 3)
  np.testing.assert_allclose(centroids, SHAPES, rtol=0.03)  # sorted by area, as SHAPES
  assert iou > 0.9
  curve = {k: value for k, value, _ in anchor_kmeans.elbow(wh, range(1, 6))}
  assert curve[1] < curve[2] < curve[3]
  assert curve[3] - curve[2] > 0.1 and curve[5] - curve[3] < 0.05  # the elbow


def test_centroids_are_the_means_of_their_boxes():
  wh = np.random.default_rng(2).uniform(5, 100, (200, 2))
  centroids, _ = anchor_kmeans.kmeans_anchors(wh, 4, seed=3)
  for j, centroid in enumerate(centroids):
    members = [box for box in wh
               if np.argmax([anchor_kmeans.corner_iou([box], [c])[0, 0] for c in centroids]) == j]
    np.testing.assert_allclose(centroid, np.mean(members, axis=0), rtol=1e-9)


def test_same_seed_same_priors():
  wh = clustered_boxes(seed=4)
  a, _ = anchor_kmeans.kmeans_anchors(wh, 5, seed=7)
  b, _ = anchor_kmeans.kmeans_anchors(wh, 5, seed=7)
  np.testing.assert_array_equal(a, b)


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="cannot make 3 clusters"):
    anchor_kmeans.kmeans_anchors([[1.0, 1.0], [2.0, 2.0]], 3)
  with pytest.raises(ValueError, match="positive"):
    anchor_kmeans.kmeans_anchors([[1.0, 0.0], [2.0, 2.0]], 1)


class OneImage:
  """An image of 100 rows x 200 columns: a 50x20 box, an ignored box and a zero-width box."""

  def __len__(self):
    return 1

  def annotations(self, index):
    del index
    return {"boxes": np.array([[0, 0, 50, 20], [0, 0, 90, 90], [5, 5, 5, 30]], np.float64),
            "ignore": np.array([False, True, False]), "height": 100, "width": 200}


@pytest.mark.parametrize("keep_aspect_ratio, expected", [
    (True, [[50 * 0.32, 20 * 0.32]]),           # resize by min(64/200, 64/100) = 0.32
    (False, [[50 * 64 / 200, 20 * 64 / 100]]),  # warp: each axis on its own
])
def test_box_sizes_at_the_input(keep_aspect_ratio, expected):
  wh = anchor_kmeans.input_box_sizes(OneImage(), (64, 64), keep_aspect_ratio)
  np.testing.assert_allclose(wh, expected)


def test_script_prints_the_elbow_and_writes_priors(scenes_dir, tmp_path):
  output = tmp_path / "priors.json"
  result = run("kmeans_anchors.py", f"--coco_json_dir={scenes_dir}", "--k=3", "--max_k=4",
               "--stride=16", f"--output={output}")
  assert "  k  mean IoU" in result.stdout and "<- written" in result.stdout
  priors = json.loads(output.read_text())
  assert priors["k"] == 3 and len(priors["priors_pixels"]) == 3
  assert [k for k, _ in priors["elbow"]] == [1, 2, 3, 4]
  np.testing.assert_allclose(np.array(priors["priors_cells"]) * 16, priors["priors_pixels"],
                             rtol=1e-3)
