"""Ablation sweeps, defined beside the recipes: an experiment file's ``get_sweep(name)`` returns a
:class:`Sweep`, a base variant and its cells (each a labelled set of config overrides), the seeds
each cell repeats with, the metric to compare and, where the sweep reproduces a paper's table,
the paper's number for each cell. ``jaxdet-sweep`` (``jaxdet/tools/sweep.py``) runs and collects
them."""
import dataclasses
from typing import Mapping, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Cell:
  label: str                          # a short name, also the cell's folder under the sweep dir
  overrides: Mapping[str, object]     # config key ("model.loss.gamma") -> value
  paper: Optional[float] = None       # the paper's number for this cell, if it reports one


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  base: str                           # the experiment file's variant the cells start from
  cells: Sequence[Cell]
  seeds: Sequence[int] = (0,)
  metric: str = "coco/AP"             # a key of the evaluation results
  paper_table: str = ""               # e.g. "Lin et al. 2017, Table 1b (AP, ResNet-50, 600 px)"
  x: str = ""          # an override key every cell sets: the plot's x axis (else the cell labels)
  series: str = ""     # an override key every cell sets: one line per value (needs ``x``)

  def __post_init__(self):
    labels = [c.label for c in self.cells]
    if not labels:
      raise ValueError(f"sweep {self.name!r} has no cells")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
      raise ValueError(f"sweep {self.name!r} repeats the cell labels {duplicates}")
    bad = [label for label in labels if not label or "/" in label or label.startswith(".")]
    if bad:
      raise ValueError(f"sweep {self.name!r}: cell labels {bad} cannot name a folder")
    if not self.seeds:
      raise ValueError(f"sweep {self.name!r} has no seeds")
    if self.series and not self.x:
      raise ValueError(f"sweep {self.name!r}: a series ({self.series}) needs an x key")
    for key in filter(None, (self.x, self.series)):
      unset = [c.label for c in self.cells if key not in c.overrides]
      if unset:
        raise ValueError(f"sweep {self.name!r} plots {key}, which the cells {unset} do not set")

  def runs(self):
    """``[(cell, seed)]``, cell-major: the unit a worker runs."""
    return [(cell, seed) for cell in self.cells for seed in self.seeds]


def getter(builders, family):
  """An experiment file's ``get_sweep(name)`` over ``builders``: sweep name -> a function of
  the name that builds the :class:`Sweep`."""
  def get_sweep(name):
    if name not in builders:
      raise ValueError(f"unknown {family} sweep {name!r}; choose from {tuple(builders)}")
    return builders[name](name)
  return get_sweep


def cell_config(get_config, sweep, cell):
  """The config a cell trains: ``get_config(sweep.base)`` with the cell's overrides, each
  checked against the locked config as the command line checks it."""
  config = get_config(sweep.base)
  config.update_from_flattened_dict(dict(cell.overrides))
  return config


def select(runs, spec):
  """The runs ``spec`` names: "" (all), ``"i/n"`` (the i-th of n near-equal shares, 1-based:
  one per array task, slice or process), or comma-separated cell labels."""
  if not spec:
    return list(runs)
  if "/" in spec:
    index, count = (int(part) for part in spec.split("/"))
    if not 1 <= index <= count:
      raise ValueError(f"--cells={spec}: want i/n with 1 <= i <= n")
    return [run for position, run in enumerate(runs) if position % count == index - 1]
  labels = [label.strip() for label in spec.split(",") if label.strip()]
  known = {cell.label for cell, _ in runs}
  unknown = [label for label in labels if label not in known]
  if unknown:
    raise ValueError(f"--cells names {unknown}, not cells of the sweep ({sorted(known)})")
  return [run for run in runs if run[0].label in labels]
