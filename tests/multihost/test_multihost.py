"""Multi-host runs, for real: 2 local processes with 2 CPU devices each form one 4-device mesh
through JAX's distributed runtime (gloo collectives), launched with the same flags a user gives
on 2 hosts, and compared with 1 process of 4 devices.

Tolerances: 2 processes x 2 devices and 1 process x 4 devices run the same programs on the same
global batches, but their cross-device sums (gradient all-reduce, batch-norm statistics, the
positives count) go through different collective implementations (gloo over TCP vs in-process),
whose float32 summation orders differ: ~1e-7 relative per reduction, which a few SGD steps carry
to ~1e-6. We allow rtol 1e-4 / atol 1e-6 -- far below what a per-host reduction or a wrong data
shard changes (tested below to move the loss by >1%). The same 2-process job killed and resumed
runs the identical programs and collectives as its uninterrupted twin, so it must match bit for
bit.
"""
import json
import os
import re

import jax
import numpy as np
import pytest

from jaxdet import detectors
from jaxdet import runtime
from jaxdet.data import sanitize
from jaxdet.data import sources
from jaxdet.evaluation import evaluator
from jaxdet.train import checkpoint
from jaxdet.train import loop
from jaxdet.train import state as state_lib
from tests.multihost import reductions
from tests.multihost.launcher import Job
from tests.train import helpers

TOTAL = 6
TIMEOUT_S = 300


# Score everything, so that a six-step model has detections to evaluate; evaluate in batches of
# 8, so that each of 2 hosts detects 4 of the 8 validation images.
OVERRIDES = {"model.decode.score_threshold": 0.0, "eval.batch_size": 8,
             "eval.metrics": ("coco", "voc07")}


def train_args(scenes_dir, workdir, total_steps=TOTAL, evaluate=True):
  overrides = {**OVERRIDES, "train.total_steps": total_steps,
               "eval.metrics": OVERRIDES["eval.metrics"] if evaluate else ()}
  return ["--config=experiments/retinanet.py:tiny_test", f"--coco_json_dir={scenes_dir}",
          f"--workdir={workdir}", *(f"--config.{k}={v!r}" for k, v in overrides.items())]


def trained_params(workdir, step=None):
  """``(params, model_state, step)`` of a checkpoint, as numpy."""
  state, step = checkpoint.restore_arrays(workdir, step)
  return state["params"], state["model_state"], step


def train_config(scenes_dir):
  """``train_args``' config, for training in this process."""
  config = helpers.tiny_config(scenes_dir)
  config.update_from_flattened_dict(OVERRIDES)
  return config


@pytest.fixture(scope="module")
def runs(scenes_dir, tmp_path_factory):
  """The same training as 2 processes x 2 devices (``scripts/train.py`` with the multi-host
  flags, evaluating at the end) and, meanwhile, as 1 process x 4 devices (this one):
  ``{"one": workdir, "two": workdir, "two_logs": [process 0, process 1], "root": dir}``."""
  root = tmp_path_factory.mktemp("multihost")
  one, two = str(root / "one_process"), str(root / "two_processes")
  with Job("scripts/train.py", train_args(scenes_dir, two), 2, 2, str(root / "logs")) as double:
    loop.train(train_config(scenes_dir), one, devices=jax.devices()[:4])
    double.wait(TIMEOUT_S)
    return {"one": one, "two": two, "two_logs": [double.output(0), double.output(1)],
            "root": root}


def test_two_processes_train_like_one_process_of_as_many_devices(runs):
  one_params, one_stats, one_step = trained_params(runs["one"])
  two_params, two_stats, two_step = trained_params(runs["two"])
  assert one_step == two_step == TOTAL
  for a, b in ((one_params, two_params), (one_stats, two_stats)):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a, b)
  earlier, _, _ = trained_params(runs["one"], step=2)
  moved = jax.tree.map(lambda x, y: np.abs(x - y).max(), earlier, one_params)
  assert max(jax.tree.leaves(moved)) > 1e-3  # training moves the weights: the check has teeth


def test_only_process_0_logs_progress_and_the_table(runs):
  leader, follower = runs["two_logs"]
  assert re.search(r"step 6/6 \| .* steps/s \| ETA", leader), leader
  assert "COCO box AP" in leader and "VOC07 mAP" in leader
  assert "step 6/6" not in follower and "COCO box AP" not in follower, follower


def test_sharded_evaluation_equals_single_process(runs, scenes_dir):
  """The 2-process job's final evaluation (each host detects its share, process 0 scores)
  against this process evaluating the same checkpoint alone."""
  with open(os.path.join(runs["two"], f"eval_step{TOTAL}.json"), encoding="utf-8") as f:
    sharded = json.load(f)
  config, _, detector, state, mesh = runtime.load_trained(runs["two"])
  source = sources.build_source(config.data.eval, None, scenes_dir)
  predict = state_lib.predict_fn(detector, state.eval_variables(),
                                 tuple(config.data.image_size), mesh)
  single, _ = evaluator.evaluate(predict, source, config, sanitize.DataIssues())
  assert single["coco/AP50"] > 0  # detections exist, so the comparison means something
  assert sorted(sharded) == sorted(single) and "voc07/mAP" in single
  for key, value in single.items():
    assert sharded[key] == pytest.approx(value, abs=1e-6), key


def test_killed_host_stops_the_job_and_a_restart_resumes_exactly(runs, scenes_dir, tmp_path):
  workdir, logs = str(tmp_path / "killed"), str(runs["root"] / "logs")
  checkpoints = checkpoint.checkpoint_dir(workdir)
  # A long run has the 6-step run's learning rates: its schedule's steps are absolute.
  with Job("scripts/train.py", train_args(scenes_dir, workdir, 10_000, evaluate=False), 2, 2,
           logs, heartbeat_timeout_s=10) as job:
    job.wait_until(lambda: os.path.isdir(os.path.join(checkpoints, "2")), TIMEOUT_S)
    job.kill(1)
    # The survivor must not hang in a collective: the coordination service misses process 1's
    # heartbeats (10 s here) and stops it with an error.
    codes = job.wait(60, expect_success=False)
    assert codes[0] != 0
    assert "heartbeat" in job.output(0) or "failed" in job.output(0), job.output(0)
  saved = sorted(int(name) for name in os.listdir(checkpoints) if name.isdigit())
  assert saved and saved[-1] < TOTAL, saved  # killed before the end: a resume is needed
  restart = train_args(scenes_dir, workdir, evaluate=False) + [
      "--config.train.allow_config_change=train.total_steps"]   # the same schedule, shorter
  with Job("scripts/train.py", restart, 2, 2, logs) as job:
    job.wait(TIMEOUT_S)
    resumed = re.search(r"resumed from .* at step (\d+)", job.output(0))
    assert resumed and int(resumed.group(1)) == saved[-1], job.output(0)
    assert f"step {TOTAL}/{TOTAL}" in job.output(0)
  resumed_params, resumed_stats, step = trained_params(workdir)
  params, stats, _ = trained_params(runs["two"])
  assert step == TOTAL
  jax.tree.map(np.testing.assert_array_equal, resumed_params, params)
  jax.tree.map(np.testing.assert_array_equal, resumed_stats, stats)


def test_loss_normaliser_and_batch_norm_statistics_are_global(tmp_path):
  output = str(tmp_path / "reductions.npz")
  with Job("tests/multihost/reductions_worker.py", [f"--output={output}"], 2, 2,
           str(tmp_path / "logs")) as job:
    job.wait(TIMEOUT_S)
  sharded = np.load(output)
  assert int(sharded["devices"]) == 4

  batch, config = reductions.global_batch_and_config()
  detector = detectors.build(config.model)
  variables = detector.init(jax.random.PRNGKey(0), config.data.image_size)
  forward = jax.jit(lambda b: reductions.forward_and_loss(detector, variables, b))
  compute = lambda b: jax.device_get(forward(jax.device_put(b, jax.devices()[0])))  # noqa: E731
  loss, num_positive, stats = compute(batch)
  assert num_positive > 0 and float(sharded["num_positive"]) == num_positive
  np.testing.assert_allclose(sharded["loss"], loss, rtol=1e-5)
  flat = reductions.flat_statistics(stats)
  assert flat and {f"stats/{k}" for k in flat} == {k for k in sharded.files if "/" in k}
  for key, value in flat.items():
    np.testing.assert_allclose(sharded[f"stats/{key}"], value, rtol=1e-5, atol=1e-6)

  # What per-host reductions would give instead: process 0's half has every positive and
  # process 1's none, so a per-host normaliser or per-host statistics differ clearly.
  half = {k: v[:reductions.BATCH // 2] for k, v in batch.items()}
  half_loss, half_positive, half_stats = compute(half)
  assert half_positive == num_positive
  other_half_loss = compute({k: v[reductions.BATCH // 2:] for k, v in batch.items()})[0]
  per_host_loss = (half_loss + other_half_loss) / 2
  assert abs(per_host_loss - loss) > 0.01 * abs(loss)
  assert any(not np.allclose(a, b, rtol=1e-3) for a, b in
             zip(jax.tree.leaves(half_stats), jax.tree.leaves(stats)))
