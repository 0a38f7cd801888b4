r"""Import published weights into a jaxdet workdir, which ``jaxdet-evaluate``, ``jaxdet-predict``
and ``--config.train.init_from`` then take as they take a trained run.

torchvision (a ``.pth`` state dict, read without PyTorch; ImageNet ResNets and VGG-16, the
latter into SSD's reduced base):

  python scripts/import_weights.py --from=torchvision:resnet50 \
      --weights=resnet50-0676ba61.pth --config=experiments/retinanet.py:resnet50_imagenet \
      --workdir=runs/resnet50_torchvision
  python scripts/import_weights.py --from=torchvision:vgg16 --weights=vgg16-397923af.pth \
      --config=experiments/ssd.py:vgg16_imagenet --workdir=runs/vgg16_torchvision

darknet (a ``.cfg`` and its ``.weights``, whole or partial such as ``darknet53.conv.74``):

  python scripts/import_weights.py --from=darknet --cfg=yolov3.cfg --weights=yolov3.weights \
      --config=experiments/yolo_v3.py:yolov3_416_coco --class_names=coco.names \
      --workdir=runs/yolov3_darknet
  python scripts/import_weights.py --from=darknet --cfg=darknet53.cfg \
      --weights=darknet53.conv.74 --config=experiments/yolo_v3.py:darknet53_imagenet \
      --workdir=runs/darknet53

``--config`` is the recipe the imported model will be evaluated or fine-tuned with; the cfg
sets what it determines (input size, RGB / 255 input, classes, priors, YOLOv2's passthrough
width and darknet's reorg) and every convolution of the cfg must match the recipe's model, or
the import stops naming the first layer that differs. A partial weights file fills the first
layers and leaves the others at their initialisation (the report lists them). The workdir holds
an ordinary step-0 checkpoint and ``run_info.json``, with ``imported_from.json`` beside them.
"""
import json
import logging
import os
import sys

from absl import app
from absl import flags
from etils import epath
import jax
from ml_collections import config_flags

from jaxdet import errors
from jaxdet import runtime
from jaxdet import tools
from jaxdet.weights import darknet
from jaxdet.weights import torch_files
from jaxdet.weights import torchvision
from jaxdet.weights import trees

TORCHVISION_MODELS = ("resnet18", "resnet50", "resnet101", "resnet152", "vgg16")

_FROM = flags.DEFINE_string("from", None, "darknet, or torchvision:<architecture> "
                            f"({', '.join(TORCHVISION_MODELS)}).", required=True)
_CFG = flags.DEFINE_string("cfg", None, "darknet: the network's .cfg file.")
_WEIGHTS = flags.DEFINE_string("weights", None, "darknet: the .weights file (or a partial "
                               "file such as darknet53.conv.74); torchvision: the .pth file.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The jaxdet recipe of the imported model, e.g. "
    "experiments/yolo_v3.py:yolov3_416_coco.", lock_config=False)
_CLASS_NAMES = flags.DEFINE_string("class_names", None, "A file of class names, one per line "
                                   "(darknet's coco.names, voc.names); default class_<i>.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write the jaxdet workdir.",
                               required=True)

IMPORT_INFO = "imported_from.json"


class WeightsImportError(errors.ReportedError, ValueError):
  """Weights that cannot be imported into the chosen recipe."""


def read_class_names(path, count):
  if path is None:
    return tuple(f"class_{i}" for i in range(count))
  with open(path, encoding="utf-8") as f:
    names = tuple(line.strip() for line in f if line.strip())
  if len(names) != count:
    raise WeightsImportError(f"{path} names {len(names)} classes, the model has {count}")
  return names


def import_darknet(config, cfg_path, weights_path):
  """``(config, detector, variables {path: array}, report dict)`` of a darknet cfg and weights
  file."""
  from jaxdet import detectors  # pylint: disable=import-outside-toplevel
  network = darknet.read_cfg(cfg_path)
  config = runtime.prepare(darknet.configure(config, network))
  detector = detectors.build(config.model)
  units, shapes = darknet.model_convs(detector.model, config.data.image_size)
  darknet.check_layers_match(network, units, shapes["params"])
  header, convs = darknet.read_weights(weights_path, network)
  arrays, clipped = darknet.to_variables(convs, units, flax_epsilon=1e-5)
  report = {"format": "darknet", "cfg": os.path.abspath(cfg_path),
            "weights": os.path.abspath(weights_path), "header": header,
            "layers_loaded": len(convs), "layers": len(units),
            "left_at_initialisation": [u.name for u in units[len(convs):]],
            "batch_norm_channels_not_exact": clipped}
  return config, detector, arrays, report


def torchvision_names(config, architecture):
  """``(names, dropped)`` of torchvision's ``architecture`` into ``config``'s classifier, which
  must be the ImageNet classifier recipe of that trunk."""
  model = config.model
  if architecture == "vgg16":
    if model.family != "classifier" or model.trunk != "ssd_vgg16":
      raise WeightsImportError("torchvision's vgg16 goes into SSD's base: pass "
                               "--config=experiments/ssd.py:vgg16_imagenet")
    atrous = model.backbone.get("atrous", True)
    if model.backbone.fc_width != (1024 if atrous else 4096):
      raise WeightsImportError(f"base.fc_width={model.backbone.fc_width}: VGG-16's fc6/fc7 give "
                               f"{1024 if atrous else 4096} channels with base.atrous={atrous}")
    return torchvision.vgg16_names(atrous), torchvision.VGG16_DROPPED
  if (model.family != "classifier" or model.trunk != "resnet"
      or model.backbone.architecture != architecture):
    raise WeightsImportError(f"torchvision's {architecture} is an ImageNet classifier: pass the "
                             f"classifier recipe of that trunk (e.g. experiments/retinanet.py:"
                             f"{architecture}_imagenet)")
  return torchvision.resnet_names(architecture, prefix=("backbone",)), ()


def import_torchvision(config, architecture, weights_path):
  """``(config, detector, variables {path: array}, report dict)`` of a torchvision ImageNet
  classifier's state dict, into the ``classifier`` recipe of the same trunk."""
  from jaxdet import detectors  # pylint: disable=import-outside-toplevel
  if architecture not in TORCHVISION_MODELS:
    raise WeightsImportError(f"--from=torchvision:{architecture}: one of {TORCHVISION_MODELS}")
  names, dropped = torchvision_names(config, architecture)
  state_dict = torch_files.load_state_dict(weights_path)
  if "fc.weight" in state_dict:
    config.model.num_classes = int(state_dict["fc.weight"].shape[0])
  config = runtime.prepare(config)
  detector = detectors.build(config.model)
  arrays = torchvision.to_variables(state_dict, names, dropped)
  left = sorted({"/".join(path[1:-1]) for path in _model_paths(detector, config)
                 if path not in arrays})
  report = {"format": f"torchvision:{architecture}", "weights": os.path.abspath(weights_path),
            "tensors_loaded": len(arrays), "tensors_dropped": list(dropped),
            "left_at_initialisation": left}
  return config, detector, arrays, report


def _model_paths(detector, config):
  shapes = jax.eval_shape(lambda: detector.init(jax.random.PRNGKey(0),
                                                tuple(config.data.image_size)))
  return [(collection,) + path for collection in shapes
          for path in trees.flatten(shapes[collection])]


def write_workdir(workdir, config, detector, arrays, class_names, report):
  """Saves a step-0 checkpoint of ``config``'s fresh state with ``arrays`` in it."""
  from jaxdet.train import checkpoint  # pylint: disable=import-outside-toplevel
  from jaxdet.train import run_info  # pylint: disable=import-outside-toplevel
  from jaxdet.train import sharding  # pylint: disable=import-outside-toplevel
  from jaxdet.train import state as state_lib  # pylint: disable=import-outside-toplevel
  if checkpoint.committed_steps(workdir):
    raise WeightsImportError(f"{workdir} already holds checkpoints; import into a new workdir")
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  state, _, _ = state_lib.build_state(detector, config, sharding.make_mesh())
  # The arrays in place of the fresh ones, each on its sharding and in its dtype; every one of
  # them must find its array, of its shape, in the model.
  variables, copied, mismatched = checkpoint.transfer_matching(
      {"params": state.params, **state.model_state}, trees.unflatten(arrays))
  missing = sorted({"/".join(path) for path in arrays} - set(copied) - set(mismatched))
  if missing or mismatched:
    raise WeightsImportError(
        f"the recipe's model lacks {checkpoint.listed(missing or ['nothing'])} and shapes "
        f"differ at {checkpoint.listed(mismatched or ['none'])}: is the recipe the network the "
        "weights belong to?")
  params = variables.pop("params")
  state = state.replace(params=params, model_state=variables,
                        ema_params=params if state.ema_params else state.ema_params)
  run_info.record_start(config, workdir)
  (epath.Path(workdir) / IMPORT_INFO).write_text(json.dumps(report, indent=1))
  mngr = checkpoint.manager(workdir, async_save=False)
  checkpoint.save(mngr, workdir, state, 0, class_names, config)
  mngr.wait_until_finished()
  mngr.close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("give --config, the recipe of the imported model")
  source, _, architecture = _FROM.value.partition(":")
  if source not in ("darknet", "torchvision") or (source == "torchvision") != bool(architecture):
    raise app.UsageError(f"--from={_FROM.value}: darknet or torchvision:<architecture>")
  if not _WEIGHTS.value or (source == "darknet" and not _CFG.value):
    raise app.UsageError("give --weights (and, for darknet, --cfg)")
  runtime.setup_logging()
  try:
    if source == "darknet":
      config, detector, arrays, report = import_darknet(_CONFIG.value, _CFG.value,
                                                        _WEIGHTS.value)
    else:
      config, detector, arrays, report = import_torchvision(_CONFIG.value, architecture,
                                                            _WEIGHTS.value)
    class_names = read_class_names(_CLASS_NAMES.value, config.model.num_classes)
    write_workdir(_WORKDIR.value, config, detector, arrays, class_names, report)
  except (errors.ReportedError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  log = logging.getLogger("jaxdet")
  if source == "darknet":
    log.info("imported %d of %d convolutions from %s into %s", report["layers_loaded"],
             report["layers"], _WEIGHTS.value, _WORKDIR.value)
  else:
    log.info("imported %d tensors from %s into %s (not used: %s)", report["tensors_loaded"],
             _WEIGHTS.value, _WORKDIR.value, ", ".join(report["tensors_dropped"]) or "none")
  if report["left_at_initialisation"]:
    log.info("left at their initialisation: %s", ", ".join(report["left_at_initialisation"]))
  if report.get("batch_norm_channels_not_exact"):
    log.warning("%d batch norm channels have a variance below what Flax's epsilon (1e-5) can "
                "reproduce; their outputs differ from darknet's",
                report["batch_norm_channels_not_exact"])


def run():
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
