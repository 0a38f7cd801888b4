"""Frozen batch norm, Detectron2's ``freeze_at`` in the ResNet backbones and SSD's frozen VGG
stages, against float64 numpy and hand-listed parameter names."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.models import layers
from jaxdet.models import resnet
from jaxdet.models import vgg


def random_batch_norm_variables(rng, channels):
  return {"params": {"scale": rng.uniform(0.5, 2.0, channels).astype(np.float32),
                     "bias": rng.normal(size=channels).astype(np.float32)},
          "batch_stats": {"mean": rng.normal(size=channels).astype(np.float32),
                          "var": rng.uniform(0.1, 3.0, channels).astype(np.float32)}}


def test_frozen_batch_norm_is_the_affine_map_of_its_statistics():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
  variables = random_batch_norm_variables(rng, 4)
  p, s = variables["params"], variables["batch_stats"]
  x64 = x.astype(np.float64)
  want = ((x64 - s["mean"]) / np.sqrt(s["var"].astype(np.float64) + 1e-5) * p["scale"]
          + p["bias"])
  module = layers.FrozenBatchNorm()
  got, updated = module.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert jax.tree.map(np.array_equal, updated["batch_stats"], s) == {"mean": True, "var": True}
  # d(sum y * w)/dx = w * scale / sqrt(var + eps); nothing reaches scale and bias.
  weights = rng.normal(size=x.shape)
  grad_x, grad_params = jax.grad(
      lambda x, params: jnp.sum(module.apply({**variables, "params": params}, x) * weights),
      argnums=(0, 1))(x, p)
  np.testing.assert_allclose(grad_x, weights * p["scale"] / np.sqrt(s["var"] + 1e-5), rtol=1e-5)
  assert all(not np.any(g) for g in jax.tree.leaves(grad_params))


def test_frozen_batch_norm_in_bfloat16_normalises_in_float32():
  """A channel whose mean is 30 deviations away: in bfloat16 ``x * s`` and the shift would each
  be rounded by ~0.1 before they cancel; in float32 only the output's rounding remains."""
  rng = np.random.default_rng(0)
  variables = {"params": {"scale": np.ones(2, np.float32), "bias": np.zeros(2, np.float32)},
               "batch_stats": {"mean": np.array([30.0, 0.0], np.float32),
                               "var": np.ones(2, np.float32)}}
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 2)) + [30.0, 0.0], jnp.bfloat16)
  got = layers.FrozenBatchNorm(dtype=jnp.bfloat16).apply(variables, x)
  assert got.dtype == jnp.bfloat16
  want = (np.asarray(x, np.float64) - [30.0, 0.0]) / np.sqrt(1 + 1e-5)
  # bfloat16 keeps 8 significant bits: an output below 4 is rounded by at most 2^-7.
  np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=2.0 ** -6)


def test_frozen_batch_norm_variables_are_batch_norms():
  x = jnp.zeros((1, 2, 2, 5))
  abstract = lambda module: jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  assert abstract(layers.FrozenBatchNorm()) == abstract(nn.BatchNorm(use_running_average=True))


def tiny_resnet(**kw):
  spec = resnet.RESNETS["resnet_tiny"]
  return resnet.ResNet(stage_sizes=spec.stage_sizes, block=spec.block, widths=spec.widths,
                       stem_width=spec.stem_width, **kw)


def gradients(model, variables, images):
  def loss(params):
    features, _ = model.apply({**variables, "params": params}, images, train=True,
                              mutable=["batch_stats"])
    return sum(jnp.sum(f ** 2) for f in features.values())
  return jax.jit(jax.grad(loss))(variables["params"])


def is_zero_tree(tree):
  return all(not np.any(leaf) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))


def test_freeze_at_2_stops_gradients_at_c2_and_keeps_the_names(images):
  trained, frozen = tiny_resnet(), tiny_resnet(freeze_at=2)
  variables = jax.jit(trained.init)(jax.random.PRNGKey(0), images)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(frozen.init, jax.random.PRNGKey(0), images))
          == jax.tree.map(jnp.shape, variables))
  grads = gradients(frozen, variables, images)
  for name in ("stem_conv", "stem_bn", "stage2_block0"):
    assert is_zero_tree(grads[name]), name
  for name in ("stage3_block0", "stage4_block0", "stage5_block0"):
    assert not is_zero_tree(grads[name]["Conv_0"]), name
    assert not is_zero_tree(grads[name]["BatchNorm_0"]), name


def test_frozen_norm_everywhere_leaves_only_convolutions_trainable(images):
  model = tiny_resnet(norm="frozen_batch_norm")
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
  grads = gradients(model, variables, images)
  _, updated = model.apply(variables, images, train=True, mutable=["batch_stats"])
  assert jax.tree.all(jax.tree.map(np.array_equal, updated["batch_stats"],
                                   variables["batch_stats"]))
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    module = path[-2].key
    if module.startswith("BatchNorm_") or module.endswith("_bn"):
      assert not np.any(grad), path
    else:
      assert np.any(grad), path


def test_frozen_parameter_mask_by_name(images):
  params = jax.eval_shape(tiny_resnet().init, jax.random.PRNGKey(0), images)["params"]

  def frozen_names(norm, freeze_at):
    mask = resnet.frozen_parameters(params, norm, freeze_at)
    return sorted("/".join(k.key for k in path)
                  for path, frozen in jax.tree_util.tree_leaves_with_path(mask) if frozen)
  assert frozen_names("batch_norm", 0) == []
  assert frozen_names("batch_norm", 1) == ["stem_bn/bias", "stem_bn/scale", "stem_conv/kernel"]
  stage2 = ["stage2_block0/BatchNorm_0/bias", "stage2_block0/BatchNorm_0/scale",
            "stage2_block0/BatchNorm_1/bias", "stage2_block0/BatchNorm_1/scale",
            "stage2_block0/Conv_0/kernel", "stage2_block0/Conv_1/kernel"]
  assert frozen_names("batch_norm", 2) == sorted(
      ["stem_bn/bias", "stem_bn/scale", "stem_conv/kernel"] + stage2)
  # Frozen norm alone: the 2 stem + 4 x (2 block + 1 projection, none in stage 2) norms.
  norm_only = frozen_names("frozen_batch_norm", 0)
  assert len(norm_only) == 2 * (1 + 2 + 3 * 3) and not any("Conv" in n for n in norm_only)
  assert "stage3_block0/proj_bn/scale" in norm_only


@pytest.mark.parametrize("norm,freeze_at,message", [("group_norm", 0, "unknown backbone norm"),
                                                     ("batch_norm", 6, "outside 0..5"),
                                                     ("batch_norm", -1, "outside 0..5")])
def test_bad_freezing_settings_are_errors(norm, freeze_at, message):
  with pytest.raises(ValueError, match=message):
    resnet.build_resnet("resnet_tiny", norm=norm, freeze_at=freeze_at)


def tiny_vgg(**kw):
  return vgg.SSDFeatures(stage_widths=(4, 4, 8, 8, 8), stage_depths=(2, 1, 1, 1, 1), fc_width=8,
                         fc6_dilation=1, extras=((4, 8, 3, 2, 1),), **kw)


@pytest.mark.parametrize("freeze_at,batch_norm,frozen_layers", [
    (2, False, ["conv1_1", "conv1_2", "conv2_1"]),
    # conv4_3_norm reads the frozen conv4_1 (the tiny VGG's last conv4 layer) and is trained.
    (4, True, ["conv1_1", "conv1_1_bn", "conv1_2", "conv1_2_bn", "conv2_1", "conv2_1_bn",
               "conv3_1", "conv3_1_bn", "conv4_1", "conv4_1_bn"])])
def test_ssd_freeze_at_stops_gradients_and_masks_those_layers(images, freeze_at, batch_norm,
                                                              frozen_layers):
  model = tiny_vgg(freeze_at=freeze_at, batch_norm=batch_norm)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)

  def loss(params):
    return sum(jnp.sum(m ** 2) for m in model.apply({**variables, "params": params}, images))
  grads = jax.jit(jax.grad(loss))(variables["params"])
  mask = vgg.frozen_parameters(variables["params"], freeze_at)
  masked = sorted(name for name, leaf in mask.items() if all(jax.tree.leaves(leaf)))
  assert masked == frozen_layers
  assert not any(jax.tree.leaves({k: v for k, v in mask.items() if k not in frozen_layers}))
  assert "conv4_3_norm" in grads and sorted(grads) == sorted(mask)
  for name, grad in grads.items():
    assert is_zero_tree(grad) == (name in frozen_layers), name


def test_ssd_classifier_ends_after_fc7(images):
  variables = jax.eval_shape(tiny_vgg(num_classes=7).init, jax.random.PRNGKey(0), images)
  names = set(variables["params"])
  assert {"fc7", "classifier"} <= names and not names & {"conv8_1", "conv4_3_norm"}
  assert variables["params"]["classifier"]["kernel"].shape == (8, 7)


@pytest.mark.parametrize("freeze_at", [-1, 6])
def test_ssd_bad_freeze_at_is_an_error(images, freeze_at):
  with pytest.raises(ValueError, match="outside 0..5"):
    tiny_vgg(freeze_at=freeze_at).init(jax.random.PRNGKey(0), images)
