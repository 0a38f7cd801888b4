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
