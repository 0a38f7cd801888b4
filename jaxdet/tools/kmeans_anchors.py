r"""Anchor priors for the YOLO families: k-means with distance 1 - IoU on the training boxes'
(w, h) at the network input (YOLOv2, "Dimension Clusters"). Prints the mean IoU for k = 1..9
(the elbow of YOLOv2's Fig. 2) and writes the priors for --k to a JSON file.

  python scripts/kmeans_anchors.py --config=experiments/ssd.py:ssd300_voc \
      --config.data.data_dir=/data/tfds --k=5 --output=voc_priors.json
  python scripts/kmeans_anchors.py --coco_json_dir=/data/my_dataset --k=9 --output=priors.json

Train with them: ``--config.model.priors_file=priors.json`` (YOLOv2 reads ``priors_cells``,
YOLOv3 ``priors_pixels``).
"""
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxdet import runtime
from jaxdet import tools
from jaxdet.data import anchor_kmeans
from jaxdet.data import sources

_CONFIG = config_flags.DEFINE_config_file(
    "config", runtime.DEFAULT_CONFIG, "Experiment config: its data.train split, input size and "
    "resize rule.", lock_config=True)
_COCO_JSON_DIR = flags.DEFINE_string("coco_json_dir", None, "Use this COCO-json folder's train "
                                     "split instead of the config's.")
_K = flags.DEFINE_integer("k", 5, "Number of priors to write (YOLOv2: 5; YOLOv3: 9).")
_MAX_K = flags.DEFINE_integer("max_k", 9, "Print the mean IoU for k = 1..max_k.")
_STRIDE = flags.DEFINE_integer("stride", 32, "Also give the priors in cells of this output "
                               "stride (YOLOv2 predicts at stride 32).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the k-means++ initialisations.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the priors (JSON).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = runtime.prepare(_CONFIG.value, coco_json_dir=_COCO_JSON_DIR.value)
  source = sources.build_source(config.data.train, config.data.data_dir or None,
                                config.data.coco_json_dir)
  image_size = tuple(config.data.image_size)
  wh = anchor_kmeans.input_box_sizes(source, image_size, config.data.keep_aspect_ratio)
  print(f"{len(wh)} boxes of {source.name} at the {image_size[0]}x{image_size[1]} input")
  curve = anchor_kmeans.elbow(wh, range(1, max(_MAX_K.value, _K.value) + 1), _SEED.value)
  print("  k  mean IoU")
  for k, iou, _ in curve:
    print(f"{k:3d}  {iou:.4f}{'   <- written' if k == _K.value else ''}")
  _, iou, priors = curve[_K.value - 1]
  result = {"dataset": source.name, "image_size": list(image_size), "k": _K.value,
            "mean_iou": round(iou, 4),
            "priors_pixels": [[round(float(w), 2), round(float(h), 2)] for w, h in priors],
            "stride": _STRIDE.value,
            "priors_cells": [[round(float(w) / _STRIDE.value, 4),
                              round(float(h) / _STRIDE.value, 4)] for w, h in priors],
            "elbow": [[k, round(value, 4)] for k, value, _ in curve]}
  print(f"priors (w, h) in input pixels, by area: {result['priors_pixels']}")
  print(f"in stride-{_STRIDE.value} cells: {result['priors_cells']}")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
    print(f"wrote {_OUTPUT.value}")


def run():
  """The ``jaxdet-kmeans-anchors`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
