"""Repair or drop bad annotations, and count every case (never crash mid-run, never silently)."""
import collections
import threading

from absl import logging
import numpy as np

# What the pipeline counts; each is either repaired or skipped, never fatal.
ISSUE_KINDS = (
    "corrupt_image",        # undecodable / unreadable image: replaced by the next record
    "non_finite_box",       # NaN or inf coordinate: box dropped
    "degenerate_box",       # x2 <= x1 or y2 <= y1: box dropped
    "box_outside_image",    # no overlap with the image: box dropped
    "box_clipped",          # partly outside the image: clipped to it (repaired)
    "label_out_of_range",   # label not in [0, num_classes): box dropped
    "boxes_truncated",      # more boxes than the batch's budget: the extra boxes dropped
)
FILE_KINDS = ("corrupt_image",)  # about a whole file: every file is named in the log
WARNINGS_PER_KIND = 5      # box kinds: the first few images are logged with details, then totals


class DataIssues:
  """Thread-safe counters of repaired or skipped data (tf.data runs loaders on many threads).

  An issue names the file or record it concerns (``item``) and is counted once per item, however
  often that item is read again (each epoch, each retry): the counts are of files and of boxes,
  not of reads. Issues without an item are counted every time."""

  def __init__(self):
    self._lock = threading.Lock()
    self._counts = collections.Counter()
    self._items = collections.defaultdict(set)

  def add(self, kind, count=1, detail="", item=None):
    if kind not in ISSUE_KINDS:
      raise ValueError(f"unknown data issue {kind!r}")
    if count <= 0:
      return
    with self._lock:
      if item is not None:
        if item in self._items[kind]:
          return
        self._items[kind].add(item)
      items_before = len(self._items[kind]) - 1 if item is not None else self._counts[kind]
      self._counts[kind] += count
    if kind in FILE_KINDS or items_before < WARNINGS_PER_KIND:
      logging.warning("data issue %s (x%d): %s", kind, count, detail)

  def snapshot(self):
    with self._lock:
      return {kind: self._counts[kind] for kind in ISSUE_KINDS}

  def items(self, kind):
    """The files or records counted under ``kind``, sorted."""
    with self._lock:
      return sorted(self._items[kind])


def sanitize_annotations(annotations, num_classes, issues, where=""):
  """Boxes and labels of one record made safe for training, each fix counted in ``issues``.

  Returns ``(boxes float32 [k, 4], labels int32 [k], keep bool [n])``; ``keep`` marks the input
  boxes that survive. Ignored boxes (crowd / difficult) are not training targets and are dropped
  without counting.
  """
  boxes = np.asarray(annotations["boxes"], np.float64).reshape(-1, 4)
  labels = np.asarray(annotations["labels"], np.int64).reshape(-1)
  height, width = annotations["height"], annotations["width"]
  # Ignored boxes are dropped below whatever they hold; only the others are checked and counted.
  considered = ~np.asarray(annotations["ignore"], bool).reshape(-1)
  item = where or None        # the record: read again (next epoch), its boxes are not recounted

  finite = considered & np.all(np.isfinite(boxes), axis=1)
  issues.add("non_finite_box", int(np.sum(considered & ~finite)), where, item)
  boxes = np.where(np.all(np.isfinite(boxes), axis=1)[:, None], boxes, 0.0)
  in_range = (labels >= 0) & (labels < num_classes)
  issues.add("label_out_of_range", int(np.sum(finite & ~in_range)),
             f"{where} labels {labels[finite & ~in_range].tolist()} not in [0, {num_classes})",
             item)
  proper = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  issues.add("degenerate_box", int(np.sum(finite & in_range & ~proper)), where, item)

  clipped = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float64))
  overlaps = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
  candidates = finite & in_range & proper
  issues.add("box_outside_image", int(np.sum(candidates & ~overlaps)), where, item)
  was_clipped = candidates & overlaps & np.any(clipped != boxes, axis=1)
  issues.add("box_clipped", int(np.sum(was_clipped)), where, item)

  keep = candidates & overlaps
  return clipped[keep].astype(np.float32), labels[keep].astype(np.int32), keep
