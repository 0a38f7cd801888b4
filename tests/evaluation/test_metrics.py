"""The metric registry: a metric registered from outside jaxdet is scored by name, in order,
and one run evaluates one kind."""
import pytest

from jaxdet.evaluation import metrics


def test_a_registered_metric_is_scored_by_name_in_the_order_asked(monkeypatch):
  monkeypatch.setattr(metrics, "REGISTRY", dict(metrics.REGISTRY))
  detections = {1: {"labels": [0, 1]}, 2: {"labels": []}}

  @metrics.register("boxes_per_image", "detection")
  def boxes_per_image(detections, gts, source, class_groups):
    del gts, source, class_groups
    mean = sum(len(d["labels"]) for d in detections.values()) / len(detections)
    return {"boxes_per_image": mean}, f"boxes per image = {mean}"

  @metrics.register("images", "detection")
  def images(detections, gts, source, class_groups):
    del gts, source, class_groups
    return {"images": len(detections)}, f"images = {len(detections)}"

  results, report = metrics.score(detections, {}, None, ("images", "boxes_per_image"))
  assert results == {"images": 2, "boxes_per_image": 1.0}
  assert report == "images = 2\nboxes per image = 1.0"


def test_unknown_names_and_mixed_kinds_are_refused():
  assert metrics.check(("coco", "voc07")) == "detection"
  assert metrics.check(("top5",)) == "classification"
  with pytest.raises(ValueError, match=r"unknown metrics \['map'\]; choose from .*'voc12'"):
    metrics.check(("coco", "map"))
  with pytest.raises(ValueError, match=r"mix detection \('voc12',\) and classification "
                                       r"\('top1',\)"):
    metrics.check(("voc12", "top1"))
  with pytest.raises(ValueError, match="metric kind 'segmentation'"):
    metrics.register("mask_ap", "segmentation")
