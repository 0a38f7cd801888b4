"""The figures of the sweep and speed/accuracy tools, as PNG files. matplotlib is an optional
extra (``pip install jaxdet[plots]``): without it the tables are still written and the figure is
skipped with a logged reason."""
import collections
import io
import logging

from etils import epath

log = logging.getLogger("jaxdet")

INSTALL_HINT = "install the plots extra (pip install -e '.[plots]') to draw it"


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend, or None (logged) when not installed."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    log.warning("matplotlib is not installed: no figure; %s", INSTALL_HINT)
    return None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def save(figure, path):
  """Writes ``figure`` as a PNG to ``path`` (local or any ``epath``, e.g. ``gs://``), closes it."""
  figure.tight_layout()
  image = io.BytesIO()
  figure.savefig(image, format="png", dpi=120)
  pyplot().close(figure)
  epath.Path(path).write_bytes(image.getvalue())
  log.info("wrote %s", path)
  return path


def sweep_figure(sweep, rows, path):
  """The sweep's metric (mean, error bars one standard deviation over seeds) against its ``x``
  key, one line per ``series`` value, or against the cell labels when it has no ``x``; the
  paper's numbers on a second axis (their scale is the paper's). Cells without a finished run
  are left out of the lines and named in the title. Returns ``path``, or None without
  matplotlib."""
  plt = pyplot()
  if plt is None:
    return None
  cells = {cell.label: cell for cell in sweep.cells}
  figure, axis = plt.subplots(figsize=(6.4, 4.2))
  lines = collections.defaultdict(list)          # series value -> [(x, row)]
  for position, row in enumerate(rows):
    overrides = cells[row["cell"]].overrides
    x = overrides[sweep.x] if sweep.x else position
    lines[overrides[sweep.series] if sweep.series else None].append((x, row))
  for series, points in lines.items():
    done = [(x, row) for x, row in points if row["mean"] is not None]
    label = f"{sweep.series.split('.')[-1]}={series}" if sweep.series else "jaxdet"
    axis.errorbar([x for x, _ in done], [row["mean"] for _, row in done],
                  yerr=[row["std"] for _, row in done], marker="o", capsize=3, label=label)
  papers = [(x, row["paper"]) for points in lines.values() for x, row in points
            if row["paper"] is not None]
  handles = axis.get_legend_handles_labels()[0]
  if papers:
    paper_axis = axis.twinx()
    handles += paper_axis.plot(*zip(*papers), "k*", linestyle="none", label="paper")
    paper_axis.set_ylabel("paper's number (its own scale)")
  if sweep.x:
    axis.set_xlabel(sweep.x)
  else:
    axis.set_xticks(range(len(rows)), [row["cell"] for row in rows], rotation=20, ha="right")
  axis.set_ylabel(f"{sweep.metric} (mean ± std over seeds)")
  missing = [row["cell"] for row in rows if row["mean"] is None]
  axis.set_title(f"{sweep.name}" + (f" (missing: {', '.join(missing)})" if missing else ""),
                 fontsize=10)
  if sweep.series or papers:
    axis.legend(handles=handles, fontsize=8, loc="best")
  return save(figure, path)


def speed_accuracy_figure(points, metric, device, path):
  """``metric`` against inference milliseconds per image, one labelled point per model (the
  speed/accuracy figure of Weng 2018, Fig. 13). Returns ``path``, or None without matplotlib."""
  plt = pyplot()
  if plt is None:
    return None
  figure, axis = plt.subplots(figsize=(6.4, 4.2))
  for point in points:
    axis.plot(point["ms_per_image"], point["metric"], "o")
    axis.annotate(point["model"], (point["ms_per_image"], point["metric"]),
                  textcoords="offset points", xytext=(5, 4), fontsize=8)
  axis.set_xlabel(f"inference time per image (ms, {device})")
  axis.set_ylabel(metric)
  axis.set_title("speed / accuracy", fontsize=10)
  axis.grid(alpha=0.3)
  return save(figure, path)
