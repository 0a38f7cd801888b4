"""Resuming a run: the config it resumes with must be the one it was saved with.

A changed loss weight, anchor size, batch size or schedule would otherwise continue the run as
another experiment under the same name (and the checkpoint rotation would then delete the
original's steps). Keys that do not change what is trained (logging, evaluation and checkpoint
cadence, data locations) may change freely; any other needs naming in
``config.train.allow_config_change``.
"""
import json
import logging

from ml_collections import ConfigDict

from jaxdet import config as config_lib
from jaxdet import errors
from jaxdet.train import optim

log = logging.getLogger("jaxdet")

# Keys (or prefixes ending in ".") that never change the trained weights (``model.backend``:
# the same computation in another form, to float rounding).
FREE_TO_CHANGE = ("train.log_every", "train.eval_every", "train.checkpoint_every",
                  "train.keep_checkpoints", "train.hang_timeout_s", "train.init_from",
                  "train.allow_config_change", "data.data_dir", "data.coco_json_dir",
                  "data.eval", "eval.", "model.backend")
ABSENT = "<absent>"


# Configs saved before ``data.augment`` held its augmentation's options kept them as flat
# ``data.*`` keys; read as today's layout so such runs resume without a spurious difference.
LEGACY_AUGMENT_OPTIONS = {"ssd": ("expand_max_ratio",),
                          "yolo": ("jitter", "saturation", "exposure", "hue")}


def upgrade(saved):
  """The saved config dict in today's layout (a copy; unchanged if already current)."""
  data = saved.get("data", {})
  if not isinstance(data.get("augment", {}), str):
    return saved
  data = dict(data)
  name = data.pop("augment")
  legacy = {key: data.pop(key) for options in LEGACY_AUGMENT_OPTIONS.values()
            for key in options if key in data}
  data["augment"] = dict(name=name, **{key: legacy[key]
                                       for key in LEGACY_AUGMENT_OPTIONS.get(name, ())})
  return dict(saved, data=data)


# Keys added since runs were first saved, with the value that reproduces what those runs did: a
# saved config without the key resumes when the current one has this value.
ADDED_KEYS = {"model.fpn_top_down": True, "model.fpn_lateral": True,
              "model.fpn_single_level": False, "model.location": "logistic",
              "model.batch_norm": True, "model.passthrough": True,
              "model.loss.objectness_positive_iou": 0.0, "model.base.atrous": True,
              "model.reorg": "space_to_depth",
              "data.pixel_mean": list(config_lib.PIXEL_MEAN),
              "data.pixel_std": list(config_lib.PIXEL_STD), "train.epochs": 0.0,
              "data.eval_letterbox": False}


def added_at_its_old_behaviour(change):
  key, old, new = change
  return old == ABSENT and key in ADDED_KEYS and new == ADDED_KEYS[key]


class ConfigChangedError(errors.ReportedError, ValueError):
  """Resuming with a config that differs from the saved one in keys not allowed to change."""


def flatten(tree, prefix=""):
  """``{"a.b.c": leaf}`` of nested dicts."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def as_saved(config):
  """``config`` as its checkpoint stores it (JSON: tuples become lists)."""
  return json.loads(json.dumps(config.to_dict()))


def differences(saved, current):
  """``[(key, saved value, current value)]`` of the flattened configs, sorted by key; a key only
  one of them has shows :data:`ABSENT` on the other side."""
  old, new = flatten(saved), flatten(current)
  return [(key, old.get(key, ABSENT), new.get(key, ABSENT)) for key in sorted(set(old) | set(new))
          if old.get(key, ABSENT) != new.get(key, ABSENT)]


def free_to_change(key):
  return any(key == f or (f.endswith(".") and key.startswith(f)) for f in FREE_TO_CHANGE)


def allowed_keys(config):
  return {k.strip() for k in config.train.allow_config_change.split(",") if k.strip()}


def check_config(saved, config, workdir):
  """Refuses (:class:`ConfigChangedError`) to resume ``workdir`` with ``config`` if it differs
  from the ``saved`` config dict in a key neither free to change nor allowed; logs the accepted
  changes. Returns the changed keys."""
  changes = [c for c in differences(upgrade(saved), as_saved(config))
             if not added_at_its_old_behaviour(c)]
  allowed = allowed_keys(config)
  refused = [c for c in changes if not free_to_change(c[0]) and c[0] not in allowed]
  if refused:
    listed = "\n".join(f"  {key}: {old!r} (saved) -> {new!r} (now)" for key, old, new in refused)
    keys = ",".join(key for key, _, _ in refused)
    raise ConfigChangedError(
        f"{workdir} holds a run with another config; resuming it with this one would continue "
        f"it as a different experiment. Differing keys:\n{listed}\nEither train in a new "
        "--workdir (--config.train.init_from=<this workdir> starts from its weights), or, if "
        "continuing this run with the change is intended, allow it explicitly: "
        f"--config.train.allow_config_change={keys}")
  for key, old, new in changes:
    log.info("resuming with %s changed: %r -> %r", key, old, new)
  return [key for key, _, _ in changes]


def log_schedule_change(saved, config, step):
  """Logs the learning rate at ``step`` under the saved and the new schedule when the schedule
  or ``total_steps`` changed (a cosine schedule, say, is recomputed over the new length)."""
  old = optim.learning_rate_schedule(ConfigDict(saved["train"]["schedule"]),
                                     saved["train"]["total_steps"])
  new = optim.learning_rate_schedule(config.train.schedule, config.train.total_steps)
  before, after = float(old(step)), float(new(step))
  if before != after:
    log.warning("the learning-rate schedule changed with the config: at step %d it was %.4g "
                "and is now %.4g", step, before, after)
