"""Classification sources and the joint detection + classification stream (YOLO9000, Sec. 4).

The classification folder's images are solid colours, one per image, so an example tells which
record it came from by its pixels; expectations are worked out by hand from the layout."""
import numpy as np
import pytest
from PIL import Image

from jaxdet.data import digit_scenes
from jaxdet.data import pipeline
from jaxdet.data import sanitize
from jaxdet.data import sources
from tests.data import coco_folder
from tests.data import test_pipeline

# class folder -> colours of its images, in file-name order; "b/9_bad.png" is not an image.
FOLDER = {"a": [(250, 0, 0), (0, 250, 0)], "b": [(0, 0, 250)]}
ITEM_COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]      # sorted by class then file
ITEM_LABELS = [0, 0, 1]


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("classes")
  for name, colours in FOLDER.items():
    (root / name).mkdir()
    for i, colour in enumerate(colours):
      Image.new("RGB", (12, 10), colour).save(root / name / f"{i}.png")
  (root / "b" / "9_bad.png").write_bytes(b"not an image")
  (root / "b" / "notes.txt").write_text("ignored: not an image suffix")
  return root


@pytest.fixture(scope="module")
def detection_source(coco_dir):
  return sources.CocoJsonSource(coco_dir, "train")


def colour_of(image):
  return tuple(int(v) for v in np.asarray(image).reshape(-1, 3)[0])


def test_image_folder_source(class_dir):
  source = sources.build_classification_source(f"folder:{class_dir}")
  assert source.class_names == ("a", "b")
  assert len(source) == 4                                  # 3 images + the undecodable one
  for index, (colour, label) in enumerate(zip(ITEM_COLOURS, ITEM_LABELS)):
    record = source[index]
    assert colour_of(record["image"]) == colour
    assert record["image_label"] == label and record["boxes"].shape == (0, 4)
    assert source.annotations(index)["height"] == 10
  with pytest.raises(sources.CorruptImageError):
    source[3]


def test_classification_spec_errors(tmp_path):
  with pytest.raises(ValueError, match="folder:<directory>"):
    sources.build_classification_source("imagenet2012")
  with pytest.raises(sources.DatasetNotFoundError, match="no images"):
    sources.build_classification_source(f"folder:{tmp_path}")


def test_relabeled_source_maps_labels_and_image_labels(detection_source, class_dir):
  relabeled = sources.RelabeledSource(detection_source, [2, 0, 1], ("x", "y", "z"))
  assert relabeled.class_names == ("x", "y", "z")
  # Image 1 has labels 1, 2 and 0 (crowd).
  np.testing.assert_array_equal(relabeled.annotations(0)["labels"], [0, 1, 2])
  folder = sources.RelabeledSource(sources.ImageFolderSource(str(class_dir)), [2, 0], "xyz")
  assert [folder[i]["image_label"] for i in range(3)] == [2, 2, 0]
  with pytest.raises(ValueError, match="2 entries for its 3 classes"):
    sources.RelabeledSource(detection_source, [0, 1], "xy")


def test_joint_loader_interleaves_by_position(detection_source, class_dir):
  """Ratio 2:1: of every 3 positions the first is detection and the next two classification;
  each source is read in its own order (unshuffled here), position by position."""
  issues = sanitize.DataIssues()
  detection = pipeline.RecordLoader(detection_source, 3, 4, 0, issues, shuffle=False)
  classification = pipeline.RecordLoader(sources.ImageFolderSource(str(class_dir)), 2, 0, 0,
                                         issues, shuffle=False)
  loader = pipeline.JointLoader(detection, classification, (2, 1))
  # positions 0..5 -> det 0, cls 0, cls 1, det 1, cls 2, cls 3 (undecodable -> cls 4 = item 0)
  examples = [loader.train_example(p) for p in range(6)]
  assert [int(e[3]) for e in examples] == [-1, 0, 0, -1, 1, 0]
  np.testing.assert_array_equal(examples[0][0], coco_folder.image_array(1))
  np.testing.assert_array_equal(examples[3][0], detection_source[1]["image"])   # image 2
  assert [colour_of(examples[i][0]) for i in (1, 2, 4, 5)] == [ITEM_COLOURS[0], ITEM_COLOURS[1],
                                                               ITEM_COLOURS[2], ITEM_COLOURS[0]]
  assert examples[1][1].shape == (0, 4) and examples[1][2].shape == (0,)
  assert issues.snapshot()["corrupt_image"] == 1
  with pytest.raises(ValueError, match="positive detection share exactly"):
    pipeline.JointLoader(detection, classification, (1, 0))
  with pytest.raises(ValueError, match="positive detection share exactly"):
    pipeline.JointLoader(None, classification, (1, 1))


def test_a_classifier_stream_holds_classification_images_only(class_dir):
  """No detection source (a classifier): position p is classification record p of the
  source's order; unshuffled, items 0, 1, 2, then the undecodable one is replaced by item 0."""
  issues = sanitize.DataIssues()
  classification = pipeline.RecordLoader(sources.ImageFolderSource(str(class_dir)), 2, 0, 0,
                                         issues, shuffle=False)
  loader = pipeline.JointLoader(None, classification, (1, 0))
  examples = [loader.train_example(p) for p in range(4)]
  assert [colour_of(e[0]) for e in examples] == ITEM_COLOURS + ITEM_COLOURS[:1]
  assert [int(e[3]) for e in examples] == ITEM_LABELS + [0]
  batches = test_pipeline.train_batches(None, 2, classification=sources.ImageFolderSource(
      str(class_dir)), seed=1)
  for batch in batches:
    assert set(batch["image_label"]) <= {0, 1} and not batch["mask"].any()
  with pytest.raises(ValueError, match="no training images"):
    test_pipeline.train_batches(None, 1)


def test_classification_labels_out_of_range_are_counted_and_skipped(class_dir):
  issues = sanitize.DataIssues()
  folder = sources.RelabeledSource(sources.ImageFolderSource(str(class_dir)), [0, 7], "abc")
  loader = pipeline.RecordLoader(folder, 3, 0, 0, issues, shuffle=False)
  *_, label = loader.classification_example(2)          # class "b" -> 7: skipped, then the bad
  assert int(label) == 0                                 # image, then item 0 (class "a" -> 0)
  assert issues.snapshot()["label_out_of_range"] == 1
  assert issues.snapshot()["corrupt_image"] == 1


def test_joint_batches_carry_image_labels_and_resume_exactly(detection_source, class_dir):
  classification = sources.ImageFolderSource(str(class_dir))
  kwargs = dict(classification=classification, classification_ratio=(1, 1), seed=3)
  uninterrupted = test_pipeline.train_batches(detection_source, 3, **kwargs)
  resumed = test_pipeline.train_batches(detection_source, 2, start_example=4, **kwargs)
  for batch in uninterrupted:
    is_classification = batch["image_label"] >= 0
    np.testing.assert_array_equal(is_classification, [False, True, False, True])
    assert not batch["mask"][is_classification].any()
    assert set(batch["image_label"][is_classification]) <= {0, 1}
  for a, b in zip(uninterrupted[1:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  plain = test_pipeline.train_batches(detection_source, 1)
  assert "image_label" not in plain[0]


def test_digit_crops_hold_one_large_digit():
  builder = digit_scenes.DigitCrops.__new__(digit_scenes.DigitCrops)   # generator only
  for i, (key, example) in zip(range(2), builder._generate_examples("test")):  # pylint: disable=protected-access
    assert key == i and 0 <= example["label"] <= 9
    height, width = example["image"].shape[:2]
    assert digit_scenes.CROP_CANVAS_RANGE[0] <= min(height, width)
    assert max(height, width) <= digit_scenes.CROP_CANVAS_RANGE[1]
