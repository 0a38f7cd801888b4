"""TFDS coco / voc records (as tfds data sources decode them) mapped to jaxdet records."""
import io

import numpy as np
from PIL import Image

from jaxdet.data import sources


def png_bytes(height, width):
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def source_over(name, records):
  """A TfdsSource reading ``records`` (bypassing the TFDS builder)."""
  source = sources.TfdsSource.__new__(sources.TfdsSource)
  source.name, source.fields = name, sources.TFDS_FIELDS[name.split("/")[0]]
  source._records, source.class_names = records, ("a", "b", "c")  # pylint: disable=protected-access
  return source


def test_coco_record():
  record = {"image": png_bytes(40, 100), "image/id": 139,
            "objects": {"bbox": [np.array([0.25, 0.1, 0.75, 0.5], np.float32)],   # y1 x1 y2 x2
                        "label": [np.int64(2)], "is_crowd": [True], "area": [np.int64(321)],
                        "id": [np.int64(5)]}}
  annotations = source_over("coco/2017", [record]).annotations(0)
  # Normalized (y1, x1, y2, x2) -> pixels (x1, y1, x2, y2) of a 100 x 40 image.
  np.testing.assert_allclose(annotations["boxes"], [[10, 10, 50, 30]], rtol=1e-6)
  np.testing.assert_array_equal(annotations["labels"], [2])
  np.testing.assert_array_equal(annotations["ignore"], [True])
  np.testing.assert_array_equal(annotations["area"], [321.0])     # COCO's segment area
  assert (annotations["image_id"], annotations["height"], annotations["width"]) == (139, 40, 100)


def test_voc_record_difficult_is_ignored_and_area_is_the_box():
  record = {"image": png_bytes(50, 20), "image/filename": "000005.jpg",
            "objects": {"bbox": [np.array([0.0, 0.0, 0.2, 0.5], np.float32),
                                 np.array([0.5, 0.5, 1.0, 1.0], np.float32)],
                        "label": [np.int64(0), np.int64(1)], "is_difficult": [False, True],
                        "is_truncated": [False, False], "pose": [0, 0]}}
  annotations = source_over("voc/2007", [record, record]).annotations(1)
  np.testing.assert_allclose(annotations["boxes"], [[0, 0, 10, 10], [10, 25, 20, 50]], rtol=1e-6)
  np.testing.assert_array_equal(annotations["ignore"], [False, True])
  np.testing.assert_allclose(annotations["area"], [100, 250])
  assert annotations["image_id"] == 1                          # VOC has no ids: the index


def test_record_without_objects():
  record = {"image": png_bytes(8, 8), "image/id": 1,
            "objects": {"bbox": [], "label": [], "is_crowd": [], "area": [], "id": []}}
  annotations = source_over("coco/2017", [record]).annotations(0)
  assert annotations["boxes"].shape == (0, 4) and annotations["labels"].shape == (0,)
