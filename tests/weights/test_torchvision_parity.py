"""torchvision state dicts imported into jaxdet compute what torchvision computes: ResNet-50,
ResNet-101 and VGG-16 with random weights (``torchvision_cases``), against the committed
fixtures, or live when torchvision is installed; VGG-16's fc6/fc7 decimated into SSD's reduced
layers; and the torch-free reader of ``.pth`` files."""
import numpy as np
import pytest

from jaxdet.weights import torch_files
from jaxdet.weights import torchvision
from tests.weights import torchvision_cases

RELATIVE_TOLERANCE = 1e-5


def relative_error(ours, reference):
  return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def check_against(reference, case, names, state_dict):
  compared = set()
  for size in torchvision_cases.SIZES:
    ours = torchvision_cases.summary(
        case, torchvision_cases.jaxdet_features(case, state_dict, names,
                                                torchvision_cases.photographs(size)), size)
    compared |= set(ours)
    for key, value in ours.items():
      assert relative_error(value, reference[key]) <= RELATIVE_TOLERANCE, key
    if f"{size}/logits" in ours:
      np.testing.assert_array_equal(np.argmax(ours[f"{size}/logits"], -1),
                                    np.argmax(reference[f"{size}/logits"], -1))
  assert compared == set(reference)


@pytest.fixture(scope="module", params=sorted(torchvision_cases.CASES))
def case(request):
  name = request.param
  spec = torchvision_cases.CASES[name]
  names, state_dict = torchvision_cases.names_and_state_dict(spec)
  return name, spec, names, state_dict


def test_matches_the_torchvision_fixtures(case):
  name, spec, names, state_dict = case
  with np.load(spec.fixture(name)) as fixture:
    check_against(dict(fixture), spec, names, state_dict)


def test_matches_torchvision_live(case):
  pytest.importorskip("torchvision", reason="the parity extra (torchvision) is not installed")
  from tests.weights import make_fixtures  # pylint: disable=import-outside-toplevel
  _, spec, names, state_dict = case
  check_against(make_fixtures.torchvision_reference(spec), spec, names, state_dict)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reads_torch_save_files_without_torch(layout):
  state = torch_files.load_state_dict(
      torchvision_cases.FIXTURES / f"torch_state_dict_{layout}.pth")
  with np.load(torchvision_cases.FIXTURES / "torch_state_dict.npz") as expected:
    assert list(state) == ["conv.weight", "bn.running_mean", "bn.num_batches_tracked", "base",
                           "view"]
    for name, value in state.items():
      assert value.dtype == expected[name].dtype and value.shape == expected[name].shape
      np.testing.assert_array_equal(value, expected[name])


def test_a_state_dict_of_another_model_is_refused_with_names():
  names = torchvision.resnet_names("resnet50")
  state = {name: np.zeros(1) for name in names}
  state["extra.weight"] = np.zeros(1)
  del state["layer4.2.conv3.weight"]
  with pytest.raises(torchvision.StateDictError,
                     match=r"1 tensors missing \(layer4.2.conv3.weight\); 1 tensors without a "
                           r"place \(extra.weight\)"):
    torchvision.to_variables(state, names)


def test_resnet_names_count_torchvisions_tensors():
  """ResNet-50: 53 convolutions (1 + 16 x 3 + 4 projections) and 53 batch norms of 4 tensors,
  plus fc weight and bias."""
  names = torchvision.resnet_names("resnet50")
  assert sum(layout == "conv" for _, layout in names.values()) == 53
  assert len(names) == 53 + 53 * 4 + 2
  assert names["layer3.0.downsample.0.weight"][0] == (
      "params", "backbone", "stage4_block0", "proj_conv", "kernel")


def test_the_import_tool_reads_a_torchvision_file_live(tmp_path):
  torch = pytest.importorskip("torch", reason="the parity extra (torch) is not installed")
  from jaxdet.train import checkpoint  # pylint: disable=import-outside-toplevel
  from tests.scripts.test_scripts import REPO, run  # pylint: disable=import-outside-toplevel
  _, state_dict = torchvision_cases.names_and_state_dict(torchvision_cases.CASES["resnet50"])
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
             tmp_path / "resnet50.pth")
  workdir = tmp_path / "resnet50"
  run("import_weights.py", "--from=torchvision:resnet50",
      f"--weights={tmp_path / 'resnet50.pth'}",
      f"--config={REPO}/experiments/retinanet.py:resnet50_imagenet", f"--workdir={workdir}")
  saved, step = checkpoint.restore_arrays(str(workdir), parts=("params",))
  assert step == 0
  np.testing.assert_array_equal(saved["params"]["backbone"]["stage5_block2"]["Conv_2"]["kernel"],
                                state_dict["layer4.2.conv3.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(saved["params"]["backbone"]["classifier"]["kernel"],
                                state_dict["fc.weight"].T)


def test_vgg16_fc6_and_fc7_are_decimated_as_ssd_reduces_them():
  """fc6 ``[4096, 512 x 7 x 7]`` -> 3x3 kernel of every 4th filter at taps 0, 3, 6; fc7 every 4th
  filter of every 4th input (jaxdet.weights.torchvision's docstring), index by index."""
  rng = np.random.default_rng(0)
  names = torchvision.vgg16_names()
  fc6 = rng.normal(size=(16, 512 * 49)).astype(np.float32)
  fc7 = rng.normal(size=(16, 12)).astype(np.float32)
  kernel6 = torchvision.LAYOUTS[names["classifier.0.weight"][1]](fc6)
  kernel7 = torchvision.LAYOUTS[names["classifier.3.weight"][1]](fc7)
  assert kernel6.shape == (3, 3, 512, 4) and kernel7.shape == (1, 1, 3, 4)
  for a in range(3):
    for b in range(3):
      for c in (0, 7, 511):
        for o in range(4):
          assert kernel6[a, b, c, o] == fc6[4 * o, c * 49 + 3 * a * 7 + 3 * b]
  for i in range(3):
    for o in range(4):
      assert kernel7[0, 0, i, o] == fc7[4 * o, 4 * i]
  bias = torchvision.LAYOUTS[names["classifier.0.bias"][1]](np.arange(16.0))
  np.testing.assert_array_equal(bias, [0, 4, 8, 12])
