"""darknet's files: the ``.cfg`` network description and the ``.weights`` parameters.

A ``.cfg`` is a list of ``[section]``s of ``key=value`` lines; the first is ``[net]`` (input
size, training settings), each other one a layer, numbered from 0 as darknet numbers them
(``route`` and ``shortcut`` refer to layers by those numbers or relative to themselves).

A ``.weights`` file (darknet's ``src/parser.c``, ``save_weights_upto`` and
``load_weights_upto``) starts with three int32 (major, minor, revision) and the number of
images seen in training (int64 when ``10 major + minor >= 2``, else int32), then, for every
convolutional layer in order, float32 ``biases [n]``; with ``batch_normalize=1`` the batch
norm's ``scales [n]``, ``rolling_mean [n]``, ``rolling_variance [n]``; then ``weights [n, c,
k, k]``. A "partial" file (``darknet53.conv.74``) is the same stream cut after the first layers.

darknet's batch norm divides by ``sqrt(variance) + 1e-6`` (``normalize_cpu`` in
``src/blas.c``), Flax's by ``sqrt(variance + epsilon)``: :func:`flax_variance` stores the
variance for which the two agree.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import errors
from jaxdet.weights import trees

DARKNET_BN_EPSILON = 1e-6       # added to sqrt(variance), src/blas.c normalize_cpu
LAYERS_WITHOUT_WEIGHTS = ("maxpool", "avgpool", "route", "reorg", "upsample", "shortcut",
                          "yolo", "region", "softmax", "dropout", "cost")


class DarknetFileError(errors.ReportedError, ValueError):
  """A cfg or weights file that cannot be read, or that does not match the model."""


@dataclasses.dataclass(frozen=True)
class Layer:
  """One section of a cfg after ``[net]``: its type, darknet's layer number, its options (as
  written) and the number of channels it outputs."""
  kind: str
  index: int
  options: dict
  channels: int

  def get(self, key, default, cast=int):
    value = self.options.get(key)
    return default if value is None else cast(value)

  def floats(self, key):
    return [float(v) for v in self.options.get(key, "").split(",") if v.strip()]

  def ints(self, key):
    return [int(v) for v in self.options.get(key, "").split(",") if v.strip()]


@dataclasses.dataclass(frozen=True)
class Network:
  net: dict          # the [net] section's options
  layers: tuple      # of Layer

  @property
  def input_size(self):
    """``(height, width)`` of the cfg's input."""
    return int(self.net.get("height", 0)), int(self.net.get("width", 0))

  def of_kind(self, kind):
    return [layer for layer in self.layers if layer.kind == kind]


@dataclasses.dataclass(frozen=True)
class Conv:
  """A ``[convolutional]`` layer's arrays, as darknet stores them (``kernel [n, c, k, k]``)."""
  layer: Layer
  biases: np.ndarray
  kernel: np.ndarray
  scales: np.ndarray = None           # with batch_normalize=1: the batch norm's
  rolling_mean: np.ndarray = None
  rolling_variance: np.ndarray = None


def _sections(text):
  """``[(name, {key: value})]`` of a cfg's text; comments (``#``, ``;``) and blanks dropped."""
  sections = []
  for number, raw in enumerate(text.splitlines(), start=1):
    line = raw.split("#")[0].split(";")[0].strip()
    if not line:
      continue
    if line.startswith("["):
      if not line.endswith("]"):
        raise DarknetFileError(f"cfg line {number}: {raw!r} is not a [section]")
      sections.append((line[1:-1].strip(), {}))
    elif "=" in line and sections:
      key, value = line.split("=", 1)
      sections[-1][1][key.strip()] = value.strip()
    else:
      raise DarknetFileError(f"cfg line {number}: {raw!r} is neither a [section] nor key=value "
                             "inside one")
  return sections


def _absolute(references, index):
  return [r if r >= 0 else index + r for r in references]


def output_channels(kind, options, index, channels, input_channels):
  """Channels out of layer ``index`` (darknet's ``parse_*`` functions), given ``channels``,
  those out of every earlier layer, and ``input_channels`` those into it."""
  if kind in ("convolutional", "conv"):
    return int(options["filters"])
  if kind == "route":
    layers = _absolute([int(v) for v in options["layers"].split(",")], index)
    if any(not 0 <= r < index for r in layers):
      raise DarknetFileError(f"layer {index} [route] refers to {options['layers']}, not to "
                             "earlier layers")
    return sum(channels[r] for r in layers)
  if kind == "reorg":
    return input_channels * int(options.get("stride", 1)) ** 2
  if kind in LAYERS_WITHOUT_WEIGHTS:
    return input_channels
  raise DarknetFileError(f"layer {index} is a [{kind}]: jaxdet reads convolutional, maxpool, "
                         "avgpool, route, reorg, upsample, shortcut, yolo, region and softmax "
                         "layers")


def parse_cfg(text):
  """The :class:`Network` of a cfg's text."""
  sections = _sections(text)
  if not sections or sections[0][0] not in ("net", "network"):
    raise DarknetFileError("a darknet cfg starts with [net]")
  net = sections[0][1]
  channels, layers = [], []
  for index, (kind, options) in enumerate(sections[1:]):
    into = channels[-1] if channels else int(net.get("channels", 3))
    try:
      out = output_channels(kind, options, index, channels, into)
    except KeyError as e:
      raise DarknetFileError(f"layer {index} [{kind}] lacks {e.args[0]}=") from None
    channels.append(out)
    layers.append(Layer(kind, index, dict(options), out))
  return Network(net, tuple(layers))


def read_cfg(path):
  with open(path, encoding="utf-8") as f:
    return parse_cfg(f.read())


def input_channels(network, layer):
  """Channels into ``layer``: those of the layer before it (or of the image)."""
  if layer.index == 0:
    return int(network.net.get("channels", 3))
  return network.layers[layer.index - 1].channels


def conv_shapes(network):
  """``[(layer, {name: shape})]`` of every convolutional layer, in the weights file's order."""
  shapes = []
  for layer in network.layers:
    if layer.kind not in ("convolutional", "conv"):
      continue
    n, size = layer.channels, layer.get("size", 1)
    c = input_channels(network, layer) // layer.get("groups", 1)
    arrays = {"biases": (n,)}
    if layer.get("batch_normalize", 0):
      arrays.update(scales=(n,), rolling_mean=(n,), rolling_variance=(n,))
    arrays["kernel"] = (n, c, size, size)
    shapes.append((layer, arrays))
  return shapes


def _header_has_int64_seen(major, minor):
  return (major * 10 + minor) >= 2 and major < 1000 and minor < 1000


def read_weights(path, network):
  """``(header, convs)``: the header (``major, minor, revision, seen``) and a :class:`Conv` per
  convolutional layer the file holds, in order. A partial file holds the first ones; a file that
  ends inside a layer, or holds more than the cfg's layers take, is a :class:`DarknetFileError`
  naming the layer."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 16:
    raise DarknetFileError(f"{path}: {len(data)} bytes, shorter than a darknet weights header")
  major, minor, revision = (int(v) for v in np.frombuffer(data[:12], "<i4"))
  seen_dtype = "<i8" if _header_has_int64_seen(major, minor) else "<i4"
  start = 12 + np.dtype(seen_dtype).itemsize
  seen = int(np.frombuffer(data[12:start], seen_dtype)[0])
  if (len(data) - start) % 4:
    raise DarknetFileError(f"{path}: {len(data) - start} bytes after the header, not a whole "
                           "number of float32")
  values = np.frombuffer(data[start:], "<f4")
  header = {"major": major, "minor": minor, "revision": revision, "seen": seen}
  convs, offset = [], 0
  for layer, shapes in conv_shapes(network):
    if offset == len(values):
      break
    need = sum(int(np.prod(s)) for s in shapes.values())
    if offset + need > len(values):
      raise DarknetFileError(
          f"{path} ends inside layer {layer.index} [convolutional] (filters={layer.channels}, "
          f"size={layer.get('size', 1)}): it needs {need} values, {len(values) - offset} are "
          "left; is this the weights file of this cfg?")
    arrays = {}
    for name, shape in shapes.items():
      size = int(np.prod(shape))
      arrays[name] = values[offset:offset + size].reshape(shape).copy()
      offset += size
    convs.append(Conv(layer, **arrays))
  if offset != len(values):
    raise DarknetFileError(f"{path} holds {len(values) - offset} values more than the "
                           f"{len(convs)} convolutional layers of the cfg take; is this the "
                           "weights file of this cfg?")
  return header, convs


def write_weights(path, convs, major=0, minor=2, revision=0, seen=0):
  """Writes ``convs`` (:class:`Conv`) as a darknet weights file (``save_weights_upto``)."""
  seen_dtype = "<i8" if _header_has_int64_seen(major, minor) else "<i4"
  with open(path, "wb") as f:
    f.write(np.array([major, minor, revision], "<i4").tobytes())
    f.write(np.array([seen], seen_dtype).tobytes())
    for conv in convs:
      parts = [conv.biases]
      if conv.scales is not None:
        parts += [conv.scales, conv.rolling_mean, conv.rolling_variance]
      for array in parts + [conv.kernel]:
        f.write(np.ascontiguousarray(array, "<f4").tobytes())


def random_convs(network, seed, count=None):
  """Non-trivial random arrays for the first ``count`` (default all) convolutional layers of
  ``network``, so that a parity check sees every tensor: He-scaled kernels, biases, and batch
  norm statistics far from the identity. The batch norm scales (0.25-0.75) keep the activations
  of a deep residual network near unit size, as trained weights do; at unit gain each residual
  addition doubles their variance, and Darknet-53's 23 would blow float32 agreement up."""
  rng = np.random.default_rng(seed)
  convs = []
  for layer, shapes in conv_shapes(network)[:count]:
    n, c, k, _ = shapes["kernel"]
    arrays = {"kernel": rng.normal(0, np.sqrt(2 / (c * k * k)), shapes["kernel"]),
              "biases": rng.normal(0, 0.1, (n,))}
    if "scales" in shapes:
      arrays.update(scales=rng.uniform(0.25, 0.75, (n,)), rolling_mean=rng.normal(0, 0.1, (n,)),
                    rolling_variance=rng.uniform(0.5, 1.5, (n,)))
    convs.append(Conv(layer, **{k: v.astype(np.float32) for k, v in arrays.items()}))
  return convs


def _matching_variance(rolling_variance, flax_epsilon):
  return (np.sqrt(np.maximum(rolling_variance.astype(np.float64), 0.0))
          + DARKNET_BN_EPSILON) ** 2 - flax_epsilon


def flax_variance(rolling_variance, flax_epsilon):
  """The variance for which Flax's ``1 / sqrt(var + flax_epsilon)`` equals darknet's ``1 /
  (sqrt(rolling_variance) + 1e-6)``; channels whose darknet variance is below what Flax's
  epsilon allows get 0 (counted by :func:`clipped_variances`)."""
  return np.maximum(_matching_variance(rolling_variance, flax_epsilon), 0.0).astype(np.float32)


def clipped_variances(rolling_variance, flax_epsilon):
  """How many channels :func:`flax_variance` cannot match exactly."""
  return int(np.sum(_matching_variance(rolling_variance, flax_epsilon) < 0))


def anchors(layer):
  """A ``[region]``/``[yolo]`` layer's anchors as ``[(w, h)]``."""
  values = layer.floats("anchors")
  if len(values) % 2:
    raise DarknetFileError(f"layer {layer.index} [{layer.kind}]: an odd number of anchor values")
  return [tuple(values[i:i + 2]) for i in range(0, len(values), 2)]


def conv_summary(layer):
  """How a conv layer reads in messages: ``layer 12 [convolutional] 3x3/1 256``."""
  return (f"layer {layer.index} [convolutional] {layer.get('size', 1)}x{layer.get('size', 1)}/"
          f"{layer.get('stride', 1)} {layer.channels}")



@dataclasses.dataclass(frozen=True)
class ConvUnit:
  """A convolution of a jaxdet model, as paths into its flattened variables: the kernel, and
  either the bias or the batch norm's scale, bias, mean and variance."""
  name: str
  kernel: tuple
  bias: tuple = None
  bn_scale: tuple = None
  bn_bias: tuple = None
  bn_mean: tuple = None
  bn_var: tuple = None


def model_convs(model, input_shape):
  """``(units, shapes)`` of ``model`` (a Flax module taking ``[1, *input_shape, 3]`` images)
  from one abstract ``init``, nothing computed: the :class:`ConvUnit` of each ``nn.Conv`` in
  the order the forward pass calls them (darknet's layer order for the models that follow a
  cfg: Darknet-19, Darknet-53, YOLOv2, YOLOv3), and the variables' shapes."""
  order = []

  def record(call, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, nn.Conv):
      path = tuple(context.module.scope.path)
      if path not in order:
        order.append(path)
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, *input_shape, 3), jnp.float32)))
  return conv_units(shapes["params"], order), shapes


def conv_units(params, conv_paths):
  """The :class:`ConvUnit` of each convolution in ``conv_paths`` (:func:`model_convs`) in
  ``params`` (a model's nested parameters); a ``darknet.ConvBNLeaky`` is ``{conv: {kernel},
  bn: {scale, bias}}``, its statistics at the same path in ``batch_stats``."""
  flat = trees.flatten(params)
  units = []
  for module in conv_paths:
    owner = module[:-1]
    if module[-1] == "conv" and owner + ("bn", "scale") in flat:
      units.append(ConvUnit("/".join(owner), module + ("kernel",),
                            bn_scale=owner + ("bn", "scale"), bn_bias=owner + ("bn", "bias"),
                            bn_mean=owner + ("bn", "mean"), bn_var=owner + ("bn", "var")))
    else:
      bias = module + ("bias",)
      units.append(ConvUnit("/".join(module), module + ("kernel",),
                            bias=bias if bias in flat else None))
  return units


def check_layers_match(network, units, params):
  """Raises :class:`DarknetFileError` naming the first convolution where the cfg and the jaxdet
  model disagree (kernel size, channels in or out, batch norm), or a different number of them.
  ``params``: the model's parameters (or their shapes)."""
  flat = trees.flatten(params)
  layers = conv_shapes(network)
  if len(layers) != len(units):
    raise DarknetFileError(f"the cfg has {len(layers)} convolutional layers, the jaxdet model "
                           f"{len(units)}: it is not this cfg's network")
  for (layer, shapes), unit in zip(layers, units):
    n, c, k, _ = shapes["kernel"]
    expected = (k, k, c, n)
    found = tuple(flat[unit.kernel].shape)
    has_bn = "scales" in shapes
    if (found != expected or has_bn != (unit.bn_scale is not None)
        or (not has_bn and unit.bias is None)):
      bn = {True: "with batch norm", False: "without batch norm"}
      raise DarknetFileError(
          f"{conv_summary(layer)} from {c} channels, {bn[has_bn]}, does not match jaxdet's "
          f"{unit.name} (kernel {found}, {bn[unit.bn_scale is not None]}): the cfg and the model "
          "config describe different networks")


def to_variables(convs, units, flax_epsilon):
  """``({variable path: array}, clipped)``: the arrays of darknet's ``convs`` at the jaxdet
  ``units`` they load into (the first ``len(convs)``), kernels as ``[k, k, c, n]`` and batch
  norm variances by :func:`flax_variance`; ``clipped`` counts the channels it could not match.
  Parameter paths start with ``params``, batch statistics with ``batch_stats``."""
  arrays, clipped = {}, 0
  for conv, unit in zip(convs, units):
    arrays[("params",) + unit.kernel] = conv.kernel.transpose(2, 3, 1, 0)
    if unit.bn_scale is None:
      arrays[("params",) + unit.bias] = conv.biases
      continue
    arrays[("params",) + unit.bn_scale] = conv.scales
    arrays[("params",) + unit.bn_bias] = conv.biases
    arrays[("batch_stats",) + unit.bn_mean] = conv.rolling_mean
    arrays[("batch_stats",) + unit.bn_var] = flax_variance(conv.rolling_variance, flax_epsilon)
    clipped += clipped_variances(conv.rolling_variance, flax_epsilon)
  return arrays, clipped


FAMILY_OF_OUTPUT_LAYER = {"yolo": "yolo_v3", "region": "yolo_v2"}


def family_of(network):
  """The jaxdet family a cfg describes: ``yolo_v3`` ([yolo] layers), ``yolo_v2`` ([region]), or
  ``classifier`` (neither: Darknet-19, Darknet-53)."""
  for kind, family in FAMILY_OF_OUTPUT_LAYER.items():
    if network.of_kind(kind):
      return family
  return "classifier"


def _same_anchors(layers):
  found = {tuple(anchors(layer)) for layer in layers}
  if len(found) != 1:
    raise DarknetFileError(f"the cfg's [{layers[0].kind}] layers list different anchors; jaxdet "
                           "shares one list between the scales")
  return found.pop()


def _passthrough_width(network):
  """Filters of the 1x1 convolution right before the [reorg] layer; 0 without one."""
  reorg = network.of_kind("reorg")
  if len(reorg) != 1:
    raise DarknetFileError(f"a YOLOv2 cfg has one [reorg] layer, this one {len(reorg)}")
  before = network.layers[reorg[0].index - 1]
  return before.channels if before.kind in ("convolutional", "conv") else 0


def configure(config, network):
  """Sets in ``config`` (a recipe of the cfg's family) what the cfg determines: input size,
  pixel scaling (RGB / 255), darknet's letterboxed evaluation, classes, priors, and for YOLOv2
  the passthrough's width and darknet's reorg; the rest of the network is checked against the cfg by
  :func:`check_layers_match` once the model is built."""
  family = family_of(network)
  if config.model.family != family:
    raise DarknetFileError(f"the cfg describes a {family} network, the config is a "
                           f"{config.model.family} recipe: pass a {family} variant as --config")
  height, width = network.input_size
  if height and width:
    config.data.image_size = (height, width)
  config.data.pixel_mean = (0.0, 0.0, 0.0)          # darknet feeds RGB / 255
  config.data.pixel_std = (255.0, 255.0, 255.0)
  config.data.eval_letterbox = family != "classifier"  # darknet's `detector valid` letterboxes
  model = config.model
  if family == "yolo_v3":
    outputs = network.of_kind("yolo")
    model.num_classes = outputs[0].get("classes", 80)
    model.priors = _same_anchors(outputs)                                     # input pixels
    model.priors_per_level = tuple(tuple(layer.ints("mask")) for layer in reversed(outputs))
    model.priors_file = ""
    model.loss.ignore_threshold = outputs[0].get("ignore_thresh", 0.5, float)
  elif family == "yolo_v2":
    (region,) = network.of_kind("region")
    model.num_classes = region.get("classes", 20)
    model.priors = _same_anchors([region])                                   # stride-32 cells
    model.priors_file = ""
    model.passthrough_width = _passthrough_width(network)
    model.reorg = "darknet"
    model.loss.ignore_threshold = region.get("thresh", 0.6, float)
  else:
    convs = network.of_kind("convolutional") + network.of_kind("conv")
    model.num_classes = max(convs, key=lambda layer: layer.index).channels
  return config


def resize_image(image, height, width):
  """darknet's ``resize_image`` (src/image.c) of a float ``[H, W, C]`` image: bilinear with the
  corners aligned (``scale = (in - 1) / (out - 1)``), columns first then rows, in float32."""
  image = np.asarray(image, np.float32)
  in_h, in_w = image.shape[:2]

  def weights(out_size, in_size):
    scale = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0)
    source = np.arange(out_size, dtype=np.float32) * scale
    low = np.minimum(source.astype(np.int64), in_size - 1)
    frac = (source - low).astype(np.float32)
    return low, frac

  low, dx = weights(width, in_w)
  high = np.minimum(low + 1, in_w - 1)
  part = (1 - dx)[None, :, None] * image[:, low] + dx[None, :, None] * image[:, high]
  if in_w == 1:
    part = np.repeat(image[:, -1:], width, axis=1)
  part[:, -1] = image[:, -1]                      # the last column is copied, not blended
  low, dy = weights(height, in_h)
  resized = (1 - dy)[:, None, None] * part[low]
  if in_h > 1:
    blend = dy[:, None, None] * part[np.minimum(low + 1, in_h - 1)]
    resized[:-1] += blend[:-1]                     # the last row gets no second term
  return resized.astype(np.float32)


def letterbox(image, height, width):
  """darknet's ``letterbox_image``: ``image`` (float ``[H, W, C]``, 0-1) scaled to fit
  ``height x width`` keeping its aspect ratio (integer sizes as darknet rounds them), centred on
  a canvas of 0.5. Returns ``(boxed, (top, left), (new_h, new_w))``."""
  in_h, in_w = image.shape[:2]
  if width / in_w < height / in_h:
    new_w, new_h = width, (in_h * width) // in_w
  else:
    new_h, new_w = height, (in_w * height) // in_h
  boxed = np.full((height, width, image.shape[2]), 0.5, np.float32)
  top, left = (height - new_h) // 2, (width - new_w) // 2
  boxed[top:top + new_h, left:left + new_w] = resize_image(image, new_h, new_w)
  return boxed, (top, left), (new_h, new_w)
