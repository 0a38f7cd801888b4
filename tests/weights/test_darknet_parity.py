"""darknet cfg + weights imported into jaxdet compute what darknet computes: the real yolov3.cfg
and yolov2-voc.cfg with random weights against OpenCV's darknet reader (``darknet_cases``),
from the committed fixtures, or live when OpenCV is installed (``pip install -e .[parity]``)."""
import numpy as np
import pytest

from jaxdet.weights import darknet
from tests.weights import darknet_cases

RELATIVE_TOLERANCE = 1e-5
CLASS_SCORE_THRESHOLD = 0.6   # OpenCV zeroes class scores below its layer's threshold (<= .6)


def per_output_layer(slots, network, size):
  """``slots [B, N, C]`` split into the [yolo]/[region] layers' parts (jaxdet's order)."""
  layers = darknet_cases.output_layers(network)
  strides = (8, 16, 32) if layers[0].kind == "yolo" else (32,)
  counts = [(size // stride) ** 2 * darknet_cases.anchors_per_cell(layer)
            for layer, stride in zip(layers, strides)]
  return np.split(slots, np.cumsum(counts)[:-1], axis=1)


def relative_error(ours, reference):
  return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def check_against(case, raw, decoded, full_slots, full_rows, model_small, model_full):
  network = darknet.parse_cfg(darknet_cases.cfg_text(case, case.size))
  ours_raw, ours_decoded = darknet_cases.jaxdet_outputs(*model_small,
                                                        darknet_cases.photographs(case.size))
  for level, (mine, theirs) in enumerate(zip(per_output_layer(ours_raw, network, case.size),
                                             per_output_layer(raw, network, case.size))):
    assert relative_error(mine, theirs) <= RELATIVE_TOLERANCE, f"output layer {level}"
  assert relative_error(ours_decoded[..., :5], decoded) <= RELATIVE_TOLERANCE
  # Full size: the same slots rank highest by objectness, with the same decoded rows.
  images = darknet_cases.photographs(darknet_cases.FULL_SIZE)[:1]
  _, full = darknet_cases.jaxdet_outputs(*model_full, images)
  ours_top = np.argsort(-full[0, :, 4], kind="stable")[:darknet_cases.TOP_SLOTS]
  assert set(ours_top) == set(full_slots)
  rows = full[0, full_slots]
  np.testing.assert_allclose(rows[:, :5], full_rows[:, :5], rtol=RELATIVE_TOLERANCE, atol=1e-6)
  kept = full_rows[:, 5:] > 0
  np.testing.assert_allclose(rows[:, 5:][kept], full_rows[:, 5:][kept], rtol=RELATIVE_TOLERANCE,
                             atol=1e-6)
  assert np.all(rows[:, 5:][~kept] < CLASS_SCORE_THRESHOLD)


@pytest.fixture(scope="module", params=sorted(darknet_cases.CASES))
def imported(request, tmp_path_factory):
  """``(name, case, directory, small model, full-size model)`` with the case's random weights
  written as a darknet weights file and imported."""
  name = request.param
  case = darknet_cases.CASES[name]
  directory = tmp_path_factory.mktemp(name)
  _, weights = darknet_cases.write_files(case, case.size, directory)
  small = darknet_cases.jaxdet_model(case, case.size, weights)
  full = darknet_cases.jaxdet_model(case, darknet_cases.FULL_SIZE, weights)
  return name, case, directory, small, full


def test_matches_the_opencv_fixtures(imported):
  name, case, _, small, full = imported
  with np.load(case.fixture(name)) as fixture:
    check_against(case, fixture["raw"], fixture["decoded"], fixture["full_slots"],
                  fixture["full_rows"], small, full)


def test_matches_opencv_live(imported):
  pytest.importorskip("cv2", reason="the parity extra (OpenCV) is not installed")
  from tests.weights import make_fixtures  # pylint: disable=import-outside-toplevel
  _, case, directory, small, full = imported
  reference = make_fixtures.reference(case, directory)
  check_against(case, reference["raw"], reference["decoded"], reference["full_slots"],
                reference["full_rows"], small, full)
