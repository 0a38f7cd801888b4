"""The training loop, the same for every family: it only talks to the Detector interface."""
import logging
import signal
import time
from typing import Any, NamedTuple

from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from jaxdet import config as config_lib
from jaxdet import detectors
from jaxdet import distributed
from jaxdet import errors
from jaxdet.data import anchor_kmeans
from jaxdet.data import augment
from jaxdet.data import pipeline
from jaxdet.data import sanitize
from jaxdet.data import sources
from jaxdet.evaluation import evaluator
from jaxdet.evaluation import results_files
from jaxdet.train import checkpoint
from jaxdet.train import resume
from jaxdet.train import run_info
from jaxdet.train import sharding
from jaxdet.train import state as state_lib
from jaxdet.train import workdir_lock


log = logging.getLogger("jaxdet")


class NonFiniteLossError(errors.ReportedError, FloatingPointError):
  """Training produced a NaN or inf loss."""


class StopRequest:
  """Turns SIGINT / SIGTERM into a clean stop after the current step (checkpoint, then exit).
  A second signal interrupts at once."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    if self.requested:
      signal.default_int_handler(signum, frame)
    self.requested = True
    log.warning("signal %d: stopping after this step and saving a checkpoint "
                    "(again to abort at once)", signum)


class SummaryWriteError(errors.ReportedError, OSError):
  """TensorBoard events could not be written (e.g. the disk is full)."""


class MetricWriter:
  """TensorBoard scalars under the workdir."""

  def __init__(self, logdir):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self._tf, self._logdir = tf, logdir
    self._writer = tf.summary.create_file_writer(logdir) if jax.process_index() == 0 else None

  def write(self, step, scalars):
    if self._writer is None:
      return
    try:
      with self._writer.as_default():
        for name, value in scalars.items():
          self._tf.summary.scalar(name, value, step=step)
      self._writer.flush()
    except self._tf.errors.OpError as e:
      steps = checkpoint.committed_steps(self._logdir)
      raise SummaryWriteError(
          f"writing TensorBoard events in {self._logdir} failed at step {step} "
          f"({checkpoint.short_error(e)}); training stopped. Last committed checkpoint step: "
          f"{steps[-1] if steps else 'none'}; rerun the same command to resume from it.") from e


def format_duration(seconds):
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def mean_metrics(pending):
  """Averages the per-step metric dicts fetched from the device (``all_finite`` aside)."""
  fetched = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "all_finite"}


def check_finite(pending, first_step, last_checkpoint):
  """Raises :class:`NonFiniteLossError` if a step of ``pending`` produced a non-finite loss,
  gradient or parameter; called before every checkpoint, so none holds such a state."""
  fetched = jax.device_get(pending)
  bad = [i for i, m in enumerate(fetched) if not m["all_finite"]]
  if bad:
    kept = (f"the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint
            else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"non-finite loss, gradient or parameters at step {first_step + bad[0] + 1} (loss "
        f"{fetched[bad[0]]['loss']}). Training stopped; {kept}. Lower "
        "config.train.schedule.base_lr, lengthen the warmup, or set "
        "config.train.optimizer.grad_clip_norm.")


def note_input_size(size, sizes_seen, step):
  """Logs the first step at each input size (multi-scale training): jit compiles the train
  step once per size, so that step is slow."""
  if tuple(size) not in sizes_seen:
    sizes_seen.add(tuple(size))
    log.info("step %d: first batch at %dx%d, compiling the train step for it (%d sizes so far)",
             step + 1, size[0], size[1], len(sizes_seen))


def agreed_stop(requested, at_log_step):
  """Whether to stop now. On several hosts all must leave the collective train step together,
  so they agree (any host signalled) at log steps only: a cross-host exchange every step would
  stall the asynchronous dispatch of the steps."""
  if jax.process_count() == 1:
    return requested
  return at_log_step and bool(multihost_utils.process_allgather(np.asarray(requested)).any())


def load_sources(config):
  """``(detection source or None, classification source or None)`` of the training data
  (``config.data.train`` and ``config.data.classification``; "" for none). The model's classes
  must be the detection set's, or the classification set's when it trains on that alone."""
  data_dir = config.data.data_dir or None
  train = (sources.build_source(config.data.train, data_dir, config.data.coco_json_dir)
           if config.data.train else None)
  classification = (sources.build_classification_source(config.data.classification, data_dir)
                    if config.data.classification else None)
  labelled_by = train or classification
  if labelled_by is None:
    raise ValueError("no training data: set config.data.train and/or config.data.classification")
  if labelled_by.num_classes != config.model.num_classes:
    raise errors.InvalidSetupError(
        f"config.model.num_classes = {config.model.num_classes} but dataset "
        f"{labelled_by.name} has {labelled_by.num_classes} classes; set "
        f"--config.model.num_classes={labelled_by.num_classes}")
  return train, classification


def with_steps_from_epochs(config):
  """``config`` with its steps from ``train.epochs`` (``config.steps_from_epochs``) over the
  training set, logged; unchanged without epochs."""
  if not config.train.get("epochs", 0.0):
    return config_lib.steps_from_epochs(config, 0)
  train, classification = load_sources(config)
  size = len(train or classification)
  resolved = config_lib.steps_from_epochs(config, size)
  log.info("%g epochs of %d images at batch %d: %d steps (learning rate decays at %s)",
           config.train.epochs, size, config.train.batch_size, resolved.train.total_steps,
           tuple(resolved.train.schedule.get("decay_steps", ())))
  return resolved


def check_box_budget(source, max_boxes):
  """Refuses a training set with an image of more boxes than ``data.max_boxes``: the extra
  ones would be dropped and their objects trained on as background. Sources whose annotations
  are not in memory (TFDS) are checked as they are read (``boxes_truncated``)."""
  most = source.max_boxes_per_image() if source is not None else None
  if most is not None and most[0] > max_boxes:
    raise errors.InvalidSetupError(
        f"{most[1]} in {source.name} has {most[0]} boxes, more than config.data.max_boxes = "
        f"{max_boxes} (the extra boxes would be dropped and trained on as background): set "
        f"--config.data.max_boxes={most[0]}")


UNMATCHABLE_IOU = 0.1     # a box this far from every prior's shape is ~3x off in size


def check_box_shapes(source, detector, config):
  """Logs the training boxes' sizes at the input against the priors' (anchors, default boxes)
  and refuses a set whose boxes mostly fit no prior's shape (IoU below 0.1 with every one,
  centred: ~3x too small or too large), a configuration error such as anchors sized for 1024
  pixels on 128-pixel inputs. Only where the annotations are in memory (COCO-json)."""
  size = tuple(config.data.image_size)
  priors = detector.prior_shapes(size)
  if priors is None or source is None or source.max_boxes_per_image() is None:
    return
  wh = anchor_kmeans.input_box_sizes(source, size, config.data.keep_aspect_ratio)
  if not len(wh):
    return
  best = anchor_kmeans.corner_iou(wh, priors).max(axis=1)
  side, prior_side = np.sqrt(np.prod(wh, -1)), np.sqrt(np.prod(priors, -1))
  report = (f"training boxes at the {size[0]}x{size[1]} input: sides {side.min():.3g}-"
            f"{side.max():.3g} px (median {np.median(side):.3g}); {config.model.family}'s priors "
            f"{prior_side.min():.3g}-{prior_side.max():.3g} px; {np.mean(best >= 0.5):.0%} of the "
            "boxes fit a prior's shape with IoU >= 0.5")
  log.info("%s", report)
  if np.mean(best < UNMATCHABLE_IOU) > 0.5:
    raise errors.InvalidSetupError(
        f"{report}, and {np.mean(best < UNMATCHABLE_IOU):.0%} fit none with IoU >= "
        f"{UNMATCHABLE_IOU}: the priors do not suit these boxes (anchor sizes or input size); "
        "scripts/kmeans_anchors.py finds priors for this data")


def check_input_sizes(detector, config):
  """Refuses input sizes the network cannot take (e.g. not a multiple of its largest stride,
  which would otherwise fail deep inside the model), with the reason and the nearest size that
  fits, if one does."""
  sizes = {tuple(config.data.image_size)} | {(s, s) for s in config.data.multi_scale_sizes}
  for size in sorted(sizes):
    error = trace_error(detector, size)
    if error is None:
      continue
    hint = next((f"; multiples of {m} fit, e.g. {rounded}" for m in (8, 16, 32, 64, 128, 256)
                 for rounded in [tuple(-(-v // m) * m for v in size)]
                 if trace_error(detector, rounded) is None), "")
    raise errors.InvalidSetupError(
        f"input size {size} (config.data.image_size / multi_scale_sizes) does not fit the "
        f"{config.model.family} network ({error}){hint}")


def trace_error(detector, size):
  """The error the network raises when traced at input ``size`` (shapes only, nothing
  computed), or None if it fits."""
  try:
    jax.eval_shape(lambda: detector.decode(detector.apply(
        detector.init(jax.random.PRNGKey(0), size), jnp.zeros((1, *size, 3)))[0], size))
    return None
  except (TypeError, ValueError) as e:
    return e


def relabelled_sources(detector, detection, classification):
  """``(detection, classification)`` training sources (None: absent) with the labels the
  detector's loss reads (:meth:`Detector.training_labels`)."""
  labels = detector.training_labels(detection and detection.class_names,
                                     classification and classification.class_names)

  def relabel(source, label_map):
    if source is None or label_map is None:
      return source
    return sources.RelabeledSource(source, label_map, labels.names)

  return relabel(detection, labels.detection), relabel(classification, labels.classification)


def describe_sources(train, classification):
  """E.g. ``"118287 detection images (coco/2017:train) and 1281167 classification images
  (imagenet2012:train)"``."""
  return " and ".join(f"{len(source)} {kind} images ({source.name})" for kind, source in
                      (("detection", train), ("classification", classification)) if source)


def run_evaluation(detector, state, config, mesh, issues, writer, workdir):
  """Evaluates ``state`` with ``config.eval.metrics`` (none: skipped) and records the results."""
  if not config.eval.metrics:
    return {}
  source = evaluator.build_eval_source(config)
  step = int(jax.device_get(state.step))
  start = time.time()
  predict = state_lib.predict_fn(detector, state.eval_variables(),
                                 tuple(config.data.image_size), mesh)
  results, report = evaluator.evaluate(predict, source, config, issues)
  log.info("evaluation at step %d on %s (%d images, %.1fs):\n%s", step, source.name,
               len(source), time.time() - start, report)
  writer.write(step, {f"eval/{k}": v for k, v in results.items()})
  if jax.process_index() == 0:
    results_files.write(workdir, step, results)
  return results


class TrainResult(NamedTuple):
  """What :func:`train` returns; ``finished`` is False when a signal stopped the run before
  ``total_steps`` (a checkpoint was written)."""
  detector: Any
  state: Any
  mesh: Any
  issues: sanitize.DataIssues
  writer: MetricWriter
  finished: bool


def train(config, workdir, devices=None):
  """Trains ``config`` in ``workdir`` on ``devices`` (default: every device of every host),
  resuming from its latest intact checkpoint. One run per workdir (a lock file). Returns a
  :class:`TrainResult`."""
  config_lib.validate(config)
  config = with_steps_from_epochs(config)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir, enabled=jax.process_index() == 0):
    if jax.process_index() == 0:
      run_info.record_start(config, workdir)
    return train_locked(config, workdir, devices)


def restore_or_initialize(config, workdir, mngr, state, detector):
  """``(state, examples_seen)``: from the workdir's newest intact checkpoint (refusing a changed
  config), else from ``config.train.init_from``, else fresh."""
  frozen = detector.frozen_parameters(state.params)
  saved = {}

  def check_config(saved_config):
    saved.update(saved_config)
    resume.check_config(saved_config, config, workdir)

  restored = checkpoint.restore_latest_intact(mngr, state, workdir, check_config)
  if restored is not None:
    state, examples_seen, step = restored
    log.info("resumed from %s at step %d (%d examples seen)", checkpoint.checkpoint_dir(workdir),
             step, examples_seen)
    resume.log_schedule_change(saved, config, step)
    return state, examples_seen
  if config.train.init_from:
    state, report = checkpoint.initialize_from(state, config.train.init_from, required=frozen)
    log.info("%s", report)
  elif frozen is not None:
    raise ValueError(
        "this model keeps part of its backbone as it starts (frozen layers or frozen batch "
        "norm), which only makes sense from pretrained weights: set --config.train.init_from="
        "<workdir of the backbone's ImageNet run, e.g. experiments/retinanet.py:"
        "resnet50_imagenet or experiments/ssd.py:vgg16_imagenet>, or unfreeze it to train from "
        "scratch (the experiment's docstring says how)")
  return state, 0


def train_locked(config, workdir, devices):
  """:func:`train` once the workdir's lock is held."""
  # -------------------------------------------------------------------- Set up mesh and model.
  mesh = sharding.make_mesh(devices)
  batch_size = config.train.batch_size
  if batch_size % mesh.size or config.eval.batch_size % mesh.size:
    raise errors.InvalidSetupError(f"train batch {batch_size} and eval batch "
                                   f"{config.eval.batch_size} must be multiples of the "
                                   f"{mesh.size} devices")
  detector = detectors.build(config.model)
  check_input_sizes(detector, config)
  dataset_source, classification_source = load_sources(config)
  check_box_budget(dataset_source, config.data.max_boxes)
  check_box_shapes(dataset_source, detector, config)
  class_names = (dataset_source or classification_source).class_names   # the dataset's own
  train_source, classification_source = relabelled_sources(detector, dataset_source,
                                                           classification_source)
  issues = sanitize.DataIssues()
  state, tx, schedule = state_lib.build_state(detector, config, mesh)
  log.info("%s on %d devices; %d parameters; %s", config.model.family, mesh.size,
           sum(x.size for x in jax.tree.leaves(state.params)),
           describe_sources(train_source, classification_source))

  # ------------------------------------------------------------------- Restore checkpoint.
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  try:
    state, examples_seen = restore_or_initialize(config, workdir, mngr, state, detector)
  except BaseException:
    mngr.close()
    raise
  last_checkpoint = int(state.step)

  # ------------------------------------------------------------------------------- Train.
  train_step = state_lib.jit_train_step(detector, tx, schedule, config.train.ema_decay, mesh)
  labels_of = train_source or classification_source     # the loss's labels (e.g. tree nodes)
  batches = pipeline.train_dataset(
      train_source, config.data, num_classes=labels_of.num_classes,
      global_batch_size=batch_size, start_example=examples_seen, seed=config.seed, issues=issues,
      process_index=jax.process_index(), process_count=jax.process_count(),
      augment=augment.build(config.data.augment), classification=classification_source,
      classification_ratio=config.data.classification_ratio).as_numpy_iterator()
  writer = MetricWriter(workdir)
  total = config.train.total_steps
  step = int(state.step)
  pending, interval_start, interval_step = [], time.time(), step
  stopped, sizes_seen, failing = False, set(), False
  with StopRequest() as stop, distributed.Watchdog(config.train.hang_timeout_s) as watchdog:
    try:
      while step < total and not stopped:
        watchdog.arm(f"at step {step + 1} (input, dispatch or checkpoint)")
        batch = next(batches)
        note_input_size(batch["image"].shape[1:3], sizes_seen, step)
        state, metrics = train_step(state, sharding.global_batch(batch, mesh))
        pending.append(metrics)
        step += 1
        examples_seen += batch_size
        stopped = agreed_stop(stop.requested, step % config.train.log_every == 0)
        save_now = step % config.train.checkpoint_every == 0 or step == total or stopped
        if step % config.train.log_every == 0 or save_now:
          checkpoint.raise_if_save_failed(mngr, workdir)    # the previous save's outcome
          # Steps run asynchronously: fetching the metrics waits for all pending ones.
          watchdog.arm(f"finishing steps {step - len(pending) + 1}-{step}", steps=len(pending))
          check_finite(pending, step - len(pending), last_checkpoint)
          scalars = mean_metrics(pending)
          now = time.time()
          steps_per_s = (step - interval_step) / max(now - interval_start, 1e-9)
          log.info("step %d/%d | %s | %.2f steps/s | ETA %s", step, total,
                   " ".join(f"{k} {v:.4g}" for k, v in sorted(scalars.items())), steps_per_s,
                   format_duration((total - step) / max(steps_per_s, 1e-9)))
          writer.write(step, {**{f"train/{k}": v for k, v in scalars.items()},
                              "train/steps_per_second": steps_per_s,
                              **{f"data_issues/{k}": v for k, v in issues.snapshot().items()}})
          pending, interval_start, interval_step = [], now, step
        if save_now:
          checkpoint.save(mngr, workdir, state, examples_seen, class_names, config)
          last_checkpoint = step
        if config.train.eval_every and step % config.train.eval_every == 0 and step < total:
          watchdog.disarm()  # evaluation's length depends on the eval set, not on a step
          run_evaluation(detector, state, config, mesh, issues, writer, workdir)
    except BaseException:
      failing = True
      raise
    finally:  # also on errors: the last good checkpoint is finished, not left half-written
      finish_saving(mngr, workdir, raise_errors=not failing)
  log.info("data issues (repaired or skipped): %s", issues.snapshot())
  if step < total:
    log.info("stopped at step %d; rerun the same command to resume", step)
  return TrainResult(detector, state, mesh, issues, writer, step >= total)


def finish_saving(mngr, workdir, raise_errors):
  """Waits for the last save and closes the manager. A save that failed after the last check
  is a :class:`checkpoint.CheckpointSaveError`, or, while another error is on its way out
  (``raise_errors`` False), a logged warning."""
  try:
    checkpoint.raise_if_save_failed(mngr, workdir, wait=True)
    mngr.close()
  except Exception as e:  # pylint: disable=broad-except
    if raise_errors:
      raise
    log.warning("also: %s", e)


def train_and_evaluate(config, workdir, devices=None):
  """Trains (resuming if possible), then evaluates on ``config.data.eval`` and prints the table.
  Returns the evaluation metrics, or None when a signal stopped it early (a checkpoint was
  committed; the final evaluation is skipped so that the process ends within the scheduler's
  grace period)."""
  run = train(config, workdir, devices)
  if not run.finished:
    return None
  return run_evaluation(run.detector, run.state, config, run.mesh, run.issues, run.writer,
                        workdir)
