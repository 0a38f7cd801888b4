r"""YOLOv3 (Redmon & Farhadi 2018) recipes; pick one with ``--config=experiments/yolo_v3.py:<v>``.

Variants:
  yolov3_416_coco  darknet's cfg/yolov3.cfg recipe on COCO 2017 train, 416x416 warped input:
                   Darknet-53 + three scales with the 9 COCO k-means priors, batch 64, SGD
                   momentum 0.9, weight decay 5e-4, lr 1e-3 after darknet's 1,000-step burn-in
                   ((step / 1000)^4), x0.1 at 400k and 450k of 500,200 steps; multi-scale training
                   at 320..608 (step 32, a new size every 10 batches), darknet's augmentation
                   (jitter .3, hue .1, saturation and exposure 1.5); COCO AP on val2017.
  yolov3_320_coco  the same, evaluated at 320x320 (Table 3's YOLOv3-320).
  yolov3_608_coco  the same, evaluated at 608x608 (YOLOv3-608).
  tiny_digits      a narrow Darknet-53 (8..128 channels, one residual block per stage) at
                   128x128 on the shipped ``digit_scenes``, with k-means priors of its digits;
                   trains on a 2-core CPU.
  tiny_test        the smallest model, for tests and smoke runs.
  finetune         yolov3_416_coco on your data (``--coco_json_dir``) from
                   ``--config.train.init_from`` (an imported darknet53.conv.74 or yolov3.weights):
                   darknet's RGB / 255 input, the cfg's schedule in epochs (273, lr 1e-3 divided
                   by 10 at 218 and 245; ``config.finetune_recipe``).
  darknet53_imagenet  Darknet-53's ImageNet pretraining (cfg/darknet53.cfg, see
                   darknet53_imagenet()).

Sweeps (``get_sweep``; run with ``jaxdet-sweep --config=experiments/yolo_v3.py --sweep=<name>
--sweep_dir=<dir>``):
  didnt_work       Sec. 5's "things we tried that didn't work" on ``tiny_digits``, each alone:
                   anchor-offset x, y; linear x, y; focal objectness; dual IoU thresholds.

The paper starts from Darknet-53 pretrained on ImageNet: train ``darknet53_imagenet``, then
pass ``--config.train.init_from=<its workdir>``; without it the detectors train from scratch.
The priors stay in input pixels at every size (darknet's yolo layer divides them by the network
size), so the 320 and 608 variants use the 416 priors unchanged, as darknet does.

Example:
  python scripts/train.py --config=experiments/yolo_v3.py:yolov3_416_coco --workdir=runs/y3 \
      --config.data.data_dir=/data/tfds
"""
import ml_collections

from jaxdet import config as config_lib
from jaxdet import sweep
from jaxdet.models import darknet

# cfg/yolov3.cfg: the 9 COCO k-means clusters (Sec. 2.3), (w, h) at 416, smallest first.
COCO_PRIORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90),
               (156, 198), (373, 326))
# The priors of each scale, strides 8, 16, 32 (yolov3.cfg's "mask = 0,1,2" ... "6,7,8").
MASKS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))
# 9 k-means priors (distance 1 - IoU; scripts/kmeans_anchors.py --k=9 on digit_scenes:train
# warped to 128x128), (w, h) rounded to pixels, smallest first: mean best IoU 0.83.
DIGIT_PRIORS = ((10, 18), (14, 20), (13, 29), (18, 27), (18, 39), (24, 32), (24, 47), (31, 38),
                (35, 51))


def model_config(num_classes):
  """YOLOv3-416 of cfg/yolov3.cfg for ``num_classes``."""
  return ml_collections.ConfigDict(dict(
      family="yolo_v3",
      num_classes=num_classes,
      dtype="float32",
      backend="auto",                     # jaxdet.models.backend: by platform
      backbone=dict(stem_width=darknet.DARKNET53_STEM,             # Table 1
                    stage_widths=darknet.DARKNET53_WIDTHS,
                    blocks=darknet.DARKNET53_BLOCKS),
      neck_widths=(128, 256, 512),             # 1x1 widths of the strides 8, 16, 32 (cfg)
      priors=COCO_PRIORS,
      priors_file="",                          # JSON of scripts/kmeans_anchors.py --k=9, if set
      priors_per_level=MASKS,
      location="logistic",                     # Sec. 2.1; Sec. 5 tried the others
      loss=dict(coord_weight=1.0, object_weight=1.0, noobject_weight=1.0, class_weight=1.0,
                coord_loss="darknet",          # darknet's yolo layer; "sse": Sec. 2.1's text
                ignore_threshold=0.5,          # Sec. 2.1 and yolov3.cfg as released (since
                #                                2018-05-06 the cfg says .7)
                objectness_loss="bce",         # Sec. 2.1; "focal": Sec. 5, cost ~2 mAP
                objectness_positive_iou=0.0,   # > 0: Sec. 5's dual IoU thresholds (off)
                focal_alpha=0.25, focal_gamma=2.0),
      decode=dict(score_threshold=0.005, pre_nms_topk=1000, nms_iou_threshold=0.45,
                  max_detections=100),         # darknet's `detector valid`: thresh .005, nms .45
  ))


def yolo_augmentation(c, jitter):
  """yolov3.cfg's augmentation values (jitter .3, hue .1, saturation and exposure 1.5; Sec. 3:
  "lots of data augmentation") on jaxdet's YOLO augmentation: its jitter is YOLOv1's scale and
  shift of up to ``jitter`` (jaxdet.data.augment), where darknet's loader of 2018 jitters the
  aspect ratio by ``jitter`` and the scale by U(0.25, 2) and places the image on a grey
  canvas."""
  c.data.augment = config_lib.augmentation("yolo", jitter=jitter, saturation=1.5,
                                           exposure=1.5, hue=0.1)


def paper_recipe(size):
  c = config_lib.base_config()
  c.model = model_config(80)
  c.data.train, c.data.eval = "coco/2017:train", "coco/2017:validation"
  c.data.image_size = (size, size)
  # Sec. 3: "multi-scale training"; darknet's random=1 draws (rand() % 10 + 10) * 32 every 10
  # batches.
  c.data.multi_scale_sizes = tuple(range(320, 608 + 1, 32))
  c.data.multi_scale_every = 10
  # Warped to the square input in training and evaluation; darknet letterboxes at evaluation
  # (validate_detector).
  c.data.keep_aspect_ratio = False
  yolo_augmentation(c, jitter=0.3)
  c.train.batch_size = 64
  c.train.total_steps = 500_200                         # max_batches
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.optimizer.weight_decay = 5e-4                 # decay=0.0005
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=1e-3, warmup="burn_in", warmup_steps=1000,     # burn_in=1000
      burn_in_power=4.0, warmup_factor=0.0,
      decay_steps=(400_000, 450_000), decay_factor=0.1))                  # steps, scales .1
  c.eval.batch_size = 16
  c.eval.metrics = ("coco",)
  return c


def tiny():
  """Darknet-53 at 1/4 to 1/8 the width (8..128 channels) with one residual block per stage and a
  narrower neck, 128x128, with the digit priors."""
  c = config_lib.base_config()
  c.model = model_config(10)
  c.model.backbone.update(stem_width=8, stage_widths=(16, 32, 64, 128, 128), blocks=(1,) * 5)
  c.model.neck_widths = (32, 64, 64)
  c.model.priors = DIGIT_PRIORS
  c.data.image_size = (128, 128)
  c.data.max_boxes = 16
  c.data.keep_aspect_ratio = False
  yolo_augmentation(c, jitter=0.2)
  return c


def darknet53_imagenet():
  """Darknet-53's ImageNet classifier (Sec. 2.4, Table 2: evaluated at 256x256) with the
  schedule of darknet's cfg/darknet53.cfg (published in Aug. 2018, after the paper): 256x256,
  batch 128, lr 0.1 with polynomial decay of power 4, 800,000 batches (about 80 epochs), weight
  decay 5e-4. Not taken from that cfg: its 1,000-batch burn-in and its crops (128-448), angle
  (7) and aspect (.75) augmentation."""
  model = config_lib.classifier_model("darknet53", model_config(1000).backbone, 1000)
  return config_lib.imagenet_pretraining_recipe(
      model, 256, epochs=800_000 * 128 / config_lib.IMAGENET_TRAIN_IMAGES, base_lr=0.1)


def get_config(variant="tiny_digits"):
  if variant in ("yolov3_320_coco", "yolov3_416_coco", "yolov3_608_coco"):
    c = paper_recipe(int(variant.split("_")[1]))
  elif variant == "finetune":
    # yolov3.cfg's schedule in epochs (500,200 batches of 64 over COCO's 117k), darknet's
    # RGB / 255 input for darknet's weights (darknet53.conv.74, yolov3.weights).
    c = config_lib.finetune_recipe(paper_recipe(416), epochs=273, decay_epochs=(218, 245),
                                   base_lr=1e-3, warmup_steps=1000, warmup="burn_in")
    c.data.pixel_mean = config_lib.DARKNET_PIXEL_MEAN
    c.data.pixel_std = config_lib.DARKNET_PIXEL_STD
  elif variant == "darknet53_imagenet":
    c = darknet53_imagenet()
  elif variant == "tiny_digits":
    c = config_lib.yolo_cpu_digits_recipe(tiny())
  elif variant == "tiny_test":
    c = config_lib.smoke_test_recipe(tiny())
    c.model.backbone.update(stem_width=4, stage_widths=(8, 8, 16, 16, 16))
    c.model.neck_widths = (8, 8, 8)
  else:
    raise ValueError(f"unknown YOLOv3 variant {variant!r}; see experiments/yolo_v3.py")
  c.lock()
  return c


def didnt_work(name):
  # Sec. 5, each change alone on the recipe. The paper reports no table for them, only that
  # focal loss "dropped our mAP about 2 points" and the others "decreased model stability" or
  # did worse.
  return sweep.Sweep(name, "tiny_digits", [
      sweep.Cell("yolov3", {}),
      sweep.Cell("anchor_offset_xy", {"model.location": "anchor_offset"}),
      sweep.Cell("linear_xy", {"model.location": "linear"}),
      sweep.Cell("focal_objectness", {"model.loss.objectness_loss": "focal"}),
      sweep.Cell("dual_iou_thresholds", {"model.loss.objectness_positive_iou": 0.7,
                                         "model.loss.ignore_threshold": 0.3})],
      seeds=(0, 1), metric="coco/AP", paper_table="Redmon & Farhadi 2018, Sec. 5 (no table)")


SWEEPS = {"didnt_work": didnt_work}
get_sweep = sweep.getter(SWEEPS, "YOLOv3")
