r"""YOLOv1 (Redmon et al. 2016) recipes; pick one with
``--config=experiments/yolo_v1.py:<variant>``.

Variants:
  yolo_v1_voc    the paper's PASCAL recipe (Sec. 2.2 "Training"): VOC 2007+2012 train+val,
                 448x448 warped, S = 7, B = 2, batch 64, 135 epochs, SGD momentum 0.9, weight
                 decay 5e-4; the learning rate raised from 1e-3 to 1e-2 over the first epochs,
                 1e-2 until epoch 75, 1e-3 for 30 epochs, 1e-4 for 30; dropout 0.5; random
                 scaling and translation up to 20% of the image,
                 exposure and saturation up to a factor of 1.5 in HSV; VOC07 11-point mAP on
                 VOC2007 test.
  fast_yolo_voc  the same with Fast YOLO's 9-conv network (Sec. 2).
  tiny_digits    a small net with batch norm on the shipped ``digit_scenes``, 128x128, S = 4;
                 trains on a 2-core CPU, from ``pretrain_digits`` (see tiny_digits()).
  tiny_test      the smallest model, for tests and smoke runs (64x64, S = 4).
  pretrain_imagenet  the paper's pretraining (Sec. 2.2): the first 20 convolutions, average
                 pooling and a connected layer, on ImageNet at 224x224 (darknet's
                 cfg/extraction.cfg); the paper reports 88% top-5 after about a week. The paper
                 gives no schedule: darknet's classifier one (YOLOv2 Sec. 3: lr 0.1, polynomial
                 decay of power 4, 160 epochs).
  pretrain_digits    the same for ``tiny_digits``: its first 9 convolutions on the shipped
                 ``digit_crops`` at 64x64 (half the detector's input, as 224 is to 448).
  pretrain_test  the smallest pretraining, for tests.

A pretrained run starts a detector with ``--config.train.init_from=<its workdir>``: every
convolution it shares with the detector (same names and shapes) starts from it, the rest
("four convolutional layers and two fully connected layers", Sec. 2.2) from scratch.

Learning rates: darknet's detection layer back-propagates ``scale * (target - output)``, the
gradient of *half* the sum-squared error, and its update divides by the batch. The loss here is
half of Eq. 3 divided by the batch (jaxdet.detectors.yolo_v1), so the paper's rates and weight
decay apply as they are.

Warmup: the paper raises the rate from 1e-3 to 1e-2 "for the first epochs"; darknet's cfg does
it in steps over the first 600 batches (~2.3 epochs). Here: the ``step`` schedule's linear
warmup over those 600 steps from 1/10 of the base rate, counted in the 75 epochs at the top rate
(75 + 30 + 30 = 135).

Example (the paper's two phases):
  python scripts/train.py --config=experiments/yolo_v1.py:pretrain_imagenet \
      --workdir=runs/yolo_v1_imagenet --config.data.data_dir=/data/tfds
  python scripts/train.py --config=experiments/yolo_v1.py:yolo_v1_voc --workdir=runs/yolo_v1 \
      --config.data.data_dir=/data/tfds --config.train.init_from=runs/yolo_v1_imagenet
"""
import ml_collections

from jaxdet import config as config_lib
from jaxdet.models import yolo_v1_net

VOC0712_TRAINVAL_IMAGES = 16_551          # VOC2007 trainval 5,011 + VOC2012 trainval 11,540
PAPER_BATCH = 64
TINY_PRETRAINED_CONVS = 9          # tiny()'s convolutions before its last one (see pretrain_digits)


def yolo_augmentation():
  """Sec. 2.2: scaling and translations of up to 20%, exposure and saturation up to 1.5x."""
  return config_lib.augmentation("yolo", jitter=0.2, saturation=1.5, exposure=1.5, hue=0.0)


def epochs_to_steps(epochs, images=VOC0712_TRAINVAL_IMAGES, batch=PAPER_BATCH):
  return round(epochs * images / batch)


def model_config(num_classes, fast=False):
  """The paper's YOLO (or Fast YOLO) for PASCAL VOC: S = 7, B = 2 (Sec. 2)."""
  return ml_collections.ConfigDict(dict(
      family="yolo_v1",
      num_classes=num_classes,
      dtype="float32",
      backend="auto",                     # jaxdet.models.backend: by platform
      grid_size=7,                                   # S
      boxes_per_cell=2,                              # B
      net=dict(stages=yolo_v1_net.FAST_YOLO_STAGES if fast else yolo_v1_net.YOLO_STAGES,
               fc_layers=yolo_v1_net.FAST_YOLO_FC if fast else yolo_v1_net.YOLO_FC,
               dropout_rate=0.5,                     # Sec. 2.2: after the first FC layer
               batch_norm=False),                    # the paper has none
      loss=dict(lambda_coord=5.0, lambda_noobj=0.5,  # Sec. 2.2
                confidence_per_cell=False),          # 1_ij^noobj per box (darknet)
      # Test time (Sec. 2.3): class-specific confidences (Eq. 1) and NMS; darknet's
      # validate_yolo keeps scores above 0.001 and suppresses at IoU 0.5 for the mAP.
      decode=dict(score_threshold=0.001, nms_iou_threshold=0.5, max_detections=100),
  ))


def paper_recipe(fast=False):
  c = config_lib.base_config()
  c.model = model_config(20, fast)
  c.data.train = "voc/2007:train+validation,voc/2012:train+validation"
  c.data.eval = "voc/2007:test"
  c.eval.metrics = ("voc07",)
  c.data.image_size = (448, 448)
  c.data.keep_aspect_ratio = False                    # warped to the square input
  c.data.augment = yolo_augmentation()
  c.train.batch_size = PAPER_BATCH
  c.train.total_steps = epochs_to_steps(135)
  c.train.log_every = 100
  c.train.checkpoint_every = 2_000
  c.train.optimizer.weight_decay = 5e-4
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=1e-2, warmup_steps=600, warmup_factor=0.1,
      decay_steps=(epochs_to_steps(75), epochs_to_steps(105)), decay_factor=0.1))
  c.eval.batch_size = 16
  return c


def pretraining_model(detector_model, convs):
  """The classifier over the first ``convs`` convolutions of ``detector_model``'s network."""
  net = detector_model.net
  return config_lib.classifier_model("yolo_v1", dict(
      stages=yolo_v1_net.leading_convs(net.stages, convs), batch_norm=net.batch_norm),
                                     detector_model.num_classes)


def pretrain_imagenet():
  return config_lib.imagenet_pretraining_recipe(
      pretraining_model(model_config(1000), yolo_v1_net.PRETRAINED_CONVS), 224, epochs=160,
      base_lr=0.1)


def pretrain_digits():
  """``tiny()``'s first 9 convolutions (all but the one after the fifth pooling, which at the
  detector's 128x128 works on the 4x4 map) on ``digit_crops``, at 64x64, batch 32, 4,000 steps
  of the CPU schedule, YOLO augmentation without flips: the test split's writers are not in the
  training split, and a mirrored digit is another glyph (docs/results.md)."""
  return config_lib.digits_pretraining_recipe(
      pretraining_model(tiny().model, TINY_PRETRAINED_CONVS))


def tiny(num_classes=10):
  """Five pooled stages of 16-256 channels with batch norm (128 -> 4x4 map), a 1024-wide
  connected layer without dropout and a 4x4 grid, B = 2, for the 10-60 pixel digits of
  ``digit_scenes`` at 128x128, without flips (a mirrored digit is another glyph)."""
  c = config_lib.base_config()
  c.model = model_config(num_classes)
  c.model.grid_size = 4
  c.model.net.update(
      stages=(((16, 3, 1),), ((32, 3, 1),), ((64, 3, 1),), ((128, 3, 1), (64, 1, 1), (128, 3, 1)),
              ((256, 3, 1), (128, 1, 1), (256, 3, 1)), ((256, 3, 1),)),
      fc_layers=((1024, "leaky"),), dropout_rate=0.0, batch_norm=True)
  c.data.image_size = (128, 128)
  c.data.max_boxes = 16
  c.data.keep_aspect_ratio = False
  c.data.augment = yolo_augmentation()
  c.data.random_flip = False
  return c


def tiny_digits():
  """``tiny()`` on the YOLO CPU schedule (3,000 steps of batch 16) at a top rate of 4e-3, within
  the paper's 1e-3..1e-2, not the schedule's 2e-2. Train it from ``pretrain_digits`` as the
  paper does (Sec. 2.2), with ``--config.train.init_from``: from scratch the connected head
  does not learn the classes in this budget (the class loss stays at chance), and at higher
  rates the detection gradients wash the class information out of the pretrained features
  before the head can read it. Measurements in README ("YOLOv1 from a pretrained backbone")."""
  c = config_lib.yolo_cpu_digits_recipe(tiny())
  c.train.schedule.base_lr = 4e-3
  return c


def get_config(variant="tiny_digits"):
  if variant in ("yolo_v1_voc", "fast_yolo_voc"):
    c = paper_recipe(fast=variant == "fast_yolo_voc")
  elif variant == "pretrain_imagenet":
    c = pretrain_imagenet()
  elif variant == "pretrain_digits":
    c = pretrain_digits()
  elif variant == "pretrain_test":
    c = config_lib.smoke_test_recipe(pretrain_digits())
    c.model.backbone.stages = (((8, 3, 1),), ((8, 3, 1),))
  elif variant == "tiny_digits":
    c = tiny_digits()
  elif variant == "tiny_test":
    c = config_lib.smoke_test_recipe(tiny())
    c.model.grid_size = 4
    c.model.net.update(stages=(((8, 3, 1),), ((8, 3, 1),), ((16, 3, 1),), ((16, 3, 1),)),
                       fc_layers=((32, "leaky"),))
  else:
    raise ValueError(f"unknown YOLOv1 variant {variant!r}; see experiments/yolo_v1.py")
  c.lock()
  return c
