"""Multi-host runs: JAX's multi-controller runtime, one process per host, one global mesh.

Every host runs the same command. ``initialize`` joins the processes through
``jax.distributed.initialize`` when the command is one of several:

- by hand: ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (or the
  environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``);
- SLURM (``srun``, more than one task) and Open MPI (``mpirun``): detected from their
  environment, JAX reads the rest;
- ``--multihost``: always join and let JAX detect the cluster (Cloud TPU pod slices, where the
  TPU metadata server has the topology).

A single-host run needs none of it. After ``initialize``, ``jax.devices()`` lists the devices of
every host; ``jaxdet.train.sharding.make_mesh`` lays the global batch over all of them.

Failures do not hang:

- a host that raises ends at once with its message (``exit_on_error``);
- a host that dies (or ends so) stops the others: their next collective fails, or the
  coordination service, missing its heartbeats for ``heartbeat_timeout_s``, terminates them;
- a host that lives but stops making progress (a hung file system read, a collective waiting
  for a host stuck so) is ended by the ``Watchdog`` after ``config.train.hang_timeout_s``, with
  every thread's stack, and then counts as dead for the others;
- hosts that never all arrive fail ``jax.distributed.initialize`` after
  ``initialization_timeout_s``.
"""
import contextlib
import faulthandler
import json
import logging
import os
import sys
import threading
import time
import traceback

from absl import flags
import jax
from jax.experimental import multihost_utils
import numpy as np

log = logging.getLogger("jaxdet")

# XLA's CPU backend deadlocks on the R50-FPN train step over 2 devices (one process or two):
# with its concurrency-optimized scheduler the devices reach the gradient all-reduces in
# different orders (found with scripts/benchmark.py, jax 0.10.2). Without it they keep the
# program's order. Only the CPU backend reads this flag.
CPU_COLLECTIVES_IN_ORDER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

CLUSTER_SIZE_VARIABLES = (
    "SLURM_STEP_NUM_TASKS",   # srun: tasks of this job step (a batch script itself has none)
    "OMPI_COMM_WORLD_SIZE",   # mpirun
)


def define_flags():
  """The multi-host flags of train.py and evaluate.py (returned as absl flag holders)."""
  return dict(
      coordinator_address=flags.DEFINE_string(
          "coordinator_address", None, "HOST:PORT of process 0's coordination service; with "
          "--num_processes and --process_id for a multi-host run launched by hand."),
      num_processes=flags.DEFINE_integer("num_processes", None, "Processes (hosts) in the run."),
      process_id=flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1."),
      multihost=flags.DEFINE_bool(
          "multihost", False, "Join a multi-host run with JAX's cluster auto-detection (Cloud "
          "TPU pod slices); SLURM, Open MPI and the explicit flags need no --multihost."),
      initialization_timeout_s=flags.DEFINE_integer(
          "initialization_timeout_s", 300, "How long the processes wait for each other at start."),
      heartbeat_timeout_s=flags.DEFINE_integer(
          "heartbeat_timeout_s", 100, "A host silent for this long is declared dead and every "
          "process stops."),
  )


def cluster_size_from_environment(environ=os.environ):
  """Number of processes a launcher (SLURM, Open MPI) declares, 1 if none."""
  for name in CLUSTER_SIZE_VARIABLES:
    if environ.get(name, "").isdigit():
      return int(environ[name])
  return 1


def wanted(coordinator_address=None, multihost=False, environ=os.environ):
  """Whether this process is one of several (see the module docstring)."""
  return bool(multihost or coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
              or cluster_size_from_environment(environ) > 1)


def keep_cpu_collectives_in_order(environ=os.environ):
  """Adds ``CPU_COLLECTIVES_IN_ORDER`` to ``XLA_FLAGS`` (before the backend starts)."""
  flags_now = environ.get("XLA_FLAGS", "")
  if CPU_COLLECTIVES_IN_ORDER.split("=", maxsplit=1)[0] not in flags_now:
    environ["XLA_FLAGS"] = f"{flags_now} {CPU_COLLECTIVES_IN_ORDER}".strip()


def cpu_only(environ=os.environ):
  """Whether JAX is restricted to its CPU backend (``JAX_PLATFORMS=cpu``)."""
  return environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"


def forced_host_devices(environ=os.environ):
  """The CPU device count ``XLA_FLAGS`` asks for (1 when it does not)."""
  for flag in environ.get("XLA_FLAGS", "").split():
    if flag.startswith("--xla_force_host_platform_device_count="):
      return int(flag.split("=", 1)[1])
  return 1


def initialize(coordinator_address=None, num_processes=None, process_id=None, multihost=False,
               initialization_timeout_s=300, heartbeat_timeout_s=100):
  """Joins the multi-controller runtime if wanted; must run before anything touches a device.
  Returns whether it did. Runs with several CPU devices (forced host devices, or several
  processes with ``JAX_PLATFORMS=cpu``) also get ``CPU_COLLECTIVES_IN_ORDER``."""
  multi_process = wanted(coordinator_address, multihost)
  if forced_host_devices() > 1 or (multi_process and cpu_only()):
    keep_cpu_collectives_in_order()
  if not multi_process:
    return False
  environ = os.environ
  if num_processes is None and environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(environ["JAX_NUM_PROCESSES"])
  if process_id is None and environ.get("JAX_PROCESS_ID"):
    process_id = int(environ["JAX_PROCESS_ID"])
  # Cross-process collectives of JAX's CPU backend (tests, CPU clusters); GPUs use NCCL and
  # TPUs their interconnect whatever this says.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             initialization_timeout=initialization_timeout_s,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
  return True


def initialize_from_flags(holders):
  """``initialize`` with the values of ``define_flags()``'s holders."""
  return initialize(**{name: holder.value for name, holder in holders.items()})


def quiet_unless_leader():
  """Progress, summaries and tables come from process 0; the others log warnings only."""
  if jax.process_index() != 0:
    log.setLevel(logging.WARNING)


@contextlib.contextmanager
def exit_on_error():
  """On a multi-host run, an exception (or a failing ``sys.exit``) ends this process at once
  with its message, prefixed by the host, instead of leaving it to wait in JAX's shutdown
  barrier while the other hosts wait in a collective for it. Single-host runs raise as usual."""
  try:
    yield
  except SystemExit as e:
    if not jax.distributed.is_initialized() or e.code in (0, None):
      raise
    exit_now(f"process {jax.process_index()} stopped: {e.code}", e.code)
  except (Exception, KeyboardInterrupt):  # pylint: disable=broad-except
    if not jax.distributed.is_initialized():
      raise
    exit_now(f"process {jax.process_index()} of {jax.process_count()} failed:\n"
              f"{traceback.format_exc()}", 1)


def exit_now(message, code):
  """Ends the process at once (no interpreter teardown) after printing ``message``."""
  sys.stdout.flush()
  if message:
    sys.stderr.write(message + "\n")
  sys.stderr.flush()
  os._exit(code if isinstance(code, int) else 1)  # pylint: disable=protected-access


def broadcast_json(value):
  """Process 0's JSON-serializable ``value``, on every process."""
  if jax.process_count() == 1:
    return value
  data = np.frombuffer(json.dumps(value).encode() if jax.process_index() == 0 else b"", np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
  padded = np.zeros(size, np.uint8)
  padded[:data.size] = data
  return json.loads(bytes(multihost_utils.broadcast_one_to_all(padded)).decode())


class Watchdog:
  """Ends the process when it makes no progress for ``timeout_s`` seconds. A context manager:
  inside, ``arm(what)`` at each unit of progress (a train step) restarts the clock; on expiry it
  writes what it was waiting for and every thread's stack to stderr and exits with status 1.
  ``timeout_s = 0`` disables it."""

  def __init__(self, timeout_s):
    self.timeout_s = timeout_s
    self._deadline, self._what = None, ""
    self._done = threading.Event()

  def __enter__(self):
    if self.timeout_s:
      threading.Thread(target=self._watch, name="jaxdet-watchdog", daemon=True).start()
    return self

  def __exit__(self, *exc):
    self._done.set()

  def arm(self, what, steps=1):
    """Restarts the clock: ``steps`` units of progress are now due within ``steps`` timeouts."""
    self._what = what
    self._deadline = time.monotonic() + steps * self.timeout_s

  def disarm(self):
    self._deadline = None

  def _watch(self):
    while not self._done.wait(min(1.0, self.timeout_s / 10)):
      deadline = self._deadline
      if deadline is not None and time.monotonic() > deadline:
        sys.stderr.write(f"process {jax.process_index()}: no progress in time {self._what} "
                         f"(hang_timeout_s={self.timeout_s}: a stuck input or collective?); "
                         "stacks:\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(1)  # pylint: disable=protected-access
