"""Runs a script as one multi-host JAX job of N local processes (gloo collectives on the CPU),
the way a user launches it by hand on N hosts."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

from jaxdet.runtime import REPO_ROOT as REPO


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Job:
  """``num_processes`` processes of ``script`` (a path under the repository) with
  ``devices_per_process`` CPU devices each; logs under ``logdir``. Use as a context manager:
  processes still running on exit are killed, so a failing test leaves none behind."""

  def __init__(self, script, args, num_processes, devices_per_process, logdir,
               heartbeat_timeout_s=100):
    os.makedirs(logdir, exist_ok=True)
    # The tests' XLA flags (conftest.py), with this job's device count instead of theirs.
    xla_flags = (re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                        os.environ.get("XLA_FLAGS", ""))
                 + f" --xla_force_host_platform_device_count={devices_per_process}").strip()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "XLA_FLAGS": xla_flags}
    port = free_port()
    self.log_paths, self.processes = [], []
    for i in range(num_processes):
      command = [sys.executable, os.path.join(REPO, script), *args]
      if num_processes > 1:
        command += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                    f"--process_id={i}", f"--heartbeat_timeout_s={heartbeat_timeout_s}",
                    "--initialization_timeout_s=60"]
      name = os.path.basename(script)
      self.log_paths.append(os.path.join(logdir, f"{name}.{time.time_ns()}.process{i}.log"))
      with open(self.log_paths[-1], "w", encoding="utf-8") as log:
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               env=env, cwd=REPO))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.kill()

  def kill(self, index=None):
    for i, process in enumerate(self.processes):
      if (index is None or i == index) and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()

  def logs(self):
    parts = []
    for i, path in enumerate(self.log_paths):
      with open(path, encoding="utf-8", errors="replace") as f:
        parts.append(f"===== process {i} (exit {self.processes[i].poll()}) =====\n"
                     + f.read()[-6000:])
    return "\n".join(parts)

  def output(self, index):
    with open(self.log_paths[index], encoding="utf-8", errors="replace") as f:
      return f.read()

  def wait_until(self, predicate, timeout_s):
    """Waits for ``predicate()``; fails with the logs if a process exits first or it times out."""
    deadline = time.time() + timeout_s
    while not predicate():
      if any(p.poll() is not None for p in self.processes):
        raise AssertionError(f"a process exited early:\n{self.logs()}")
      if time.time() > deadline:
        self.kill()
        raise AssertionError(f"timed out after {timeout_s}s:\n{self.logs()}")
      time.sleep(0.1)

  def wait(self, timeout_s, expect_success=True):
    """Exit codes once every process has ended; fails with the logs on a timeout (killing the
    processes) or, with ``expect_success``, on a non-zero exit."""
    deadline = time.time() + timeout_s
    for process in self.processes:
      try:
        process.wait(timeout=max(deadline - time.time(), 0.1))
      except subprocess.TimeoutExpired:
        self.kill()
        raise AssertionError(f"hung for {timeout_s}s:\n{self.logs()}") from None
    codes = [p.returncode for p in self.processes]
    if expect_success and any(codes):
      raise AssertionError(f"exit codes {codes}:\n{self.logs()}")
    return codes
