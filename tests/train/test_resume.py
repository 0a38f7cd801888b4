"""Interrupted runs (kill -9, Ctrl-C) resume to exactly the parameters of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from jaxdet.evaluation import results_files
from jaxdet.runtime import REPO_ROOT as REPO
from jaxdet.train import checkpoint
from jaxdet.train import loop
from jaxdet.train import run_info
from tests.train.helpers import tiny_config

TOTAL = 24


def train_command(scenes_dir, workdir, total_steps):
  return [sys.executable, os.path.join(REPO, "scripts", "train.py"),
          "--config=" + os.path.join(REPO, "experiments", "retinanet.py") + ":tiny_test",
          f"--coco_json_dir={scenes_dir}", f"--workdir={workdir}",
          f"--config.train.total_steps={total_steps}", "--config.train.checkpoint_every=2",
          "--config.train.log_every=1"]


def long_run_past_checkpoint(scenes_dir, workdir, step):
  """A training subprocess of 10,000 steps (its step schedule equals the 24-step run's: decays
  are at absolute steps), returned once its checkpoint ``step`` is complete."""
  process = subprocess.Popen(train_command(scenes_dir, workdir, 10_000), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  done = os.path.join(checkpoint.checkpoint_dir(workdir), str(step))
  wait_for(lambda: os.path.isdir(done), process)
  return process


def wait_for(predicate, process, timeout=240):
  start = time.time()
  while not predicate():
    if process.poll() is not None:
      raise AssertionError(f"training exited early:\n{process.stdout.read()}")
    if time.time() - start > timeout:
      process.kill()
      raise AssertionError("timed out")
    time.sleep(0.05)


def resuming_config(config):
  """``config`` allowed to resume the 10,000-step subprocess runs (same schedule, see
  :func:`long_run_past_checkpoint`): only ``total_steps`` differs."""
  resuming = config.copy_and_resolve_references()
  resuming.train.allow_config_change = "train.total_steps"
  return resuming


def assert_same_state(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.params), jax.device_get(b.params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.opt_state),
               jax.device_get(b.opt_state))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.model_state),
               jax.device_get(b.model_state))


@pytest.fixture(scope="module")
def uninterrupted(scenes_dir, tmp_path_factory):
  config = tiny_config(scenes_dir, total_steps=TOTAL, checkpoint_every=2)
  _, state, *_ = loop.train(config, str(tmp_path_factory.mktemp("uninterrupted")))
  return config, state


def test_kill_9_then_resume_is_exact(scenes_dir, tmp_path, uninterrupted):
  config, reference = uninterrupted
  workdir = str(tmp_path / "killed")
  process = long_run_past_checkpoint(scenes_dir, workdir, 4)
  process.send_signal(signal.SIGKILL)
  process.wait()
  _, resumed, *_ = loop.train(resuming_config(config), workdir)
  assert int(resumed.step) == TOTAL
  assert_same_state(reference, resumed)


def test_ctrl_c_saves_and_resume_is_exact(scenes_dir, tmp_path, uninterrupted):
  config, reference = uninterrupted
  workdir = str(tmp_path / "interrupted")
  process = long_run_past_checkpoint(scenes_dir, workdir, 2)
  process.send_signal(signal.SIGINT)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output
  stopped = [line for line in output.splitlines() if "stopped at step" in line]
  assert stopped, output
  step = int(stopped[0].split("stopped at step ")[1].split(";")[0])
  assert 2 <= step < TOTAL
  assert os.path.isdir(os.path.join(checkpoint.checkpoint_dir(workdir), str(step)))
  _, resumed, *_ = loop.train(resuming_config(config), workdir)
  assert_same_state(reference, resumed)


def started_run(workdir, total_steps, metrics=("coco",)):
  """A workdir as a run of ``total_steps`` leaves it at its start: run_info.json only."""
  os.makedirs(workdir)
  config = {"train": {"total_steps": total_steps}, "eval": {"metrics": list(metrics)}}
  with open(os.path.join(workdir, run_info.RUN_INFO), "w", encoding="utf-8") as f:
    json.dump([{"config": config}], f)


def test_a_run_has_finished_when_it_committed_its_last_step_and_evaluated_there(tmp_path):
  workdir = str(tmp_path / "run")
  started_run(workdir, 4)
  os.makedirs(os.path.join(checkpoint.checkpoint_dir(workdir), "2"))  # stopped by a signal
  start = time.time()
  assert not run_info.reached_last_step(workdir, wait_s=30)
  assert time.time() - start < 5                    # a stopped run is not waited for
  os.makedirs(os.path.join(checkpoint.checkpoint_dir(workdir), "4"))
  assert not run_info.reached_last_step(workdir, wait_s=0.2, poll_s=0.05)   # no evaluation came
  results_files.path(workdir, 4).write_text('{"coco/AP": ')               # being written
  assert not run_info.reached_last_step(workdir, wait_s=0.2, poll_s=0.05)
  # Process 0 writes the evaluation after the other hosts have exited: it is awaited.
  writer = threading.Timer(0.3, lambda: results_files.write(workdir, 4, {"coco/AP": 0.1}))
  writer.start()
  assert run_info.reached_last_step(workdir, wait_s=30, poll_s=0.05)
  writer.join()
  no_metrics = str(tmp_path / "no_metrics")
  started_run(no_metrics, 0, metrics=())
  assert run_info.reached_last_step(no_metrics, wait_s=0)
  assert not run_info.reached_last_step(str(tmp_path / "never_started"), wait_s=0)
