"""Pascal VOC detection average precision (AP / mAP), in pure numpy (float64).

Follows the official VOC development kit (``VOCevaldet.m`` and ``VOCap.m``)
and the protocol of

* M. Everingham, L. Van Gool, C. K. I. Williams, J. Winn, A. Zisserman,
 "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 88(2):303-338,
 2010 -- 11-point interpolated AP (used up to VOC2009), the bounding-box
 overlap criterion and "difficult" objects.
* M. Everingham, S. M. A. Eslami, L. Van Gool, C. K. I. Williams, J. Winn,
 A. Zisserman, "The PASCAL Visual Object Classes Challenge: A
 Retrospective", IJCV 111(1):98-136, 2015 -- "all-point" AP, the area
 under the monotone precision envelope, used from VOC2010 on.

Documented deviations from the devkit:

* **Continuous coordinates.** The devkit treats boxes as inclusive pixel
 ranges and adds 1 to every width and height; jaxdet uses continuous
 coordinates everywhere, so IoU here is ``inter / union`` with plain
 ``x2 - x1`` widths. The same pair of boxes can therefore fall on different
 sides of the threshold than under the devkit.
* **11-point thresholds are exact decimals** ``t = k / 10``. (The widely
 copied Python port builds them with ``np.arange(0, 1.1, 0.1)``, whose 0.3,
 0.6 and 0.7 are one ulp too large, so a recall of exactly 3/10 misses
 ``t = 0.3`` there.)
* **Detections ignored because they hit a difficult truth are dropped from
 the precision/recall curve** rather than kept as repeated points. This
 leaves the AP unchanged and avoids the devkit's 0/0 precision when the
 highest-scoring detections are all ignored.

The overlap test is ``IoU >= iou_threshold``, as in ``VOCevaldet.m``
(``ovmax>=VOCopts.minoverlap``). The Python port in py-faster-rcnn
(``voc_eval.py``) uses a strict ``>`` instead; the two differ only for an IoU
exactly equal to the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Hashable

import numpy as np

from jaxdet.ops import boxes as box_ops

_ELEVEN_RECALL_THRESHOLDS = np.arange(11, dtype=np.float64) / 10.0


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
  """Average precision of one precision/recall curve, as the VOC devkit computes it.

  Args:
   recall: [n] recall after each detection, in descending score order.
   precision: [n] precision after each detection, same order.
   use_07_metric: True for the VOC2007 11-point interpolated AP
    (Everingham et al. 2010): the mean over
    ``t in {0, 0.1, ..., 1}`` of the maximum precision at recall ``>= t``
    (0 where no point reaches ``t``). False for the VOC2010+ "all-point"
    AP (``VOCap.m``; Everingham et al. 2015): the area under the
    monotonically non-increasing precision envelope, summed at the points
    where recall changes.

  Returns:
   The AP as a Python float; 0.0 for an empty curve.
  """
  recall = np.asarray(recall, dtype=np.float64)
  precision = np.asarray(precision, dtype=np.float64)
  if recall.ndim != 1 or recall.shape != precision.shape:
    raise ValueError(
      f"recall and precision must be 1-D of equal length, got shapes "
      f"{recall.shape} and {precision.shape}"
    )
  if use_07_metric:
    return _eleven_point_ap(recall, precision)
  return _all_point_ap(recall, precision)


def _eleven_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
  """VOC2007 11-point interpolated AP (devkit ``VOCevaldet.m``, VOC2007)."""
  reaches = recall[None, :] >= _ELEVEN_RECALL_THRESHOLDS[:, None]
  best_precision = np.max(
    np.where(reaches, precision[None, :], 0.0), axis=1, initial=0.0
  )
  return float(np.mean(best_precision))


def _all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
  """VOC2010+ all-point AP (devkit ``VOCap.m``)."""
  padded_recall = np.concatenate(([0.0], recall, [1.0]))
  padded_precision = np.concatenate(([0.0], precision, [0.0]))
  envelope = np.maximum.accumulate(padded_precision[::-1])[::-1]
  changes = np.flatnonzero(padded_recall[1:] != padded_recall[:-1]) + 1
  widths = padded_recall[changes] - padded_recall[changes - 1]
  return float(np.sum(widths * envelope[changes]))


def evaluate_voc(
  detections: Mapping[Hashable, Mapping[str, Any]],
  ground_truths: Mapping[Hashable, Mapping[str, Any]],
  num_classes: int,
  iou_threshold: float = 0.5,
  use_07_metric: bool = True,
) -> dict[str, Any]:
  """Pascal VOC detection mAP (devkit ``VOCevaldet.m`` protocol).

  For each class, all of its detections over all images are sorted by
  descending score (stable: ties keep the iteration order of ``detections``
  and the order within each image). Each detection, in turn, is compared
  with *every* ground-truth box of its class in its image and assigned to
  the one of highest IoU (first on ties), exactly like the devkit:

  * IoU ``>= iou_threshold`` with a difficult truth: ignored (neither TP
   nor FP).
  * IoU ``>= iou_threshold`` with a truth not yet matched: TP, and the
   truth becomes matched.
  * IoU ``>= iou_threshold`` with an already matched truth: FP (duplicate),
   even if another unmatched truth also overlaps enough -- the devkit does
   not fall back to the second-best truth.
  * Otherwise (including images without truths of that class): FP.

  Recall is divided by the number of non-difficult truths of the class
  (``npos``). See the module docstring for the deviations from the devkit
  (continuous-coordinate IoU, exact 11-point thresholds).

  Args:
   detections: image_id -> dict(boxes=[k, 4] (x1, y1, x2, y2),
    scores=[k], labels=[k] ints). Images may be absent or have k = 0.
   ground_truths: image_id -> dict(boxes=[n, 4] (x1, y1, x2, y2),
    labels=[n] ints in [0, num_classes), difficult=[n] bools; optional,
    default all False). Every evaluated image must appear here, with
    n = 0 for images without objects.
   num_classes: number of classes C.
   iou_threshold: overlap needed for a match, in (0, 1].
   use_07_metric: 11-point AP (VOC2007) if True, all-point AP (VOC2010+)
    otherwise; see :func:`voc_ap`.

  Returns:
   ``{'mAP': float, 'AP_per_class': float64 [C]}``. Classes without
   non-difficult truths have AP NaN and are left out of the mean; mAP is
   NaN when no class has any.

  Raises:
   ValueError: on an out-of-range ``iou_threshold`` or a detection for an
    image that has no ground-truth entry.
  """
  if not 0.0 < iou_threshold <= 1.0:
    raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
  unknown = [image_id for image_id in detections if image_id not in ground_truths]
  if unknown:
    raise ValueError(f"detections for images without ground truth: {unknown[:5]!r}")

  ap_per_class = np.full(num_classes, np.nan, dtype=np.float64)
  for class_id in range(num_classes):
    truths = _class_ground_truths(ground_truths, class_id)
    npos = sum(int(np.sum(~difficult)) for _, difficult in truths.values())
    if npos == 0:
      continue
    image_ids, boxes = _class_detections_by_score(detections, class_id)
    is_tp, is_fp = _match_detections(image_ids, boxes, truths, iou_threshold)
    recall, precision = _precision_recall(is_tp, is_fp, npos)
    ap_per_class[class_id] = voc_ap(recall, precision, use_07_metric)

  has_positives = ~np.isnan(ap_per_class)
  mean_ap = float(np.mean(ap_per_class[has_positives])) if has_positives.any() else np.nan
  return {"mAP": mean_ap, "AP_per_class": ap_per_class}


def _class_ground_truths(
  ground_truths: Mapping[Hashable, Mapping[str, Any]], class_id: int
) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
  """image_id -> (boxes [n, 4], difficult [n]) of one class, for every image."""
  truths = {}
  for image_id, gt in ground_truths.items():
    boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(gt["labels"]).reshape(-1)
    difficult = np.asarray(
      gt.get("difficult", np.zeros(len(labels), dtype=bool)), dtype=bool
    ).reshape(-1)
    in_class = labels == class_id
    truths[image_id] = (boxes[in_class], difficult[in_class])
  return truths


def _class_detections_by_score(
  detections: Mapping[Hashable, Mapping[str, Any]], class_id: int
) -> tuple[list[Hashable], np.ndarray]:
  """All detections of one class, stably sorted by descending score.

  Returns (image id of each detection, boxes [k, 4]).
  """
  image_ids: list[Hashable] = []
  boxes, scores = [np.zeros((0, 4))], [np.zeros(0)]
  for image_id, det in detections.items():
    in_class = np.asarray(det["labels"]).reshape(-1) == class_id
    image_ids.extend([image_id] * int(in_class.sum()))
    boxes.append(np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)[in_class])
    scores.append(np.asarray(det["scores"], dtype=np.float64).reshape(-1)[in_class])
  order = np.argsort(-np.concatenate(scores), kind="stable")
  return [image_ids[i] for i in order], np.concatenate(boxes)[order]


def _match_detections(
  image_ids: list[Hashable],
  boxes: np.ndarray,
  truths: Mapping[Hashable, tuple[np.ndarray, np.ndarray]],
  iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
  """Greedy devkit assignment of score-sorted detections to truths.

  Returns boolean (is_tp, is_fp) per detection; both False means ignored
  (matched a difficult truth).
  """
  is_tp = np.zeros(len(image_ids), dtype=bool)
  is_fp = np.zeros(len(image_ids), dtype=bool)
  matched = {
    image_id: np.zeros(len(flags), dtype=bool) for image_id, (_, flags) in truths.items()
  }
  for d, (image_id, box) in enumerate(zip(image_ids, boxes)):
    gt_boxes, difficult = truths[image_id]
    if len(gt_boxes) == 0:
      is_fp[d] = True
      continue
    overlaps = box_ops.host_iou(box, gt_boxes)
    best = int(np.argmax(overlaps))
    if overlaps[best] < iou_threshold:
      is_fp[d] = True
    elif difficult[best]:
      continue
    elif matched[image_id][best]:
      is_fp[d] = True
    else:
      is_tp[d] = True
      matched[image_id][best] = True
  return is_tp, is_fp


def _precision_recall(
  is_tp: np.ndarray, is_fp: np.ndarray, npos: int
) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative recall and precision over the non-ignored detections."""
  counted = is_tp | is_fp
  tp = np.cumsum(is_tp[counted], dtype=np.float64)
  fp = np.cumsum(is_fp[counted], dtype=np.float64)
  return tp / npos, tp / (tp + fp)
