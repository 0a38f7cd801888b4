"""BENCHMARKS.md's table is generated from benchmarks/results/*.json and kept current."""
import json
import os
import subprocess
import sys

from jaxdet.runtime import REPO_ROOT
from scripts import benchmark_report

RUN = {"family": "ssd", "backbone": None, "image_size": 300, "batch_size": 4,
       "dtype": "float32", "backend": "cpu_fast", "train": {"median_s": 4.5698},
       "inference": {"median_s": 1.25}, "loss": {"median_s": 0.03125},
       "command": "python scripts/benchmark.py --config=experiments/ssd.py:ssd300_voc",
       "commit": "abc1234", "devices": "1 x cpu", "cpu": "2 x AMD EPYC",
       "date": "2026-12-07 06:46 UTC", "host_peak_rss_gib": 2.8656}


def test_a_run_becomes_a_row_of_hand_checked_cells(tmp_path):
  with open(tmp_path / "run.json", "w", encoding="utf-8") as f:
    json.dump(RUN, f)
  document = f"# B\n{benchmark_report.BEGIN}\nold\n{benchmark_report.END}\ntail\n"
  rendered = benchmark_report.render(document, benchmark_report.load_runs(str(tmp_path)))
  row = next(line for line in rendered.splitlines() if line.startswith("| 1 |"))
  assert row == ("| 1 | ssd, 300x300, batch 4, float32, cpu_fast | 2026-12-07 06:46 UTC | "
                 "`abc1234` | 1 x cpu (2 x AMD EPYC) | 4,569.8 | 1,250.0 | 31.2 |  | 2.9 |")
  assert "1. `python scripts/benchmark.py --config=experiments/ssd.py:ssd300_voc` (run.json)" \
      in rendered
  assert "old" not in rendered and rendered.endswith("tail\n")


def test_benchmarks_md_is_current():
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts",
                                                        "benchmark_report.py"), "--check"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
