"""Dependencies run one way: scripts -> tools -> runtime -> train -> evaluation -> detectors,
weights -> models, data -> ops, config, distributed, sweep, plots, provenance -> errors. A module
that imports one of a higher layer (or of another package of its own layer) fails here, naming
the import."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxdet"

# The layer of each top-level module or package of jaxdet, lowest first.
LAYERS = {"errors": 0, "config": 1, "distributed": 1, "provenance": 1, "sweep": 1, "plots": 1,
          "ops": 1, "models": 2, "data": 2, "detectors": 3, "weights": 3, "evaluation": 4,
          "train": 5, "runtime": 6, "tools": 7}


def part_of(module):
  """``jaxdet.train.loop`` -> ``train``."""
  return module.split(".")[1]


def imports_of(path):
  """The jaxdet names ``path`` imports (``jaxdet.data.wordtrees``), at module level or inside
  functions."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxdet"):
      if node.module == "jaxdet":
        found.update(f"jaxdet.{alias.name}" for alias in node.names)
      else:
        found.update(f"{node.module}.{alias.name}" for alias in node.names)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("jaxdet."))
  return found


MODULES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path):
  own = path.relative_to(ROOT).parts[0].removesuffix(".py")
  for module in imports_of(path):
    other = part_of(module)
    assert other in LAYERS, f"{path}: {module} belongs to no layer; add it to LAYERS"
    assert other == own or LAYERS[other] < LAYERS[own], (
        f"{path.relative_to(ROOT)} imports {module}: layer {other} ({LAYERS[other]}) is not "
        f"below {own} ({LAYERS[own]})")


def test_every_part_of_jaxdet_has_a_layer():
  parts = {p.name.removesuffix(".py") for p in ROOT.iterdir()
           if p.name != "__init__.py" and (p.suffix == ".py" or (p / "__init__.py").exists())}
  assert parts == set(LAYERS)


# A detector may read its own resources' files (YOLO9000's tree) but no training data: the loop
# reads, relabels (Detector.training_labels) and feeds the data.
DETECTORS_MAY_IMPORT_FROM_DATA = {"jaxdet.data.wordtrees"}


@pytest.mark.parametrize("path", sorted((ROOT / "detectors").glob("*.py")), ids=lambda p: p.name)
def test_detectors_import_no_training_data_module(path):
  for module in imports_of(path):
    assert part_of(module) != "data" or module in DETECTORS_MAY_IMPORT_FROM_DATA, (
        f"detectors/{path.name} imports {module}")
