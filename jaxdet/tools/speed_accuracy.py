r"""The speed/accuracy figure (Weng 2018, Fig. 13): accuracy against inference time per image,
one point per model, from each model's evaluation results and its benchmark JSON.

  jaxdet-speed-accuracy \
      --model=RetinaNet=runs/retinanet,bench/retinanet.json \
      --model=SSD=runs/ssd/eval_step3000.json,bench/ssd.json \
      --out=docs/figures/speed_accuracy

Each ``--model`` is ``LABEL=RESULTS,BENCHMARK``: RESULTS a workdir (its newest evaluation) or an
``eval_step<N>.json``; BENCHMARK what ``jaxdet-benchmark --parts=inference --json=...`` wrote for
that model (its median inference time over the batch). Writes ``<out>.md``, ``<out>.csv`` and
``<out>.png`` (the ``plots`` extra). Times from different machines are refused: they do not
share an axis.
"""
import csv
import json
import os

from absl import app
from absl import flags

from jaxdet import plots
from jaxdet import tools
from jaxdet.evaluation import results_files

_MODELS = flags.DEFINE_multi_string("model", [], "LABEL=RESULTS,BENCHMARK (repeat per model).")
_METRIC = flags.DEFINE_string("metric", "coco/AP", "The accuracy: a key of the results.")
_OUT = flags.DEFINE_string("out", None, "Path prefix of the .md, .csv and .png written.",
                           required=True)


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def evaluation(results):
  """The results JSON at ``results`` (a file), or the newest of the workdir ``results``."""
  if os.path.isfile(results):
    return read_json(results)
  newest = results_files.latest(results) if os.path.isdir(results) else None
  if newest is None:
    raise app.UsageError(f"{results}: neither an evaluation JSON nor a workdir holding one")
  return newest[1]


def point(spec, metric):
  """One model's row from its ``LABEL=RESULTS,BENCHMARK`` spec."""
  label, _, paths = spec.partition("=")
  results, _, benchmark = paths.partition(",")
  if not (label and results and benchmark):
    raise app.UsageError(f"--model={spec}: want LABEL=RESULTS,BENCHMARK")
  accuracy = evaluation(results)
  if metric not in accuracy:
    raise app.UsageError(f"{results} has no {metric}; it has {sorted(accuracy)}")
  bench = read_json(benchmark)
  if "inference" not in bench:
    raise app.UsageError(f"{benchmark} has no inference timing: run jaxdet-benchmark with "
                         "--parts=inference")
  return {"model": label, "metric": float(accuracy[metric]),
          "ms_per_image": 1e3 * bench["inference"]["median_s"] / bench["batch_size"],
          "image_size": bench["image_size"], "batch_size": bench["batch_size"],
          "device": f"{bench['devices']}, host {bench['cpu']}", "results": results,
          "benchmark": benchmark}


def write_table(points, metric, out):
  """``<out>.md`` and ``<out>.csv``, fastest model first; returns the Markdown."""
  lines = [f"| model | {metric} | ms / image | input | batch |", "|" + " --- |" * 5]
  lines += [f"| {p['model']} | {p['metric']:.3f} | {p['ms_per_image']:.2f} | "
            f"{p['image_size']} | {p['batch_size']} |" for p in points]
  lines += ["", f"Inference times on {points[0]['device']}."]
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  with open(out + ".csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(points[0]))
    writer.writeheader()
    writer.writerows(points)
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _MODELS.value:
    raise app.UsageError("give at least one --model=LABEL=RESULTS,BENCHMARK")
  points = sorted((point(spec, _METRIC.value) for spec in _MODELS.value),
                  key=lambda p: p["ms_per_image"])
  devices = sorted({p["device"] for p in points})
  if len(devices) > 1:
    raise app.UsageError(f"the benchmarks ran on different devices ({devices}); time every "
                         "model on one machine")
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  print(write_table(points, _METRIC.value, _OUT.value))
  plots.speed_accuracy_figure(points, _METRIC.value, devices[0], _OUT.value + ".png")


def run():
  """The ``jaxdet-speed-accuracy`` entry point."""
  tools.run(__name__, main)


if __name__ == "__main__":
  run()
