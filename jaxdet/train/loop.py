"""The training loop, the same for every family: it only talks to the Detector interface."""
import json
import logging
import signal
import time

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from jaxdet import detectors
from jaxdet import distributed
from jaxdet.data import augment
from jaxdet.data import pipeline
from jaxdet.data import sanitize
from jaxdet.data import sources
from jaxdet.evaluation import evaluator
from jaxdet.train import checkpoint
from jaxdet.train import sharding
from jaxdet.train import state as state_lib


log = logging.getLogger("jaxdet")


class NonFiniteLossError(FloatingPointError):
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


class MetricWriter:
  """TensorBoard scalars under the workdir."""

  def __init__(self, logdir):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir) if jax.process_index() == 0 else None

  def write(self, step, scalars):
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in scalars.items():
        self._tf.summary.scalar(name, value, step=step)
    self._writer.flush()


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
    raise ValueError(f"config.model.num_classes = {config.model.num_classes} but dataset "
                     f"{labelled_by.name} has {labelled_by.num_classes} classes; set "
                     f"--config.model.num_classes={labelled_by.num_classes}")
  return train, classification


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
  results, report = evaluator.evaluate(detector, state.eval_variables(), source, config, mesh,
                                       issues)
  log.info("evaluation at step %d on %s (%d images, %.1fs):\n%s", step, source.name,
               len(source), time.time() - start, report)
  writer.write(step, {f"eval/{k}": v for k, v in results.items()})
  if jax.process_index() == 0:
    (epath.Path(workdir) / f"eval_step{step}.json").write_text(json.dumps(results, indent=1))
  return results


def train(config, workdir, devices=None):
  """Trains ``config`` in ``workdir`` on ``devices`` (default: every device of every host),
  resuming from its latest checkpoint.

  Returns ``(detector, state, mesh, issues, writer, finished)``; ``finished`` is False when a
  signal stopped the run before ``total_steps`` (a checkpoint was written).
  """
  # -------------------------------------------------------------------- Set up mesh and model.
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(devices)
  batch_size = config.train.batch_size
  if batch_size % mesh.size or config.eval.batch_size % mesh.size:
    raise ValueError(f"train batch {batch_size} and eval batch {config.eval.batch_size} must be "
                     f"multiples of the {mesh.size} devices")
  detector = detectors.build(config.model)
  dataset_source, classification_source = load_sources(config)
  class_names = (dataset_source or classification_source).class_names   # the dataset's own
  train_source, classification_source = detector.training_sources(dataset_source,
                                                                  classification_source)
  issues = sanitize.DataIssues()
  state, tx, schedule = state_lib.build_state(detector, config, mesh)
  log.info("%s on %d devices; %d parameters; %s", config.model.family, mesh.size,
           sum(x.size for x in jax.tree.leaves(state.params)),
           describe_sources(train_source, classification_source))

  # ------------------------------------------------------------------- Restore checkpoint.
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  frozen = detector.frozen_parameters(state.params)
  examples_seen = 0
  if mngr.latest_step() is not None:
    state, examples_seen = checkpoint.restore(mngr, state)
    log.info("resumed from %s at step %d (%d examples seen)", checkpoint.checkpoint_dir(workdir),
             int(state.step), examples_seen)
  elif config.train.init_from:
    state, report = checkpoint.initialize_from(state, config.train.init_from, required=frozen)
    log.info("%s", report)
  elif frozen is not None:
    raise ValueError(
        "this model keeps part of its backbone as it starts (frozen layers or frozen batch "
        "norm), which only makes sense from pretrained weights: set --config.train.init_from="
        "<workdir of the backbone's ImageNet run, e.g. experiments/retinanet.py:"
        "resnet50_imagenet or experiments/ssd.py:vgg16_imagenet>, or unfreeze it to train from "
        "scratch (the experiment's docstring says how)")
  last_checkpoint = int(state.step)

  # ------------------------------------------------------------------------------- Train.
  train_step = state_lib.jit_train_step(detector, tx, schedule, config.train.ema_decay, mesh)
  labels_of = train_source or classification_source     # the loss's labels (e.g. tree nodes)
  batches = pipeline.train_dataset(
      train_source, config.data, num_classes=labels_of.num_classes,
      global_batch_size=batch_size, start_example=examples_seen, seed=config.seed, issues=issues,
      process_index=jax.process_index(), process_count=jax.process_count(),
      augment=augment.build(config.data), classification=classification_source,
      classification_ratio=config.data.classification_ratio).as_numpy_iterator()
  writer = MetricWriter(workdir)
  total = config.train.total_steps
  step = int(state.step)
  pending, interval_start, interval_step = [], time.time(), step
  stopped, sizes_seen = False, set()
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
          checkpoint.save(mngr, state, examples_seen, class_names, config)
          last_checkpoint = step
        if config.train.eval_every and step % config.train.eval_every == 0 and step < total:
          watchdog.disarm()  # evaluation's length depends on the eval set, not on a step
          run_evaluation(detector, state, config, mesh, issues, writer, workdir)
    finally:  # also on errors: the last good checkpoint is finished, not left half-written
      mngr.wait_until_finished()
      mngr.close()
  log.info("data issues (repaired or skipped): %s", issues.snapshot())
  if step < total:
    log.info("stopped at step %d; rerun the same command to resume", step)
  return detector, state, mesh, issues, writer, step >= total


def train_and_evaluate(config, workdir, devices=None):
  """Trains (resuming if possible), then evaluates on ``config.data.eval`` and prints the table.
  Returns the evaluation metrics (``{}`` when stopped early)."""
  detector, state, mesh, issues, writer, finished = train(config, workdir, devices)
  if not finished:
    return {}
  return run_evaluation(detector, state, config, mesh, issues, writer, workdir)
