"""jaxdet-sweep end to end: commands per run, a worker's share, skipping finished runs,
resuming a stopped one, the provenance every run writes, and the table and figure beside the
paper's numbers."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from jaxdet.runtime import REPO_ROOT as REPO

EXPERIMENT = textwrap.dedent("""\
    from experiments import retinanet
    from jaxdet import sweep

    get_config = retinanet.get_config


    def get_sweep(name):
      return sweep.Sweep(name, "tiny_test", [
          sweep.Cell("untrained", {"train.total_steps": 0, "eval.metrics": ()}, paper=0.5),
          sweep.Cell("two_steps", {"train.total_steps": 2, "data.max_boxes": 8})],
          seeds=(0, 1), metric="coco/AP", paper_table="a test table")
    """)


def sweep_tool(tmp_path, *args):
  experiment = tmp_path / "experiment.py"
  experiment.write_text(EXPERIMENT)
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sweep.py"),
                         f"--config={experiment}", "--sweep=steps",
                         f"--sweep_dir={tmp_path / 'sweep'}", *args],
                        capture_output=True, text=True, timeout=600, cwd=REPO,
                        env={**os.environ, "PYTHONPATH": REPO})


def finish_by_hand(workdir, ap):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "eval_step2.json"), "w", encoding="utf-8") as f:
    json.dump({"coco/AP": ap}, f)
  with open(os.path.join(workdir, "sweep_run.json"), "w", encoding="utf-8") as f:
    json.dump({"command": "by hand", "seconds": 60.0}, f)


def test_print_commands_gives_one_training_command_per_run(tmp_path):
  out = sweep_tool(tmp_path, "--print_commands").stdout.splitlines()
  assert len(out) == 4
  assert all("-m jaxdet.tools.train" in line and ":tiny_test" in line for line in out)
  assert "--config.seed=1" in out[1] and "--config.train.total_steps=0" in out[1]
  assert "--config.eval.metrics=()" in out[1]
  assert "--config.data.max_boxes=8" in out[3]
  unknown = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sweep.py"),
                            "--config=experiments/ssd.py", "--sweep=nope", "--sweep_dir=x"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
  assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
  assert "unknown SSD sweep 'nope'; choose from ('table2_components',)" in unknown.stderr
  share = sweep_tool(tmp_path, "--print_commands", "--cells=2/2").stdout.splitlines()
  assert share == [out[1], out[3]]
  passed = sweep_tool(tmp_path, "--print_commands", "--train_flag=--multihost",
                      "--train_flag=--config.data.data_dir=gs://b/tfds").stdout.splitlines()
  for line, original in zip(passed, out, strict=True):    # after the seed, before the cell's
    seed = re.search(r"--config\.seed=\d", original).group(0)
    assert line == original.replace(seed, f"{seed} --multihost --config.data.data_dir=gs://b/tfds")


def test_finished_runs_are_tabulated_beside_the_paper_and_missing_cells_marked(tmp_path):
  sweep_dir = tmp_path / "sweep"
  finish_by_hand(str(sweep_dir / "two_steps" / "seed0"), 0.3)
  finish_by_hand(str(sweep_dir / "two_steps" / "seed1"), 0.5)
  result = sweep_tool(tmp_path, "--collect")
  assert result.returncode == 0, result.stderr[-3000:]
  assert not (sweep_dir / "untrained").exists()                 # --collect trains nothing
  rows = {row["cell"]: row for row in csv.DictReader(open(sweep_dir / "results.csv"))}
  assert rows["untrained"]["runs"] == "0/2" and float(rows["untrained"]["paper"]) == 0.5
  assert rows["two_steps"]["runs"] == "2/2"
  assert float(rows["two_steps"]["mean"]) == pytest.approx(0.4)
  assert float(rows["two_steps"]["std"]) == pytest.approx(0.1414213562)   # sample std of .3, .5
  assert float(rows["two_steps"]["train_minutes"]) == pytest.approx(1.0)
  assert float(rows["two_steps"]["gflop_per_image"]) > 0
  table = (sweep_dir / "results.md").read_text()
  assert "Paper: a test table" in table and "| 0/2 | missing | 0.500 |" in table
  assert "| two_steps | `train.total_steps=2 data.max_boxes=8` | 2/2 | 0.400 +- 0.141 |" in table
  assert (sweep_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
  other = sweep_tool(tmp_path, "--collect", "--metric=coco/AP50")     # not in these results
  assert "coco/AP50 (mean +- std" in other.stdout and "| 0/2 | missing |" in other.stdout
  again = sweep_tool(tmp_path, "--print_commands")
  assert "two_steps/seed" not in again.stdout and "untrained/seed1" in again.stdout


RESUMABLE = textwrap.dedent("""\
    from experiments import retinanet
    from jaxdet import sweep

    get_config = retinanet.get_config


    def get_sweep(name):
      return sweep.Sweep(name, "tiny_test", [
          sweep.Cell("untrained", {"train.total_steps": 0}),
          sweep.Cell("six_steps", {"train.total_steps": 6})], seeds=(0,))
    """)


def start_sweep(tmp_path, scenes_dir, *args):
  experiment = tmp_path / "resumable.py"
  experiment.write_text(RESUMABLE)
  return subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "sweep.py"),
                           f"--config={experiment}", "--sweep=resumable",
                           f"--sweep_dir={tmp_path / 'sweep'}", f"--coco_json_dir={scenes_dir}",
                           *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})


def finish(process):
  output, _ = process.communicate(timeout=600)
  return process.returncode, output


def stop_its_training_once_compiling(process):
  """SIGTERM to the sweep's training process (as a scheduler preempting it) while it compiles
  its first step: the run stops cleanly after that step, before its last step's evaluation."""
  lines = []
  for line in process.stdout:
    lines.append(line)
    if "compiling the train step" in line:
      children = open(f"/proc/{process.pid}/task/{process.pid}/children").read().split()
      os.kill(int(children[0]), signal.SIGTERM)
      break
  returncode, output = finish(process)
  return returncode, "".join(lines) + output


def test_a_stopped_sweep_resumes_its_half_finished_run_and_two_shares_make_the_whole(
    tmp_path, scenes_dir):
  sweep_dir = tmp_path / "sweep"
  six, untrained = sweep_dir / "six_steps" / "seed0", sweep_dir / "untrained" / "seed0"
  returncode, output = stop_its_training_once_compiling(
      start_sweep(tmp_path, scenes_dir, "--cells=six_steps"))
  stopped_at = re.search(r"stopped at step (\d+);", output)
  assert returncode == 1 and stopped_at, output[-3000:]
  assert "stopped before its last step" in output and "1 of 1 runs failed or stopped" in output
  assert not (six / "sweep_run.json").exists()
  assert (six / "checkpoints" / stopped_at.group(1)).is_dir()

  returncode, output = finish(start_sweep(tmp_path, scenes_dir, "--cells=1/2"))
  assert returncode == 0, output[-3000:]
  assert (untrained / "sweep_run.json").exists() and not (six / "sweep_run.json").exists()
  returncode, output = finish(start_sweep(tmp_path, scenes_dir, "--cells=2/2"))
  assert returncode == 0, output[-3000:]
  assert re.search(rf"resumed from .* at step {stopped_at.group(1)} ", output)   # not scratch
  assert (six / "sweep_run.json").exists() and (six / "eval_step6.json").exists()

  returncode, output = finish(start_sweep(tmp_path, scenes_dir))        # the whole: all done
  assert returncode == 0 and output.count("finished, skipped") == 2, output[-3000:]
  assert "compiling the train step" not in output
  rows = {row["cell"]: row for row in csv.DictReader(open(sweep_dir / "results.csv"))}
  for cell, workdir, step in (("untrained", untrained, 0), ("six_steps", six, 6)):
    evaluation = json.loads((workdir / f"eval_step{step}.json").read_text())
    assert float(rows[cell]["mean"]) == pytest.approx(evaluation["coco/AP"])
    assert rows[cell]["runs"] == "1/1" and float(rows[cell]["std"]) == 0.0
  (start, resumed) = json.loads((six / "run_info.json").read_text())   # both starts recorded
  assert start["config"] == resumed["config"] and start["commit"] and start["versions"]["jax"]
  assert "tools/train.py" in resumed["command"]
  assert (sweep_dir / "results.png").exists()
