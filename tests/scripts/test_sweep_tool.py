"""jaxdet-sweep end to end: commands per run, a worker's share, skipping finished runs, the
provenance every run writes, and the table beside the paper's numbers."""
import csv
import json
import os
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
  share = sweep_tool(tmp_path, "--print_commands", "--cells=2/2").stdout.splitlines()
  assert share == [out[1], out[3]]


def test_a_sweep_runs_its_share_skips_finished_runs_and_tabulates(tmp_path, scenes_dir):
  sweep_dir = tmp_path / "sweep"
  finish_by_hand(str(sweep_dir / "two_steps" / "seed0"), 0.3)
  finish_by_hand(str(sweep_dir / "two_steps" / "seed1"), 0.5)
  result = sweep_tool(tmp_path, "--cells=1/4", f"--coco_json_dir={scenes_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  run = sweep_dir / "untrained" / "seed0"        # a real run through the training tool
  assert (run / "sweep_run.json").exists() and not list(run.glob("eval_step*.json"))
  assert not (sweep_dir / "untrained" / "seed1").exists()     # another worker's share
  (start,) = json.loads((run / "run_info.json").read_text())
  assert start["config"]["seed"] == 0 and start["config"]["train"]["total_steps"] == 0
  assert start["config"]["eval"]["metrics"] == []
  assert start["commit"] and start["versions"]["jax"] and "tools/train.py" in start["command"]
  rows = {row["cell"]: row for row in csv.DictReader(open(sweep_dir / "results.csv"))}
  assert rows["untrained"]["runs"] == "0/2" and float(rows["untrained"]["paper"]) == 0.5
  assert rows["two_steps"]["runs"] == "2/2"
  assert float(rows["two_steps"]["mean"]) == pytest.approx(0.4)
  assert float(rows["two_steps"]["std"]) == pytest.approx(0.1414213562)   # sample std of .3, .5
  table = (sweep_dir / "results.md").read_text()
  assert "Paper: a test table" in table and "| 0/2 | missing | 0.500 |" in table
  assert "| two_steps | `train.total_steps=2 data.max_boxes=8` | 2/2 | 0.400 +- 0.141 |" in table
  again = sweep_tool(tmp_path, "--cells=untrained", "--print_commands")
  assert "untrained/seed0" not in again.stdout and "untrained/seed1" in again.stdout
