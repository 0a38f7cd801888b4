r"""SSD (Liu et al. 2016) recipes; pick one with ``--config=experiments/ssd.py:<variant>``.

Variants:
  ssd300_voc   SSD300* of the paper's PASCAL results (Table 1: 77.2 mAP on VOC2007 test) as the
               authors' final examples/ssd/ssd_pascal.py trains it: VOC07+12 trainval,
               300x300, batch 32, SGD momentum 0.9, weight decay 5e-4, lr 1e-3 for 80k steps,
               then 1e-4 and 1e-5 for 20k each (Sec. 3.6: with the zoom-out augmentation "we
               have to double the training iterations", 2 x (40k + 10k + 10k); plus a
               1k-step warmup of ours); the released models' default boxes (below); VOC07
               11-point mAP on VOC2007 test.
  ssd512_voc   SSD512* (79.8 mAP) the same at 512x512 with SSD512's seven maps.
  ssd300_coco  the COCO recipe (Sec. 3.4) as ssd_coco.py: COCO 2017 train (for trainval35k),
               lr 1e-3 for 280k steps, then 1e-4 and 1e-5 for 80k and 40k (400k); smaller
               default boxes; COCO AP on val2017.
  ssd512_coco  the same at 512x512.
  tiny_digits  a narrow VGG with batch norm on the shipped ``digit_scenes``, 128x128, five maps,
               the paper's default-box formula; trains on a 2-core CPU (README "What was
               measured").
  tiny_test    the smallest model, for tests and smoke runs.
  finetune     SSD300 on your data (``--coco_json_dir``) from ``--config.train.init_from`` (an
               imported VGG-16 or a trained SSD): ssd_pascal.py's schedule in epochs, 155 with
               lr 1e-3 divided by 10 at 116 and 136 (``config.finetune_recipe``).
  vgg16_imagenet  the ImageNet VGG-16 the paper starts from (Sec. 3 "Base network"), trained
               directly in SSD's reduced form (atrous fc6, fc7 as 1x1 convolution, then global
               average pooling and the classifier) with Simonyan & Zisserman's Sec. 3.1 recipe:
               batch 256, SGD momentum 0.9, weight decay 5e-4, lr 1e-2 divided by 10 three
               times (here at epochs 30, 50 and 65 of 74), 224x224 crops.
  pretrain_test  the smallest such classifier, for tests.

The paper variants fine-tune the ImageNet VGG-16 (Sec. 3 "Base network"), so they need
``--config.train.init_from=<a vgg16_imagenet workdir>``. Every layer trains, as the final
ssd_pascal.py: the script froze conv1_x and conv2_x (``freeze_layers``) only in its revisions
before 2016-07-02. ``--config.model.base.freeze_at=2`` freezes them.

Default boxes: the recipes use the geometry of the released models, which ssd_pascal.py and
ssd_coco.py compute and Caffe's PriorBox layer applies: per-layer ``min_sizes`` / ``max_sizes``
in pixels from a step floored to whole percents (SSD300 VOC: 30, 60, 111, 162, 213, 264 and 60,
..., 315; PriorBox truncates sizes to integers), centres at ``(i + 0.5) step`` with ``steps``
8, 16, 32, 64, 100, 300. ``--config.model.default_boxes.min_sizes=()
--config.model.default_boxes.max_sizes=() --config.model.default_boxes.steps=()`` gives the
paper's Eq. 4 instead (``s_min``, ``s_max``, ``first_scale``, centres at ``(i + 0.5) /
|f_k|``).

Decoding: Caffe's ``DetectionOutput`` (ssd_pascal.py's ``det_out_param``): per class the top
400 boxes above 0.01, NMS at 0.45, then the best 200 per image.

Every variant uses SSD's augmentation (photometric, zoom-out, min-IoU crop, flip) and warps the
image to the square input, as the paper does.

Sweeps (``jaxdet-sweep --config=experiments/ssd.py --sweep=<name> --sweep_dir=<dir>``):
  table2_components   Table 2's design choices in miniature on ``tiny_digits``: without data
                      augmentation and extra default-box shapes, then adding the augmentation,
                      the {1/2, 2} and the {1/3, 3} boxes, then the full (non-atrous) VGG;
                      two seeds.

Example:
  python scripts/train.py --config=experiments/ssd.py:ssd300_voc --workdir=runs/ssd300 \
      --config.data.data_dir=/data/tfds --config.train.init_from=runs/vgg16_imagenet
"""
import ml_collections

from jaxdet import config as config_lib
from jaxdet import sweep
from jaxdet.models import vgg

# Extra aspect ratios per feature map (Sec. 2.2 / 3.1): {2, 1/2} on conv4_3 and the last two
# maps (4 default boxes per cell), {2, 1/2, 3, 1/3} elsewhere (6 boxes).
SSD300_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD512_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))


def ssd_augmentation():
  """Photometric distortion, zoom-out up to 4x (the authors' Caffe; Sec. 3.6 says 16) and the
  min-IoU crop (Sec. 2.2)."""
  return config_lib.augmentation("ssd", expand_max_ratio=4.0)


def caffe_prior_sizes(min_dim, min_ratio, max_ratio, first_ratios, num_layers):
  """``(min_sizes, max_sizes)`` in pixels as the authors' scripts compute them (ssd_pascal.py:
  a step of ``floor((max_ratio - min_ratio) / (L - 2))`` percent, the first layer at
  ``first_ratios`` percent) and Caffe's PriorBox layer truncates them (``int min_size_``)."""
  step = (max_ratio - min_ratio) // (num_layers - 2)
  ratios = [(r, r + step) for r in range(min_ratio, max_ratio + 1, step)]
  sizes = [first_ratios] + ratios
  return tuple(tuple(int(min_dim * r[i] / 100) for r in sizes) for i in (0, 1))


# (min_ratio, max_ratio, conv4_3's (min, max) ratios) of the released models: ssd_pascal.py and
# ssd_coco.py for SSD300; for SSD512 (no script in the repository) the values that reproduce the
# released SSD512 prototxts (VOC: min_size 35.84, 76.8, ..., 460.8, max_size 76.8, ..., 537.6).
RELEASED_PRIOR_RATIOS = {("voc", 300): (20, 90, (10, 20)), ("coco", 300): (15, 90, (7, 15)),
                         ("voc", 512): (15, 90, (7, 15)), ("coco", 512): (10, 90, (4, 10))}
RELEASED_STEPS = {300: (8, 16, 32, 64, 100, 300), 512: (8, 16, 32, 64, 128, 256, 512)}


def model_config(num_classes, size=300):
  """The paper's SSD300 (or SSD512) for PASCAL; ``num_classes`` excludes the background."""
  return ml_collections.ConfigDict(dict(
      family="ssd",
      num_classes=num_classes,
      dtype="float32",
      backend="auto",                     # jaxdet.models.backend: by platform
      base=dict(stage_widths=vgg.VGG16_WIDTHS, stage_depths=vgg.VGG16_DEPTHS,
                fc_width=1024, fc6_dilation=6,       # atrous fc6 (Sec. 3 "Base network")
                atrous=True,                         # False: full VGG-16 (Table 2)
                extras=vgg.SSD300_EXTRAS if size == 300 else vgg.SSD512_EXTRAS,
                l2norm_scale=20.0,                   # conv4_3 L2Norm scale init (Sec. 3.1)
                batch_norm=False,
                freeze_at=0),                        # conv1 .. conv<k> frozen (models/vgg.py)
      default_boxes=dict(
          aspect_ratios=SSD300_RATIOS if size == 300 else SSD512_RATIOS,
          s_min=0.2 if size == 300 else 0.15, s_max=0.9,          # Sec. 2.2 Eq. 4
          first_scale=0.1 if size == 300 else 0.07,               # conv4_3 (Sec. 3.1); 0: none
          min_sizes=(), max_sizes=(), steps=(),                   # pixels: the released models
          clip=False),                                            # as the authors' Caffe
      matcher=dict(threshold=0.5),                   # Sec. 2.2 "Matching strategy"
      loss=dict(alpha=1.0,                           # Eq. 1, "alpha set to 1 by cross validation"
                neg_pos_ratio=3,                     # "Hard negative mining": at most 3:1
                smooth_l1_beta=1.0,
                box_weights=(10.0, 10.0, 5.0, 5.0)),  # 1 / variances (0.1, 0.1, 0.2, 0.2)
      decode=dict(score_threshold=0.01, nms_iou_threshold=0.45, max_detections=200,  # Sec. 3
                  per_class_topk=400,                # Caffe's DetectionOutput top_k per class
                  pre_nms_topk=2000),                # per_class_topk=0: one global top-k
  ))


def paper_recipe(size, dataset):
  c = config_lib.base_config()
  if dataset == "voc":
    c.model = model_config(20, size)
    c.data.train = "voc/2007:train+validation,voc/2012:train+validation"
    c.data.eval = "voc/2007:test"
    c.eval.metrics = ("voc07",)
    steps, decays = 120_000, (80_000, 100_000)        # ssd_pascal.py: Sec. 3.1's, doubled
  else:
    c.model = model_config(80, size)
    c.model.default_boxes.s_min = 0.15 if size == 300 else 0.1   # Sec. 3.4: smaller boxes
    c.model.default_boxes.first_scale = 0.07 if size == 300 else 0.04
    c.data.train, c.data.eval = "coco/2017:train", "coco/2017:validation"
    steps, decays = 400_000, (280_000, 360_000)       # ssd_coco.py
  min_ratio, max_ratio, first_ratios = RELEASED_PRIOR_RATIOS[dataset, size]
  c.model.default_boxes.min_sizes, c.model.default_boxes.max_sizes = caffe_prior_sizes(
      size, min_ratio, max_ratio, first_ratios, len(c.model.default_boxes.aspect_ratios))
  c.model.default_boxes.steps = RELEASED_STEPS[size]
  c.data.image_size = (size, size)
  c.data.keep_aspect_ratio = False                    # warped to the square input
  c.data.augment = ssd_augmentation()
  c.train.batch_size = 32
  c.train.total_steps = steps
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.optimizer.weight_decay = 5e-4
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=1e-3, warmup_steps=1000, warmup_factor=0.001, decay_steps=decays,
      decay_factor=0.1))
  c.eval.batch_size = 16
  return c


def vgg16_imagenet():
  """Simonyan & Zisserman 2015, Sec. 3.1: lr 1e-2 divided by 10 three times (here at epochs 30,
  50 and 65 of 74), weight decay 5e-4 (``config.imagenet_step_recipe``), on SSD's reduced
  VGG-16 (the module doc)."""
  model = config_lib.classifier_model("ssd_vgg16", model_config(20).base, 1000)
  return config_lib.imagenet_step_recipe(model, epochs=74, base_lr=1e-2,
                                         decay_epochs=(30, 50, 65), weight_decay=5e-4)


def tiny(num_classes=10):
  """A VGG of 1/4 the width with batch norm, 128x128 input, five maps of 16, 8, 4, 2, 1 cells
  and default boxes of 13-102 pixels for the 10-60 pixel digits of ``digit_scenes``."""
  c = config_lib.base_config()
  c.model = model_config(num_classes, 300)
  c.model.base.update(stage_widths=(16, 32, 64, 128, 128), stage_depths=(1, 1, 1, 1, 1),
                      fc_width=128, fc6_dilation=3, batch_norm=True,
                      extras=((32, 64, 3, 2, 1), (32, 64, 3, 2, 1), (32, 64, 3, 2, 1)))
  c.model.default_boxes.aspect_ratios = ((2,), (2, 3), (2, 3), (2,), (2,))
  c.model.default_boxes.s_max = 0.8
  c.data.image_size = (128, 128)
  c.data.max_boxes = 16
  c.data.keep_aspect_ratio = False
  c.data.augment = ssd_augmentation()
  return c


def tiny_test_base():
  base = tiny().model.base
  base.update(stage_widths=(8, 8, 16, 16, 16), stage_depths=(1, 1, 1, 1, 1), fc_width=16,
              fc6_dilation=1, extras=((8, 16, 3, 2, 1),))
  return base


def get_config(variant="tiny_digits"):
  if variant in ("ssd300_voc", "ssd512_voc", "ssd300_coco", "ssd512_coco"):
    size, dataset = variant[3:].split("_")
    c = paper_recipe(int(size), dataset)
  elif variant == "finetune":
    # ssd_pascal.py's schedule in epochs (80k iterations at batch 32 over VOC07+12's 16.5k).
    c = config_lib.finetune_recipe(paper_recipe(300, "voc"), epochs=155, decay_epochs=(
        116, 136), base_lr=1e-3, warmup_steps=500)
  elif variant == "vgg16_imagenet":
    c = vgg16_imagenet()
  elif variant == "pretrain_test":
    c = config_lib.smoke_test_recipe(config_lib.classification_recipe(
        config_lib.base_config(), "digit_crops:train", "digit_crops:test"))
    c.model = config_lib.classifier_model("ssd_vgg16", tiny_test_base(), 10)
  elif variant == "tiny_digits":
    c = config_lib.cpu_digits_recipe(tiny())
    c.train.optimizer.weight_decay = 5e-4             # the paper's
  elif variant == "tiny_test":
    c = config_lib.smoke_test_recipe(tiny())
    c.model.base = tiny_test_base()
    c.model.default_boxes.aspect_ratios = ((2,), (2, 3), (2,))
    c.model.default_boxes.s_min = 0.3
  else:
    raise ValueError(f"unknown SSD variant {variant!r}; see experiments/ssd.py")
  c.lock()
  return c


def table2_components(name):
  # Table 2's columns from the left, on tiny_digits' five maps: without data augmentation and
  # without the extra default-box shapes, then adding the augmentation, the {1/2, 2} boxes and
  # the {1/3, 3} boxes (the recipe), and last the full VGG instead of the atrous one (fc6/fc7
  # 4x wider, as VGG-16's 4096 to the reduced 1024; conv5 predicts, one extra layer fewer).
  no_extra_shapes = ((),) * 5
  tiny_base = tiny().model.base
  return sweep.Sweep(name, "tiny_digits", [
      sweep.Cell("plain", {"data.augment.name": "",
                           "model.default_boxes.aspect_ratios": no_extra_shapes}),
      sweep.Cell("augmentation", {"model.default_boxes.aspect_ratios": no_extra_shapes}),
      sweep.Cell("plus_ratios_2", {"model.default_boxes.aspect_ratios": ((2,),) * 5}),
      sweep.Cell("plus_ratios_3", {}),
      sweep.Cell("full_vgg", {"model.base.atrous": False, "model.base.fc_width":
                              4 * tiny_base.fc_width, "model.base.extras": tiny_base.extras[:2]})],
      seeds=(0, 1), metric="coco/AP",
      paper_table="Liu et al. 2016, Table 2 (SSD300, VOC2007 test mAP)")


SWEEPS = {"table2_components": table2_components}
get_sweep = sweep.getter(SWEEPS, "SSD")
