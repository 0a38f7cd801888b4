"""The command-line scripts, end to end, as a user runs them."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from experiments import ssd
from jaxdet.runtime import REPO_ROOT as REPO
from jaxdet.train import loop
from tests.train.helpers import tiny_config

TINY = os.path.join(REPO, "experiments", "retinanet.py") + ":tiny_test"
TINY_YOLO_V3 = os.path.join(REPO, "experiments", "yolo_v3.py") + ":tiny_test"


def run(script, *args, env=None, check=True):
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
  if check:
    assert result.returncode == 0, result.stdout + result.stderr
  return result


@pytest.fixture(scope="module")
def workdir(scenes_dir, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("trained"))
  loop.train(tiny_config(scenes_dir, total_steps=2, checkpoint_every=2), path)
  return path


def test_evaluate_prints_coco_and_voc_tables(workdir, scenes_dir):
  out = run("evaluate.py", f"--workdir={workdir}", "--metrics=coco,voc07,voc12").stdout
  assert "step 2 on coco_json" in out
  assert "Average Precision  (AP) @[ IoU=0.50:0.95" in out or "no detections" in out
  assert "VOC07 mAP@0.5" in out and "VOC12 mAP@0.5" in out
  results = json.loads(out[out.index("{"):out.rindex("}") + 1])
  assert set(results) >= {"coco/AP", "coco/AP50", "voc07/mAP", "voc12/mAP"}


def test_predict_writes_pngs_and_skips_unreadable_files(workdir, scenes_dir, tmp_path):
  Image.fromarray(np.full((90, 120, 3), 200, np.uint8)).save(tmp_path / "photo.jpg")
  (tmp_path / "broken.png").write_bytes(b"not an image")
  out_dir = tmp_path / "out"
  out = run("predict.py", f"--workdir={workdir}", f"--output_dir={out_dir}",
            "--score_threshold=0.0", str(tmp_path / "photo.jpg"), str(tmp_path / "broken.png"),
            os.path.join(scenes_dir, "val", "val_0000.png")).stdout
  assert "skipped" in out and "broken.png" in out
  with Image.open(out_dir / "photo.png") as image:
    assert image.size == (120, 90)
  assert (out_dir / "val_0000.png").exists()


def test_ssd_checkpoints_evaluate_and_predict_unchanged(scenes_dir, tmp_path):
  workdir = str(tmp_path / "ssd")
  loop.train(tiny_config(scenes_dir, ssd, total_steps=2, checkpoint_every=2), workdir)
  out = run("evaluate.py", f"--workdir={workdir}", "--metrics=voc07").stdout
  assert "step 2 on coco_json" in out and "VOC07 mAP@0.5" in out
  out_dir = tmp_path / "out"
  run("predict.py", f"--workdir={workdir}", f"--output_dir={out_dir}", "--score_threshold=0.0",
      os.path.join(scenes_dir, "val", "val_0000.png"))
  assert (out_dir / "val_0000.png").exists()


def test_train_rejects_a_mistyped_config_key():
  result = run("train.py", f"--config={TINY}", "--config.train.batch_sise=4", check=False)
  assert result.returncode != 0
  assert "batch_sise" in result.stderr and "batch_size" in result.stderr


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  result = run("train.py", "--config=" + TINY.replace("tiny_test", "r50_fpn_coco_1x"),
               f"--config.data.data_dir={tmp_path}", f"--workdir={tmp_path / 'w'}", check=False)
  assert result.returncode != 0
  assert "tfds build coco/2017" in result.stderr and "array_record" in result.stderr
  checkpoints = tmp_path / "w" / "checkpoints"
  assert not checkpoints.exists() or not os.listdir(checkpoints)


# RetinaNet (every part) and YOLOv3 (another head and loss): the benchmark reaches each family
# through the Detector interface alone, so two families show it imports no TensorFlow.
@pytest.mark.parametrize("config", [TINY, TINY_YOLO_V3], ids=["retinanet", "yolo_v3"])
def test_benchmark_runs_without_tensorflow(tmp_path, config):
  fake = tmp_path / "no_tf" / "tensorflow"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text("raise ImportError('benchmark.py must not import TensorFlow')")
  out_json = tmp_path / "bench.json"
  # Every part once (RetinaNet's, with the family-independent cost count); the other families
  # their model's parts only.
  every_part = config == TINY
  timed = ("train", "inference", "loss", "nms", "allreduce") if every_part else ("train",
                                                                                "inference")
  run("benchmark.py", f"--config={config}", "--image_size=64", "--batch_size=8", "--steps=1",
      "--nms_candidates=300", f"--json={out_json}",
      "--parts=" + ",".join(timed + (("cost",) if every_part else ())),
      env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{REPO}"})
  results = json.loads(out_json.read_text())
  for part in timed:
    assert results[part]["median_s"] > 0
  if every_part:
    cost = results["cost"]
    assert cost["parameters"] > 0 and cost["all_reduces_in_step"] > 0  # 8 devices
    # A train step costs about three forward passes (forward, input and weight gradients).
    assert 2.5 < cost["train_gflop_per_image"] / cost["forward_gflop_per_image"] < 3.5


def test_benchmark_times_the_wordtree_alone(tmp_path):
  out_json = tmp_path / "wordtree.json"
  run("benchmark.py", "--parts=wordtree", "--wordtree_nodes=300", "--batch_size=1", "--steps=1",
      f"--json={out_json}")
  results = json.loads(out_json.read_text())
  assert results["nodes"] == 300 and results["batch_size"] == 1
  for part in ("flat_softmax", "wordtree_softmax", "wordtree_loss_and_grad"):
    assert results[part]["median_s"] > 0       # the same fields as every other part
  assert results["commit"] and results["command"].startswith("python ")


@pytest.mark.parametrize("start", ["entry_point", "script"])   # python -m: as the entry point
def test_a_tool_shows_its_usage_and_flags_however_started(start):
  command = {"entry_point": [os.path.join(os.path.dirname(sys.executable),
                                          "jaxdet-kmeans-anchors")],
             "script": [sys.executable, os.path.join(REPO, "scripts", "kmeans_anchors.py")]}[start]
  result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
  assert result.stdout.startswith("Anchor priors for the YOLO families")
  for flag in ("--config", "--coco_json_dir", "--k", "--output"):
    assert f"  {flag}:" in result.stdout
