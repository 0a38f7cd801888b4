"""The config schema shared by every family; experiments/<family>.py fill in ``model`` and the
paper's recipes. Configs are locked ml_collections: overriding or reading a key that does not
exist is an error that names the key."""
import ml_collections

from jaxdet import errors


def nested_tuples(value):
  """Lists in a config (e.g. a network's stage lists) as nested tuples, hashable for Flax."""
  return tuple(map(nested_tuples, value)) if isinstance(value, (list, tuple)) else value


def augmentation(name, **options):
  """``config.data.augment``: the augmentation registered as ``name`` in
  ``jaxdet.data.augment`` ("" for none) and its options, e.g. ``augmentation("yolo",
  jitter=0.2, hue=0.1)``; options left out take the augmentation's defaults (the paper's) and
  cannot be set from the command line, so a recipe lists those it means."""
  return ml_collections.ConfigDict(dict(name=name, **options))


# ImageNet RGB statistics in 0-255 units (torchvision's, the backbones' convention); darknet's
# networks take RGB / 255 (mean 0, std 255).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
DARKNET_PIXEL_MEAN = (0.0, 0.0, 0.0)
DARKNET_PIXEL_STD = (255.0, 255.0, 255.0)


def base_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict()        # family-specific; must set ``family``

  c.data = ml_collections.ConfigDict()
  c.data.train = "digit_scenes:train"          # jaxdet.data.sources.build_source spec
  c.data.eval = "digit_scenes:test"
  c.data.data_dir = ""                         # TFDS data_dir; "" = TFDS default
  c.data.coco_json_dir = ""                    # folder for "coco_json:<split>" specs
  c.data.image_size = (128, 128)               # static network input (height, width)
  c.data.multi_scale_sizes = ()                # training sizes (square) drawn per period
  c.data.multi_scale_every = 10                # batches per multi-scale period
  c.data.max_boxes = 100                       # ground-truth budget M per image
  c.data.random_flip = True
  c.data.keep_aspect_ratio = True              # False: warp to image_size (SSD, YOLO)
  c.data.eval_letterbox = False                # True: evaluate on darknet's centred letterbox
  c.data.pixel_mean = PIXEL_MEAN               # input = (RGB 0-255 - pixel_mean) / pixel_std
  c.data.pixel_std = PIXEL_STD
  c.data.augment = augmentation("")            # none; see augmentation()
  c.data.classification = ""                   # joint training (YOLO9000): classification
  #                                              source spec, "imagenet2012:train", "folder:DIR"
  c.data.classification_ratio = (4, 1)         # classification : detection examples

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16                      # global, over all devices and hosts
  c.train.total_steps = 1000
  c.train.epochs = 0.0                         # > 0: total_steps from the training set's size
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.eval_every = 0                       # 0: evaluate only at the end
  c.train.ema_decay = 0.0                      # 0: no EMA
  c.train.hang_timeout_s = 1800                # no step for this long: exit (0: never)
  c.train.init_from = ""                       # a workdir: start from its matching weights
  c.train.allow_config_change = ""             # keys a resumed run may change, "a.b,c.d"
  c.train.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, weight_decay=1e-4, decay_norm_params=False,
      grad_clip_norm=0.0))
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=0.01, warmup_steps=1000, warmup_factor=0.001,
      decay_steps=(600, 800), decay_factor=0.1,
      warmup="linear",                         # or "burn_in": darknet's (step / warmup)^power
      burn_in_power=4.0))                      # (optional keys in a recipe's own schedule)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 16
  c.eval.metrics = ("coco",)                   # names in jaxdet.evaluation.metrics; () skips
  c.eval.class_groups = ml_collections.ConfigDict()  # name -> class names: VOC mAP per group
  c.eval.allow_missing_images = False          # True: score the readable images (and say so)
  return c


def cpu_digits_recipe(c):
  """The schedule of every family's ``tiny_digits`` variant (2-core CPU, ``digit_scenes``):
  batch 16, 3,000 steps, cosine learning rate from 0.02 after 200 warmup steps."""
  c.train.batch_size = 16
  c.train.total_steps = 3000
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="cosine", base_lr=0.02, warmup_steps=200, warmup_factor=0.01, decay_steps=(),
      decay_factor=0.1))
  # From scratch at lr 0.02 a rare gradient spike (norm ~16 against the usual 1-3) can kill a
  # small net's ReLUs for good; clipping at 1 keeps every run on track.
  c.train.optimizer.grad_clip_norm = 1.0
  return c


def digits_pretraining_recipe(model):
  """Classification pretraining for a ``tiny_digits`` detector on ``digit_crops`` (2-core CPU):
  64x64, batch 32, 4,000 steps of :func:`cpu_digits_recipe`'s schedule, the YOLO augmentation
  without flips (a mirrored digit is another glyph, not the same class)."""
  c = classification_recipe(cpu_digits_recipe(base_config()), "digit_crops:train",
                            "digit_crops:test")
  c.model = model
  c.data.image_size = (64, 64)
  c.data.augment = augmentation("yolo", jitter=0.2, saturation=1.5, exposure=1.5, hue=0.0)
  c.data.random_flip = False
  c.train.batch_size = 32
  c.train.total_steps = 4000
  return c


def yolo_cpu_digits_recipe(c):
  """:func:`cpu_digits_recipe` for the YOLO families' ``tiny_digits``, with their papers' weight
  decay 5e-4 and gradients clipped at norm 10: their losses are sums per image, not means over
  positives, so gradient norms run ~3-30 (~2000 in the first steps), and clipping at 1 kept
  YOLOv3's tiny model's classes at chance."""
  c = cpu_digits_recipe(c)
  c.train.optimizer.weight_decay = 5e-4
  c.train.optimizer.grad_clip_norm = 10.0
  return c


def smoke_test_recipe(c):
  """Six steps of batch 8 at 64x64, logging and saving every 2: for tests and smoke runs."""
  c.data.image_size = (64, 64)
  c.train.batch_size = 8
  c.train.total_steps = 6
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.schedule.warmup_steps = 2
  c.eval.batch_size = 16
  return c


# ImageNet 2012 (ILSVRC-2012-CLS) training images: the epochs of the pretraining recipes.
IMAGENET_TRAIN_IMAGES = 1_281_167


def classifier_model(trunk, backbone, num_classes):
  """The ``classifier`` family (``jaxdet.detectors.classifier``) over ``trunk`` with the
  detector's ``backbone`` settings."""
  return ml_collections.ConfigDict(dict(family="classifier", trunk=trunk, num_classes=num_classes,
                                        dtype="float32", backend="auto",
                                        backbone=backbone))


def classification_recipe(c, train, evaluate):
  """``c`` trained on the classification source ``train`` alone and evaluated by top-1 / top-5
  accuracy on ``evaluate`` (e.g. ``"imagenet2012:validation"``, ``"folder:DIR"``)."""
  c.data.train = ""
  c.data.classification = train
  c.data.eval = evaluate
  c.eval.metrics = ("top1", "top5")
  c.data.max_boxes = 1                         # classification images have none
  c.data.keep_aspect_ratio = False             # warped to the square input
  return c


def imagenet_classifier_training(model, image_size, batch_size, epochs, weight_decay):
  """What the ImageNet recipes below share: the classifier ``model`` trained on ImageNet's
  train split for ``epochs`` with SGD (momentum 0.9) and weight decay, random crops and HSV
  shifts (the YOLO augmentation), evaluated on its validation split; the schedule is the
  recipe's."""
  c = classification_recipe(base_config(), "imagenet2012:train", "imagenet2012:validation")
  c.model = model
  c.data.image_size = (image_size, image_size)
  c.data.augment = augmentation("yolo", jitter=0.2, saturation=1.5, exposure=1.5, hue=0.1)
  c.train.batch_size = batch_size
  c.train.total_steps = round(epochs * IMAGENET_TRAIN_IMAGES / batch_size)
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.optimizer.weight_decay = weight_decay
  c.eval.batch_size = batch_size
  return c


def imagenet_pretraining_recipe(model, image_size, epochs, base_lr):
  """darknet's ImageNet classifier training, as YOLOv2 gives it (Sec. 3 "Training for
  classification"): SGD momentum 0.9, weight decay 5e-4, polynomial rate decay with power 4
  from ``base_lr``, batch 128 (cfg/darknet19.cfg), random crops and hue, saturation and
  exposure shifts (the YOLO augmentation; the paper's rotations are not implemented)."""
  c = imagenet_classifier_training(model, image_size, 128, epochs, weight_decay=5e-4)
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="poly", power=4.0, base_lr=base_lr, warmup_steps=0, warmup_factor=1.0,
      decay_steps=(), decay_factor=0.1))
  return c


def imagenet_step_recipe(model, epochs, base_lr, decay_epochs, weight_decay):
  """ImageNet classifier training as the VGG and ResNet papers give it (Simonyan & Zisserman
  Sec. 3.1, He et al. 2016 Sec. 3.4): SGD momentum 0.9, batch 256, ``base_lr`` divided by 10 at
  ``decay_epochs`` (the papers: when the validation error stops improving), 224x224 random crops
  with flips and colour shifts (the YOLO augmentation: crops of +-20% and HSV shifts, not the
  papers' scale jittering and PCA lighting)."""
  c = imagenet_classifier_training(model, 224, 256, epochs, weight_decay)
  steps_per_epoch = IMAGENET_TRAIN_IMAGES / 256
  c.train.schedule = ml_collections.ConfigDict(dict(
      name="step", base_lr=base_lr, warmup_steps=0, warmup_factor=1.0,
      decay_steps=tuple(round(e * steps_per_epoch) for e in decay_epochs), decay_factor=0.1))
  return c


def finetune_recipe(c, epochs, decay_epochs, base_lr, warmup_steps, warmup="linear"):
  """``c`` (a paper recipe) as a fine-tuning run on a user's data: ``epochs`` over the training
  set with the learning rate divided by 10 at ``decay_epochs``, both turned into steps from the
  set's size when the run starts (:func:`steps_from_epochs`), after ``warmup_steps`` of warmup.
  Point it at the data with the training tool's ``--coco_json_dir`` (classes from the data) and
  at the starting weights with ``--config.train.init_from``: an imported or trained backbone or
  detector; layers whose shapes differ, such as the classes of another dataset, start fresh."""
  c.train.epochs = float(epochs)
  c.train.schedule.base_lr = base_lr
  c.train.schedule.warmup_steps = warmup_steps
  c.train.schedule.warmup = warmup
  c.train.schedule.decay_epochs = tuple(float(e) for e in decay_epochs)
  c.train.checkpoint_every = 1000
  return c


def steps_from_epochs(config, num_examples):
  """``config`` with ``train.total_steps`` = ``train.epochs`` passes over ``num_examples``
  training images at ``train.batch_size``, and the schedule's ``decay_steps`` from its
  ``decay_epochs`` (when given) alike, rounded to whole steps: recipes for a user's own data,
  whose size only the run knows. Unchanged when ``train.epochs`` is 0."""
  epochs = config.train.get("epochs", 0.0)
  decay_epochs = tuple(config.train.schedule.get("decay_epochs", ()))
  if not epochs:
    if decay_epochs:
      raise errors.InvalidSetupError("train.schedule.decay_epochs needs train.epochs")
    return config
  if num_examples <= 0:
    raise errors.InvalidSetupError("train.epochs needs a training set with images")
  steps_per_epoch = num_examples / config.train.batch_size
  config = config.copy_and_resolve_references()
  config.train.total_steps = max(1, round(epochs * steps_per_epoch))
  if decay_epochs:
    config.train.schedule.decay_steps = tuple(round(e * steps_per_epoch) for e in decay_epochs)
  return config


def validate(config):
  """Refuses, with one line per problem, values that no run can use. ``total_steps = 0`` is
  allowed: it evaluates the initial model."""
  train = config.train
  problems = [f"config.{key} = {value} must be positive" for key, value in
              (("train.schedule.base_lr", train.schedule.base_lr),
               ("train.batch_size", train.batch_size), ("train.log_every", train.log_every),
               ("train.checkpoint_every", train.checkpoint_every),
               ("train.keep_checkpoints", train.keep_checkpoints),
               ("eval.batch_size", config.eval.batch_size),
               ("data.max_boxes", config.data.max_boxes))
              if not value > 0]
  if train.get("epochs", 0.0) < 0:
    problems.append(f"config.train.epochs = {train.epochs} must not be negative")
  if train.total_steps < 0:
    problems.append(f"config.train.total_steps = {train.total_steps} must not be negative")
  if train.eval_every < 0:
    problems.append(f"config.train.eval_every = {train.eval_every} must not be negative")
  if problems:
    raise errors.InvalidSetupError("invalid config:\n  " + "\n  ".join(problems))
