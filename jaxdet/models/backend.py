"""How the layers compute: XLA's own operations, or the forms measured faster on XLA:CPU.

A model's ``backend`` is passed down explicitly, like its ``dtype``, from ``config.model.backend``
("auto" picks by platform when the detector is built):

* ``"xla"``: ``lax.conv_general_dilated`` and flax's max pooling, as XLA compiles them for
  GPU and TPU;
* ``"cpu_fast"``: 1x1 convolutions as matrix products and Winograd's F(2x2, 3x3) for wide 3x3
  ones (``jaxdet.models.conv``), a max-pool gradient to each window's first maximum instead of
  XLA's select-and-scatter (``jaxdet.models.layers``), and XLA:CPU compiler options that give the
  remaining convolutions to Eigen (:func:`compiler_options`). Every part was measured on CPU
  only (docs/benchmark_history.md), so nothing of it runs on an accelerator unless asked for.
"""
import jax

BACKENDS = ("xla", "cpu_fast")
# XLA:CPU's default YNNPACK fusions less its convolutions: Eigen's k x k convolution gradients
# were 4-5x faster than YNNPACK's here (docs/benchmark_history.md).
CPU_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def resolve(backend="auto", platform=None):
  """``backend`` with "auto" made concrete: "cpu_fast" on CPU, "xla" on GPU and TPU."""
  if backend == "auto":
    return "cpu_fast" if (platform or jax.default_backend()) == "cpu" else "xla"
  if backend not in BACKENDS:
    raise ValueError(f"model.backend {backend!r}: use 'auto' or one of {BACKENDS}")
  return backend


def compiler_options(backend):
  """``jax.jit(..., compiler_options=...)`` for the train and predict steps of a model of
  ``backend``: Eigen's convolutions for "cpu_fast" (YNNPACK keeps the matrix products and the
  reductions), none for "xla"."""
  if backend != "cpu_fast":
    return None
  return {"xla_cpu_experimental_ynn_fusion_type": CPU_YNN_FUSIONS}
