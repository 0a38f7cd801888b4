"""Writes the parity fixtures from the reference implementations: ``fixtures/darknet_<case>.npz``
from OpenCV's darknet reader, ``fixtures/torchvision_<case>.npz`` from torchvision, and two
small ``torch.save`` files (both layouts) for the torch-free reader. With the parity extra
(``pip install -e .[parity]``, torch and torchvision from PyTorch's CPU index), from the checkout:

  python -m tests.weights.make_fixtures [darknet] [torchvision] [torch_files]

The random weights come from each case's seed, so the fixtures only hold inputs and outputs.
"""
import sys
import tempfile

import numpy as np

from jaxdet.weights import darknet
from tests.weights import darknet_cases
from tests.weights import torchvision_cases

FIXTURES = darknet_cases.FIXTURES


def reference(case, directory):
  """The fixture arrays of ``case`` (see ``darknet_cases``), computed by OpenCV."""
  cfg, weights = darknet_cases.write_files(case, case.size, directory)
  network = darknet.parse_cfg(cfg.read_text())
  raw, decoded = darknet_cases.opencv_outputs(cfg, weights, darknet_cases.photographs(case.size),
                                              network)
  full_cfg, _ = darknet_cases.write_files(case, darknet_cases.FULL_SIZE, directory)
  images = darknet_cases.photographs(darknet_cases.FULL_SIZE)[:1]
  _, full = darknet_cases.opencv_outputs(full_cfg, weights, images, network)
  slots = np.argsort(-full[0, :, 4], kind="stable")[:darknet_cases.TOP_SLOTS]
  return {"raw": raw, "decoded": decoded[..., :5], "full_slots": slots,
          "full_rows": full[0, slots]}


def torchvision_reference(case):
  """The fixture arrays of a torchvision ``case``, computed by torchvision."""
  _, state_dict = torchvision_cases.names_and_state_dict(case)
  arrays = {}
  for size in torchvision_cases.SIZES:
    features = torchvision_cases.torchvision_features(case, state_dict,
                                                      torchvision_cases.photographs(size))
    arrays.update(torchvision_cases.summary(case, features, size))
  return arrays


def torch_file_tensors():
  """Tensors for the reader's fixture: a conv weight, a batch norm statistic and counter, and a
  view into the middle of another tensor's storage (an offset and strides)."""
  import torch  # pylint: disable=import-outside-toplevel
  generator = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=generator)
  return {"conv.weight": torch.randn(2, 3, 3, 3, generator=generator),
          "bn.running_mean": torch.randn(5, generator=generator, dtype=torch.float64),
          "bn.num_batches_tracked": torch.tensor(7),
          "base": base, "view": base[1:, ::2]}


def write_torch_files():
  import torch  # pylint: disable=import-outside-toplevel
  tensors = torch_file_tensors()
  torch.save(tensors, FIXTURES / "torch_state_dict_zip.pth")
  torch.save(tensors, FIXTURES / "torch_state_dict_legacy.pth",
             _use_new_zipfile_serialization=False)
  np.savez_compressed(FIXTURES / "torch_state_dict.npz",
                      **{k: v.numpy() for k, v in tensors.items()})


def main(parts):
  if "darknet" in parts:
    for name, case in darknet_cases.CASES.items():
      with tempfile.TemporaryDirectory() as directory:
        save(case.fixture(name), reference(case, directory))
  if "torchvision" in parts:
    for name, case in torchvision_cases.CASES.items():
      save(case.fixture(name), torchvision_reference(case))
  if "torch_files" in parts:
    write_torch_files()


def save(path, arrays):
  np.savez_compressed(path, **arrays)
  print(f"{path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
  main(sys.argv[1:] or ("darknet", "torchvision", "torch_files"))
