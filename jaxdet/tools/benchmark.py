r"""Speed and memory of a detector on in-memory random data (no TensorFlow, no dataset).

Measures, after compilation, the median wall time of: the sharded train step (forward, loss,
backward, optimizer), inference (forward + decode + NMS), target matching + loss alone, and
batched NMS alone. Run from the checkout:

  python scripts/benchmark.py                    # RetinaNet R50-FPN, 512x512, batch 2 (the
                                                 # COCO recipe: fine-tuning, stem + C2 frozen)
  python scripts/benchmark.py --config=experiments/ssd.py:ssd300_voc --image_size=300 \
      --batch_size=4                             # SSD300
  python scripts/benchmark.py --image_size=1024 --batch_size=16 --config.model.dtype=bfloat16
  PYTHONPATH=. python scripts/benchmark.py --json=bench.json      # on a GPU machine
  python scripts/benchmark.py --parts=train --coordinator_address=host0:1234 \
      --num_processes=2 --process_id=0        # one of several hosts (README: multi-host runs)

With --json the results, with their command, commit, machine and date, go to a file under
benchmarks/results/; scripts/benchmark_report.py turns those into BENCHMARKS.md.
"""
import json
import os
import re
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from jaxdet import detectors
from jaxdet import distributed
from jaxdet import provenance
from jaxdet import runtime
from jaxdet import tools
from jaxdet.data import wordtrees
from jaxdet.ops import nms
from jaxdet.ops import wordtree
from jaxdet.train import sharding
from jaxdet.train import state as state_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(runtime.REPO_ROOT, "experiments", "retinanet.py") + ":r50_fpn_coco_1x",
    "Experiment config, as path.py:variant.", lock_config=True)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 512, "Square input size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed repetitions of each part (median reported).")
_PARTS = flags.DEFINE_list(
    "parts", ["train", "inference", "loss", "nms"], "What to time, of train, inference, loss, "
    "nms, allreduce (one gradient-sized all-reduce over the devices), cost (parameters, "
    "FLOPs per image, all-reduces per step; nothing timed) and wordtree (YOLO9000's "
    "hierarchical softmax and its loss + gradient at [batch, 13, 13, 3, --wordtree_nodes] on a "
    "tree shaped like darknet's 9k.tree; alone, no model is built).")
_WORDTREE_NODES = flags.DEFINE_integer("wordtree_nodes", 9418, "Nodes of the wordtree part's "
                                       "tree (9,418: YOLO9000's WordTree).")
_NMS_CANDIDATES = flags.DEFINE_integer("nms_candidates", 5000, "Candidates per image for NMS.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_COMPARE_XLA_CONV = flags.DEFINE_bool(
    "compare_xla_conv", False, "Also time train and inference with the xla backend (XLA's own "
    "convolutions and pooling; jaxdet.models.backend) in this invocation and print the ratios.")
_DISTRIBUTED = distributed.define_flags()


def random_targets(rng, batch_size, image_size, max_boxes, num_classes):
  """Ground truth like COCO's: 1-20 boxes of 16-300 pixels per image."""
  counts = rng.integers(1, min(20, max_boxes) + 1, batch_size)
  mask = np.arange(max_boxes)[None] < counts[:, None]
  xy = rng.uniform(0, image_size * 0.8, (batch_size, max_boxes, 2))
  wh = rng.uniform(16, min(300, image_size / 2), (batch_size, max_boxes, 2))
  boxes = np.clip(np.concatenate([xy, xy + wh], -1), 0, image_size)
  return {"boxes": np.where(mask[..., None], boxes, 0).astype(np.float32),
          "labels": np.where(mask, rng.integers(0, num_classes, mask.shape), 0).astype(np.int32),
          "mask": mask}


def time_calls(fn, steps):
  """(compile + first call seconds, median seconds, min seconds) of ``fn()``."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times), min(times)


def clustered_candidates(rng, batch_size, num, image_size, num_classes):
  """NMS input like a detector's: jittered copies of a few dozen objects."""
  centres = rng.uniform(0, image_size, (batch_size, 40, 2))
  sizes = rng.uniform(20, 200, (batch_size, 40, 2))
  pick = rng.integers(0, 40, (batch_size, num))
  def take(a):
    return np.take_along_axis(a, pick[..., None], axis=1)

  c = take(centres) + rng.normal(0, 8, (batch_size, num, 2))
  s = take(sizes) * rng.uniform(0.8, 1.2, (batch_size, num, 2))
  boxes = np.concatenate([c - s / 2, c + s / 2], -1).astype(np.float32)
  return (boxes, rng.uniform(size=(batch_size, num)).astype(np.float32),
          rng.integers(0, num_classes, (batch_size, num)).astype(np.int32),
          np.ones((batch_size, num), bool))


def peak_memory():
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"device_peak_gib": stats["peak_bytes_in_use"] / 2**30}
  return {"host_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv):
  del argv
  distributed.initialize_from_flags(_DISTRIBUTED)
  with distributed.exit_on_error():
    benchmark()


def step_costs(detector, tx, schedule, state, batch, mesh):
  """Parameters, FLOPs per image of the train step and of the forward pass (XLA's cost
  analysis of the global program) and the all-reduces in the step compiled for ``mesh``."""
  train = jax.jit(state_lib.make_train_step(detector, tx, schedule)).lower(state, batch)
  compiled = state_lib.jit_train_step(detector, tx, schedule, 0.0, mesh).lower(
      state, batch).compile().as_text()
  images = batch["image"].shape[0]
  return {"parameters": sum(x.size for x in jax.tree.leaves(state.params)),
          "train_gflop_per_image": float(f"{train.cost_analysis()['flops'] / images / 1e9:.5g}"),
          "forward_gflop_per_image": float(
              f"{detector.forward_gflop_per_image(batch['image'].shape[1:3]):.5g}"),
          "all_reduces_in_step": len(re.findall(r" all-reduce(?:-start)?\(", compiled))}


def time_gradient_all_reduce(params, mesh, steps):
  """Seconds of one all-reduce of a float32 array the size of ``params`` over the mesh."""
  size = sum(x.size for x in jax.tree.leaves(params))
  rows = np.ones((jax.local_device_count(), size), np.float32)
  summed = jax.jit(lambda x: x.sum(0), out_shardings=sharding.replicated(mesh))
  array = sharding.global_batch(rows, mesh)
  return time_calls(lambda: summed(array), steps)


def time_wordtree(batch_size, num_nodes, steps, record):
  """YOLO9000's hierarchical softmax (``Pr(node)`` of every node, Sec. 4) and its loss with the
  gradient, over 13x13 cells x 3 priors (YOLO9000 at 416) of ``batch_size`` images; a flat
  softmax over as many classes is the baseline."""
  tree = wordtrees.synthetic_tree(num_nodes)
  rng = np.random.default_rng(0)
  logits = jax.device_put(rng.normal(size=(batch_size, 13, 13, 3, num_nodes)).astype(np.float32))
  labels = jax.device_put(rng.integers(0, num_nodes, size=(batch_size, 13, 13, 3)))
  softmax = jax.jit(lambda x: wordtree.path_log_probs(wordtree.conditional_log_probs(x, tree),
                                                      tree))
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda x, y: wordtree.hierarchical_nll(x, y, tree).sum()))
  flat = jax.jit(lambda x: jax.nn.log_softmax(x, axis=-1))   # the baseline: one flat softmax
  record("flat_softmax", time_calls(lambda: flat(logits), steps))
  record("wordtree_softmax", time_calls(lambda: softmax(logits), steps))
  record("wordtree_loss_and_grad", time_calls(lambda: loss_and_grad(logits, labels), steps))


def benchmark():
  config = _CONFIG.value.copy_and_resolve_references()
  size, batch_size = _IMAGE_SIZE.value, _BATCH_SIZE.value
  if "wordtree" in _PARTS.value:
    return benchmark_wordtree(batch_size)
  config.data.image_size = (size, size)
  config.train.batch_size = batch_size
  mesh = sharding.make_mesh()
  detector = detectors.build(config.model)
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(batch_size, size, size, 3)).astype(np.float32),
           **random_targets(rng, batch_size, size, config.data.max_boxes,
                            config.model.num_classes)}
  mine = sharding.host_rows(batch_size)
  batch = sharding.global_batch({k: v[mine] for k, v in batch.items()}, mesh)
  state, tx, schedule = state_lib.build_state(detector, config, mesh)
  backbone = config.model.get("backbone")
  results = {"family": config.model.family,
             "backbone": backbone.to_dict() if hasattr(backbone, "to_dict") else backbone,
             "image_size": size, "batch_size": batch_size, "dtype": config.model.dtype,
             "backend": detector.backend}
  record = recorder(results, batch_size)

  def time_model(suffix, detector, state):
    """Train step and inference of ``detector``; returns the trained state."""
    if "train" in _PARTS.value:
      step = state_lib.jit_train_step(detector, tx, schedule, config.train.ema_decay, mesh)

      def train_once():
        nonlocal state
        state, metrics = step(state, batch)
        return metrics["loss"]
      record("train" + suffix, time_calls(train_once, _STEPS.value))
    if "inference" in _PARTS.value:
      predict = state_lib.jit_predict_step(detector, (size, size), mesh)
      variables = state.eval_variables()
      record("inference" + suffix,
             time_calls(lambda: predict(variables, batch["image"]), _STEPS.value))
    return state

  state = time_model("", detector, state)
  if _COMPARE_XLA_CONV.value:
    xla_model = config.model.copy_and_resolve_references()
    with xla_model.unlocked():
      xla_model.backend = "xla"
    state = time_model("_xla_conv", detectors.build(xla_model), state)
    for part in ("train", "inference"):
      if part in results:
        ratio = results[f"{part}_xla_conv"]["median_s"] / results[part]["median_s"]
        results[f"{part}_speedup_vs_xla_conv"] = round(ratio, 3)
        if jax.process_index() == 0:
          print(f"{part}: {ratio:.2f}x faster than with XLA's default convolutions")
  variables = state.eval_variables()
  if "loss" in _PARTS.value:
    outputs, _ = jax.jit(detector.apply)(variables, batch["image"])
    outputs = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                           outputs)
    loss = jax.jit(detector.loss)
    record("loss", time_calls(lambda: loss(outputs, batch), _STEPS.value))
  if "nms" in _PARTS.value:
    candidates = clustered_candidates(rng, batch_size, _NMS_CANDIDATES.value, size,
                                      config.model.num_classes)
    run_nms = jax.jit(lambda b, s, c, v: nms.batched_nms(
        b, s, c, v, iou_threshold=0.5, max_output=100))
    record("nms", time_calls(lambda: run_nms(*candidates), _STEPS.value))
  if "allreduce" in _PARTS.value:
    record("allreduce", time_gradient_all_reduce(state.params, mesh, _STEPS.value))
  if "cost" in _PARTS.value:
    results["cost"] = step_costs(detector, tx, schedule, state, batch, mesh)
  report(results)


def benchmark_wordtree(batch_size):
  if _PARTS.value != ["wordtree"]:
    raise app.UsageError("--parts=wordtree builds no model: time it alone")
  results = {"part": "wordtree", "batch_size": batch_size, "nodes": _WORDTREE_NODES.value}
  time_wordtree(batch_size, _WORDTREE_NODES.value, _STEPS.value,
                recorder(results, batch_size))
  report(results)


def recorder(results, images):
  """``record(name, (first, median, min) seconds)``: one entry of ``results`` per timed part,
  the same fields for every part, also printed."""
  def record(name, timing, images=images):
    first, median, best = timing
    results[name] = {"compile_and_first_s": round(first, 3), "median_s": round(median, 4),
                     "min_s": round(best, 4), "images_per_s": round(images / median, 3)}
    if jax.process_index() == 0:
      print(f"{name:>22}: median {median * 1e3:9.2f} ms  min {best * 1e3:9.2f} ms  "
            f"{images / median:8.2f} images/s  (compile + first {first:.1f} s)", flush=True)
  return record


def report(results):
  results.update(provenance.provenance())
  results.update(peak_memory())
  if jax.process_index() != 0:
    return
  print(json.dumps(results, indent=1))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


def run():
  """The ``jaxdet-benchmark`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
