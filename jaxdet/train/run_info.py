"""``<workdir>/run_info.json``: every start of a run (command, commit, versions, devices, time
and resolved config), and whether a run finished. Light to import (no TensorFlow), for the tools
that only look at runs (``jaxdet-sweep``)."""
import json
import time

from etils import epath

from jaxdet import provenance
from jaxdet.evaluation import results_files
from jaxdet.train import checkpoint
from jaxdet.train import resume

RUN_INFO = "run_info.json"


def record_start(config, workdir):
  """Appends this start (command, commit, versions, devices, time and the resolved config) to
  ``<workdir>/run_info.json``, so a result can always be traced to what produced it, across
  resumptions on other machines."""
  path = epath.Path(workdir) / RUN_INFO
  starts = json.loads(path.read_text()) if path.exists() else []
  starts.append(dict(provenance.provenance(), config=resume.as_saved(config)))
  path.write_text(json.dumps(starts, indent=1))


def reached_last_step(workdir, wait_s=600.0, poll_s=2.0):
  """Whether the run in ``workdir`` finished: trained to its ``total_steps`` (its final
  checkpoint committed) and evaluated there. A run stopped by a signal exits cleanly too, but
  without that checkpoint: False at once. On several hosts process 0 writes the evaluation after
  the others have exited, so a finished run's evaluation is awaited up to ``wait_s``."""
  path = epath.Path(workdir) / RUN_INFO
  try:
    config = json.loads(path.read_text())[-1]["config"]
  except (OSError, ValueError, LookupError):
    return False
  total = config["train"]["total_steps"]
  if total and total not in checkpoint.committed_steps(str(workdir)):
    return False
  if not config["eval"]["metrics"]:
    return True                        # nothing to evaluate
  deadline = time.time() + wait_s
  while not evaluation_written(workdir, total):
    if time.time() > deadline:
      return False
    time.sleep(poll_s)
  return True


def evaluation_written(workdir, step):
  try:
    return results_files.read(workdir, step) is not None
  except ValueError:          # still being written
    return False
