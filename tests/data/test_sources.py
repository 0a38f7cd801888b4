"""Sources: a COCO-json folder written by the test (tests/data/coco_folder.py), specs, and the
errors of datasets that are not there. Expected values are written by hand in coco_folder.py."""
import io
import json
import os
import shutil
import socket

import numpy as np
from PIL import Image
import pytest

from jaxdet import errors
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
  np.testing.assert_array_equal(a["boxes"], [[8, 4, 28, 20], [40, 20, 56, 40], [0, 0, 10, 10]])
  assert a["boxes"].dtype == np.float64
  np.testing.assert_array_equal(a["labels"], [1, 2, 0])
  np.testing.assert_array_equal(a["ignore"], [False, False, True])
  np.testing.assert_array_equal(a["area"], [320, 320, 100])

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


# ------------------------------------------------------------------- Image kinds (decoding).


def encoded(image, fmt, **save_args):
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save_args)
  return buffer.getvalue()


def test_16_bit_grey_is_scaled_by_its_range_not_clipped_to_white():
  levels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257   # 257 k -> k exactly
  levels[0, 0] = 65535
  image = Image.fromarray(levels)
  assert image.mode == "I;16"
  decoded = sources.decode_image(encoded(image, "PNG"), "grey16.png")
  expected = np.arange(256).reshape(16, 16)
  expected[0, 0] = 255
  for channel in range(3):
    np.testing.assert_array_equal(decoded[..., channel], expected)
  assert sources.image_size_of(encoded(image, "PNG"), "grey16.png") == (16, 16)


def test_16_bit_grey_rounds_to_the_nearest_8_bit_level():
  values = np.array([[0, 128, 129, 385, 65407, 65535]], np.uint16)   # / 257 by hand
  decoded = sources.decode_image(encoded(Image.fromarray(values), "PNG"), "x")
  np.testing.assert_array_equal(decoded[0, :, 0], [0, 0, 1, 1, 255, 255])


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA"])
def test_8_bit_kinds_decode_to_their_rgb_pixels(mode):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  if mode == "L":
    grey = rgb[..., 0]
    image, expected = Image.fromarray(grey, "L"), np.repeat(grey[..., None], 3, -1)
  elif mode == "RGB":
    image, expected = Image.fromarray(rgb, "RGB"), rgb
  elif mode == "RGBA":                               # alpha dropped, colours kept
    alpha = rng.integers(0, 256, (6, 5, 1), dtype=np.uint8)
    image, expected = Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA"), rgb
  elif mode == "LA":
    grey_alpha = np.stack([rgb[..., 0], rgb[..., 1]], -1)
    image, expected = Image.fromarray(grey_alpha, "LA"), np.repeat(rgb[..., :1], 3, -1)
  else:                                              # palette: index -> palette colour
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.reshape(-1).tolist())
    expected = palette[index]
  assert image.mode == mode
  np.testing.assert_array_equal(sources.decode_image(encoded(image, "PNG"), "x"), expected)


def test_cmyk_jpeg_decodes_to_its_colours():
  cmyk = np.zeros((16, 32, 4), np.uint8)
  cmyk[:, :16] = (255, 0, 0, 0)                      # cyan -> RGB (0, 255, 255)
  cmyk[:, 16:] = (0, 0, 255, 0)                      # yellow -> RGB (255, 255, 0)
  decoded = sources.decode_image(encoded(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95),
                                 "cmyk.jpg")
  assert decoded.shape == (16, 32, 3)
  np.testing.assert_allclose(decoded[4:12, 2:12].mean(axis=(0, 1)), (0, 255, 255), atol=6)
  np.testing.assert_allclose(decoded[4:12, 20:30].mean(axis=(0, 1)), (255, 255, 0), atol=6)


def test_exif_rotated_jpeg_is_turned_upright_and_its_size_swapped():
  stored = np.zeros((16, 32, 3), np.uint8)           # stored 32 wide: left red, right blue
  stored[:, :16] = (255, 0, 0)
  stored[:, 16:] = (0, 0, 255)
  image = Image.fromarray(stored)
  exif = image.getexif()
  exif[sources.EXIF_ORIENTATION_TAG] = 6             # shown turned 90 degrees clockwise
  data = encoded(image, "JPEG", quality=95, exif=exif.tobytes())
  decoded = sources.decode_image(data, "turned.jpg")
  assert decoded.shape == (32, 16, 3)                # upright: 16 wide, 32 high
  np.testing.assert_allclose(decoded[2:14, 4:12].mean(axis=(0, 1)), (255, 0, 0), atol=8)
  np.testing.assert_allclose(decoded[18:30, 4:12].mean(axis=(0, 1)), (0, 0, 255), atol=8)
  assert sources.image_size_of(data, "turned.jpg") == (32, 16)


@pytest.mark.parametrize("values,mode", [(np.ones((4, 4), np.float32), "F"),
                                         (np.full((4, 4), 70000, np.int32), "I")])
def test_unsupported_kinds_are_a_corrupt_image_error_naming_the_file(values, mode):
  image = Image.fromarray(values, mode)
  with pytest.raises(sources.CorruptImageError, match=f"odd.tif.*{mode}") as error:
    sources.decode_image(encoded(image, "TIFF"), "odd.tif")
  assert error.value.item == "odd.tif"


def test_a_16_bit_file_in_a_coco_folder_trains_on_its_real_pixels(tmp_path):
  root = coco_folder.write(tmp_path)
  levels = (coco_folder.image_array(1)[..., 0].astype(np.uint16) * 257)
  Image.fromarray(levels).save(os.path.join(root, "train", "a.png"))
  record = sources.CocoJsonSource(root, "train")[0]
  np.testing.assert_array_equal(record["image"][..., 0], coco_folder.image_array(1)[..., 0])


# ----------------------------------------------------------------- COCO layouts and errors.


def move_images(root, layout_of_split):
  for split in ("train", "val"):
    target = layout_of_split(split)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(root, split), target)


def test_annotations_folder_with_images_per_split_folder(tmp_path):
  root = coco_folder.write(tmp_path, layout="coco", train_split="train", val_split="val")
  move_images(root, lambda split: os.path.join(root, "images", split))
  assert sources.coco_json_splits(root) == ("train", "val")
  source = sources.CocoJsonSource(root, "val")
  assert source.annotation_file == os.path.join(root, "annotations", "instances_val.json")
  assert source.image_root == os.path.join(root, "images", "val")
  np.testing.assert_array_equal(source[0]["image"], coco_folder.image_array(1))


def rewrite_file_names(json_path, rename):
  with open(json_path, encoding="utf-8") as f:
    coco = json.load(f)
  for image in coco["images"]:
    image["file_name"] = rename(image["file_name"])
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(coco, f)


@pytest.mark.parametrize("kind", ["sub-folder", "absolute"])
def test_file_names_with_sub_folders_or_absolute_paths(tmp_path, kind):
  root = coco_folder.write(tmp_path)
  if kind == "sub-folder":    # exporters that write "images/train/a.png" beside the json
    move_images(root, lambda split: os.path.join(root, "images", split))
    rewrite_file_names(os.path.join(root, "train.json"), lambda n: f"images/train/{n}")
  else:
    rewrite_file_names(os.path.join(root, "train.json"),
                       lambda n: os.path.join(root, "train", n))
  source = sources.CocoJsonSource(root, "train")
  np.testing.assert_array_equal(source[0]["image"], coco_folder.image_array(1))


def test_no_image_found_stops_before_training_naming_files_and_folders(tmp_path):
  root = coco_folder.write(tmp_path)
  shutil.rmtree(os.path.join(root, "train"))
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.CocoJsonSource(root, "train")
  message = str(error.value)
  assert "'a.png'" in message and os.path.join(root, "images", "train") in message
  assert os.path.join(root, "train") in message and "train.json" in message


def test_a_missing_coco_json_dir_says_so(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError, match="nowhere.*does not exist"):
    sources.coco_json_splits(str(tmp_path / "nowhere"))


def test_malformed_json_names_the_file_and_position(tmp_path):
  root = coco_folder.write(tmp_path)
  with open(os.path.join(root, "train.json"), "w", encoding="utf-8") as f:
    f.write('{"images": [\n  {"id": 1,}\n]}')
  with pytest.raises(errors.InvalidSetupError, match=r"train.json is not valid JSON: .* line 2"):
    sources.CocoJsonSource(root, "train")


def add_annotations(json_path, annotations):
  with open(json_path, encoding="utf-8") as f:
    coco = json.load(f)
  coco["annotations"] += annotations
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(coco, f)


def test_unknown_category_ids_are_refused_by_id_and_file(tmp_path):
  root = coco_folder.write(tmp_path)
  add_annotations(os.path.join(root, "train.json"),
                  [{"id": 900, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 4]}])
  with pytest.raises(errors.InvalidSetupError, match=r"train.json: .*category_id 7, not among"):
    sources.CocoJsonSource(root, "train")


def test_annotations_of_unlisted_images_are_refused_and_counted(tmp_path):
  root = coco_folder.write(tmp_path)
  add_annotations(os.path.join(root, "train.json"),
                  [{"id": 900 + i, "image_id": 99, "category_id": 1, "bbox": [1, 1, 4, 4]}
                   for i in range(3)])
  with pytest.raises(errors.InvalidSetupError, match=r"3 annotations refer to an image_id not"):
    sources.CocoJsonSource(root, "train")


def test_most_boxes_of_one_image_is_known_without_reading_images(coco_dir):
  # Image 1 holds 2 boxes besides its crowd box, image 4 two; the first such is named.
  most, where = sources.CocoJsonSource(coco_dir, "train").max_boxes_per_image()
  assert most == 2 and where.endswith("a.png (image id 1)")
