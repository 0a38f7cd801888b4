"""Fixtures of the data tests."""
import pytest

from tests.data import coco_folder


@pytest.fixture(scope="session")
def coco_dir(tmp_path_factory):
  """A flat-layout COCO-json folder (see tests/data/coco_folder.py)."""
  return coco_folder.write(tmp_path_factory.mktemp("coco_json"))
