"""jaxdet-speed-accuracy: each model's accuracy from its evaluation, its time per image from its
benchmark, one table and figure; times from different machines refused."""
import csv
import json
import os
import subprocess
import sys

import pytest

from jaxdet.runtime import REPO_ROOT as REPO


def write(path, value):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value))
  return str(path)


def benchmark(tmp_path, name, median_s, batch_size, devices="1 x cpu"):
  return write(tmp_path / f"{name}.json", {
      "inference": {"median_s": median_s}, "batch_size": batch_size, "image_size": 128,
      "devices": devices, "cpu": "2 x test CPU"})


def speed_accuracy(tmp_path, *models):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "speed_accuracy.py"),
                         *(f"--model={m}" for m in models), f"--out={tmp_path / 'fig' / 'sa'}"],
                        capture_output=True, text=True, timeout=300, cwd=REPO,
                        env={**os.environ, "PYTHONPATH": REPO})


def test_one_point_per_model_from_its_newest_evaluation_and_its_benchmark(tmp_path):
  workdir = tmp_path / "retinanet"
  write(workdir / "eval_step500.json", {"coco/AP": 0.1})
  write(workdir / "eval_step3000.json", {"coco/AP": 0.25})     # the newest, not the first
  ssd_eval = write(tmp_path / "ssd_eval.json", {"coco/AP": 0.12})
  result = speed_accuracy(tmp_path, f"RetinaNet={workdir},{benchmark(tmp_path, 'r', 0.5, 4)}",
                          f"SSD={ssd_eval},{benchmark(tmp_path, 's', 0.3, 16)}")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "fig" / "sa.csv")))
  assert [row["model"] for row in rows] == ["SSD", "RetinaNet"]      # fastest first
  assert float(rows[0]["ms_per_image"]) == pytest.approx(1000 * 0.3 / 16)
  assert float(rows[1]["ms_per_image"]) == pytest.approx(1000 * 0.5 / 4)
  assert float(rows[1]["metric"]) == 0.25 and float(rows[0]["metric"]) == 0.12
  assert "| RetinaNet | 0.250 | 125.00 | 128 | 4 |" in (tmp_path / "fig" / "sa.md").read_text()
  assert (tmp_path / "fig" / "sa.png").read_bytes()[:4] == b"\x89PNG"


def test_times_from_different_machines_or_without_inference_are_refused(tmp_path):
  results = write(tmp_path / "eval.json", {"coco/AP": 0.2})
  mixed = speed_accuracy(tmp_path, f"A={results},{benchmark(tmp_path, 'a', 0.1, 1)}",
                         f"B={results},{benchmark(tmp_path, 'b', 0.1, 1, '1 x NVIDIA H100')}")
  assert mixed.returncode != 0 and "ran on different devices" in mixed.stderr
  untimed = write(tmp_path / "train_only.json", {"batch_size": 1})
  assert "no inference timing" in speed_accuracy(tmp_path, f"A={results},{untimed}").stderr
  assert "want LABEL=RESULTS,BENCHMARK" in speed_accuracy(tmp_path, f"A={results}").stderr
