"""Orbax checkpoints of a run: train state, data position and config, saved asynchronously.

Each step directory holds three items: ``state`` (params, model state, optimizer state, EMA,
step, rng), ``data`` (``examples_seen``: the input pipeline's position, see jaxdet.data.pipeline)
and ``config`` (the run's full config as JSON, so evaluate/predict need only the workdir).
Orbax writes to a temporary directory and renames it when complete, so a run killed mid-save
(even ``kill -9``) resumes from the last complete checkpoint.
"""
import errno
import logging
import os

from etils import epath
import flax
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxdet import errors


def checkpoint_dir(workdir):
  """``<workdir>/checkpoints``. On several hosts the workdir is one directory they all see: a
  shared file system or a bucket URL (``gs://...``), which is used as given."""
  return os.path.join(workdir if "://" in workdir else os.path.abspath(workdir), "checkpoints")


def manager(workdir, keep=3, async_save=True):
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "data", "config"))


def save(mngr, workdir, state, examples_seen, class_names, config):
  """Starts saving ``state`` asynchronously, once the previous save has finished (its failure
  is a :class:`CheckpointSaveError`)."""
  raise_if_save_failed(mngr, workdir, wait=True)
  step = int(jax.device_get(state.step))
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
      data=ocp.args.JsonSave({"examples_seen": int(examples_seen),
                              "class_names": list(class_names)}),
      config=ocp.args.JsonSave(config.to_dict())))


def restore(mngr, target_state, step=None):
  """``(state, examples_seen)`` of ``step`` (default: latest) laid out like ``target_state``
  (same shapes, dtypes and shardings)."""
  step = mngr.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          flax.serialization.to_state_dict(target_state))
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
  state = flax.serialization.from_state_dict(target_state, restored["state"])
  return state, int(restored["data"]["examples_seen"])


class CheckpointSaveError(errors.ReportedError, RuntimeError):
  """An asynchronous checkpoint save failed (disk full, I/O error)."""


class DamagedCheckpointError(errors.ReportedError, ValueError):
  """A checkpoint that cannot be read (truncated, partly deleted)."""


class IncompatibleCheckpointError(errors.ReportedError, ValueError):
  """A checkpoint whose arrays do not fit the model (a changed model, not a damaged file)."""


# What an operator acts on when a checkpoint cannot be written or read.
FILE_SYSTEM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES,
                      errno.EPERM, errno.ENOENT, errno.ESTALE)


def exception_chain(error):
  """``error`` and the exceptions it was raised from or while handling, outermost first."""
  seen = []
  while error is not None and all(error is not e for e in seen):
    seen.append(error)
    error = error.__cause__ or error.__context__
  return seen


def file_system_reason(error):
  """The operating system's reason (``"No space left on device"``) anywhere in ``error``'s
  chain: an ``OSError``'s own, or one TensorStore wrote into a message; None if there is none."""
  chain = exception_chain(error)
  for e in chain:
    if isinstance(e, OSError) and e.strerror:
      return e.strerror
  for e in chain:
    for code in FILE_SYSTEM_ERRNOS:
      if os.strerror(code) in str(e):
        return os.strerror(code)
  return None


def short_error(error, limit=300):
  """``error`` in one line: the first line of its message without TensorStore's spec dump, at
  most ``limit`` characters, followed by the file system's reason when that line lacks it."""
  text = str(error).split("\n")[0].split(" [tensorstore_spec=")[0]
  line = f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"
  reason = file_system_reason(error)
  return line if reason is None or reason in line else f"{line} [{reason}]"


def committed_steps(workdir):
  """The steps whose checkpoints were committed (Orbax renames a finished one to its step)."""
  directory = epath.Path(checkpoint_dir(workdir))
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def raise_if_save_failed(mngr, workdir, wait=False):
  """:class:`CheckpointSaveError` if a finished asynchronous save failed (``wait``: first wait
  for the one in progress). Orbax keeps the error until asked, so without this a run trains on
  for a whole checkpoint interval unsaved."""
  try:
    mngr.check_for_errors()                # the write threads' errors
    if wait or not mngr.is_saving_in_progress():
      mngr.wait_until_finished()           # raises the commit's error
  except Exception as e:  # whatever the file system raised
    steps = committed_steps(workdir)
    raise CheckpointSaveError(
        f"saving a checkpoint in {checkpoint_dir(workdir)} failed ({short_error(e)}); training "
        f"stopped. Last committed step: {steps[-1] if steps else 'none'}; free space or fix the "
        "file system, then rerun the same command to resume from it.") from e


def all_hosts_agree(ok):
  """Whether ``ok`` holds on every process (a checkpoint one host cannot read is damaged)."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.process_allgather(np.asarray(ok)).all())


def set_aside(workdir, step):
  """Renames checkpoint ``step`` to ``<step>.corrupt`` (``.corrupt.1``, ... if taken): out of
  Orbax's sight (not a step number) and never deleted. Returns the new path."""
  directory = epath.Path(checkpoint_dir(workdir))
  target, n = directory / f"{step}.corrupt", 0
  while target.exists():
    n += 1
    target = directory / f"{step}.corrupt.{n}"
  if jax.process_index() == 0:
    (directory / str(step)).rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"jaxdet: set aside checkpoint {step}")
  return target


def shape_mismatches(mngr, step, target_state):
  """Paths whose saved shape differs from ``target_state``'s (None if the metadata is
  unreadable)."""
  try:
    saved = traverse_util.flatten_dict(dict(mngr.item_metadata(step)["state"]), sep="/")
  except Exception:  # pylint: disable=broad-except
    return None
  wanted = traverse_util.flatten_dict(flax.serialization.to_state_dict(target_state), sep="/")
  return sorted(p for p in set(saved) | set(wanted)
                if p not in saved or p not in wanted
                or tuple(getattr(saved[p], "shape", ())) != tuple(np.shape(wanted[p])))


def saved_config(mngr, step):
  """The config dict stored with checkpoint ``step``."""
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def restore_latest_intact(mngr, target_state, workdir, check_config=lambda saved: None):
  """``(state, examples_seen, step)`` of the newest checkpoint that restores, or None if there
  is none. ``check_config(saved config dict)`` runs first on each (it may refuse by raising).
  A checkpoint that cannot be read (truncated, partly deleted) is logged, set aside as
  ``<step>.corrupt`` and the next older one tried, so an auto-requeued job makes progress;
  one whose arrays do not fit the model is an :class:`IncompatibleCheckpointError`."""
  log = logging.getLogger("jaxdet")
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      config, error = saved_config(mngr, step), None
    except Exception as e:  # pylint: disable=broad-except
      config, error = None, e
    if all_hosts_agree(error is None):
      check_config(config)
      try:
        state, examples_seen = restore(mngr, target_state, step)
      except Exception as e:  # pylint: disable=broad-except
        error = e
      if all_hosts_agree(error is None):
        return state, examples_seen, step
      mismatched = shape_mismatches(mngr, step, target_state)
      if mismatched:
        raise IncompatibleCheckpointError(
            f"checkpoint step {step} in {checkpoint_dir(workdir)} holds arrays of other shapes "
            f"than this model's ({listed(mismatched)}): a changed model needs a new workdir "
            "(--config.train.init_from=<this workdir> starts it from these weights)") from error
    aside = set_aside(workdir, step)
    log.warning("checkpoint step %d in %s is damaged (%s); moved aside to %s, trying the "
                "previous one", step, checkpoint_dir(workdir),
                short_error(error) if error else "unreadable on another host", aside)
    mngr.reload()
  return None


def read_only(workdir, step=None):
  """``(manager, step)`` for reading checkpoint ``step`` (default: latest) of a workdir."""
  # create/save_interval_steps as read_only forces them (Orbax otherwise warns that it does).
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  mngr = ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler(), "config": ocp.JsonCheckpointHandler()})
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}; train first")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"no checkpoint step {step} in {checkpoint_dir(workdir)}; its steps: "
                            f"{sorted(steps)}")
  return mngr, max(steps) if step is None else step


def saved_run(workdir, step=None):
  """``(config, class_names, step)`` stored with checkpoint ``step`` (default: latest)."""
  mngr, step = read_only(workdir, step)
  restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore(),
                                                        data=ocp.args.JsonRestore()))
  return (ml_collections.ConfigDict(restored["config"]), tuple(restored["data"]["class_names"]),
          step)


def restore_arrays(workdir, step=None, parts=None):
  """``(state as a dict of numpy arrays, step)`` of checkpoint ``step`` (default: latest),
  without building the model: for inspecting and comparing runs. ``parts``: the top-level
  entries of the state to read (e.g. ``("params",)``); the others are not read from disk."""
  mngr, step = read_only(workdir, step)
  saved = dict(mngr.metadata(step).item_metadata["state"])
  wanted = {k: v for k, v in saved.items() if parts is None or k in parts}
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=wanted, restore_args=as_numpy, partial_restore=parts is not None)))
  return restored["state"], step


def transfer_matching(target, source):
  """``(target with every array of ``source`` whose path and shape agree, the paths copied, the
  paths whose shapes differ)``; both nested dicts of arrays, paths ``"a/b/c"``."""
  flat_target = traverse_util.flatten_dict(target, sep="/")
  flat_source = traverse_util.flatten_dict(source, sep="/")
  shared = [p for p in flat_target if p in flat_source]
  copied = [p for p in shared if flat_source[p].shape == flat_target[p].shape]
  mismatched = [p for p in shared if flat_source[p].shape != flat_target[p].shape]
  updated = dict(flat_target)
  for path in copied:
    updated[path] = jax.device_put(flat_source[path].astype(flat_target[path].dtype),
                                   flat_target[path].sharding)
  return traverse_util.unflatten_dict(updated, sep="/"), copied, mismatched


def listed(names, limit=10):
  """The first ``limit`` of ``names``, comma-separated, and how many more there are."""
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def initialize_from(state, workdir, step=None, required=None):
  """``(state, report)``: a fresh ``state`` whose parameters and model state (batch norm
  statistics) start from those of ``workdir``'s checkpoint ``step`` (default: latest) wherever
  the names and shapes agree, e.g. a detector from its backbone's classification pretraining
  (``jaxdet.detectors.classifier``), or from a detector of other classes (its class layers then
  keep their initialisation). The EMA weights, when kept, start from the same values; the step,
  optimizer state and data position stay fresh (the saved optimizer state is not even read).
  Nothing in common is an error, and so is a parameter marked True in ``required`` (a tree of
  bools over the parameters, e.g. the frozen ones) that the checkpoint does not provide."""
  saved, saved_step = restore_arrays(workdir, step, parts=("params", "ema_params",
                                                           "model_state"))
  source = {"params": saved.get("ema_params") or saved["params"], **saved["model_state"]}
  target = {"params": state.params, **state.model_state}
  variables, copied, mismatched = transfer_matching(target, source)
  if not copied:
    raise ValueError(f"no array of {workdir} (step {saved_step}) has the name and shape of one "
                     "of this model's: is config.train.init_from a run of the same backbone?")
  if required is not None:
    needed = {"params/" + path for path, must in
              traverse_util.flatten_dict(dict(required), sep="/").items() if must}
    missing = sorted(needed - set(copied))
    if missing:
      raise ValueError(f"{workdir} (step {saved_step}) lacks frozen parameters this model keeps "
                       f"as they start (missing, or shaped otherwise): {listed(missing)}")
  params = variables.pop("params")
  state = state.replace(params=params, model_state=variables,
                        ema_params=params if state.ema_params else state.ema_params)
  paths, copied = traverse_util.flatten_dict(target, sep="/"), set(copied)
  fresh = sorted({"/".join(p.split("/")[1:3]) for p in paths if p not in copied})
  report = (f"initialised {len(copied)} of {len(paths)} arrays from {workdir} (step "
            f"{saved_step}); layers left at their initialisation: {listed(fresh) or 'none'}")
  if mismatched:
    report += f"; not copied, shapes differ: {', '.join(mismatched)}"
  return state, report
