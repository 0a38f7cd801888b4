"""COCO box AP through pycocotools, exactly as the COCO evaluation server computes it."""
import contextlib
import io

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def category_ids(source):
  """COCO category id of each contiguous label: the json's own ids, else ``label + 1``."""
  return getattr(source, "category_ids", tuple(range(1, source.num_classes + 1)))


def ground_truth_dataset(ground_truths, class_names, cat_ids):
  """A COCO-format dict from ``{image_id: annotations}`` (original pixels, see jaxdet.data.sources).
  Boxes labelled outside ``[0, num_classes)`` are left out, as the training pipeline drops them."""
  images, annotations = [], []
  for image_id, gt in ground_truths.items():
    images.append({"id": image_id, "height": gt["height"], "width": gt["width"]})
    for box, label, ignore, area in zip(gt["boxes"], gt["labels"], gt["ignore"], gt["area"]):
      if not 0 <= label < len(cat_ids):
        continue
      x1, y1, x2, y2 = (float(v) for v in box)
      annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                          "category_id": cat_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                          "area": float(area), "iscrowd": int(ignore)})
  categories = [{"id": cid, "name": name} for cid, name in zip(cat_ids, class_names)]
  return {"images": images, "annotations": annotations, "categories": categories}


def detection_results(detections, cat_ids):
  """COCO result list from ``{image_id: dict(boxes [k, 4] xyxy, scores, labels)}``."""
  results = []
  for image_id, det in detections.items():
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
      x1, y1, x2, y2 = (float(v) for v in box)
      results.append({"image_id": image_id, "category_id": cat_ids[int(label)],
                      "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
  return results


def evaluate_coco(gt_dataset, results):
  """Returns ``(stats dict, printed table)``; all zeros when there is no detection at all
  (pycocotools cannot load an empty result list)."""
  from pycocotools.coco import COCO  # pylint: disable=import-outside-toplevel
  from pycocotools.cocoeval import COCOeval  # pylint: disable=import-outside-toplevel
  if not results:
    return dict.fromkeys(STAT_NAMES, 0.0), "no detections: every AP and AR is 0\n"
  output = io.StringIO()
  with contextlib.redirect_stdout(output):
    coco_gt = COCO()
    coco_gt.dataset = gt_dataset
    coco_gt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
  table = io.StringIO()
  with contextlib.redirect_stdout(table):
    coco_eval.summarize()
  return dict(zip(STAT_NAMES, np.asarray(coco_eval.stats, float).tolist())), table.getvalue()
