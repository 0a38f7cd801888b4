"""scripts/import_weights.py end to end: a darknet cfg + weights pair becomes a workdir that
scripts/evaluate.py, scripts/predict.py and train.init_from take as they take a trained run."""
import json
import os

import numpy as np
import pytest

from jaxdet.tools import import_weights
from jaxdet.train import checkpoint
from jaxdet.weights import darknet
from tests.scripts.test_scripts import REPO, run

# YOLOv2 of experiments/yolo_v2.py:tiny_test written as darknet writes it (cf. yolov2-voc.cfg):
# six Darknet-19 stages of one 3x3 convolution, max-pools between them, two head convolutions,
# the passthrough from layer 8 (stride 16) through a 1x1 reduction and darknet's reorg, a third
# head convolution and the 1x1 prediction of 3 priors x (5 + 3 classes).
TINY_YOLO_V2_CFG = """[net]
height=64
width=64
channels=3
""" + "".join(
    f"[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
    + ("[maxpool]\nsize=2\nstride=2\n" if i < 5 else "")
    for i, f in enumerate((8, 8, 8, 16, 16, 16))) + """
[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=leaky
[route]
layers=-5
[convolutional]
batch_normalize=1
filters=4
size=1
activation=leaky
[reorg]
stride=2
[route]
layers=-1,-4
[convolutional]
batch_normalize=1
filters=16
size=3
pad=1
activation=leaky
[convolutional]
filters=24
size=1
activation=linear
[region]
anchors = 0.45,0.45, 0.8,0.8, 1.2,1.2
classes=3
num=3
thresh=.6
"""


def test_import_then_evaluate_and_predict(scenes_dir, tmp_path):
  cfg = tmp_path / "tiny.cfg"
  cfg.write_text(TINY_YOLO_V2_CFG)
  network = darknet.read_cfg(cfg)
  assert network.layers[8].channels == 16 and network.layers[13].kind == "route"
  weights = tmp_path / "tiny.weights"
  darknet.write_weights(weights, darknet.random_convs(network, 0))
  names = tmp_path / "digits.names"
  names.write_text("zero\none\ntwo\n")
  workdir = tmp_path / "imported"
  out = run("import_weights.py", "--from=darknet", f"--cfg={cfg}", f"--weights={weights}",
            f"--config={REPO}/experiments/yolo_v2.py:tiny_test", f"--class_names={names}",
            f"--workdir={workdir}")
  assert "imported 11 of 11 convolutions" in out.stderr + out.stdout
  info = json.loads((workdir / "imported_from.json").read_text())
  assert info["header"]["minor"] == 2 and not info["left_at_initialisation"]
  config, class_names, step = checkpoint.saved_run(str(workdir))
  assert (class_names, step, config.model.reorg) == (("zero", "one", "two"), 0, "darknet")
  saved, _ = checkpoint.restore_arrays(str(workdir), parts=("params",))
  _, convs = darknet.read_weights(weights, network)
  np.testing.assert_array_equal(saved["params"]["predict"]["kernel"],
                                convs[-1].kernel.transpose(2, 3, 1, 0))

  evaluated = run("evaluate.py", f"--workdir={workdir}", f"--coco_json_dir={scenes_dir}",
                  "--dataset=coco_json:val", "--metrics=coco").stdout
  assert "coco/AP" in evaluated
  predictions = tmp_path / "predictions"
  run("predict.py", f"--workdir={workdir}", f"--output_dir={predictions}",
      os.path.join(scenes_dir, "val", "val_0000.png"))
  assert (predictions / "val_0000.png").exists()
  with pytest.raises(import_weights.WeightsImportError, match="already holds checkpoints"):
    import_weights.write_workdir(str(workdir), config, None, {}, class_names, info)
