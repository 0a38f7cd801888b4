"""Test setup: simulate an 8-device pod on the host CPU before jax starts."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
  """A tiny COCO-json folder (train 16 / val 8 images of 48x64, 3 classes)."""
  from tests import fake_data  # pylint: disable=import-outside-toplevel
  return fake_data.write_coco_json_folder(tmp_path_factory.mktemp("coco_json"))
