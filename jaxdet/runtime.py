"""What the scripts share: the default config and command-line adjustments of a config."""
import logging
import os
import sys

from absl import logging as absl_logging

from jaxdet import distributed
from jaxdet import errors
from jaxdet import provenance
from jaxdet.data import sources

REPO_ROOT = provenance.REPO_ROOT
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "experiments", "retinanet.py") + ":tiny_digits"


class OneLineLibraryErrors(logging.Filter):
  """Orbax's errors as one line each, without its tracebacks and TensorStore spec dumps: jaxdet
  reports the failure itself (a failed save: ``CheckpointSaveError``)."""

  def filter(self, record):
    if "orbax" in record.pathname and record.levelno >= logging.ERROR:
      message = record.getMessage().split("\n")[0].split(" [tensorstore_spec=")[0]
      record.msg, record.args, record.exc_info, record.exc_text = message[:500], (), None, None
    return True


def setup_logging():
  """jaxdet's progress to stdout; the libraries' INFO chatter (orbax, tfds) silenced. On a
  multi-host run (call ``jaxdet.distributed.initialize`` first) only process 0 logs progress."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, OneLineLibraryErrors) for f in absl_logger.filters):
    absl_logger.addFilter(OneLineLibraryErrors())
  logger = logging.getLogger("jaxdet")
  if not logger.handlers:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  distributed.quiet_unless_leader()


def use_coco_json_dir(config, directory):
  """Points ``config`` at a COCO-json folder: its train split trains, its val split evaluates,
  and the model gets its number of classes."""
  train_split, eval_split = sources.coco_json_splits(directory)
  config.data.coco_json_dir = directory
  config.data.train = f"coco_json:{train_split}"
  config.data.eval = f"coco_json:{eval_split}"
  config.model.num_classes = sources.CocoJsonSource(directory, train_split).num_classes
  return config


def load_trained(workdir, step=None):
  """``(config, class_names, detector, state, mesh)`` of a workdir's checkpoint (default: the
  latest), laid out on all local devices, for evaluation and prediction."""
  from jaxdet import detectors  # pylint: disable=import-outside-toplevel
  from jaxdet.train import checkpoint  # pylint: disable=import-outside-toplevel
  from jaxdet.train import sharding  # pylint: disable=import-outside-toplevel
  from jaxdet.train import state as state_lib  # pylint: disable=import-outside-toplevel
  try:
    config, class_names, step = checkpoint.saved_run(workdir, step)
    detector = detectors.build(config.model)
    mesh = sharding.make_mesh()
    target, _, _ = state_lib.build_state(detector, config, mesh)
    state, _ = checkpoint.restore(checkpoint.manager(workdir), target, step)
  except (errors.ReportedError, FileNotFoundError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    steps = checkpoint.committed_steps(workdir)
    shown = step if step is not None else f"{steps[-1]} (the latest)" if steps else "?"
    raise checkpoint.DamagedCheckpointError(
        f"checkpoint step {shown} of {workdir} cannot be read ({checkpoint.short_error(e)}); "
        f"its steps: {steps}; choose another with --step") from e
  logging.getLogger("jaxdet").info("step %d of %s (its steps: %s)", step, workdir,
                                   checkpoint.committed_steps(workdir))
  return config, class_names, detector, state, mesh


def prepare(config, coco_json_dir=None):
  config = config.copy_and_resolve_references()
  if coco_json_dir:
    config = use_coco_json_dir(config, coco_json_dir)
  config.lock()
  return config
