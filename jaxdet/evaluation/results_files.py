"""Where a run keeps its evaluation results: ``<workdir>/eval_step<N>.json``, one file per
evaluation (local paths or any etils ``epath``, e.g. ``gs://``)."""
import json
import re

from etils import epath

PATTERN = re.compile(r"eval_step(\d+)\.json$")


def path(workdir, step):
  return epath.Path(workdir) / f"eval_step{step}.json"


def write(workdir, step, results):
  path(workdir, step).write_text(json.dumps(results, indent=1))


def read(workdir, step):
  """The results of the evaluation at ``step``, or None if there was none."""
  found = path(workdir, step)
  return json.loads(found.read_text()) if found.exists() else None


def latest(workdir):
  """``(step, results)`` of the newest evaluation in ``workdir``, or None."""
  steps = [int(m.group(1)) for p in epath.Path(workdir).glob("eval_step*.json")
           if (m := PATTERN.search(p.name))]
  if not steps:
    return None
  return max(steps), read(workdir, max(steps))
