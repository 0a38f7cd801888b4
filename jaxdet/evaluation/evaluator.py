"""Evaluation of any family: run its predict function over a source, map detections back to the
original image pixels, and score them with the metrics ``config.eval.metrics`` names
(:mod:`jaxdet.evaluation.metrics`: COCO AP, VOC07 / VOC12 AP, or a classifier's top-1 / top-5
accuracy on a classification source)."""
import jax
from jax.experimental import multihost_utils
import numpy as np

from jaxdet import distributed
from jaxdet import errors
from jaxdet.data import pipeline
from jaxdet.data import sources
from jaxdet.evaluation import metrics


def ground_truths(source, issues, unreadable=None):
  """``{image_id: annotations}`` in original pixels (see jaxdet.data.sources); records whose
  image header is unreadable are counted and left out (their descriptions appended to
  ``unreadable``)."""
  gts = {}
  for i in range(len(source)):
    try:
      gt = source.annotations(i)
    except sources.CorruptImageError as e:
      issues.add("corrupt_image", 1, str(e), e.item)
      if unreadable is not None:
        unreadable.append(source.describe(i))
      continue
    gts[gt["image_id"]] = dict(gt, index=i)
  return gts


class MissingImagesError(errors.ReportedError, ValueError):
  """Evaluation images that cannot be read: scoring the rest would change AP silently."""


def left_out(source, gts, detections, unreadable):
  """``(descriptions of the images without detections because they could not be read, number of
  their ground-truth boxes)``."""
  lost = [gt for image_id, gt in gts.items() if image_id not in detections]
  return (unreadable + [source.describe(gt["index"]) for gt in lost],
          sum(int(np.sum(~np.asarray(gt["ignore"], bool))) for gt in lost))


def check_left_out(names, boxes, total, allow):
  """The report's warning line about images left out ("" when none); an error unless
  ``allow``."""
  if not names:
    return ""
  what = (f"{len(names)} of {total} evaluation images ({boxes} ground-truth boxes) could not be "
          f"read: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
  if not allow:
    raise MissingImagesError(f"{what}. Restore them, or score the other images with "
                             "--config.eval.allow_missing_images=true (evaluate.py: "
                             "--allow_missing_images).")
  return f"WARNING: NOT THE FULL EVALUATION SET: {what}; they are left out of every number below."


def to_original_pixels(boxes, scale, height, width, offset=(0.0, 0.0)):
  """Input-pixel boxes -> original-image pixels (``scale = (s_y, s_x)``, the image placed at
  ``offset = (top, left)`` of the input), clipped to the image."""
  boxes = (boxes - np.array([offset[1], offset[0], offset[1], offset[0]])) / np.array(
      [scale[1], scale[0], scale[1], scale[0]])
  return np.clip(boxes, 0.0, [width, height, width, height])


def detect_all(predict, source, config, issues):
  """Detections of every image of ``source``, on every host: stacked numpy arrays ``boxes``
  (input pixels), ``scores``, ``classes``, ``valid`` and the images' ``image_id``, ``scale``,
  ``offset``, ``skip``. Each host detects its share of the images with ``predict`` (``images ->
  fetch()``, e.g. ``jaxdet.train.state.predict_fn``); the shares are then gathered."""
  dataset = pipeline.eval_dataset(source, config.data, batch_size=config.eval.batch_size,
                                  issues=issues, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  pending = [(predict(batch["image"]),
              {k: batch[k] for k in ("image_id", "scale", "offset", "skip")})
             for batch in dataset.as_numpy_iterator()]   # all dispatched, then fetched
  parts = [{**fetch(), **meta} for fetch, meta in pending]
  stacked = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  if jax.process_count() > 1:
    # The gather moves arrays through JAX, whose integers are 32-bit by default: the 64-bit
    # image ids travel as pairs of int32.
    stacked["image_id"] = stacked["image_id"].astype(np.int64).view(np.int32).reshape(-1, 2)
    stacked = multihost_utils.process_allgather(stacked, tiled=True)
    stacked["image_id"] = np.ascontiguousarray(stacked["image_id"]).view(np.int64).reshape(-1)
  return stacked


def to_detections(stacked, gts):
  """``{image_id: dict(boxes, scores, labels)}`` in original pixels from ``detect_all``'s
  arrays, leaving out padding and undecodable images."""
  detections = {}
  for i in np.flatnonzero(~stacked["skip"]):
    image_id = int(stacked["image_id"][i])
    keep = stacked["valid"][i]
    gt = gts[image_id]
    detections[image_id] = dict(
        boxes=to_original_pixels(stacked["boxes"][i][keep], stacked["scale"][i], gt["height"],
                                 gt["width"], stacked["offset"][i]),
        scores=stacked["scores"][i][keep], labels=stacked["classes"][i][keep])
  return detections


def detect(predict, source, gts, config, issues):
  """``{image_id: dict(boxes, scores, labels)}`` in original pixels for every image of
  ``source`` that could be decoded, by ``predict`` (see :func:`detect_all`)."""
  return to_detections(detect_all(predict, source, config, issues), gts)


def build_eval_source(config):
  """The source ``config.data.eval`` names: a classification one (``"digit_crops:test"``,
  ``"folder:DIR"``) for classification metrics, else a detection one."""
  if metrics.check(config.eval.metrics) == "classification":
    return sources.build_classification_source(config.data.eval, config.data.data_dir or None)
  return sources.build_source(config.data.eval, config.data.data_dir or None,
                              config.data.coco_json_dir)


def evaluate(predict, source, config, issues):
  """Detects over ``source`` and scores. Images that cannot be read are a
  :class:`MissingImagesError` listing them, unless ``config.eval.allow_missing_images``: then
  the others are scored and the report says, first and last, how many images and boxes were
  left out (also ``images_left_out`` and ``boxes_left_out`` in the results).

  Each host detects its share of the images; all detections are gathered (to every host) and
  process 0 scores them once.
  Returns ``(metrics, report)`` with the metrics on every host and the report on process 0
  (empty elsewhere)."""
  metrics.check(config.eval.metrics)  # on every host, before the detection pass
  stacked = detect_all(predict, source, config, issues)
  results, report = {}, ""
  if jax.process_index() == 0:
    unreadable = []
    gts = ground_truths(source, issues, unreadable)
    detections = to_detections(stacked, gts)
    names, boxes = left_out(source, gts, detections, unreadable)
    warning = check_left_out(names, boxes, len(source),
                             config.eval.get("allow_missing_images", False))
    gts = {image_id: gts[image_id] for image_id in detections}
    groups = config.eval.get("class_groups")    # absent from configs saved before it existed
    results, report = metrics.score(detections, gts, source, tuple(config.eval.metrics),
                                    groups.to_dict() if groups else {})
    if names:
      results.update({"images_left_out": len(names), "boxes_left_out": boxes})
      report = f"{warning}\n{report}\n{warning}"
  return distributed.broadcast_json(results), report
