r"""One process of a multi-host job that computes, on a global batch whose halves live on
different hosts, what must be reduced over the whole mesh: the focal loss normaliser (number of
positive anchors), the loss, and the batch-norm statistics of a training forward pass.

  python tests/multihost/reductions_worker.py --output=out.npz --coordinator_address=... \
      --num_processes=2 --process_id=I

Process 0 writes ``out.npz``; tests/multihost/test_multihost.py compares it with one device.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdet import detectors  # noqa: E402
from jaxdet import distributed  # noqa: E402
from jaxdet.train import sharding  # noqa: E402
from tests.multihost import reductions  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "Where process 0 writes the results.",
                              required=True)
_DISTRIBUTED = distributed.define_flags()


def main(argv):
  del argv
  distributed.initialize_from_flags(_DISTRIBUTED)
  with distributed.exit_on_error():
    batch, config = reductions.global_batch_and_config()
    detector = detectors.build(config.model)
    mesh = sharding.make_mesh()
    variables = jax.jit(lambda: detector.init(jax.random.PRNGKey(0), config.data.image_size),
                        out_shardings=sharding.replicated(mesh))()
    mine = sharding.host_rows(reductions.BATCH)
    step = jax.jit(lambda v, b: reductions.forward_and_loss(detector, v, b),
                   in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                   out_shardings=sharding.replicated(mesh))
    loss, num_positive, stats = jax.device_get(step(variables, sharding.global_batch(
        {k: v[mine] for k, v in batch.items()}, mesh)))
    if jax.process_index() == 0:
      np.savez(_OUTPUT.value, loss=loss, num_positive=num_positive, devices=jax.device_count(),
               **{f"stats/{k}": v for k, v in reductions.flat_statistics(stats).items()})


if __name__ == "__main__":
  app.run(main)
