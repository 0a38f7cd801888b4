"""torchvision's state dicts mapped onto jaxdet's models: which torchvision tensor is which
jaxdet array, and how it is laid out.

VGG-16 (``torchvision.models.vgg16``, configuration D): ``features.<i>`` are jaxdet's
``conv1_1`` ... ``conv5_3`` of SSD's base (``jaxdet.models.vgg``). Its fully connected layers
become SSD's reduced fc6 and fc7 (SSD Sec. 3 "Base network": "we subsample the parameters from
fc6 and fc7", as DeepLab-LargeFOV decimates them): fc6's ``[4096, 512 x 7 x 7]`` weights keep
every 4th filter and every 3rd tap in each direction, a ``3x3`` kernel whose dilation (6 on
the stride-16 map after the 3x3/1 pool5) spans what 3 taps span at stride 32; fc7 keeps every
4th filter of every 4th input. For the full VGG-16 (``base.atrous=False``) they are reshaped
into 7x7 and 1x1 convolutions unchanged. fc8 has no place: jaxdet's classifier reads fc7
globally pooled, so it keeps its initialisation.

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


# features.<i> of torchvision's VGG-16: the convolutions, stage by stage (max-pools between).
VGG16_FEATURE_INDEX = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10,
                       "conv3_2": 12, "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
                       "conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
VGG16_DROPPED = ("classifier.6.weight", "classifier.6.bias")     # fc8 (module docstring)


def vgg16_names(atrous=True, prefix=("features",)):
  """``{torchvision name: (jaxdet variable path, layout)}`` of VGG-16 into SSD's base
  (``atrous``: the reduced fc6/fc7, else the full ones)."""
  names = {}
  for layer, index in VGG16_FEATURE_INDEX.items():
    names[f"features.{index}.weight"] = (("params",) + prefix + (layer, "kernel"), "conv")
    names[f"features.{index}.bias"] = (("params",) + prefix + (layer, "bias"), "copy")
  reduce = {"fc6": "fc6_reduced", "fc7": "fc7_reduced"} if atrous else {"fc6": "fc6", "fc7": "fc7"}
  for layer, index in (("fc6", 0), ("fc7", 3)):
    names[f"classifier.{index}.weight"] = (("params",) + prefix + (layer, "kernel"), reduce[layer])
    names[f"classifier.{index}.bias"] = (("params",) + prefix + (layer, "bias"),
                                         "every_4th" if atrous else "copy")
  return names


def _fc6(w):
  return w.reshape(w.shape[0], 512, 7, 7).transpose(2, 3, 1, 0)


LAYOUTS = {"conv": lambda w: w.transpose(2, 3, 1, 0), "linear": lambda w: w.T,
           "copy": lambda w: w, "every_4th": lambda b: b[::4],
           "fc6": _fc6, "fc6_reduced": lambda w: _fc6(w)[::3, ::3, :, ::4],
           "fc7": lambda w: w.T[None, None], "fc7_reduced": lambda w: w.T[None, None, ::4, ::4]}


def to_variables(state_dict, names, dropped=()):
  """``{jaxdet variable path: array}`` of ``state_dict`` (``{name: numpy array}``) by ``names``
  (e.g. :func:`resnet_names`). Every tensor of the state dict must have a place (the batch norm
  counters and the ``dropped`` names excepted) and every name a tensor: otherwise a
  :class:`StateDictError` lists them."""
  unused = [k for k in state_dict if k not in names and k not in dropped
            and not k.endswith(BATCH_NORM_COUNTER)]
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
             "copy": tuple, "fc6": lambda s: (s[3], s[2] * s[0] * s[1]),
             "fc7": lambda s: (s[3], s[2]), "every_4th": lambda s: (4 * s[0],),
             "fc6_reduced": lambda s: (4 * s[3], s[2] * 49),
             "fc7_reduced": lambda s: (4 * s[3], 4 * s[2])}
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
    elif layout.startswith(("fc6", "fc7")):
      value = rng.normal(0, np.sqrt(2 / shape[1]), shape)
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
