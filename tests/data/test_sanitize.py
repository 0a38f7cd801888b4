"""sanitize_annotations and DataIssues against hand-written boxes and hand-counted issues."""
import threading

import numpy as np
import pytest

from jaxdet.data import sanitize

WIDTH, HEIGHT, NUM_CLASSES = 100, 50, 3
NAN, INF = float("nan"), float("inf")

# (box x1, y1, x2, y2, label, ignore) -> what must happen to it, decided by hand.
CASES = [
    ([10, 10, 20, 20], 0, False, "keep"),
    ([NAN, 0, 10, 10], 1, False, "non_finite_box"),
    ([0, INF, 10, 10], 1, False, "non_finite_box"),
    ([0, 0, -INF, 10], 2, False, "non_finite_box"),
    ([NAN, 0, 10, 10], 7, False, "non_finite_box"),      # also a bad label: counted once
    ([10, 10, 10, 20], 0, False, "degenerate_box"),       # x2 == x1
    ([10, 20, 30, 5], 0, False, "degenerate_box"),        # y2 < y1
    ([200, 10, 150, 20], 1, False, "degenerate_box"),     # also outside: counted once
    ([120, 10, 130, 20], 0, False, "box_outside_image"),  # right of the image
    ([-30, -30, -10, -5], 1, False, "box_outside_image"),  # above-left of the image
    ([100, 10, 110, 20], 2, False, "box_outside_image"),  # touches the right edge only
    ([10, 50, 20, 60], 2, False, "box_outside_image"),    # touches the bottom edge only
    ([-5, 40, 30, 70], 1, False, "box_clipped"),          # -> (0, 40, 30, 50)
    ([90, -10, 130, 60], 2, False, "box_clipped"),        # -> (90, 0, 100, 50)
    ([10, 10, 20, 20], 3, False, "label_out_of_range"),   # == num_classes
    ([10, 10, 20, 20], -1, False, "label_out_of_range"),
    ([5, 5, 15, 15], 1, True, "ignored"),                 # crowd / difficult
    ([0, 0, 100, 50], 2, False, "keep"),                  # the whole image: not clipped
    ([0.25, 0.5, 99.75, 49.5], 1, False, "keep"),
]
EXPECTED_KEPT_BOXES = np.array([[10, 10, 20, 20],
                                [0, 40, 30, 50],
                                [90, 0, 100, 50],
                                [0, 0, 100, 50],
                                [0.25, 0.5, 99.75, 49.5]], np.float64)
EXPECTED_KEPT_LABELS = [0, 1, 2, 2, 1]


def annotations_of(cases):
  return dict(boxes=np.array([c[0] for c in cases], np.float64).reshape(-1, 4),
              labels=np.array([c[1] for c in cases], np.int64),
              ignore=np.array([c[2] for c in cases], bool),
              height=HEIGHT, width=WIDTH)


def zero_counts():
  return {kind: 0 for kind in sanitize.ISSUE_KINDS}


def test_every_case_dropped_repaired_or_kept_and_counted_exactly():
  issues = sanitize.DataIssues()
  boxes, labels, keep = sanitize.sanitize_annotations(annotations_of(CASES), NUM_CLASSES, issues,
                                                      "test")
  assert boxes.dtype == np.float32 and labels.dtype == np.int32 and keep.dtype == bool
  np.testing.assert_array_equal(boxes, EXPECTED_KEPT_BOXES.astype(np.float32))
  np.testing.assert_array_equal(labels, EXPECTED_KEPT_LABELS)
  expected_keep = [c[3] in ("keep", "box_clipped") for c in CASES]
  np.testing.assert_array_equal(keep, expected_keep)
  expected = zero_counts()
  expected.update(non_finite_box=4, degenerate_box=3, box_outside_image=4, box_clipped=2,
                  label_out_of_range=2)
  assert issues.snapshot() == expected


@pytest.mark.parametrize("index", range(len(CASES)))
def test_each_case_alone(index):
  box, label, ignore, outcome = CASES[index]
  issues = sanitize.DataIssues()
  boxes, labels, keep = sanitize.sanitize_annotations(annotations_of([CASES[index]]),
                                                      NUM_CLASSES, issues)
  expected = zero_counts()
  if outcome not in ("keep", "ignored"):
    expected[outcome] = 1
  assert issues.snapshot() == expected
  survives = outcome in ("keep", "box_clipped")
  assert keep.tolist() == [survives]
  assert boxes.shape == ((1, 4) if survives else (0, 4))
  assert labels.shape == ((1,) if survives else (0,))
  if survives:
    assert labels[0] == label
    if outcome == "keep":
      np.testing.assert_array_equal(boxes[0], np.float32(box))


def test_ignored_boxes_are_dropped_and_never_counted():
  # Crowd / difficult boxes are not training targets: whatever is wrong with them, they are
  # dropped without counting (counting e.g. "box_clipped" would claim a repair that never happened).
  cases = [([5, 5, 15, 15], 1, True, ""),
           ([-5, 40, 30, 70], 1, True, ""),      # would be clipped
           ([NAN, 0, 10, 10], 1, True, ""),      # would be non-finite
           ([10, 10, 10, 20], 0, True, ""),      # would be degenerate
           ([120, 10, 130, 20], 0, True, ""),    # would be outside
           ([10, 10, 20, 20], 9, True, ""),      # would be a bad label
           ([1, 2, 3, 4], 2, False, "")]
  issues = sanitize.DataIssues()
  boxes, labels, keep = sanitize.sanitize_annotations(annotations_of(cases), NUM_CLASSES, issues)
  assert issues.snapshot() == zero_counts()
  assert keep.tolist() == [False] * 6 + [True]
  np.testing.assert_array_equal(boxes, [[1, 2, 3, 4]])
  np.testing.assert_array_equal(labels, [2])


def test_no_boxes():
  issues = sanitize.DataIssues()
  empty = dict(boxes=np.zeros((0, 4)), labels=np.zeros((0,), np.int64),
               ignore=np.zeros((0,), bool), height=10, width=10)
  boxes, labels, keep = sanitize.sanitize_annotations(empty, NUM_CLASSES, issues)
  assert boxes.shape == (0, 4) and labels.shape == (0,) and keep.shape == (0,)
  assert issues.snapshot() == zero_counts()


def test_counts_accumulate_over_records():
  issues = sanitize.DataIssues()
  for _ in range(3):
    sanitize.sanitize_annotations(annotations_of(CASES), NUM_CLASSES, issues)
  snapshot = issues.snapshot()
  assert snapshot["non_finite_box"] == 12 and snapshot["box_clipped"] == 6
  assert snapshot["corrupt_image"] == 0


def test_data_issues_add_and_snapshot():
  issues = sanitize.DataIssues()
  assert set(issues.snapshot()) == set(sanitize.ISSUE_KINDS)
  issues.add("corrupt_image")
  issues.add("boxes_truncated", 7, "detail")
  issues.add("box_clipped", 0)    # nothing to count
  expected = zero_counts()
  expected.update(corrupt_image=1, boxes_truncated=7)
  assert issues.snapshot() == expected


@pytest.mark.parametrize("count", [0, 1, 5])
def test_unknown_kind_raises(count):
  issues = sanitize.DataIssues()
  with pytest.raises(ValueError, match="unknown data issue 'bad_kind'"):
    issues.add("bad_kind", count)
  assert issues.snapshot() == zero_counts()


def test_data_issues_thread_safe():
  issues = sanitize.DataIssues()

  def work():
    for _ in range(2000):
      issues.add("box_clipped")

  threads = [threading.Thread(target=work) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert issues.snapshot()["box_clipped"] == 16000


def test_issues_are_counted_once_per_file_and_each_bad_file_logged(caplog):
  issues = sanitize.DataIssues()
  with caplog.at_level("WARNING"):
    for _ in range(3):                         # three epochs read the same two bad files
      issues.add("corrupt_image", 1, "cannot decode a.png", "a.png")
      issues.add("corrupt_image", 1, "cannot read b.png", "b.png")
      issues.add("box_clipped", 2, "image 7", "image 7")
  expected = zero_counts()
  expected.update(corrupt_image=2, box_clipped=2)
  assert issues.snapshot() == expected
  assert issues.items("corrupt_image") == ["a.png", "b.png"]
  assert caplog.text.count("cannot decode a.png") == 1 and caplog.text.count("b.png") == 1
  for i in range(sanitize.WARNINGS_PER_KIND + 3):   # every bad file is named, not just a few
    issues.add("corrupt_image", 1, f"cannot decode file{i}.png", f"file{i}.png")
  assert f"file{sanitize.WARNINGS_PER_KIND + 2}.png" in caplog.text
