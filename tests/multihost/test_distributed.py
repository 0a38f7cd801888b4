"""When a command joins a multi-host run, and the watchdog that ends a process that hangs."""
import subprocess
import sys

import pytest

from jaxdet import distributed
from jaxdet.runtime import REPO_ROOT as REPO


@pytest.mark.parametrize("kwargs, environ, expected", [
    ({}, {}, False),                                                        # a single host
    ({}, {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "1"}, False),       # srun, one task
    ({}, {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "4"}, True),        # srun, 4 tasks
    ({}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, False),               # the batch script
    ({}, {"OMPI_COMM_WORLD_SIZE": "2"}, True),                             # mpirun -n 2
    ({}, {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"coordinator_address": "10.0.0.1:1234"}, {}, True),
    ({"multihost": True}, {}, True),                                       # Cloud TPU pod slice
])
def test_which_commands_join_a_multi_host_run(kwargs, environ, expected):
  assert distributed.wanted(environ=environ, **kwargs) is expected


def test_several_cpu_devices_get_the_in_order_collectives_flag_once():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert distributed.forced_host_devices(environ) == 4
  distributed.keep_cpu_collectives_in_order(environ)
  distributed.keep_cpu_collectives_in_order(environ)
  assert environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=4 "
                                  "--xla_cpu_enable_concurrency_optimized_scheduler=false")
  assert distributed.forced_host_devices({}) == 1


def test_a_single_process_broadcast_is_the_value():
  assert distributed.broadcast_json({"coco/AP": 0.5}) == {"coco/AP": 0.5}


def run_python(code):
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        cwd=REPO)


def test_watchdog_ends_a_process_that_makes_no_progress():
  result = run_python("import time\nfrom jaxdet import distributed\n"
                      "with distributed.Watchdog(1) as watchdog:\n"
                      "  watchdog.arm('at step 3')\n"
                      "  time.sleep(30)\n")
  assert result.returncode == 1, result.stderr
  assert "no progress in time at step 3 (hang_timeout_s=1" in result.stderr
  assert 'File "<string>", line 5' in result.stderr  # the stack shows where it hung


def test_watchdog_lets_a_process_that_progresses_finish():
  result = run_python("import time\nfrom jaxdet import distributed\n"
                      "with distributed.Watchdog(1) as watchdog:\n"
                      "  for step in range(6):\n"
                      "    watchdog.arm(f'at step {step}')\n"
                      "    time.sleep(0.4)\n"
                      "  watchdog.disarm()\n"
                      "  time.sleep(1.5)\n"
                      "print('done')\n")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "done"
