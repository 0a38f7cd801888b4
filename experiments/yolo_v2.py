r"""YOLOv2 (Redmon & Farhadi 2017, "YOLO9000: Better, Faster, Stronger") recipes; pick one with
``--config=experiments/yolo_v2.py:<variant>``.

Variants:
  yolov2_voc_416  the paper's VOC detector (Sec. 3 "Training for detection"): VOC 2007+2012
                  trainval, 160 epochs of batch 64 (41,400 steps), SGD momentum 0.9, weight
                  decay 5e-4, lr 1e-3 divided by 10 at epochs 60 and 90 (after darknet's
                  1,000-step burn-in, (step / 1000)^4), multi-scale training over {320, 352,
                  ..., 608}, a new
                  size every 10 batches (Sec. 2), evaluated at 416x416 with VOC07 11-point mAP
                  (Table 3: 76.8 mAP at 416, 67 FPS).
  yolov2_voc_544  the same evaluated at 544x544 (Table 3: 78.6 mAP, 40 FPS).
  yolov2_coco_608 the COCO detector of Table 5 (COCO 2017 train, 608x608 evaluation) with
                  darknet's COCO priors.
  tiny_digits     a narrow Darknet-19 on the shipped ``digit_scenes`` at 128x128 (multi-scale
                  96-160); trains on a 2-core CPU (README "What was measured").
  tiny_test       the smallest model, for tests and smoke runs.
  finetune        yolov2_voc_416 on your data (``--coco_json_dir``) from
                  ``--config.train.init_from`` (an imported darknet19_448.conv.23 or
                  yolov2-voc.weights): darknet's RGB / 255 input, the cfg's schedule in epochs
                  (310, lr 1e-3 divided by 10 at 155 and 232; ``config.finetune_recipe``).
  darknet19_imagenet      Darknet-19's ImageNet pretraining (Sec. 3 "Training for
                  classification"): 160 epochs at 224x224, SGD lr 0.1 with polynomial decay of
                  power 4, weight decay 5e-4, momentum 0.9 (Table 6's classifier: 1x1
                  convolution to the classes, global average pooling).
  darknet19_imagenet_448  its fine-tuning at 448x448: "10 epochs ... starting at a learning
                  rate of 10^-3"; start it from the 224 run with --config.train.init_from.

The paper recipes follow the paper's text where it speaks (the passthrough reorganises the
26x26x512 map itself, Sec. 2; multi-scale training; 160 epochs) and darknet as released with
the paper where it is silent (cfg/yolo-voc.cfg and cfg/yolo.cfg of 2016-11-26, the region layer
of 2016-11-17): every truth's coordinates weigh 1, that cfg's k-means priors. darknet's later
form (cfg/yolo-voc.cfg of March 2017, named yolov2-voc.cfg since 2018, with yolov2-voc.weights)
differs in the network and loss in three settings; to train that form, pass
  --config.model.passthrough_width=64 --config.model.loss.coord_area_weight=True
  --config.model.priors="((1.3221,1.73145),(3.19275,4.00944),(5.05587,8.09892),(9.47112,4.84053),(11.2364,10.0071))"
(that cfg also has jitter .3 and its own schedule: burn-in 1,000, lr 1e-3, /10 at 40k and 60k of
80,200 batches).
Priors are in cells of the stride-32 output (darknet's unit; they scale with the input). For
your own data, run ``scripts/kmeans_anchors.py --k=5 --output=priors.json`` and train with
``--config.model.priors_file=priors.json``.

Sweeps (``get_sweep``; run with ``jaxdet-sweep --config=experiments/yolo_v2.py --sweep=<name>
--sweep_dir=<dir>``):
  table2_path     Table 2's path from anchor boxes to YOLOv2 in miniature on ``tiny_digits``
                  (cumulative: batch norm, k-means priors, direct location prediction,
                  passthrough, multi-scale training), two seeds.

The loss is darknet's region layer with halved squared errors (jaxdet.detectors.yolo_v2), so the
learning rates are darknet's.

The paper's detectors start from Darknet-19 trained on ImageNet: train the two
``darknet19_imagenet`` variants, then pass ``--config.train.init_from=<the 448 run's workdir>``;
without it the detectors train from scratch.

Example:
  python scripts/train.py --config=experiments/yolo_v2.py:yolov2_voc_416 \
      --workdir=runs/yolov2 --config.data.data_dir=/data/tfds
"""
import ml_collections

from jaxdet import config as config_lib
from jaxdet import sweep
from jaxdet.models import darknet

# darknet's k-means priors (w, h) in stride-32 cells: cfg/yolo-voc.cfg and cfg/yolo.cfg as
# released with the paper (2016-11-26).
VOC_PRIORS = ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))
COCO_PRIORS = ((0.738768, 0.874946), (2.42204, 2.65704), (4.30971, 7.04493), (10.246, 4.59428),
               (12.6868, 11.8741))
# Multi-scale training (Sec. 2): "{320, 352, ..., 608}".
PAPER_SIZES = tuple(range(320, 609, 32))


def model_config(num_classes, priors=VOC_PRIORS):
  return ml_collections.ConfigDict(dict(
      family="yolo_v2",
      num_classes=num_classes,
      dtype="float32",
      backend="auto",                     # jaxdet.models.backend: by platform
      backbone=dict(stages=darknet.DARKNET19_STAGES),
      head="yolov2",                          # or "darknet19" (cfg/yolo9000.cfg's)
      head_width=1024,                        # Sec. 3: three 3x3 convolutions of 1024 filters
      passthrough=True,                       # Sec. 2 "Fine-Grained Features"
      passthrough_width=0,                    # Sec. 2: 26x26x512 -> 13x13x2048; 2017 cfg: 64
      reorg="space_to_depth",                 # Sec. 2's stacking; "darknet": its reorg layer
      batch_norm=True,                        # Sec. 2 "Batch Normalization"
      location="logistic",                    # Sec. 2 "Direct location prediction"
      priors=priors,                          # (w, h) in stride-32 cells; k = 5 (Sec. 2)
      priors_file="",                         # JSON of scripts/kmeans_anchors.py, if set
      loss=dict(coord_weight=1.0, object_weight=5.0, noobject_weight=1.0, class_weight=1.0,
                ignore_threshold=0.6,         # darknet region layer (cfg/yolo-voc.cfg)
                coord_area_weight=False),     # 2 - w h weights coordinates (since 2017)
      decode=dict(score_threshold=0.005, pre_nms_topk=1000, nms_iou_threshold=0.45,
                  max_detections=100),        # darknet's "detector valid" settings
  ))


def yolo_augmentation(c):
  """cfg/yolo-voc.cfg's augmentation values (jitter .2, hue .1, saturation and exposure 1.5),
  the paper's "similar data augmentation to YOLO and SSD" (Sec. 3), on jaxdet's YOLO
  augmentation, whose jitter is YOLOv1's scale and shift of up to 20% (darknet's loader moves
  each side of its crop by up to 20% independently)."""
  c.data.augment = config_lib.augmentation("yolo", jitter=0.2, saturation=1.5, exposure=1.5,
                                           hue=0.1)


def paper_recipe(dataset, eval_size):
  c = config_lib.base_config()
  if dataset == "voc":
    c.model = model_config(20)
    c.data.train = "voc/2007:train+validation,voc/2012:train+validation"
    c.data.eval = "voc/2007:test"
    c.eval.metrics = ("voc07",)
    epoch = 16_551 / 64                             # VOC07+12 trainval images per batch of 64
  else:
    c.model = model_config(80, COCO_PRIORS)
    c.data.train, c.data.eval = "coco/2017:train", "coco/2017:validation"
    epoch = 117_266 / 64
  c.data.image_size = (eval_size, eval_size)
  c.data.multi_scale_sizes = PAPER_SIZES
  c.data.multi_scale_every = 10
  c.data.keep_aspect_ratio = False                  # warped to the square input
  yolo_augmentation(c)
  c.train.batch_size = 64
  c.train.total_steps = round(160 * epoch)          # Sec. 3: 160 epochs
  c.train.log_every = 100
  c.train.checkpoint_every = 2_000
  c.train.optimizer.weight_decay = 5e-4
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=1e-3, warmup="burn_in", warmup_steps=1000, burn_in_power=4.0,
      warmup_factor=0.0, decay_steps=(round(60 * epoch), round(90 * epoch)), decay_factor=0.1))
  c.eval.batch_size = 16
  return c


def tiny(num_classes=10):
  """Darknet-19 at 1/8 width with one convolution per stage, 128x128 input (4x4 cells), priors
  for the 10-60 pixel digits of ``digit_scenes``; the paper's passthrough and loss."""
  c = config_lib.base_config()
  c.model = model_config(num_classes, priors=((0.45, 0.45), (0.8, 0.8), (1.2, 1.2)))
  c.model.backbone.stages = ((16, 3),), ((32, 3),), ((64, 3),), ((64, 3),), ((128, 3),), ((128, 3),)
  c.model.head_width = 128
  c.data.image_size = (128, 128)
  c.data.multi_scale_sizes = (96, 128, 160)
  c.data.max_boxes = 16
  c.data.keep_aspect_ratio = False
  yolo_augmentation(c)
  return c


def cpu_digits_recipe(c):
  """The YOLO CPU schedule for ``tiny()`` networks (this file's and YOLO9000's ``tiny_digits``)
  at twice its rate, 0.04: the miniatures were tuned at 0.02 when their squared errors were
  not yet halved (darknet's gradients); 0.04 takes the same steps on them (docs/results.md)."""
  c = config_lib.yolo_cpu_digits_recipe(c)
  c.train.schedule.base_lr = 0.04
  return c


def smallest(c):
  """``c`` (a ``tiny`` config) shrunk to the smallest network and the smoke-test schedule, with
  the 2017 cfg's 1x1 passthrough reduction (so that the tests build both forms)."""
  c = config_lib.smoke_test_recipe(c)
  c.model.backbone.stages = ((8, 3),), ((8, 3),), ((8, 3),), ((16, 3),), ((16, 3),), ((16, 3),)
  c.model.head_width = 16
  c.model.passthrough_width = 4
  c.data.multi_scale_sizes = ()
  return c


def darknet19_imagenet(size):
  """Sec. 3: 160 epochs at 224 from lr 0.1; then 10 epochs at 448 from lr 1e-3."""
  model = config_lib.classifier_model("darknet19", dict(stages=darknet.DARKNET19_STAGES), 1000)
  if size == 224:
    return config_lib.imagenet_pretraining_recipe(model, 224, epochs=160, base_lr=0.1)
  return config_lib.imagenet_pretraining_recipe(model, 448, epochs=10, base_lr=1e-3)


def get_config(variant="tiny_digits"):
  if variant in ("yolov2_voc_416", "yolov2_voc_544", "yolov2_coco_608"):
    _, dataset, size = variant.split("_")
    c = paper_recipe(dataset, int(size))
  elif variant == "finetune":
    # yolov2-voc.cfg's schedule in epochs (80,200 batches of 64 over VOC07+12's 16.5k), darknet's
    # RGB / 255 input for darknet's weights (darknet19_448.conv.23, yolov2-voc.weights).
    c = config_lib.finetune_recipe(paper_recipe("voc", 416), epochs=310, decay_epochs=(
        155, 232), base_lr=1e-3, warmup_steps=1000, warmup="burn_in")
    c.data.pixel_mean = config_lib.DARKNET_PIXEL_MEAN
    c.data.pixel_std = config_lib.DARKNET_PIXEL_STD
  elif variant in ("darknet19_imagenet", "darknet19_imagenet_448"):
    c = darknet19_imagenet(448 if variant.endswith("448") else 224)
  elif variant == "tiny_digits":
    c = cpu_digits_recipe(tiny())
  elif variant == "tiny_test":
    c = smallest(tiny())
  else:
    raise ValueError(f"unknown YOLOv2 variant {variant!r}; see experiments/yolo_v2.py")
  c.lock()
  return c


# k = 3 k-means priors of digit_scenes:train at 128x128 in stride-32 cells (mean best IoU 0.747):
# python scripts/kmeans_anchors.py --config=experiments/yolo_v2.py:tiny_digits --k=3
DIGIT_KMEANS_PRIORS = ((0.3819, 0.6494), (0.6119, 1.0264), (0.9185, 1.3756))


def table2_path(name):
  # Table 2's path from YOLO to YOLOv2 on tiny_digits, each cell adding one step: anchor boxes
  # with the RPN's offsets (no batch norm, hand-picked priors: tiny()'s squares, no passthrough,
  # one input size), then batch norm, k-means priors, direct location prediction, the
  # passthrough and multi-scale training. The hi-res classifier and detector steps need
  # ImageNet pretraining and a larger input: not swept.
  steps = [("batch_norm", {"model.batch_norm": False}),          # each step, and what undoes it
           ("dimension_priors", {"model.priors": tiny().model.priors}),
           ("location_prediction", {"model.location": "anchor_offset"}),
           ("passthrough", {"model.passthrough": False}),
           ("multi_scale", {"data.multi_scale_sizes": ()})]

  def without(later_steps):
    return {"model.priors": DIGIT_KMEANS_PRIORS,
            **{key: value for _, undo in later_steps for key, value in undo.items()}}
  cells = [sweep.Cell("anchor_boxes", without(steps))]
  cells += [sweep.Cell(label, without(steps[index + 1:]))
            for index, (label, _) in enumerate(steps)]
  return sweep.Sweep(name, "tiny_digits", cells, seeds=(0, 1), metric="coco/AP",
                     paper_table="Redmon & Farhadi 2017, Table 2 (VOC2007 test mAP)")


SWEEPS = {"table2_path": table2_path}
get_sweep = sweep.getter(SWEEPS, "YOLOv2")
