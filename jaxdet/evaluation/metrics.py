"""The metrics an evaluation can report, by name (``config.eval.metrics``): COCO box AP
(pycocotools), VOC07 / VOC12 mAP@0.5, and top-1 / top-5 accuracy of a classifier.

A metric is a function ``(detections, gts, source, class_groups) -> (results dict, report
text)`` registered under its name with its kind (``"detection"`` or ``"classification"``: the
kind picks the evaluation source, and one run evaluates one kind). Register your own with
``@metrics.register("name", "detection")`` before the run starts.
"""
import dataclasses
import functools
from typing import Callable

import numpy as np

from jaxdet.evaluation import coco
from jaxdet.evaluation import voc

KINDS = ("detection", "classification")


@dataclasses.dataclass(frozen=True)
class Metric:
  kind: str
  score: Callable


REGISTRY = {}


def register(name, kind):
  """Decorator: registers ``score(detections, gts, source, class_groups)`` as metric ``name``."""
  if kind not in KINDS:
    raise ValueError(f"metric kind {kind!r}: choose from {KINDS}")

  def add(score):
    REGISTRY[name] = Metric(kind, score)
    return score

  return add


def check(names):
  """``ValueError`` for an unknown metric or a mix of kinds; else the one kind of ``names``."""
  unknown = sorted(set(names) - set(REGISTRY))
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {tuple(REGISTRY)}")
  kinds = {REGISTRY[n].kind for n in names}
  if len(kinds) > 1:
    by_kind = {k: tuple(n for n in names if REGISTRY[n].kind == k) for k in KINDS}
    raise ValueError(f"metrics {tuple(names)} mix detection {by_kind['detection']} and "
                     f"classification {by_kind['classification']} ones: one kind per run")
  return kinds.pop() if kinds else "detection"


@register("coco", "detection")
def coco_ap(detections, gts, source, class_groups):
  del class_groups
  cat_ids = coco.category_ids(source)
  stats, table = coco.evaluate_coco(coco.ground_truth_dataset(gts, source.class_names, cat_ids),
                                    coco.detection_results(detections, cat_ids))
  return ({f"coco/{k}": v for k, v in stats.items()},
          f"COCO box AP ({len(gts)} images):\n{table}")


def group_means(ap_per_class, class_names, class_groups):
  """``{group: mean AP of its classes}`` for ``class_groups`` (name -> class names)."""
  index = {name: i for i, name in enumerate(class_names)}
  means = {}
  for group, names in class_groups.items():
    unknown = [n for n in names if n not in index]
    if unknown:
      raise ValueError(f"eval.class_groups.{group} names classes {unknown} that the evaluation "
                       f"set does not have ({list(class_names)[:10]}...)")
    means[group] = float(np.mean([ap_per_class[index[n]] for n in names]))
  return means


def voc_map(detections, gts, source, class_groups, name):
  """VOC mAP@0.5 (``voc07``: the 11-point interpolation), per class and, with ``class_groups``,
  its mean over each group (``voc12/mAP/<group>``)."""
  voc_gts = {i: dict(boxes=g["boxes"], labels=g["labels"], difficult=g["ignore"])
             for i, g in gts.items()}
  voc_result = voc.evaluate_voc(detections, voc_gts, source.num_classes,
                                use_07_metric=name == "voc07")
  results = {f"{name}/mAP": voc_result["mAP"]}
  groups = group_means(voc_result["AP_per_class"], source.class_names, class_groups)
  results.update({f"{name}/mAP/{group}": value for group, value in groups.items()})
  per_class = "\n".join(f"  {n:>15s}: {ap:.4f}" for n, ap in
                        zip(source.class_names, voc_result["AP_per_class"]))
  per_group = "".join(f"  mean over {group}: {value:.4f}\n" for group, value in groups.items())
  return results, f"{name.upper()} mAP@0.5 = {voc_result['mAP']:.4f}\n{per_class}\n{per_group}"


def top_k_accuracy(detections, gts, k):
  """Share of the images whose ``image_label`` is among their ``k`` best-scored labels."""
  hits = [gts[i]["image_label"] in d["labels"][np.argsort(-d["scores"], kind="stable")[:k]]
          for i, d in detections.items()]
  return float(np.mean(hits)) if hits else 0.0


def top_k(detections, gts, source, class_groups, k):
  del source, class_groups
  accuracy = top_k_accuracy(detections, gts, k)
  return ({f"classification/top{k}": accuracy},
          f"top-{k} accuracy = {accuracy:.4f} ({len(detections)} images)")


for _year in ("voc07", "voc12"):
  register(_year, "detection")(functools.partial(voc_map, name=_year))
for _k in (1, 5):
  register(f"top{_k}", "classification")(functools.partial(top_k, k=_k))


def score(detections, gts, source, names, class_groups=None):
  """``(results dict, printable report)`` of the metrics ``names``, in their order."""
  check(names)
  results, report = {}, []
  for name in names:
    values, text = REGISTRY[name].score(detections, gts, source, class_groups or {})
    results.update(values)
    report.append(text)
  return results, "\n".join(report)
