r"""Train a detector; resumes from the workdir's latest checkpoint, evaluates at the end.

  python scripts/train.py                                  # default: RetinaNet on digit_scenes
  python scripts/train.py --config=experiments/retinanet.py:r50_fpn_coco_1x --workdir=runs/r50 \
      --config.data.data_dir=/data/tfds --config.train.batch_size=32
  python scripts/train.py --config=experiments/retinanet.py:tiny_digits \
      --coco_json_dir=/data/my_dataset --workdir=runs/mine          # your own COCO-json folder

Stop with Ctrl-C (a checkpoint is written) or kill it; the same command resumes exactly.
On several hosts, run the same command on each (README: "Multi-host runs"), e.g. by hand:

  python scripts/train.py ... --coordinator_address=host0:1234 --num_processes=2 --process_id=0
"""

from absl import flags
from ml_collections import config_flags

from jaxdet import distributed
from jaxdet import errors
from jaxdet import runtime
from jaxdet import tools

_CONFIG = config_flags.DEFINE_config_file(
    "config", runtime.DEFAULT_CONFIG, "Experiment config file, as path.py:variant.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Checkpoints, TensorBoard and results.")
_COCO_JSON_DIR = flags.DEFINE_string(
    "coco_json_dir", None, "Train on a COCO-json folder (see README): uses its train split for "
    "training and its val split for evaluation, and its number of classes.")
_DISTRIBUTED = distributed.define_flags()


def main(argv):
  with tools.on_every_host(argv, _DISTRIBUTED):
    from jaxdet.train import loop  # pylint: disable=import-outside-toplevel
    try:
      config = runtime.prepare(_CONFIG.value, coco_json_dir=_COCO_JSON_DIR.value)
      if loop.train_and_evaluate(config, _WORKDIR.value) is None:
        # Stopped by a signal, its checkpoint committed: end now rather than after the
        # libraries' teardown, inside the scheduler's grace period (SLURM's: 30 s).
        distributed.exit_now("", 0)
    except errors.ReportedError as e:
      # At once: the checkpoint manager is closed and the summaries flushed, and an ordinary
      # shutdown would only add the failed save's library threads' noise.
      distributed.exit_now(f"error: {e}", 1)


def run():
  """The ``jaxdet-train`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
