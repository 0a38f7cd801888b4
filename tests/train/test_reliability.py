"""What a preempted pod's run meets: a failed save, a damaged checkpoint, a changed config, a
second run on the same workdir, SIGTERM; each reproduced, then the run's answer checked."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments import retinanet
from experiments import ssd
from experiments import yolo_v2
from jaxdet import errors
from jaxdet.train import checkpoint
from jaxdet.train import loop
from jaxdet.train import resume
from jaxdet.train import workdir_lock
from tests.train.helpers import tiny_config
from tests.train.test_resume import assert_same_state
from tests.train.test_resume import train_command
from tests.train.test_resume import wait_for

TOTAL = 12


@pytest.fixture(scope="module")
def finished(scenes_dir, tmp_path_factory):
  """An uninterrupted 12-step run with checkpoints at 4, 8 and 12: ``(config, workdir, state)``."""
  config = tiny_config(scenes_dir, total_steps=TOTAL, checkpoint_every=4, log_every=4)
  workdir = str(tmp_path_factory.mktemp("finished"))
  _, state, *_ = loop.train(config, workdir)
  return config, workdir, state


def copy_of(workdir, tmp_path):
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  return copy


def last_logged_step(output):
  return max(int(s) for s in re.findall(r"step (\d+)/\d+ \|", output))


# ------------------------------------------------------------------------------ Failed saves.


def mount_tmpfs(path, size):
  os.makedirs(path)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")


def fill(directory):
  """Writes zeros into ``directory`` until its file system is full."""
  with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:  # nothing left to flush
    try:
      while True:
        f.write(bytes(1 << 20))
    except OSError:
      pass


def test_a_failed_save_stops_the_run_at_the_next_check_and_the_rerun_resumes(scenes_dir,
                                                                            tmp_path):
  mount = str(tmp_path / "small_disk")
  mount_tmpfs(mount, "64m")
  try:
    workdir = os.path.join(mount, "run")
    command = [*train_command(scenes_dir, workdir, 10_000)[:-2],
               "--config.train.checkpoint_every=4", "--config.train.log_every=4"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    wait_for(lambda: os.path.isdir(os.path.join(checkpoint.checkpoint_dir(workdir), "4")),
             process)
    fill(mount)                       # the save at step 8 finds the disk full
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("error: saving a checkpoint in"), output
    assert "No space left on device" in last_line, last_line
    assert "Last committed step: 4" in last_line, last_line
    assert workdir in last_line
    assert last_logged_step(output) <= 12, output     # stopped at the first check after step 8
    assert "Exception ignored" not in output          # no interpreter-shutdown noise
    os.remove(os.path.join(mount, "filler"))
    assert checkpoint.committed_steps(workdir) == [4]
    config = tiny_config(scenes_dir, total_steps=6, checkpoint_every=4, log_every=4,
                         allow_config_change="train.total_steps")
    _, state, *_ = loop.train(config, workdir)       # resumes from the intact step 4
    assert int(state.step) == 6
    assert checkpoint.committed_steps(workdir) == [4, 6]
  finally:
    subprocess.run(["umount", "-l", mount], check=False)


def raised_from(outer, inner):
  try:
    try:
      raise inner
    except Exception as e:
      raise outer from e
  except Exception as e:
    return e


def test_a_save_error_names_the_file_systems_reason_however_orbax_wraps_it():
  long_path = "/scratch/" + "a" * 400
  wrapped = raised_from(ValueError(f"Encountered error while writing {long_path}"),
                        OSError(28, "No space left on device"))
  assert "No space left on device" in checkpoint.short_error(wrapped)
  tensorstore_like = ValueError(f"Error writing \"{long_path}\": No space left on device")
  assert checkpoint.short_error(tensorstore_like).endswith("... [No space left on device]")
  plain = RuntimeError("commit timed out\nsecond line")
  assert checkpoint.short_error(plain) == "RuntimeError: commit timed out"
  looped = RuntimeError("a")
  looped.__context__ = looped
  assert checkpoint.short_error(looped) == "RuntimeError: a"


# --------------------------------------------------------------------- Damaged checkpoints.


def largest_file(directory):
  files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_latest_checkpoint_is_set_aside_and_training_ends_identical(
    finished, tmp_path, damage, caplog):
  config, workdir, reference = finished
  copy = copy_of(workdir, tmp_path)
  latest = os.path.join(checkpoint.checkpoint_dir(copy), str(TOTAL))
  victim = largest_file(os.path.join(latest, "state"))
  if damage == "truncate":
    os.truncate(victim, os.path.getsize(victim) // 2)
  else:
    os.remove(victim)
  with caplog.at_level("INFO", logger="jaxdet"):
    _, resumed, *_ = loop.train(config, copy)
  assert f"checkpoint step {TOTAL} in" in caplog.text and "is damaged" in caplog.text
  assert "resumed from" in caplog.text and "at step 8" in caplog.text
  assert os.path.isdir(latest + ".corrupt")                     # kept, out of Orbax's sight
  assert checkpoint.committed_steps(copy) == [4, 8, 12]
  assert_same_state(reference, resumed)


def test_evaluate_names_a_damaged_step_and_the_steps_there_are(finished, tmp_path):
  _, workdir, _ = finished
  copy = copy_of(workdir, tmp_path)
  os.remove(largest_file(os.path.join(checkpoint.checkpoint_dir(copy), str(TOTAL), "state")))
  from jaxdet import runtime  # pylint: disable=import-outside-toplevel
  with pytest.raises(checkpoint.DamagedCheckpointError,
                     match=r"step 12 of .* its steps: \[4, 8, 12\]; choose another"):
    runtime.load_trained(copy)
  *_, state, _ = runtime.load_trained(copy, step=8)
  assert int(state.step) == 8
  with pytest.raises(FileNotFoundError, match=r"no checkpoint step 5 .* \[4, 8, 12\]"):
    runtime.load_trained(copy, step=5)


# ------------------------------------------------------------------------- Changed configs.


def test_differences_are_listed_key_by_key():
  saved = {"train": {"total_steps": 10, "schedule": {"base_lr": 0.1}}, "eval": {"metrics": []}}
  now = {"train": {"total_steps": 20, "schedule": {"base_lr": 0.1}, "new": 1},
         "eval": {"metrics": ["coco"]}}
  assert resume.differences(saved, now) == [("eval.metrics", [], ["coco"]),
                                            ("train.new", resume.ABSENT, 1),
                                            ("train.total_steps", 10, 20)]


@pytest.mark.parametrize("experiment", [ssd, yolo_v2], ids=["ssd", "yolo_v2"])
def test_a_config_saved_with_flat_augmentation_keys_resumes_unchanged(experiment, tmp_path):
  config = experiment.get_config("tiny_digits")
  saved = resume.as_saved(config)
  options = saved["data"]["augment"]
  legacy_data = dict(saved["data"], augment=options["name"], expand_max_ratio=4.0, jitter=0.2,
                     saturation=1.5, exposure=1.5, hue=0.0)
  legacy_data.update({k: v for k, v in options.items() if k != "name"})
  legacy = dict(saved, data=legacy_data)      # as configs were saved before data.augment.*
  assert resume.differences(legacy, saved)    # would be refused without the upgrade
  assert resume.check_config(legacy, config, str(tmp_path)) == []


@pytest.mark.parametrize("experiment, added, change", [
    (retinanet, ("fpn_top_down", "fpn_lateral"), ("fpn_lateral", False)),
    (yolo_v2, ("location", "batch_norm", "passthrough"), ("location", "anchor_offset"))])
def test_a_config_saved_before_a_key_existed_resumes_at_its_old_behaviour_only(
    tmp_path, experiment, added, change):
  config = experiment.get_config("tiny_test")
  saved = resume.as_saved(config)
  for key in added:                                       # as saved before the keys existed
    del saved["model"][key]
  assert resume.check_config(saved, config, str(tmp_path)) == []
  changed = experiment.get_config("tiny_test").unlock()
  changed.model[change[0]] = change[1]
  with pytest.raises(resume.ConfigChangedError,
                     match=rf"model.{change[0]}: '<absent>' \(saved\)"):
    resume.check_config(saved, changed, str(tmp_path))


def checkpoint_files(workdir):
  return sorted((d, f, os.path.getmtime(os.path.join(d, f)))
                for d, _, names in os.walk(checkpoint.checkpoint_dir(workdir)) for f in names)


@pytest.mark.parametrize("key,value", [("model.anchors.size", 2.0),        # same shapes
                                       ("model.loss.focal_gamma", 1.0),
                                       ("train.batch_size", 16),
                                       ("model.fpn_width", 8)])            # other shapes
def test_resuming_with_another_config_is_refused_and_the_run_left_alone(finished, tmp_path, key,
                                                                       value):
  config, workdir, _ = finished
  copy = copy_of(workdir, tmp_path)
  before = checkpoint_files(copy)
  changed = config.copy_and_resolve_references()
  section, *path = key.split(".")
  target = changed[section]
  for part in path[:-1]:
    target = target[part]
  target[path[-1]] = value
  with pytest.raises(resume.ConfigChangedError) as refused:
    loop.train(changed, copy)
  message = str(refused.value)
  assert f"{key}: " in message and f"-> {value!r} (now)" in message
  assert "new --workdir" in message
  assert f"--config.train.allow_config_change={key}" in message
  assert checkpoint_files(copy) == before


def test_free_keys_resume_and_an_allowed_total_steps_logs_the_schedule(finished, tmp_path,
                                                                      caplog):
  config, workdir, _ = finished
  copy = copy_of(workdir, tmp_path)
  longer = config.copy_and_resolve_references()
  longer.train.log_every = 2                                  # free: changes no weight
  longer.train.total_steps = TOTAL + 2
  with pytest.raises(resume.ConfigChangedError, match="train.total_steps") as refused:
    loop.train(longer, copy)
  assert "train.log_every" not in str(refused.value)
  longer.train.schedule.name = "cosine"                      # and the schedule with it
  longer.train.allow_config_change = "train.total_steps,train.schedule.name"
  with caplog.at_level("INFO", logger="jaxdet"):
    _, state, *_ = loop.train(longer, copy)
  assert int(state.step) == TOTAL + 2
  assert "resuming with train.total_steps changed: 12 -> 14" in caplog.text
  assert re.search(r"learning-rate schedule changed .* at step 12 it was [0-9.e-]+ and is now",
                   caplog.text), caplog.text


# ---------------------------------------------------------------------------- Workdir lock.


def write_lock(workdir, host, pid, age_s=0.0):
  path = os.path.join(workdir, workdir_lock.LOCK_NAME)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"host": host, "pid": pid, "started": "earlier"}, f)
  os.utime(path, (time.time() - age_s, time.time() - age_s))
  return path


def finished_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_a_second_writer_is_refused_and_the_lock_released_on_exit(tmp_path):
  workdir = str(tmp_path)
  with workdir_lock.WorkdirLock(workdir):
    with open(os.path.join(workdir, workdir_lock.LOCK_NAME), encoding="utf-8") as f:
      held = json.load(f)
    assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()} on"):
      workdir_lock.WorkdirLock(workdir).__enter__()
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))


@pytest.mark.parametrize("holder,taken_over", [
    ("this host, pid ended", True), ("this host, pid alive", False),
    ("other host, stale", True), ("other host, fresh", False)])
def test_stale_locks_are_taken_over_live_ones_refused(tmp_path, holder, taken_over):
  workdir = str(tmp_path)
  host = socket.gethostname() if holder.startswith("this") else "elsewhere"
  pid = finished_pid() if "ended" in holder else os.getppid()
  write_lock(workdir, host, pid, age_s=600 if "stale" in holder else 0)
  lock = workdir_lock.WorkdirLock(workdir, stale_after_s=120)
  if taken_over:
    with lock:
      pass
  else:
    with pytest.raises(workdir_lock.WorkdirLockedError):
      lock.__enter__()


def test_training_refuses_a_workdir_in_use_before_touching_it(finished, tmp_path):
  config, workdir, _ = finished
  copy = copy_of(workdir, tmp_path)
  before = checkpoint_files(copy)
  write_lock(copy, socket.gethostname(), os.getppid())     # a live process holds it
  with pytest.raises(workdir_lock.WorkdirLockedError, match="Two runs must not write"):
    loop.train(config, copy)
  assert isinstance(workdir_lock.WorkdirLockedError("x"), errors.ReportedError)
  assert checkpoint_files(copy) == before


# ---------------------------------------------------------------------------------- SIGTERM.


def test_sigterm_exits_within_seconds_of_its_committed_checkpoint(scenes_dir, tmp_path):
  workdir = str(tmp_path / "terminated")
  checkpoints = checkpoint.checkpoint_dir(workdir)
  process = subprocess.Popen(train_command(scenes_dir, workdir, 10_000), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  wait_for(lambda: os.path.isdir(os.path.join(checkpoints, "4")), process)
  before = set(checkpoint.committed_steps(workdir))
  process.send_signal(signal.SIGTERM)
  committed_at = None
  while process.poll() is None:
    if committed_at is None and set(checkpoint.committed_steps(workdir)) - before:
      committed_at = time.time()
    time.sleep(0.02)
  exited_at = time.time()
  output = process.stdout.read()
  assert process.returncode == 0, output
  assert "stopped at step" in output
  committed_at = committed_at or exited_at
  assert exited_at - committed_at < 10.0, output      # SLURM's grace period: 30 s
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))


# --------------------------------------------------------------------------- Start checks.


@pytest.mark.parametrize("key,value,message", [
    ("train.schedule.base_lr", 0.0, "config.train.schedule.base_lr = 0.0 must be positive"),
    ("train.schedule.base_lr", -0.1, "base_lr = -0.1 must be positive"),
    ("train.total_steps", -5, "config.train.total_steps = -5 must not be negative"),
    ("data.image_size", (72, 72), r"input size \(72, 72\) .* multiples of 32 fit, e.g. "
                                  r"\(96, 96\)"),
    ("data.max_boxes", 1, r"has \d+ boxes, more than config.data.max_boxes = 1 .* "
                          r"--config.data.max_boxes=\d+"),
    # Anchor sides 16 * 2^3 = 128 (P3) to 16 * 2^5 * 2^(2/3) = 812.7 (P5, top octave).
    ("model.anchors.size", 16.0, r"priors 128-813 px; 0% .* 100% fit none with IoU >= 0.1"),
])
def test_unusable_configs_are_refused_before_training(scenes_dir, tmp_path, key, value,
                                                      message):
  config = tiny_config(scenes_dir, total_steps=2)
  config.unlock()
  section, *path = key.split(".")
  target = config[section]
  for part in path[:-1]:
    target = target[part]
  target[path[-1]] = value
  with pytest.raises(errors.InvalidSetupError, match=message):
    loop.train(config, str(tmp_path / "refused"))
  assert not os.path.exists(checkpoint.checkpoint_dir(str(tmp_path / "refused")))


def test_refusals_are_one_line_from_the_script(scenes_dir, tmp_path):
  result = subprocess.run(
      [*train_command(scenes_dir, str(tmp_path / "w"), 2), "--config.train.schedule.base_lr=0"],
      capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-2:] == [
      "error: invalid config:", "  config.train.schedule.base_lr = 0.0 must be positive"]
