r"""Draw a trained detector's detections on your images and write them as PNGs.

  python scripts/predict.py --workdir=runs/default photo1.jpg 'photos/*.png' \
      --output_dir=predictions --score_threshold=0.4

Images of any size are resized to the model's input (aspect kept) and boxes are drawn in the
original pixels; labels read "<class> <score>" and are printed too. YOLO9000 names each box by
the deepest confident node of its WordTree with the path to it ("odd > 7 0.81").
"""
import glob
import os
import sys

from absl import app
from absl import flags
import numpy as np

from jaxdet import errors
from jaxdet import runtime
from jaxdet import tools

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.",
                               required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where PNGs go; default: <workdir>/predictions.")
_SCORE_THRESHOLD = flags.DEFINE_float("score_threshold", 0.3,
                                      "Draw detections scoring at least this.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Images per batch; default: the config's "
                                   "eval batch size.")


def expand(patterns):
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise app.UsageError(f"no file matches {pattern!r}")
    paths.extend(matches)
  return paths


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more image files or glob patterns")
  paths = expand(argv[1:])
  runtime.setup_logging()
  try:
    config, class_names, detector, state, mesh = runtime.load_trained(_WORKDIR.value,
                                                                      _STEP.value)
  except (errors.ReportedError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  if _BATCH_SIZE.value:
    config.eval.batch_size = _BATCH_SIZE.value
  from jaxdet.data import sanitize  # pylint: disable=import-outside-toplevel
  from jaxdet.data import sources  # pylint: disable=import-outside-toplevel
  from jaxdet.evaluation import drawing  # pylint: disable=import-outside-toplevel
  from jaxdet.evaluation import evaluator  # pylint: disable=import-outside-toplevel
  from jaxdet.train import state as state_lib  # pylint: disable=import-outside-toplevel
  source = sources.FileListSource(paths, class_names)
  issues = sanitize.DataIssues()
  gts = evaluator.ground_truths(source, issues)
  predict = state_lib.predict_fn(detector, state.eval_variables(),
                                 tuple(config.data.image_size), mesh, display=True)
  detections = evaluator.detect(predict, source, gts, config, issues)
  names = detector.display_names(class_names)
  output_dir = _OUTPUT_DIR.value or os.path.join(_WORKDIR.value, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  for index, path in enumerate(paths):
    if index not in detections:
      print(f"skipped {path}: cannot decode it")
      continue
    name = stems[index] if stems.count(stems[index]) == 1 else f"{index:04d}_{stems[index]}"
    out = os.path.join(output_dir, name + ".png")
    found = detections[index]
    drawing.draw_detections(source[index]["image"], found, names, _SCORE_THRESHOLD.value).save(out)
    print(f"{path} -> {out}")
    for i in np.argsort(-found["scores"]):
      if found["scores"][i] >= _SCORE_THRESHOLD.value:
        box = " ".join(f"{v:.0f}" for v in found["boxes"][i])
        print(f"  {names[found['labels'][i]]} {found['scores'][i]:.2f} at [{box}]")


def run():
  """The ``jaxdet-predict`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
