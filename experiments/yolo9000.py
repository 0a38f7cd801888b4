r"""YOLO9000 (Redmon & Farhadi 2017, "YOLO9000: Better, Faster, Stronger", Sec. 4 "Stronger")
recipes; pick one with ``--config=experiments/yolo9000.py:<variant>``.

Variants:
  yolo9000_coco_imagenet  the paper's joint training: COCO detection + ImageNet classification
                  in one stream, 4 classification images to 1 detection image (the paper
                  oversamples COCO "so that ImageNet is only larger by a factor of 4:1"),
                  over darknet's 9,418-node WordTree (``9k.tree``, ``9k.names``; COCO's classes
                  placed by ``coco9k.map``; ImageNet's wnids are node names), 3 priors per
                  cell, the network, head and loss of darknet's ``cfg/yolo9000.cfg`` and region
                  layer as released with yolo9000.weights (jaxdet.detectors.yolo9000), YOLOv2's
                  recipe otherwise, evaluated on COCO's 80 classes at 544x544. Give the tree
                  files by flag:
                    --config.model.tree.file=9k.tree --config.model.tree.names_file=9k.names
                    --config.model.class_map_file=coco9k.map
                  (darknet's data/ folder, https://github.com/pjreddie/darknet) and prepare
                  ``coco/2017`` and ``imagenet2012`` in --config.data.data_dir.
  tiny_digits     the paper's claim in miniature on the shipped data (README "YOLO9000"), with
                  the paper's rule for classification images (no no-object term): a
                  tree top -> even / odd -> the digits; detection boxes of ``digit_scenes``
                  keep their digit for 0-4 but carry only the parent ("even" / "odd") for 5-9;
                  ``digit_crops`` classification images carry every digit, 1 per 2 detection
                  images. Evaluated per digit with VOC12 AP50: ``seen`` (0-4, fine-labelled
                  boxes) against ``unseen`` (5-9, never a fine-labelled box).
  tiny_digits_detection_only  the same without the classification images: the baseline.
  tiny_test       the smallest model, for tests and smoke runs.

Example:
  python scripts/train.py --config=experiments/yolo9000.py:tiny_digits --workdir=runs/y9k
"""
import ml_collections

from experiments import yolo_v2

# darknet's cfg/yolo9000.cfg: 3 priors (w, h) in stride-32 cells (Sec. 4: 3 instead of 5).
YOLO9000_PRIORS = ((0.77871, 1.14074), (3.00525, 4.31277), (9.22725, 9.61974))

DIGITS = tuple(str(d) for d in range(10))
# The miniature's WordTree: (node, parent; "" for the top set).
DIGIT_PARITY_TREE = (("even", ""), ("odd", "")) + tuple(
    (d, "even" if int(d) % 2 == 0 else "odd") for d in DIGITS)
UNSEEN_DIGITS = DIGITS[5:]              # detection boxes carry only their parent's label


def with_wordtree(model):
  """YOLOv2's model config turned into YOLO9000's: the tree and how labels meet it."""
  model.family = "yolo9000"
  model.tree = ml_collections.ConfigDict(dict(
      pairs=(),                          # inline (node, parent) pairs, or:
      file="", format="darknet",         # 9k.tree ("darknet") or a JSON/text pairs file
      names_file=""))                    # darknet's 9k.names: display names of the nodes
  model.class_names = ()                 # the detection dataset's classes as tree node names
  model.class_map_file = ""              # or darknet's map of them (coco9k.map)
  model.detection_label_nodes = ()       # node each detection class trains as (default: own)
  model.classification_map_file = ""     # classification classes: by name unless a map is given
  model.hierarchy_threshold = 0.5        # darknet's -hier threshold of the top-down prediction
  model.loss.classification_iou = 0.3    # Sec. 4: assumed IoU of the best box with the truth
  model.loss.classification_noobject = False   # darknet: no-object at the image's other slots
  return model


def coco_imagenet():
  """darknet's cfg/yolo9000.cfg with its region layer of 2017-01-04, which trained the released
  yolo9000.weights: the prediction on Darknet-19's last layer, the no-object term on every other
  slot of a classification image (and the 0.3 objectness pull of the paper)."""
  c = yolo_v2.paper_recipe("coco", 544)
  c.model = with_wordtree(yolo_v2.model_config(80, YOLO9000_PRIORS))
  c.model.head = "darknet19"
  c.model.loss.classification_noobject = True
  c.data.classification = "imagenet2012:train"
  c.data.classification_ratio = (4, 1)
  return c


def tiny(joint=True):
  """YOLOv2's ``tiny_digits`` network (3 priors) and recipe with the parity tree."""
  c = yolo_v2.cpu_digits_recipe(yolo_v2.tiny())
  # Twice the other families' 3,000 steps: the unseen digits need them (docs/results.md).
  c.train.total_steps = 6000
  with_wordtree(c.model)
  c.model.tree.pairs = DIGIT_PARITY_TREE
  c.model.class_names = DIGITS
  c.model.detection_label_nodes = tuple(
      ("even" if int(d) % 2 == 0 else "odd") if d in UNSEEN_DIGITS else d for d in DIGITS)
  if joint:
    # Both sets have 3,000 images; one classification image per two detection images kept the
    # seen digits' AP closer to the baseline's and gave the unseen ones more than 1:1 (README).
    c.data.classification = "digit_crops:train"
    c.data.classification_ratio = (1, 2)
  c.eval.metrics = ("coco", "voc12")
  c.eval.class_groups = ml_collections.ConfigDict(dict(seen=DIGITS[:5], unseen=UNSEEN_DIGITS))
  return c


def get_config(variant="tiny_digits"):
  if variant == "yolo9000_coco_imagenet":
    c = coco_imagenet()
  elif variant in ("tiny_digits", "tiny_digits_detection_only"):
    c = tiny(joint=variant == "tiny_digits")
  elif variant == "tiny_test":
    c = yolo_v2.smallest(tiny())
  else:
    raise ValueError(f"unknown YOLO9000 variant {variant!r}; see experiments/yolo9000.py")
  c.lock()
  return c
