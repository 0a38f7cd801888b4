"""What a result needs to be traced back to what produced it: the command line, the checkout's
commit, the package versions, the devices and the time (UTC)."""
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-cpu",
            "tensorflow", "tensorflow-datasets", "ml-collections")


def git(*args):
  return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                        check=True, timeout=10).stdout.strip()


def git_commit():
  """The checkout's commit (``+`` if it has uncommitted changes), or "unknown" without git."""
  try:
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def cpu_model():
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or "unknown"


def command_line():
  """The command as run: ``python <file>.py ...``, or ``jaxdet-<tool> ...`` (an entry point)."""
  if sys.argv[0].endswith(".py"):
    return " ".join(["python", *sys.argv])
  return " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])


def versions():
  """``{package: version}`` of the installed packages that decide a result."""
  found = {}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def provenance():
  """Command, commit, devices, machine, versions and time (UTC) of this process."""
  return {"command": command_line(), "commit": git_commit(),
          "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
          "processes": jax.process_count(), "cpu": f"{os.cpu_count()} x {cpu_model()}",
          "host": platform.node(), "jax": jax.__version__, "versions": versions(),
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
