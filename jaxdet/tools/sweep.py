r"""Run an ablation sweep that an experiment file defines (``get_sweep(name)``), then tabulate it.

  jaxdet-sweep --config=experiments/retinanet.py --sweep=focal_loss --sweep_dir=runs/focal
  jaxdet-sweep ... --cells=3/8          # this worker's share: runs 3, 11, 19, ... of the sweep
  jaxdet-sweep ... --cells=gamma2_alpha0.25,gamma5_alpha0.25   # the runs of these cells
  jaxdet-sweep ... --print_commands     # one training command per run, for your own scheduler
  jaxdet-sweep ... --collect            # only the table of what has finished

Each run (cell x seed) is an ordinary training run in <sweep_dir>/<cell>/seed<k>, started
through the training tool: resumable, its checkpoints, eval JSON and run_info.json where they
always are. A finished run (its sweep_run.json written) is skipped and an unfinished one resumes,
so a stopped sweep is finished by the same command. A failed run is reported and the others go
on. At the end the table of every finished run is written, <sweep_dir>/results.md and .csv,
with its figure results.png (the metric against the sweep's x key or its cells; needs the
``plots`` extra).

A SLURM array of 8 tasks: ``#SBATCH --array=1-8`` with
``jaxdet-sweep ... --cells=${SLURM_ARRAY_TASK_ID}/8``, then one ``jaxdet-sweep ... --collect``.
On a TPU pod slice every host runs the same sweep command with ``--train_flag=--multihost`` and
a ``gs://`` sweep dir: the hosts start each run together, as one multi-host training run
(README, "Ablations"); several slices take shares with ``--cells=i/n``.
"""
import csv
import dataclasses
import importlib.util
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
from etils import epath

from jaxdet import detectors
from jaxdet import plots
from jaxdet import sweep as sweep_lib
from jaxdet import tools
from jaxdet.evaluation import results_files
from jaxdet.train import run_info

_CONFIG = flags.DEFINE_string("config", None, "The experiment file that defines the sweep.",
                              required=True)
_SWEEP = flags.DEFINE_string("sweep", None, "The sweep's name (its get_sweep argument).",
                             required=True)
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Where the runs and the table go.",
                                 required=True)
_CELLS = flags.DEFINE_string("cells", "", "A share 'i/n' of the runs, or cell labels 'a,b'; "
                             "default: every run.")
_PRINT_COMMANDS = flags.DEFINE_bool("print_commands", False, "Print the runs' training commands "
                                    "(those not finished) instead of running them.")
_COLLECT = flags.DEFINE_bool("collect", False, "Only write the table of the finished runs.")
_METRIC = flags.DEFINE_string("metric", "", "Tabulate this key of the evaluation results "
                              "instead of the sweep's metric (e.g. coco/AP50).")
_COCO_JSON_DIR = flags.DEFINE_string("coco_json_dir", None, "Passed to every run: train on "
                                     "this COCO-json folder (see the training tool).")
_TRAIN_FLAGS = flags.DEFINE_multi_string(
    "train_flag", [], "A flag passed as it is to every run's training command, e.g. "
    "--train_flag=--multihost or --train_flag=--config.data.data_dir=gs://b/tfds (repeat).")

DONE = "sweep_run.json"      # a finished run: its command and training seconds
PARTIAL = "sweep_seconds.json"   # the seconds of the invocations so far


def load_experiment(path):
  """The experiment file at ``path`` as a module (its ``get_config`` and ``get_sweep``)."""
  if not os.path.isfile(path):
    raise app.UsageError(f"--config={path}: no such experiment file")
  spec = importlib.util.spec_from_file_location(f"jaxdet_sweep_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise app.UsageError(f"{path} defines no get_sweep(name)")
  return module


def flag_value(value):
  """A config value as the training tool's ``--config.<key>=`` parses it back."""
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def run_dir(sweep_dir, cell, seed):
  return epath.Path(sweep_dir) / cell.label / f"seed{seed}"


def absolute(path):
  """``path`` as every run's command should name it: a URL (``gs://...``) as it is, a local
  path made absolute."""
  return path if "://" in str(path) else os.path.abspath(path)


def train_command(config_path, sweep, cell, seed, workdir, extra_flags=()):
  """The training tool's command for one run: the base variant, the seed, the ``extra_flags``
  given for every run, then the cell's overrides."""
  return [sys.executable, "-m", "jaxdet.tools.train", f"--config={config_path}:{sweep.base}",
          f"--workdir={workdir}", f"--config.seed={seed}", *extra_flags,
          *(f"--config.{key}={flag_value(value)}" for key, value in cell.overrides.items())]


def is_finished(workdir):
  return (workdir / DONE).exists()


def read_json(path):
  return json.loads(path.read_text()) if path.exists() else None


def write_json(path, value):
  path.write_text(json.dumps(value))


def seconds_so_far(workdir):
  return (read_json(workdir / PARTIAL) or {"seconds": 0.0})["seconds"]


def run_training(command, workdir):
  """Runs one training command; True if the run reached its last step (then ``sweep_run.json``
  records it with the seconds of all the invocations it took)."""
  workdir.mkdir(parents=True, exist_ok=True)
  earlier, start = seconds_so_far(workdir), time.time()
  returncode = subprocess.run(command, check=False).returncode
  seconds = round(earlier + time.time() - start, 1)
  write_json(workdir / PARTIAL, {"seconds": seconds})
  if returncode:
    logging.error("run %s failed (exit status %d); the sweep goes on", workdir, returncode)
    return False
  if not run_info.reached_last_step(workdir):
    logging.error("run %s stopped before its last step; rerun the sweep to resume it", workdir)
    return False
  write_json(workdir / DONE, {"command": shlex.join(command), "seconds": seconds})
  return True


def inference_gflop(get_config, sweep, cell):
  """A cell's inference cost: GFLOP per image of its forward pass at its input size."""
  config = sweep_lib.cell_config(get_config, sweep, cell)
  return detectors.build(config.model).forward_gflop_per_image(tuple(config.data.image_size))


def collect(sweep, sweep_dir, get_config):
  """One row per cell: the metric's mean and sample standard deviation over the finished seeds,
  the paper's number, the inference GFLOP per image and the training minutes (all the
  invocations of each finished run)."""
  rows = []
  for cell in sweep.cells:
    values, seconds = [], []
    for seed in sweep.seeds:
      workdir = run_dir(sweep_dir, cell, seed)
      newest = results_files.latest(workdir) if is_finished(workdir) else None
      results = newest[1] if newest else None
      if results is None or sweep.metric not in results:
        continue
      values.append(float(results[sweep.metric]))
      seconds.append(read_json(workdir / DONE)["seconds"])
    rows.append({
        "cell": cell.label,
        "overrides": " ".join(f"{k}={flag_value(v)}" for k, v in cell.overrides.items()),
        "runs": f"{len(values)}/{len(sweep.seeds)}",
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
        "paper": cell.paper,
        "gflop_per_image": inference_gflop(get_config, sweep, cell),
        "train_minutes": statistics.fmean(seconds) / 60 if seconds else None})
  return rows


def number(value, digits=3):
  return "" if value is None else f"{value:.{digits}f}"


def write_results(sweep, rows, sweep_dir):
  """``results.md`` (Markdown, missing cells marked), ``results.csv`` and the figure
  ``results.png`` under ``sweep_dir``; returns the Markdown table."""
  sweep_dir = epath.Path(sweep_dir)
  sweep_dir.mkdir(parents=True, exist_ok=True)
  header = [f"# Sweep {sweep.name} (base variant {sweep.base}, metric {sweep.metric})", ""]
  if sweep.paper_table:
    header += [f"Paper: {sweep.paper_table}", ""]
  lines = header + ["| cell | overrides | runs | " + sweep.metric + " (mean +- std over seeds) "
                    "| paper | GFLOP / image | train min |", "|" + " --- |" * 7]
  for row in rows:
    measured = (f"{number(row['mean'])} +- {number(row['std'])}" if row["mean"] is not None
                else "missing")
    lines.append(f"| {row['cell']} | `{row['overrides']}` | {row['runs']} | {measured} | "
                 f"{number(row['paper'])} | {number(row['gflop_per_image'])} | "
                 f"{number(row['train_minutes'], 1)} |")
  (sweep_dir / "results.md").write_text("\n".join(lines) + "\n")
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  (sweep_dir / "results.csv").write_text(table.getvalue())
  plots.sweep_figure(sweep, rows, sweep_dir / "results.png")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  experiment = load_experiment(_CONFIG.value)
  try:
    sweep = experiment.get_sweep(_SWEEP.value)
    runs = sweep_lib.select(sweep.runs(), _CELLS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if _METRIC.value:
    sweep = dataclasses.replace(sweep, metric=_METRIC.value)
  extra_flags = [*([f"--coco_json_dir={_COCO_JSON_DIR.value}"] if _COCO_JSON_DIR.value else []),
                 *_TRAIN_FLAGS.value]
  failed = 0
  if not _COLLECT.value:
    for cell, seed in runs:
      workdir = run_dir(_SWEEP_DIR.value, cell, seed)
      if is_finished(workdir):
        logging.info("%s: finished, skipped", workdir)
        continue
      command = train_command(os.path.abspath(_CONFIG.value), sweep, cell, seed,
                              absolute(workdir), extra_flags)
      if _PRINT_COMMANDS.value:
        print(shlex.join(command))
      else:
        failed += not run_training(command, workdir)
  if not _PRINT_COMMANDS.value:
    rows = collect(sweep, _SWEEP_DIR.value, experiment.get_config)
    print(write_results(sweep, rows, _SWEEP_DIR.value))
  if failed:
    sys.exit(f"error: {failed} of {len(runs)} runs failed or stopped early; rerun the same "
             "command to retry or resume them")


def run():
  """The ``jaxdet-sweep`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
