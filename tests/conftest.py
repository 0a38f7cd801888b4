"""Test setup: simulate an 8-device pod on the host CPU before jax starts, and share compiled
programs between the tests and the training subprocesses they start (a persistent compilation
cache for this session: many tests compile the same tiny models)."""
import atexit
import os
import shutil
import tempfile

# LLVM's optimisation level 0 for the compiled programs: the tests compile hundreds of tiny
# programs and run each a few times, so compiling dominates, and level 0 compiles them faster.
# Its results differ from the default level's in float rounding only; the bit-exact tests
# compare runs compiled alike. Training and benchmarks keep the default.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxdet-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# jax reads the JAX_* variables above when imported, XLA_FLAGS when its backend starts.
import pytest  # noqa: E402

from jaxdet import distributed  # noqa: E402

distributed.keep_cpu_collectives_in_order()  # see jaxdet.distributed.CPU_COLLECTIVES_IN_ORDER


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
  """A tiny COCO-json folder (train 16 / val 8 images of 48x64, 3 classes)."""
  from tests import fake_data  # pylint: disable=import-outside-toplevel
  return fake_data.write_coco_json_folder(tmp_path_factory.mktemp("coco_json"))


# The files that take longest, first: with one file per worker at a time (pyproject's --dist
# loadfile), a long file started last would leave the other workers idle at the end.
SLOWEST_FIRST = ("tests/multihost/", "tests/scripts/test_sweep_tool.py",
                 "tests/scripts/test_scripts.py", "tests/train/test_reliability.py",
                 "tests/train/test_resume.py", "tests/weights/test_import_tool.py",
                 "tests/train/test_frozen.py", "tests/train/test_sharding.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    path = item.nodeid
    return next((i for i, prefix in enumerate(SLOWEST_FIRST) if path.startswith(prefix)),
                len(SLOWEST_FIRST))
  items.sort(key=rank)       # stable: each file's tests stay together and in order
