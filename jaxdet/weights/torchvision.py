"""torchvision's state dicts mapped onto jaxdet's models: which torchvision tensor is which
jaxdet array, and how it is laid out.

ResNet (``torchvision.models.resnet``, v1.5 like jaxdet's: the stride on the 3x3): ``conv1`` /
``bn1`` are jaxdet's ``stem_conv`` / ``stem_bn``; block ``j`` of ``layer<i>`` is
``stage<i+1>_block<j>``, its ``conv<k>`` / ``bn<k>`` jaxdet's ``Conv_<k-1>`` / ``BatchNorm_<k-1>``
and its ``downsample.0`` / ``.1`` jaxdet's ``proj_conv`` / ``proj_bn``; ``fc`` is the
classifier. Both use batch norm epsilon 1e-5 and pad the 3x3 max-pool with -inf, so the arrays
move unchanged but for layout: convolution weights ``[out, in, kh, kw]`` become kernels ``[kh,
kw, in, out]``, linear weights ``[out, in]`` become ``[in, out]``.
"""
import numpy as np

from jaxdet import errors
from jaxdet.models import resnet

BATCH_NORM_COUNTER = "num_batches_tracked"     # torch's step count; no jaxdet counterpart


class StateDictError(errors.ReportedError, ValueError):
  """A state dict that does not fit the model."""


def _conv(torch_name, path):
  return {f"{torch_name}.weight": (("params",) + path + ("kernel",), "conv")}


def _batch_norm(torch_name, path):
  return {f"{torch_name}.weight": (("params",) + path + ("scale",), "copy"),
          f"{torch_name}.bias": (("params",) + path + ("bias",), "copy"),
          f"{torch_name}.running_mean": (("batch_stats",) + path + ("mean",), "copy"),
          f"{torch_name}.running_var": (("batch_stats",) + path + ("var",), "copy")}


def resnet_names(architecture, prefix=("backbone",), classifier=True):
  """``{torchvision name: (jaxdet variable path, layout)}`` of ``RESNETS[architecture]``;
  jaxdet paths start with the collection (``params`` / ``batch_stats``), then ``prefix``."""
  spec = resnet.RESNETS[architecture]
  convs_per_block = 3 if spec.block is resnet.BottleneckBlock else 2
  names = {**_conv("conv1", prefix + ("stem_conv",)), **_batch_norm("bn1", prefix + ("stem_bn",))}
  for stage, blocks in enumerate(spec.stage_sizes, start=1):
    for block in range(blocks):
      torch_block = f"layer{stage}.{block}"
      path = prefix + (f"stage{stage + 1}_block{block}",)
      for k in range(convs_per_block):
        names.update(_conv(f"{torch_block}.conv{k + 1}", path + (f"Conv_{k}",)))
        names.update(_batch_norm(f"{torch_block}.bn{k + 1}", path + (f"BatchNorm_{k}",)))
      if block == 0 and (stage > 1 or spec.block is resnet.BottleneckBlock):
        names.update(_conv(f"{torch_block}.downsample.0", path + ("proj_conv",)))
        names.update(_batch_norm(f"{torch_block}.downsample.1", path + ("proj_bn",)))
  if classifier:
    names["fc.weight"] = (("params",) + prefix + ("classifier", "kernel"), "linear")
    names["fc.bias"] = (("params",) + prefix + ("classifier", "bias"), "copy")
  return names


LAYOUTS = {"conv": lambda w: w.transpose(2, 3, 1, 0), "linear": lambda w: w.T,
           "copy": lambda w: w}


def to_variables(state_dict, names):
  """``{jaxdet variable path: array}`` of ``state_dict`` (``{name: numpy array}``) by ``names``
  (e.g. :func:`resnet_names`). Every tensor of the state dict must have a place (the batch norm
  counters excepted) and every name a tensor: otherwise a :class:`StateDictError` lists them."""
  unused = [k for k in state_dict if k not in names and not k.endswith(BATCH_NORM_COUNTER)]
  missing = [k for k in names if k not in state_dict]
  if unused or missing:
    raise StateDictError(
        "the state dict does not fit the model: "
        + (f"{len(missing)} tensors missing ({', '.join(missing[:5])}{' ...' * (len(missing) > 5)})"
           if missing else "")
        + ("; " if missing and unused else "")
        + (f"{len(unused)} tensors without a place ({', '.join(unused[:5])}"
           f"{' ...' * (len(unused) > 5)})" if unused else "")
        + ": is it the state dict of this architecture?")
  return {path: LAYOUTS[layout](np.asarray(state_dict[name])) for name, (path, layout)
          in names.items()}


def torch_shapes(names, variable_shapes):
  """``{torchvision name: shape}`` that ``names`` expects, from the jaxdet model's
  ``variable_shapes`` (``{path: shape}``): the inverse layouts."""
  inverse = {"conv": lambda s: (s[3], s[2], s[0], s[1]), "linear": lambda s: (s[1], s[0]),
             "copy": tuple}
  return {name: tuple(int(d) for d in inverse[layout](variable_shapes[path]))
          for name, (path, layout) in names.items()}


def random_state_dict(names, variable_shapes, seed):
  """A torchvision state dict for ``names`` of non-trivial random values from ``seed``, batch
  norm statistics included (as :func:`jaxdet.weights.darknet.random_convs`): He-scaled
  convolutions, batch norm scales 0.25-0.75, biases and means N(0, 0.1), variances 0.5-1.5,
  linear layers N(0, 0.01); with torch's batch norm counters, so that ``load_state_dict`` with
  ``strict=True`` takes it."""
  rng = np.random.default_rng(seed)
  shapes = torch_shapes(names, variable_shapes)
  state = {}
  for name, shape in shapes.items():
    kind = name.rsplit(".", 1)[-1]
    layout = names[name][1]
    if layout == "conv":
      value = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
    elif layout == "linear":
      value = rng.normal(0, 0.01, shape)
    elif kind == "running_var":
      value = rng.uniform(0.5, 1.5, shape)
    elif kind == "weight":
      value = rng.uniform(0.25, 0.75, shape)
    else:
      value = rng.normal(0, 0.1, shape)
    state[name] = value.astype(np.float32)
    if kind == "running_var":
      state[name[:-len("running_var")] + BATCH_NORM_COUNTER] = np.array(0, np.int64)
  return state
