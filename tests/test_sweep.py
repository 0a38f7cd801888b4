"""Sweep definitions and how a sweep's runs are shared among workers."""
import pytest

from jaxdet import sweep


def make(labels=("a", "b", "c"), seeds=(0, 1)):
  return sweep.Sweep("s", "tiny_test", [sweep.Cell(label, {"seed": 1}) for label in labels],
                     seeds=seeds)


@pytest.mark.parametrize("labels, seeds, match", [
    ((), (0,), "no cells"), (("a", "b", "a"), (0,), r"repeats the cell labels \['a'\]"),
    (("a", "x/y"), (0,), "cannot name a folder"), (("a",), (), "no seeds")])
def test_a_sweep_that_cannot_run_is_refused(labels, seeds, match):
  with pytest.raises(ValueError, match=match):
    make(labels, seeds)


def test_runs_are_cells_by_seeds_cell_major():
  assert [(c.label, s) for c, s in make().runs()] == [
      ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]


@pytest.mark.parametrize("workers", [1, 2, 4, 7])
def test_the_shares_of_n_workers_cover_every_run_once(workers):
  runs = make().runs()
  shares = [sweep.select(runs, f"{i}/{workers}") for i in range(1, workers + 1)]
  assert sorted(id(r) for share in shares for r in share) == sorted(id(r) for r in runs)
  sizes = [len(share) for share in shares]
  assert max(sizes) - min(sizes) <= 1


def test_cells_by_label_and_refusals():
  runs = make().runs()
  assert [(c.label, s) for c, s in sweep.select(runs, "c, a")] == [("a", 0), ("a", 1), ("c", 0),
                                                                   ("c", 1)]
  assert sweep.select(runs, "") == runs
  with pytest.raises(ValueError, match=r"names \['d'\], not cells"):
    sweep.select(runs, "a,d")
  with pytest.raises(ValueError, match="1 <= i <= n"):
    sweep.select(runs, "3/2")


def test_a_plotted_key_must_be_set_by_every_cell():
  cells = [sweep.Cell("g0", {"model.loss.focal_gamma": 0.0}), sweep.Cell("base", {})]
  with pytest.raises(ValueError, match=r"plots model.loss.focal_gamma, which the cells "
                                       r"\['base'\] do not set"):
    sweep.Sweep("s", "tiny_test", cells, x="model.loss.focal_gamma")
  with pytest.raises(ValueError, match="needs an x key"):
    sweep.Sweep("s", "tiny_test", cells[:1], series="model.loss.focal_gamma")


def test_a_cells_config_is_its_base_with_its_overrides_checked_like_the_command_line():
  from experiments import retinanet  # pylint: disable=import-outside-toplevel
  grid = sweep.Sweep("s", "tiny_test", [sweep.Cell("g5", {"model.loss.focal_gamma": 5.0}),
                                        sweep.Cell("typo", {"model.loss.focal_gama": 5.0})])
  config = sweep.cell_config(retinanet.get_config, grid, grid.cells[0])
  assert config.model.loss.focal_gamma == 5.0
  assert config.model.fpn_width == retinanet.get_config("tiny_test").model.fpn_width
  with pytest.raises(KeyError, match="focal_gama"):
    sweep.cell_config(retinanet.get_config, grid, grid.cells[1])


def test_the_sweep_figure_draws_series_and_leaves_missing_cells_out(tmp_path):
  from jaxdet import plots  # pylint: disable=import-outside-toplevel
  grid = sweep.Sweep("focal", "tiny_test", [
      sweep.Cell(f"g{g}_a{a}", {"gamma": g, "alpha": a}, paper=30.0 + g if a == 0.25 else None)
      for g in (0, 2) for a in (0.25, 0.75)], x="gamma", series="alpha")
  rows = [{"cell": c.label, "mean": None if c.label == "g2_a0.75" else 0.1, "std": 0.01,
           "paper": c.paper} for c in grid.cells]
  path = plots.sweep_figure(grid, rows, str(tmp_path / "focal.png"))
  assert path and (tmp_path / "focal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
