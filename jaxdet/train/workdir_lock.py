"""One writer per workdir: a lock file naming its holder, kept fresh while the run lives.

Two runs writing one workdir interleave checkpoints and break the keep-N rotation. The holder
writes ``<workdir>/jaxdet.lock`` (host, pid, start time) and touches it every
``stale_after_s / 4`` seconds. A lock whose holder is gone is taken over: on the same host when
its pid no longer runs (a ``kill -9``), from another host when it has not been touched for
``stale_after_s`` (a preempted machine), so an auto-requeued job proceeds. On several hosts only
process 0 takes the lock; workdirs that are not local paths (``gs://``) are not locked.
"""
import json
import logging
import os
import socket
import threading
import time

from jaxdet import errors

log = logging.getLogger("jaxdet")

LOCK_NAME = "jaxdet.lock"
STALE_AFTER_S = 120.0


class WorkdirLockedError(errors.ReportedError, RuntimeError):
  """Another live run holds the workdir."""


def pid_is_running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # someone else's process
    return True
  return True


def holder_is_gone(holder, age_s, stale_after_s):
  """Whether the run that wrote ``holder`` (the lock's json; None if unreadable) has ended."""
  if holder is None:
    return age_s > stale_after_s
  if holder.get("host") == socket.gethostname():
    return not pid_is_running(int(holder.get("pid", -1)))
  return age_s > stale_after_s


def describe(holder):
  return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
          if holder else "a run whose lock file is unreadable")


class WorkdirLock:
  """Context manager holding ``<workdir>/jaxdet.lock``; :class:`WorkdirLockedError` if another
  live run holds it."""

  def __init__(self, workdir, stale_after_s=STALE_AFTER_S, enabled=True):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.stale_after_s = stale_after_s
    self.enabled = enabled and "://" not in workdir
    self._stop = threading.Event()
    self._heartbeat = None
    self._record = None

  def __enter__(self):
    if not self.enabled:
      return self
    self._record = {"host": socket.gethostname(), "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    while not self._create():
      holder, age = self._read()
      if age is None:          # released meanwhile: try again
        continue
      if not holder_is_gone(holder, age, self.stale_after_s):
        raise WorkdirLockedError(
            f"{os.path.dirname(self.path)} is in use by {describe(holder)} (lock file "
            f"{self.path}, touched {age:.0f} s ago). Two runs must not write one workdir: stop "
            f"that run, or train in another --workdir. If it has ended without releasing the "
            f"lock, delete {self.path}.")
      log.warning("taking over the lock of %s, which has ended", describe(holder))
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self._heartbeat = threading.Thread(target=self._touch, daemon=True, name="workdir-lock")
    self._heartbeat.start()
    return self

  def __exit__(self, *exc):
    if not self.enabled or self._record is None:
      return
    self._stop.set()
    self._heartbeat.join()
    holder, _ = self._read()
    if holder == self._record:
      os.remove(self.path)

  def _create(self):
    """Writes the lock if there is none (atomically); whether it did."""
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(self._record, f)
    return True

  def _read(self):
    """``(the lock's json or None if unreadable, seconds since it was last touched or None if
    there is no lock)``."""
    try:
      age = time.time() - os.path.getmtime(self.path)
      with open(self.path, encoding="utf-8") as f:
        return json.load(f), age
    except FileNotFoundError:
      return None, None
    except (OSError, ValueError):
      return None, age

  def _touch(self):
    while not self._stop.wait(self.stale_after_s / 4):
      try:
        os.utime(self.path)
      except OSError:
        pass
