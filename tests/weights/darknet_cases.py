"""The darknet parity cases, shared by ``make_fixtures.py`` (which runs OpenCV's darknet reader,
the reference) and the tests (which run jaxdet and compare with the fixtures, or with OpenCV live).

Each case is a real cfg of pjreddie/darknet (``fixtures/darknet_cfg/``, see its README) with
random weights from a seed (``jaxdet.weights.darknet.random_convs``, so no weights file is
stored), fed the two photographs scikit-learn ships, letterboxed as darknet does
(``jaxdet.weights.darknet.letterbox``). A fixture holds, at the case's small input, each
image's raw outputs of the convolution before every [yolo]/[region] layer (``raw``) and the
first five columns of that layer's decoded output (``decoded``: ``(x, y, w, h)`` relative to
the input, objectness); at the cfg's full input, the decoded rows (every column, class scores
too) of the ``TOP_SLOTS`` slots of highest objectness of the first photograph (``full_rows``,
their slots ``full_slots``).
"""
import dataclasses
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import detectors
from jaxdet.weights import darknet
from jaxdet.weights import trees
from tests.weights.recipes import load_config

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
CFG_DIR = FIXTURES / "darknet_cfg"


@dataclasses.dataclass(frozen=True)
class Case:
  cfg: str             # file in CFG_DIR
  config: str          # experiments/<file>.py:<variant>, the recipe the import targets
  size: int            # input size of the raw-output comparison
  seed: int            # of the random weights

  def fixture(self, name):
    return FIXTURES / f"darknet_{name}.npz"


TOP_SLOTS = 100
FULL_SIZE = 416
CASES = {
    "yolov3": Case("yolov3.cfg", "experiments/yolo_v3.py:yolov3_416_coco", size=64, seed=0),
    "yolov2_voc": Case("yolov2-voc.cfg", "experiments/yolo_v2.py:yolov2_voc_416", size=64,
                       seed=1),
}


def cfg_text(case, size):
  """The case's cfg with its input set to ``size x size`` (the layers are unchanged)."""
  text = (CFG_DIR / case.cfg).read_text()
  text = re.sub(r"^height\s*=\s*\d+", f"height={size}", text, flags=re.M)
  return re.sub(r"^width\s*=\s*\d+", f"width={size}", text, flags=re.M)


def write_files(case, size, directory):
  """``(cfg path, weights path)`` of the case at ``size`` written into ``directory``."""
  directory = pathlib.Path(directory)
  cfg = directory / f"{pathlib.Path(case.cfg).stem}_{size}.cfg"
  cfg.write_text(cfg_text(case, size))
  weights = directory / f"{pathlib.Path(case.cfg).stem}.weights"
  if not weights.exists():
    network = darknet.parse_cfg(cfg.read_text())
    darknet.write_weights(weights, darknet.random_convs(network, case.seed))
  return cfg, weights


def photographs(size):
  """``[2, size, size, 3]`` float32: china.jpg and flower.jpg (scikit-learn) letterboxed."""
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  images = datasets.load_sample_images().images
  return np.stack([darknet.letterbox(image / np.float32(255), size, size)[0]
                   for image in images])


def jaxdet_model(case, size, weights_path):
  """``(detector, variables)`` of the case imported at input ``size`` (what the import tool
  does, without writing a workdir)."""
  network = darknet.parse_cfg(cfg_text(case, size))
  config = darknet.configure(load_config(case.config), network)
  detector = detectors.build(config.model)
  units, shapes = darknet.model_convs(detector.model, (size, size))
  darknet.check_layers_match(network, units, shapes["params"])
  _, convs = darknet.read_weights(weights_path, network)
  arrays, _ = darknet.to_variables(convs, units, flax_epsilon=1e-5)
  return detector, trees.unflatten({path: jnp.asarray(a) for path, a in arrays.items()})


def jaxdet_outputs(detector, variables, images):
  """``(raw [B, N, 5 + K], decoded [B, N, 5 + K])`` in jaxdet's slot order: raw outputs, and
  ``(cx, cy, w, h)`` relative to the input, objectness, class scores, as OpenCV's region layer
  gives them."""
  size = images.shape[1:3]
  outputs = jax.jit(detector.model.apply)(variables, jnp.asarray(images))
  raw = np.concatenate([outputs["box_logits"], outputs["objectness_logits"][..., None],
                        outputs["class_logits"]], axis=-1)
  grid = detector.grid(tuple(size))
  boxes = np.asarray(jax.vmap(lambda t: detector_boxes(grid, t, detector.location))(
      outputs["box_logits"]))
  scale = np.array([size[1], size[0]] * 2, np.float32)
  xyxy = boxes / scale
  cxcywh = np.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]],
                          axis=-1)
  objectness = jax.nn.sigmoid(outputs["objectness_logits"])[..., None]
  decoded = np.concatenate([cxcywh, objectness, detector.class_scores(outputs)], axis=-1)
  return raw, decoded


def detector_boxes(grid, t, location):
  from jaxdet.ops import boxes as box_ops  # pylint: disable=import-outside-toplevel
  return box_ops.yolo_decode(t, grid.cell_xy, grid.stride, grid.prior_wh, location,
                             scale_clip=np.inf)


def output_layers(network):
  """The [yolo] layers, finest scale first as jaxdet orders its slots (the cfg lists the coarsest
  first), or the [region] layer."""
  return network.of_kind("yolo")[::-1] or network.of_kind("region")


def anchors_per_cell(layer):
  return len(layer.ints("mask")) if layer.kind == "yolo" else layer.get("num", 1)


def opencv_outputs(cfg_path, weights_path, images, network):
  """``(raw, decoded)`` as :func:`jaxdet_outputs`, from OpenCV's darknet reader: the outputs of
  the convolution before each output layer, and the output layers' own (OpenCV's unconnected
  outputs)."""
  import cv2  # pylint: disable=import-outside-toplevel
  net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
  net.setInput(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  layers = output_layers(network)
  conv_names = [f"conv_{layer.index - 1}" for layer in layers]
  decoded_names = list(net.getUnconnectedOutLayersNames())
  if layers[0].kind == "yolo":
    decoded_names = decoded_names[::-1]
  results = net.forward(conv_names + decoded_names)
  raws, decodeds = results[:len(conv_names)], results[len(conv_names):]
  per_slot = []
  for raw, layer in zip(raws, layers):
    anchors = anchors_per_cell(layer)
    b, c, h, w = raw.shape
    per_slot.append(raw.reshape(b, anchors, c // anchors, h, w).transpose(0, 3, 4, 1, 2)
                    .reshape(b, h * w * anchors, c // anchors))
  batch = images.shape[0]
  decoded = [d.reshape(batch, -1, d.shape[-1]) for d in decodeds]
  return np.concatenate(per_slot, axis=1), np.concatenate(decoded, axis=1)
