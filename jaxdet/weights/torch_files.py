"""PyTorch checkpoint files (``torch.save`` of a state dict, the ``.pth`` files torchvision
publishes) read into numpy arrays without PyTorch.

Two layouts exist (``torch/serialization.py``):
  * the zip layout (PyTorch >= 1.6): ``<name>/data.pkl`` pickles the dict, each tensor's storage
    is the file ``<name>/data/<key>``;
  * the legacy layout: four pickles in a row (magic number, protocol version, system info, the
    dict), a pickled list of storage keys, then each storage as an int64 element count and its
    bytes.
In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)`` and a storage as a persistent id ``("storage", <dtype>Storage, key, location,
numel)``. Only these classes are unpickled; anything else is refused, so a file cannot run code.
"""
import collections
import dataclasses
import io
import pickle
import zipfile

import numpy as np

from jaxdet import errors

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                  "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                  "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                  "BoolStorage": np.bool_}


class TorchFileError(errors.ReportedError, ValueError):
  """A file that is not a readable PyTorch state dict."""


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: type


@dataclasses.dataclass(frozen=True)
class _Tensor:
  storage: _Storage
  offset: int
  size: tuple
  stride: tuple

  def to_numpy(self, storages):
    data = storages[self.storage.key]
    if not self.size:
      return data[self.offset].copy()
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride])
    return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused                                   # requires_grad, hooks, metadata
  return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Unpickler(pickle.Unpickler):
  """Unpickles a state dict's structure; tensors come out as :class:`_Tensor` records."""
  ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
             ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
             ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}

  def __init__(self, file, storages_seen):
    super().__init__(file)
    self.storages_seen = storages_seen

  def find_class(self, module, name):
    if module == "torch" and name in STORAGE_DTYPES:
      return STORAGE_DTYPES[name]
    if (module, name) in self.ALLOWED:
      return self.ALLOWED[(module, name)]
    raise TorchFileError(f"the file pickles {module}.{name}; only a state dict of tensors "
                         "(model.state_dict()) can be read")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchFileError(f"unknown persistent id {pid!r}")
    dtype, key = pid[1], str(pid[2])
    storage = _Storage(key, dtype)
    self.storages_seen[key] = storage
    return storage


def _read_zip(path):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise TorchFileError(f"{path}: a zip without one data.pkl")
    prefix = pickles[0][:-len("data.pkl")]
    seen = {}
    tree = _Unpickler(io.BytesIO(archive.read(pickles[0])), seen).load()
    storages = {key: np.frombuffer(archive.read(f"{prefix}data/{key}"), storage.dtype)
                for key, storage in seen.items()}
  return tree, storages


def _read_legacy(path):
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
    except Exception as e:  # pylint: disable=broad-except
      raise TorchFileError(f"{path} is not a PyTorch file ({e})") from None
    if magic != LEGACY_MAGIC:
      raise TorchFileError(f"{path} is not a PyTorch file")
    pickle.load(f)                              # protocol version
    pickle.load(f)                              # system info
    seen = {}
    tree = _Unpickler(f, seen).load()
    keys = pickle.load(f)
    storages = {}
    for key in keys:
      count = int(np.frombuffer(f.read(8), "<i8")[0])
      dtype = np.dtype(seen[str(key)].dtype)
      storages[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
  return tree, storages


def load_state_dict(path):
  """``{name: numpy array}`` of a ``torch.save``-d state dict (either layout), in its order."""
  tree, storages = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  if "state_dict" in tree and isinstance(tree["state_dict"], dict):
    tree = tree["state_dict"]                  # a training checkpoint around the weights
  if not all(isinstance(v, _Tensor) for v in tree.values()):
    raise TorchFileError(f"{path} is not a state dict of tensors")
  return collections.OrderedDict((name, tensor.to_numpy(storages))
                                 for name, tensor in tree.items())
