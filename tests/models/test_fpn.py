"""The FPN's pathways: which backbone levels each pyramid level sees, by the default form and by
the FPN paper's bottom-up, no-lateral and finest-level-only ablations (Sec. 5.1, Table 1 d-f)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import fpn


def features(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {f"C{level}": jax.random.normal(key, (1, 32 >> level, 32 >> level, 4))
          for level, key in zip((3, 4, 5), keys)}


def pyramid(model, variables, changed=None):
  """P3..P5 with the backbone level ``changed`` replaced by other random values."""
  inputs = features()
  if changed:
    inputs[changed] = features(seed=1)[changed]
  return model.apply(variables, inputs)


@pytest.mark.parametrize("top_down, lateral, p3_sees", [
    (True, True, {"C3", "C4", "C5"}),      # the FPN
    (False, True, {"C3"}),                 # bottom-up pyramid: P3 from C3 alone
    (True, False, {"C5"})])                # top-down without laterals: P3 is C5 upsampled
def test_each_level_sees_the_backbone_levels_of_its_pathways(top_down, lateral, p3_sees):
  model = fpn.FPN(width=8, min_level=3, max_level=5, top_down=top_down, lateral=lateral)
  variables = model.init(jax.random.key(0), features())
  reference = pyramid(model, variables)
  for level in ("C3", "C4", "C5"):
    p3 = pyramid(model, variables, changed=level)[0]
    assert (not np.allclose(p3, reference[0])) == (level in p3_sees), level
  laterals = {name for name in variables["params"] if name.startswith("lateral")}
  assert laterals == ({"lateral3", "lateral4", "lateral5"} if lateral else {"lateral5"})


def test_an_fpn_without_both_pathways_is_refused():
  model = fpn.FPN(width=8, min_level=3, max_level=5, top_down=False, lateral=False)
  with pytest.raises(ValueError, match="top-down pathway or its lateral connections"):
    model.init(jax.random.key(0), features())


def test_p5_is_the_same_in_every_form():
  outputs = []
  for top_down, lateral in ((True, True), (False, True), (True, False)):
    model = fpn.FPN(width=8, min_level=3, max_level=5, top_down=top_down, lateral=lateral)
    variables = model.init(jax.random.key(0), features())
    outputs.append(model.apply(variables, features())[-1])
  np.testing.assert_array_equal(outputs[0], outputs[1])
  np.testing.assert_array_equal(outputs[0], outputs[2])
  assert jnp.isfinite(outputs[0]).all()


def test_the_finest_level_alone_is_the_full_pyramids_finest_level():
  full = fpn.FPN(width=8, min_level=3, max_level=7)
  variables = full.init(jax.random.key(0), features())
  single = fpn.FPN(width=8, min_level=3, max_level=7, single_level=True)
  kept = {name: value for name, value in variables["params"].items()
          if name.startswith("lateral") or name == "output3"}
  shapes = jax.eval_shape(lambda: single.init(jax.random.key(0), features()))
  assert set(shapes["params"]) == set(kept)
  (p3,) = single.apply({"params": kept}, features())
  np.testing.assert_array_equal(p3, full.apply(variables, features())[0])   # still top-down from C5
