"""Anchor priors by k-means on the training boxes' (w, h), YOLOv2's "Dimension Clusters".

YOLOv2 (Redmon & Farhadi 2017, Sec. 2 "Better", Dimension Clusters) clusters box shapes with
the distance d(box, centroid) = 1 - IoU(box, centroid), both boxes placed at one corner, so that
large boxes do not dominate as they would under Euclidean distance. It chose k = 5 from the
elbow of mean IoU against k (Fig. 2); YOLOv3 takes 9 clusters, 3 per scale. This runs offline
on the host (numpy, float64): a few hundred thousand boxes take seconds.
"""
import numpy as np


def corner_iou(wh, centroids):
  """IoU of ``wh [N, 2]`` against ``centroids [K, 2]`` with both boxes at one corner: ``[N, K]``."""
  wh = np.asarray(wh, np.float64)[:, None, :]
  centroids = np.asarray(centroids, np.float64)[None, :, :]
  intersection = np.prod(np.minimum(wh, centroids), axis=-1)
  union = np.prod(wh, axis=-1) + np.prod(centroids, axis=-1) - intersection
  return intersection / union


def mean_best_iou(wh, centroids):
  """The clustering's quality (YOLOv2's "Avg IOU"): each box's IoU with its nearest centroid,
  averaged over the boxes."""
  return float(corner_iou(wh, centroids).max(axis=1).mean())


def _seed_centroids(wh, k, rng):
  """k-means++ seeding under the 1 - IoU distance."""
  centroids = [wh[rng.integers(len(wh))]]
  for _ in range(1, k):
    distance = 1.0 - corner_iou(wh, np.array(centroids)).max(axis=1)
    total = distance.sum()
    index = rng.choice(len(wh), p=distance / total) if total > 0 else rng.integers(len(wh))
    centroids.append(wh[index])
  return np.array(centroids)


def _lloyd(wh, centroids, max_iterations):
  """Assign each box to the centroid of highest IoU, move each centroid to its boxes' mean
  (w, h) (darknet's update); an emptied cluster takes the box farthest from all centroids."""
  assignment = None
  for _ in range(max_iterations):
    iou = corner_iou(wh, centroids)
    new_assignment = iou.argmax(axis=1)
    if assignment is not None and np.array_equal(new_assignment, assignment):
      break
    assignment = new_assignment
    for j in range(len(centroids)):
      members = wh[assignment == j]
      if len(members):
        centroids[j] = members.mean(axis=0)
      else:
        centroids[j] = wh[np.argmin(iou.max(axis=1))]
  return centroids


def kmeans_anchors(wh, k, seed=0, restarts=5, max_iterations=300):
  """``(centroids [k, 2] sorted by area, mean IoU)``: the best of ``restarts`` k-means runs with
  distance 1 - IoU on box sizes ``wh [N, 2]`` (positive widths and heights)."""
  wh = np.asarray(wh, np.float64).reshape(-1, 2)
  if len(wh) < k:
    raise ValueError(f"{len(wh)} boxes cannot make {k} clusters")
  if not np.all(wh > 0):
    raise ValueError("box widths and heights must be positive")
  rng = np.random.default_rng(seed)
  best, best_iou = None, -1.0
  for _ in range(restarts):
    centroids = _lloyd(wh, _seed_centroids(wh, k, rng), max_iterations)
    iou = mean_best_iou(wh, centroids)
    if iou > best_iou:
      best, best_iou = centroids, iou
  return best[np.argsort(np.prod(best, axis=1), kind="stable")], best_iou


def elbow(wh, ks=range(1, 10), seed=0):
  """``[(k, mean IoU, centroids)]`` for each k: the curve of YOLOv2's Fig. 2."""
  curve = []
  for k in ks:
    centroids, iou = kmeans_anchors(wh, k, seed)
    curve.append((k, iou, centroids))
  return curve


def input_box_sizes(source, image_size, keep_aspect_ratio):
  """``wh [N, 2]`` of every non-ignored box of ``source`` at the network input ``image_size =
  (height, width)``, resized as the pipeline resizes (aspect kept or warped); boxes with no
  area are left out."""
  height, width = image_size
  sizes = []
  for i in range(len(source)):
    record = source.annotations(i)
    boxes = np.asarray(record["boxes"], np.float64).reshape(-1, 4)[~np.asarray(record["ignore"])]
    scale = np.array([width / record["width"], height / record["height"]])
    if keep_aspect_ratio:
      scale[:] = scale.min()
    sizes.append((boxes[:, 2:] - boxes[:, :2]) * scale)
  wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
  return wh[np.all(wh > 0, axis=1)]
