"""jaxdet's command-line tools, each an absl program: ``jaxdet-train`` (also ``python -m
jaxdet.tools.train`` or ``python scripts/train.py`` in a checkout), ``jaxdet-evaluate``,
``jaxdet-predict``, ``jaxdet-sweep``, ``jaxdet-benchmark``, ``jaxdet-speed-accuracy`` and
``jaxdet-kmeans-anchors``. The recipes they take (``--config=experiments/<family>.py:<variant>``)
are files of the checkout."""
import contextlib
import sys

from absl import app
from absl import flags

from jaxdet import distributed
from jaxdet import runtime


def run(tool, main):
  """Runs ``main`` under absl with the module ``tool``'s docstring as the usage and its flags as
  the program's own (what ``--help`` lists), however it was started: ``jaxdet-<tool>``,
  ``python -m jaxdet.tools.<tool>`` or ``python scripts/<tool>.py``."""
  program, module = sys.modules["__main__"], sys.modules[tool]
  if program is not module:
    program.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(tool):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)


@contextlib.contextmanager
def on_every_host(argv, distributed_flags):
  """The start of a tool that runs on every host of a job: no stray arguments, jax.distributed
  started from the flags, logging set up; inside, an error on one host ends every host."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.initialize_from_flags(distributed_flags)
  with distributed.exit_on_error():
    runtime.setup_logging()
    yield
