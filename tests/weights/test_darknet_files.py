"""darknet's cfg and weights files (jaxdet.weights.darknet), checked against hand counts, files
written byte by byte here, and loop ports of darknet's C."""
import struct

import numpy as np
import pytest

from jaxdet import detectors
from jaxdet.weights import darknet
from jaxdet.weights import trees
from tests.weights import darknet_cases
from tests.weights.recipes import load_config

TWO_LAYERS = """[net]
height=32
width=32
channels=3
# a comment
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=6 ; trailing comment
size=1
activation=linear
"""


def cfg(name):
  return darknet.read_cfg(darknet_cases.CFG_DIR / name)


def test_channels_follow_routes_reorg_and_shortcuts():
  v2 = cfg("yolov2-voc.cfg")
  assert len(v2.layers) == 32 and v2.input_size == (416, 416)
  assert [layer.kind for layer in v2.layers[25:]] == [
      "route", "convolutional", "reorg", "route", "convolutional", "convolutional", "region"]
  assert v2.layers[25].channels == 512                            # route -9: Darknet-19's 16th
  reorg, = v2.of_kind("reorg")
  assert v2.layers[reorg.index - 1].channels == 64 and reorg.channels == 256
  assert v2.layers[reorg.index + 1].channels == 256 + 1024        # route -1,-4
  assert v2.layers[-2].channels == 5 * (5 + 20)                   # 125, before [region]
  v3 = cfg("yolov3.cfg")
  assert len(v3.layers) == 107
  assert len(v3.of_kind("convolutional")) == 75 and len(v3.of_kind("shortcut")) == 23
  assert [v3.layers[i].channels for i in (85, 86, 97, 98)] == [256, 256 + 512, 128, 128 + 256]


def test_a_hand_written_file_reads_back_layer_by_layer(tmp_path):
  network = darknet.parse_cfg(TWO_LAYERS)
  rng = np.random.default_rng(0)
  first = {k: rng.normal(size=s).astype("<f4") for k, s in
           (("biases", 4), ("scales", 4), ("mean", 4), ("var", 4), ("kernel", (4, 3, 3, 3)))}
  second = {k: rng.normal(size=s).astype("<f4") for k, s in
            (("biases", 6), ("kernel", (6, 4, 1, 1)))}
  path = tmp_path / "two.weights"
  with open(path, "wb") as f:              # darknet's save_weights_upto, version 0.2.0
    f.write(struct.pack("<iiiq", 0, 2, 0, 12345))
    for part in ("biases", "scales", "mean", "var", "kernel"):
      f.write(first[part].tobytes())
    f.write(second["biases"].tobytes() + second["kernel"].tobytes())
  header, convs = darknet.read_weights(path, network)
  assert header == {"major": 0, "minor": 2, "revision": 0, "seen": 12345}
  np.testing.assert_array_equal(convs[0].kernel, first["kernel"])
  np.testing.assert_array_equal(convs[0].rolling_variance, first["var"])
  np.testing.assert_array_equal(convs[0].scales, first["scales"])
  assert convs[1].scales is None
  np.testing.assert_array_equal(convs[1].kernel, second["kernel"])
  # Version 0.1 stores "seen" as int32.
  old = tmp_path / "old.weights"
  darknet.write_weights(old, convs, major=0, minor=1, seen=7)
  assert old.stat().st_size == path.stat().st_size - 4
  assert darknet.read_weights(old, network)[0]["seen"] == 7


def test_files_that_do_not_fit_the_cfg_name_the_layer(tmp_path):
  network = darknet.parse_cfg(TWO_LAYERS)
  convs = darknet.random_convs(network, 0)
  full = tmp_path / "full.weights"
  darknet.write_weights(full, convs)
  data = full.read_bytes()
  (tmp_path / "cut.weights").write_bytes(data[:-8])
  with pytest.raises(darknet.DarknetFileError, match=r"ends inside layer 1 \[convolutional\]"):
    darknet.read_weights(tmp_path / "cut.weights", network)
  (tmp_path / "long.weights").write_bytes(data + b"\0" * 8)
  with pytest.raises(darknet.DarknetFileError, match="2 values more"):
    darknet.read_weights(tmp_path / "long.weights", network)
  partial = tmp_path / "first.weights"
  darknet.write_weights(partial, convs[:1])
  assert len(darknet.read_weights(partial, network)[1]) == 1
  with pytest.raises(darknet.DarknetFileError, match="route"):
    darknet.parse_cfg("[net]\n[route]\nlayers=-1\n")
  with pytest.raises(darknet.DarknetFileError, match="lacks filters"):
    darknet.parse_cfg("[net]\n[convolutional]\nsize=3\n")


def test_batch_norm_variance_reproduces_darknets_division():
  variance = np.array([0.25, 1.0, 3e-6, 0.0], np.float32)
  stored = darknet.flax_variance(variance, 1e-5)
  darknets = 1 / (np.sqrt(variance[:2].astype(np.float64)) + 1e-6)
  np.testing.assert_allclose(1 / np.sqrt(stored[:2].astype(np.float64) + 1e-5), darknets,
                             rtol=1e-7)
  assert stored[0] == np.float32((0.5 + 1e-6) ** 2 - 1e-5)
  assert darknet.clipped_variances(variance, 1e-5) == 2 and np.all(stored[2:] == 0)


def reorg_cpu(x, w, h, c, stride):
  """darknet's reorg_cpu (src/blas.c) with forward=0, as the reorg layer calls it, line by line."""
  out = np.zeros_like(x)
  out_c = c // (stride * stride)
  for k in range(c):
    for j in range(h):
      for i in range(w):
        in_index = i + w * (j + h * k)
        c2, offset = k % out_c, k // out_c
        w2, h2 = i * stride + offset % stride, j * stride + offset // stride
        out[in_index] = x[w2 + w * stride * (h2 + h * stride * c2)]
  return out


def test_darknet_reorg_is_darknets_loop():
  from jaxdet.detectors import yolo_v2  # pylint: disable=import-outside-toplevel
  x = np.random.default_rng(0).normal(size=(2, 6, 4, 8)).astype(np.float32)   # [B, H, W, C]
  ours = np.asarray(yolo_v2.darknet_reorg(x))
  assert ours.shape == (2, 3, 2, 32)
  for b in range(2):
    chw = reorg_cpu(x[b].transpose(2, 0, 1).ravel(), 4, 6, 8, 2)
    np.testing.assert_array_equal(ours[b], chw.reshape(32, 3, 2).transpose(1, 2, 0))
  assert not np.array_equal(ours, np.asarray(yolo_v2.space_to_depth(x)))


def resize_image_loop(image, w, h):
  """darknet's resize_image (src/image.c), line by line, on ``[H, W, C]``."""
  im_h, im_w, channels = image.shape
  part = np.zeros((im_h, w, channels), np.float32)
  resized = np.zeros((h, w, channels), np.float32)
  w_scale = np.float32(im_w - 1) / np.float32(w - 1)
  h_scale = np.float32(im_h - 1) / np.float32(h - 1)
  for k in range(channels):
    for r in range(im_h):
      for c in range(w):
        if c == w - 1 or im_w == 1:
          part[r, c, k] = image[r, im_w - 1, k]
        else:
          sx = np.float32(c * w_scale)
          ix = int(sx)
          dx = np.float32(sx - ix)
          part[r, c, k] = (1 - dx) * image[r, ix, k] + dx * image[r, ix + 1, k]
  for k in range(channels):
    for r in range(h):
      sy = np.float32(r * h_scale)
      iy = int(sy)
      dy = np.float32(sy - iy)
      resized[r, :, k] = (1 - dy) * part[iy, :, k]
      if r == h - 1 or im_h == 1:
        continue
      resized[r, :, k] += dy * part[iy + 1, :, k]
  return resized


def test_letterbox_is_darknets():
  image = np.random.default_rng(1).uniform(size=(9, 14, 3)).astype(np.float32)
  boxed, (top, left), (new_h, new_w) = darknet.letterbox(image, 16, 16)
  assert (new_h, new_w) == (9 * 16 // 14, 16) and (top, left) == ((16 - 10) // 2, 0)
  np.testing.assert_array_equal(boxed[top:top + new_h], resize_image_loop(image, 16, new_h))
  assert np.all(boxed[:top] == 0.5) and np.all(boxed[top + new_h:] == 0.5)


def test_the_cfg_sets_classes_priors_and_the_passthrough():
  v3 = darknet.configure(load_config("experiments/yolo_v3.py:yolov3_416_coco"),
                         cfg("yolov3.cfg"))
  assert v3.model.num_classes == 80 and v3.model.loss.ignore_threshold == 0.7
  assert v3.model.priors_per_level == ((0, 1, 2), (3, 4, 5), (6, 7, 8))
  assert v3.model.priors[0] == (10.0, 13.0) and v3.model.priors[-1] == (373.0, 326.0)
  assert tuple(v3.data.pixel_std) == (255.0,) * 3 and v3.data.eval_letterbox
  assert tuple(v3.data.image_size) == (608, 608)        # the cfg's testing size
  v2 = darknet.configure(load_config("experiments/yolo_v2.py:yolov2_voc_416"),
                         cfg("yolov2-voc.cfg"))
  assert (v2.model.num_classes, v2.model.passthrough_width, v2.model.reorg) == (20, 64, "darknet")
  assert v2.model.priors[0] == (1.3221, 1.73145)
  with pytest.raises(darknet.DarknetFileError, match="describes a yolo_v2 network"):
    darknet.configure(load_config("experiments/yolo_v3.py:yolov3_416_coco"),
                      cfg("yolov2-voc.cfg"))


def model_units(config, size):
  return darknet.model_convs(detectors.build(config.model).model, (size, size))


@pytest.mark.parametrize("cfg_name,recipe,loaded", [
    ("darknet53.cfg", "experiments/yolo_v3.py:darknet53_imagenet", 52),
    ("darknet19_448.cfg", "experiments/yolo_v2.py:darknet19_imagenet_448", 18)])
def test_a_partial_backbone_file_fills_every_trunk_tensor(cfg_name, recipe, loaded, tmp_path):
  """``darknet53.conv.74`` / ``darknet19_448.conv.23``: the convolutions before the classifier,
  each tensor of the file in one array of the backbone, every backbone array filled."""
  network = cfg(cfg_name)
  config = darknet.configure(load_config(recipe), network)
  units, shapes = model_units(config, 64)
  darknet.check_layers_match(network, units, shapes["params"])
  path = tmp_path / "partial.weights"
  darknet.write_weights(path, darknet.random_convs(network, 0, count=loaded))
  _, convs = darknet.read_weights(path, network)
  arrays, _ = darknet.to_variables(convs, units, 1e-5)
  trunk = {("params",) + p: v for p, v in trees.flatten(shapes["params"]).items()}
  trunk.update({("batch_stats",) + p: v for p, v in trees.flatten(shapes["batch_stats"]).items()})
  classifier = {p for p in trunk if "classifier" in p[-2]}
  assert set(arrays) == set(trunk) - classifier and len(classifier) == 2
  file_values = (path.stat().st_size - 20) // 4
  assert sum(a.size for a in arrays.values()) == file_values
  assert all(arrays[p].shape == trunk[p].shape for p in arrays)


def test_a_cfg_of_another_network_is_refused_naming_the_layer():
  network = cfg("yolov3.cfg")
  config = darknet.configure(load_config("experiments/yolo_v3.py:yolov3_416_coco"),
                             network)
  config.model.neck_widths = (128, 256, 256)
  units, shapes = model_units(config, 64)
  with pytest.raises(darknet.DarknetFileError, match=r"layer 75 \[convolutional\] 1x1/1 512"):
    darknet.check_layers_match(network, units, shapes["params"])


def test_the_evaluation_letterbox_is_darknets():
  """The pipeline's ``transforms.letterbox`` (tf, 0-255) against the numpy port of darknet's
  (0-1), and its scale and offset by hand: 37x53 into 64x64 keeps the width, 37 * 64 // 53 = 44
  rows, (64 - 44) // 2 = 10 on top."""
  from jaxdet.data import transforms  # pylint: disable=import-outside-toplevel
  from jaxdet.evaluation import evaluator  # pylint: disable=import-outside-toplevel
  image = np.random.default_rng(2).integers(0, 256, (37, 53, 3)).astype(np.uint8)
  boxed, scale, offset = (np.asarray(t) for t in transforms.letterbox(image, 64, 64))
  expected, (top, left), (new_h, new_w) = darknet.letterbox(image / np.float32(255), 64, 64)
  assert (top, left, new_h, new_w) == (10, 0, 44, 64)
  np.testing.assert_allclose(boxed / 255, expected, atol=2e-6)
  np.testing.assert_allclose(scale, (44 / 37, 64 / 53))
  np.testing.assert_array_equal(offset, (10, 0))
  # A box of the input maps back: x / (64/53), (y - 10) / (44/37).
  back = evaluator.to_original_pixels(np.array([[0.0, 10.0, 32.0, 32.0]]), scale, 37, 53, offset)
  np.testing.assert_allclose(back, [[0.0, 0.0, 32 * 53 / 64, 22 * 37 / 44]], rtol=1e-6)
