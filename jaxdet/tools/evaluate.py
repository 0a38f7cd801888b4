r"""Evaluate a trained checkpoint: COCO AP (pycocotools), VOC07 11-point and VOC12 AP; top-1 and
top-5 accuracy for a pretrained classifier.

  python scripts/evaluate.py --workdir=runs/default                       # latest checkpoint
  python scripts/evaluate.py --workdir=runs/r50 --step=60000 --metrics=coco,voc07 \
      --dataset=coco/2017:validation --data_dir=/data/tfds

Everything else (model, input size, data_dir) comes from the config saved in the checkpoint.
On several hosts, run the same command on each (flags as train.py's): each host detects its
share of the images and process 0 scores them all.
"""
import json
import sys

from absl import flags
import jax

from jaxdet import distributed
from jaxdet import errors
from jaxdet import runtime
from jaxdet import tools

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.",
                               required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset spec, e.g. 'voc/2007:test'; default: "
                               "the config's data.eval.")
_METRICS = flags.DEFINE_list(
    "metrics", None, "Any of coco, voc07, voc12 (detectors) or top1, top5 (classifiers); "
    "default: the config's.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir; default: the config's.")
_COCO_JSON_DIR = flags.DEFINE_string("coco_json_dir", None,
                                     "COCO-json folder for coco_json:<split> datasets.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Eval batch size; default: the config's.")
_ALLOW_MISSING_IMAGES = flags.DEFINE_bool(
    "allow_missing_images", None, "Score the readable images when some cannot be read (the "
    "report says how many were left out); default: the config's (False: refuse).")
_DISTRIBUTED = distributed.define_flags()


def main(argv):
  with tools.on_every_host(argv, _DISTRIBUTED):
    try:
      evaluate()
    except (errors.ReportedError, FileNotFoundError) as e:
      sys.exit(f"error: {e}")


def evaluate():
  config, _, detector, state, mesh = runtime.load_trained(_WORKDIR.value, _STEP.value)
  overrides = {("data", "eval"): _DATASET.value, ("data", "data_dir"): _DATA_DIR.value,
               ("data", "coco_json_dir"): _COCO_JSON_DIR.value,
               ("eval", "metrics"): tuple(_METRICS.value) if _METRICS.value else None,
               ("eval", "batch_size"): _BATCH_SIZE.value,
               ("eval", "allow_missing_images"): _ALLOW_MISSING_IMAGES.value}
  for (section, key), value in overrides.items():
    if value is not None:
      config[section][key] = value
  from jaxdet.data import sanitize  # pylint: disable=import-outside-toplevel
  from jaxdet.evaluation import evaluator  # pylint: disable=import-outside-toplevel
  source = evaluator.build_eval_source(config)
  issues = sanitize.DataIssues()
  from jaxdet.train import state as state_lib  # pylint: disable=import-outside-toplevel
  predict = state_lib.predict_fn(detector, state.eval_variables(),
                                 tuple(config.data.image_size), mesh)
  results, report = evaluator.evaluate(predict, source, config, issues)
  if jax.process_index() == 0:
    print(f"step {int(state.step)} on {source.name}:\n{report}")
    print(json.dumps(results, indent=1))
  if any(issues.snapshot().values()):
    print(f"data issues (process {jax.process_index()}): {issues.snapshot()}")


def run():
  """The ``jaxdet-evaluate`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
