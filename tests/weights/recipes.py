"""The experiment recipes the weight tests import into, loaded by path from the checkout."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_config(spec):
  """The config of ``experiments/<file>.py:<variant>``."""
  path, variant = spec.split(":")
  module_spec = importlib.util.spec_from_file_location("weights_test_recipe", ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)
