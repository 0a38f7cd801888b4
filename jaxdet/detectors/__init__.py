"""Detector families. ``build(config.model)`` returns the :class:`base.Detector` of the family
``config.model.family`` names.

A family registers its builder under its name (``@detectors.register("ssd")`` on a function
of the model config). ``build`` finds the families shipped here by their module name
(``jaxdet.detectors.<family>``, imported on first use); a family defined elsewhere registers
itself when its module is imported, with nothing to edit here.
"""
import importlib
import pkgutil

_BUILDERS = {}
HELPERS = ("base", "yolo_slots")      # modules of this package that are not families


def register(family):
  """Decorator: ``build(model_config) -> Detector`` is the builder of ``family``."""
  def decorator(builder):
    if _BUILDERS.get(family, builder) is not builder:
      raise ValueError(f"detector family {family!r} is registered already")
    _BUILDERS[family] = builder
    return builder
  return decorator


def available():
  """The families registered or shipped with jaxdet."""
  shipped = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in HELPERS}
  return tuple(sorted(shipped | set(_BUILDERS)))


def build(model_config):
  family = model_config.family
  if family not in _BUILDERS and family in available():
    importlib.import_module(f"{__name__}.{family}")       # registers itself
  if family not in _BUILDERS:
    raise ValueError(f"unknown detector family {family!r}; available: {available()}")
  return _BUILDERS[family](model_config)
