"""Sources: a COCO-json folder written by the test (tests/data/coco_folder.py), specs, and the
errors of datasets that are not there. Expected values are written by hand in coco_folder.py."""
import os
import shutil
import socket

import numpy as np
import pytest

from jaxdet.data import sources
from tests.data import coco_folder


def test_coco_json_categories_are_contiguous_labels_sorted_by_id(coco_dir):
  source = sources.CocoJsonSource(coco_dir, "train")
  assert source.class_names == ("cat", "dog", "bird")
  assert source.category_ids == (1, 5, 9)
  assert source.num_classes == 3


def test_coco_json_records_in_image_id_order(coco_dir):
  source = sources.CocoJsonSource(coco_dir, "train")
  assert len(source) == 6
  ids = [source.annotations(i)["image_id"] for i in range(len(source))]
  assert ids == [1, 2, 3, 4, 5, 7]
  for i, image_id in enumerate(ids):
    a = source.annotations(i)
    _, width, height, _, _ = coco_folder.IMAGES[image_id]
    assert (a["width"], a["height"]) == (width, height)


def test_coco_json_annotations_converted_exactly(coco_dir):
  source = sources.CocoJsonSource(coco_dir, "train")
  a = source.annotations(0)   # image 1: [x, y, w, h] -> (x1, y1, x2, y2), by hand
  np.testing.assert_array_equal(a["boxes"], [[8, 4, 28, 20], [40, 20, 56, 40], [0, 0, 10, 10],
                                             [30, 30, 34, 34]])
  assert a["boxes"].dtype == np.float64
  np.testing.assert_array_equal(a["labels"], [1, 2, 0, -1])   # category 7 is unknown -> -1
  np.testing.assert_array_equal(a["ignore"], [False, False, True, False])
  np.testing.assert_array_equal(a["area"], [320, 320, 100, 16])

  a = source.annotations(1)   # image 2: fractional coordinates survive exactly
  np.testing.assert_array_equal(a["boxes"], [[5.5, 10.25, 25.5, 40.25]])
  np.testing.assert_array_equal(a["labels"], [0])

  a = source.annotations(2)   # image 3: no annotations
  assert a["boxes"].shape == (0, 4) and a["labels"].shape == (0,)
  assert a["ignore"].shape == (0,) and a["area"].shape == (0,)

  a = source.annotations(3)   # image 4: the box leaving the image is left to sanitize
  np.testing.assert_array_equal(a["boxes"], [[40, 30, 60, 50], [2, 2, 14, 10]])
  np.testing.assert_array_equal(a["labels"], [2, 0])


def test_coco_json_images_decode(coco_dir):
  source = sources.CocoJsonSource(coco_dir, "train")
  record = source[0]
  assert record["image"].dtype == np.uint8
  np.testing.assert_array_equal(record["image"], coco_folder.image_array(1))   # PNG: lossless
  assert record["image_id"] == 1
  jpeg = source[1]["image"]
  assert jpeg.shape == (60, 40, 3)
  assert np.abs(jpeg.astype(int) - coco_folder.image_array(2)).mean() < 3


@pytest.mark.parametrize("index,what", [(4, "decode"), (5, "read")])
def test_corrupt_and_missing_images_raise_corrupt_image_error(coco_dir, index, what):
  source = sources.CocoJsonSource(coco_dir, "train")
  with pytest.raises(sources.CorruptImageError, match=f"cannot {what}"):
    source[index]   # pylint: disable=pointless-statement
  # Their annotations stay readable (the evaluator and the blank replacement need them).
  assert source.annotations(index)["image_id"] == coco_folder.BAD_IDS[index - 4]


def test_coco_json_splits_flat_layout(coco_dir):
  assert sources.coco_json_splits(coco_dir) == ("train", "val")
  annotation_file, image_root = sources.find_coco_json(coco_dir, "val")
  assert annotation_file == os.path.join(coco_dir, "val.json")
  assert image_root == os.path.join(coco_dir, "val")


def test_coco_json_splits_coco_layout(tmp_path):
  root = coco_folder.write(tmp_path, layout="coco", train_split="train2017", val_split="val2017")
  assert sources.coco_json_splits(root) == ("train2017", "val2017")
  source = sources.CocoJsonSource(root, "val2017")
  assert source.annotation_file == os.path.join(root, "annotations", "instances_val2017.json")
  assert source.image_root == os.path.join(root, "val2017")
  np.testing.assert_array_equal(source[0]["image"], coco_folder.image_array(1))


def test_coco_json_flat_layout_with_images_folder(tmp_path):
  root = coco_folder.write(tmp_path)
  shutil.move(os.path.join(root, "train"), os.path.join(root, "images"))
  source = sources.CocoJsonSource(root, "train")
  assert source.image_root == os.path.join(root, "images")
  np.testing.assert_array_equal(source[0]["image"], coco_folder.image_array(1))


def test_folder_without_annotations_is_not_found_with_a_helpful_message(tmp_path):
  os.makedirs(tmp_path / "train")
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.coco_json_splits(str(tmp_path))
  message = str(error.value)
  assert str(tmp_path) in message
  assert "train.json" in message and "instances_train2017.json" in message
  assert isinstance(error.value, FileNotFoundError)
  with pytest.raises(sources.DatasetNotFoundError, match="instances_train.json"):
    sources.CocoJsonSource(str(tmp_path), "train")


def test_folder_with_train_only_has_no_splits(tmp_path):
  root = coco_folder.write(tmp_path)
  os.remove(os.path.join(root, "val.json"))
  with pytest.raises(sources.DatasetNotFoundError):
    sources.coco_json_splits(root)


def test_build_source_coco_json(coco_dir):
  source = sources.build_source("coco_json:train", coco_json_dir=coco_dir)
  assert isinstance(source, sources.CocoJsonSource) and len(source) == 6
  with pytest.raises(ValueError, match="coco_json_dir"):
    sources.build_source("coco_json:train")


@pytest.mark.parametrize("spec", ["coco_json:train+val", "coco_json:train,coco_json:val",
                                  " coco_json:train , coco_json:val "])
def test_build_source_multi_part_specs(coco_dir, spec):
  source = sources.build_source(spec, coco_json_dir=coco_dir)
  assert isinstance(source, sources.ConcatSource)
  assert len(source) == 12 and source.class_names == ("cat", "dog", "bird")
  # Image ids become the global index (unique across parts); records map across the boundary.
  for index in range(12):
    assert source.annotations(index)["image_id"] == index
  expected = sources.CocoJsonSource(coco_dir, "val").annotations(1)
  np.testing.assert_array_equal(source.annotations(7)["boxes"], expected["boxes"])
  np.testing.assert_array_equal(source[6]["image"], coco_folder.image_array(1))
  with pytest.raises(sources.CorruptImageError):
    source[11]   # pylint: disable=pointless-statement


@pytest.mark.parametrize("spec", ["train", "coco_json:", ":train", "coco_json:train,"])
def test_build_source_bad_specs(coco_dir, spec):
  with pytest.raises(ValueError, match="must be '<name>:<split>'"):
    sources.build_source(spec, coco_json_dir=coco_dir)


class _FakeSource(sources.Source):

  def __init__(self, class_names, n):
    self.name, self.class_names, self._n = "fake", class_names, n

  def __len__(self):
    return self._n


def test_concat_rejects_different_classes():
  with pytest.raises(ValueError, match="different classes"):
    sources.ConcatSource([_FakeSource(("a",), 2), _FakeSource(("b",), 3)])


@pytest.fixture
def no_network_and_no_download(monkeypatch):
  """Any socket connection or TFDS download / preparation fails the test."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  def forbidden(*args, **kwargs):
    raise AssertionError(f"network or download attempted: {args} {kwargs}")

  monkeypatch.setattr(socket.socket, "connect", forbidden)
  monkeypatch.setattr(socket, "create_connection", forbidden)
  for method in ("download", "download_and_extract", "extract", "download_checksums"):
    if hasattr(tfds.download.DownloadManager, method):
      monkeypatch.setattr(tfds.download.DownloadManager, method, forbidden)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", forbidden)


@pytest.mark.parametrize("name", ["coco/2017", "voc/2007"])
def test_missing_tfds_dataset_says_how_to_prepare_and_downloads_nothing(
    tmp_path, no_network_and_no_download, name):
  del no_network_and_no_download
  data_dir = str(tmp_path / "tfds")
  os.makedirs(data_dir)
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.build_source(f"{name}:train", data_dir=data_dir)
  message = str(error.value)
  assert f"tfds build {name} --data_dir={data_dir} --file_format=array_record" in message
  assert "not prepared" in message and "convert_format" in message
  assert isinstance(error.value, FileNotFoundError)
  # Nothing was fetched or written.
  written = [os.path.join(d, f) for d, _, files in os.walk(data_dir) for f in files]
  assert not written


def test_missing_tfds_part_of_multi_part_spec_raises(tmp_path, coco_dir,
                                                     no_network_and_no_download):
  del no_network_and_no_download
  with pytest.raises(sources.DatasetNotFoundError, match="tfds build coco/2017"):
    sources.build_source("coco_json:train,coco/2017:train+validation",
                         data_dir=str(tmp_path), coco_json_dir=coco_dir)


def test_unsupported_tfds_dataset():
  with pytest.raises(ValueError, match="unsupported TFDS dataset 'mnist'"):
    sources.build_source("mnist:train")
