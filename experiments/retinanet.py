r"""RetinaNet (Lin et al. 2017) recipes; pick one with
``--config=experiments/retinanet.py:<variant>``.

Variants:
  tiny_digits       default run: small ResNet-FPN on the shipped ``digit_scenes`` data, 128x128;
                    ~10 min on a 2-core CPU (README "Results on the shipped data").
  tiny_test         the smallest model, for tests and smoke runs.
  r50_fpn_coco_1x   the paper's ResNet-50-FPN COCO recipe (Sec. 5.1 "Optimization", Detectron
                    "1x"): batch 16, SGD momentum 0.9, lr 0.01 with 1k warmup steps, divided by 10
                    at 60k and 80k, 90k steps, weight decay 1e-4, focal alpha 0.25 gamma 2,
                    horizontal flip only. Input 1024x1024: the longer side is resized to 1024
                    (the paper: shorter side 800) and padded, the static-shape form of TF Model
                    Garden's RetinaNet.
  r101_fpn_coco_1x  the same with ResNet-101.
  finetune          ResNet-50-FPN at 640 on your data (``--coco_json_dir``) from
                    ``--config.train.init_from`` (an imported or trained ResNet-50 or
                    RetinaNet): 12 epochs, lr 0.01 divided by 10 at epochs 8 and 11
                    (``config.finetune_recipe``).
  resnet50_imagenet   the ImageNet ResNet-50 the paper starts from (Sec. 4 "Initialization"; He
                      et al. 2016 Sec. 3.4), as a classifier whose weights carry RetinaNet's
                      names: batch 256, SGD momentum 0.9, lr 0.1 divided by 10 at epochs 30 and
                      60 of 90, weight decay 1e-4, 224x224 crops.
  resnet101_imagenet  the same for ResNet-101.
  pretrain_digits     ``tiny_digits``' ResNet as a classifier on the shipped ``digit_crops``
                      (``config.digits_pretraining_recipe``).
  pretrain_test       the smallest ResNet classifier, for tests.

The COCO recipes fine-tune an ImageNet ResNet as Detectron does: batch norm frozen into a fixed
affine map (``model.backbone_norm="frozen_batch_norm"``) and the stem and C2 stage frozen
(``model.freeze_at=2``), so they need ``--config.train.init_from=<a resnet*_imagenet workdir>``;
``--config.model.backbone_norm=batch_norm --config.model.freeze_at=0`` trains everything from
scratch instead (global batch norm).

Sweeps (``get_sweep``; run with ``jaxdet-sweep --config=experiments/retinanet.py --sweep=<name>
--sweep_dir=<dir>``):
  focal_loss        Table 1a/1b in miniature: gamma 0 (alpha-balanced cross-entropy), 0.5, 1, 2
                    and 5, each at alpha 0.25, 0.5 and 0.75, on ``tiny_digits``, two seeds.
  anchor_density    Table 1c in miniature: 1-4 octave scales x 1 or 3 aspect ratios per location.
  fpn_components    the FPN paper's Table 1 c-f on RetinaNet: the FPN, the bottom-up pyramid
                    (no top-down path), the top-down pyramid without lateral connections, and
                    every anchor on the finest level alone.

Example:
  python scripts/train.py --config=experiments/retinanet.py:resnet50_imagenet \
      --workdir=runs/resnet50 --config.data.data_dir=/data/tfds
  python scripts/train.py --config=experiments/retinanet.py:r50_fpn_coco_1x \
      --workdir=runs/r50 --config.data.data_dir=/data/tfds --config.model.dtype=bfloat16 \
      --config.train.init_from=runs/resnet50
"""
import ml_collections

from jaxdet import config as config_lib
from jaxdet import sweep


def model_config(num_classes, backbone="resnet50"):
  """The paper's RetinaNet; the tiny variants shrink widths and depths only."""
  return ml_collections.ConfigDict(dict(
      family="retinanet",
      num_classes=num_classes,
      backbone=backbone,
      backbone_norm="batch_norm",         # or "frozen_batch_norm" (ImageNet fine-tuning)
      freeze_at=0,                        # Detectron2's FREEZE_AT (models/resnet.py)
      dtype="float32",                    # compute dtype; params stay float32
      backend="auto",                     # jaxdet.models.backend: by platform
      min_level=3, max_level=7,           # P3-P7
      p6_input="C5",                      # Sec. 4: P6 by a 3x3 stride-2 conv on C5
      fpn_width=256,
      fpn_top_down=True, fpn_lateral=True,  # FPN's Table 1 d/e ablations when False
      fpn_single_level=False,               # Table 1 f: every anchor on P_min alone
      head_width=256, head_depth=4,       # 4 x conv3x3-256-ReLU per subnet
      prior_prob=0.01,                    # Sec. 4 "Initialization", pi
      anchors=dict(size=4.0, num_scales=3, aspect_ratios=(0.5, 1.0, 2.0)),  # 32^2 on P3, A = 9
      matcher=dict(positive_threshold=0.5, negative_threshold=0.4,
                   allow_low_quality_matches=True),
      loss=dict(focal_alpha=0.25, focal_gamma=2.0,
                smooth_l1_beta=0.11,      # Detectron's RetinaNet setting
                box_loss_weight=1.0, box_weights=(1.0, 1.0, 1.0, 1.0)),
      decode=dict(score_threshold=0.05, pre_nms_topk=1000, nms_iou_threshold=0.5,
                  max_detections=100),   # Sec. 4 "Inference"
  ))


def coco_1x(backbone):
  c = config_lib.base_config()
  c.model = model_config(80, backbone)
  c.model.backbone_norm = "frozen_batch_norm"   # Detectron's AffineChannel
  c.model.freeze_at = 2                          # Detectron's FREEZE_AT: stem and res2
  c.data.train, c.data.eval = "coco/2017:train", "coco/2017:validation"
  c.data.image_size = (1024, 1024)
  c.train.batch_size = 16
  c.train.total_steps = 90_000
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.optimizer.weight_decay = 1e-4
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=0.01, warmup_steps=1000, warmup_factor=0.001,
      decay_steps=(60_000, 80_000), decay_factor=0.1))
  c.eval.batch_size = 8
  return c


def resnet_imagenet(architecture):
  """He et al. 2016 Sec. 3.4, as torchvision trains its ResNets: lr 0.1 divided by 10 at epochs
  30 and 60 of 90, weight decay 1e-4 (``config.imagenet_step_recipe``)."""
  model = config_lib.classifier_model(
      "resnet", ml_collections.ConfigDict(dict(architecture=architecture)), 1000)
  return config_lib.imagenet_step_recipe(model, epochs=90, base_lr=0.1, decay_epochs=(30, 60),
                                         weight_decay=1e-4)


def tiny_classifier():
  """``tiny()``'s ResNet as a classifier of the ten digits."""
  return config_lib.classifier_model(
      "resnet", ml_collections.ConfigDict(dict(architecture="resnet_tiny")), 10)


def tiny(num_classes=10):
  """Small ResNet-FPN for the 2-core CPU: three levels P3-P5 with anchors of 16-101 pixels
  (``anchors.size = 2``) for the 10-60 pixel digits of ``digit_scenes``."""
  c = config_lib.base_config()
  c.model = model_config(num_classes, "resnet_tiny")
  c.model.max_level = 5
  c.model.fpn_width = 64
  c.model.head_width, c.model.head_depth = 64, 2
  c.model.anchors.size = 2.0
  c.data.image_size = (128, 128)
  c.data.max_boxes = 16
  return c


def get_config(variant="tiny_digits"):
  if variant == "r50_fpn_coco_1x":
    c = coco_1x("resnet50")
  elif variant == "r101_fpn_coco_1x":
    c = coco_1x("resnet101")
  elif variant == "finetune":
    # Detectron's 1x schedule in epochs (about 12 over COCO), at a 640 input.
    c = config_lib.finetune_recipe(coco_1x("resnet50"), epochs=12, decay_epochs=(8, 11),
                                   base_lr=0.01, warmup_steps=500)
    c.data.image_size = (640, 640)
  elif variant in ("resnet50_imagenet", "resnet101_imagenet"):
    c = resnet_imagenet(variant.split("_")[0])
  elif variant == "pretrain_digits":
    c = config_lib.digits_pretraining_recipe(tiny_classifier())
  elif variant == "pretrain_test":
    c = config_lib.smoke_test_recipe(config_lib.classification_recipe(
        config_lib.base_config(), "digit_crops:train", "digit_crops:test"))
    c.model = tiny_classifier()
  elif variant == "tiny_digits":
    c = config_lib.cpu_digits_recipe(tiny())
  elif variant == "tiny_test":
    c = config_lib.smoke_test_recipe(tiny())
    c.model.fpn_width, c.model.head_width, c.model.head_depth = 16, 16, 1
    c.model.anchors.size = 1.0
  else:
    raise ValueError(f"unknown RetinaNet variant {variant!r}; see experiments/retinanet.py")
  c.lock()
  return c


def focal_loss(name):
  # Table 1a/1b of Lin et al. 2017 as one grid: alpha-balanced cross-entropy (gamma 0) and the
  # focal loss at each alpha. The paper's AP column is left blank until copied from the paper.
  return sweep.Sweep(
      name, "tiny_digits",
      [sweep.Cell(f"gamma{gamma:g}_alpha{alpha:g}",
                  {"model.loss.focal_gamma": gamma, "model.loss.focal_alpha": alpha})
       for gamma in (0.0, 0.5, 1.0, 2.0, 5.0) for alpha in (0.25, 0.5, 0.75)],
      seeds=(0, 1), metric="coco/AP", x="model.loss.focal_gamma", series="model.loss.focal_alpha",
      paper_table="Lin et al. 2017, Table 1a and 1b (ResNet-50, 600 px, COCO minival AP)")


def fpn_components(name):
  return sweep.Sweep(
      name, "tiny_digits",
      [sweep.Cell("fpn", {}), sweep.Cell("bottom_up", {"model.fpn_top_down": False}),
       sweep.Cell("no_lateral", {"model.fpn_lateral": False}),
       sweep.Cell("finest_level_only", {"model.fpn_single_level": True})],
      seeds=(0, 1), metric="coco/AR100",       # the paper compares recall (AR), not AP
      paper_table="Lin et al. 2017 (FPN), Table 1 rows c-f (RPN on ResNet-50; AR, not AP)")


def anchor_density(name):
  # Table 1c of Lin et al. 2017: octave scales x aspect ratios per location, from one square
  # anchor to 4 x 3 (the recipe has 3 x 3).
  cells = [sweep.Cell(f"scales{scales}_ratios{len(ratios)}",
                      {"model.anchors.num_scales": scales, "model.anchors.aspect_ratios": ratios})
           for scales, ratios in ((1, (1.0,)), (2, (1.0,)), (3, (1.0,)), (1, (0.5, 1.0, 2.0)),
                                  (2, (0.5, 1.0, 2.0)), (3, (0.5, 1.0, 2.0)),
                                  (4, (0.5, 1.0, 2.0)))]
  return sweep.Sweep(name, "tiny_digits", cells, seeds=(0, 1), metric="coco/AP",
                     paper_table="Lin et al. 2017, Table 1c (ResNet-50, 600 px, COCO minival AP)")


SWEEPS = {"focal_loss": focal_loss, "fpn_components": fpn_components,
          "anchor_density": anchor_density}
get_sweep = sweep.getter(SWEEPS, "RetinaNet")
