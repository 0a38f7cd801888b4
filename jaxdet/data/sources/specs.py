"""Sources named by a spec: comma-separated ``<name>:<location>`` parts, read as one."""
from jaxdet.data.sources.coco_json import CocoJsonSource
from jaxdet.data.sources.combined import ConcatSource
from jaxdet.data.sources.files import ImageFolderSource
from jaxdet.data.sources.tfds import TfdsClassificationSource
from jaxdet.data.sources.tfds import TfdsSource


def parse_spec(spec, example):
  """``[(name, location)]`` of ``spec``'s comma-separated ``<name>:<location>`` parts (the name
  ends at the first colon, so a location may hold more)."""
  parts = []
  for part in spec.split(","):
    name, _, location = part.strip().partition(":")
    if not name or not location:
      raise ValueError(f"dataset spec {spec!r}: each part must be '<name>:<split>' (classification "
                       f"images also 'folder:<directory>'), e.g. {example!r}")
    parts.append((name, location))
  return parts


def one_or_concat(parts):
  return parts[0] if len(parts) == 1 else ConcatSource(parts)


def build_source(spec, data_dir=None, coco_json_dir=None):
  """A detection source: parts ``"<name>:<split>[+<split>...]"`` where ``<name>`` is a TFDS
  name (``coco/2017``, ``voc/2007``, ``digit_scenes``) or ``coco_json`` (a split of the folder
  ``coco_json_dir``). E.g. ``"voc/2007:train+validation,voc/2012:train+validation"``."""
  parts = []
  for name, location in parse_spec(spec, "coco/2017:train"):
    for split in location.split("+"):
      if name != "coco_json":
        parts.append(TfdsSource(name, split, data_dir))
      elif not coco_json_dir:
        raise ValueError(f"{spec!r} needs a folder: pass --coco_json_dir "
                         "(config.data.coco_json_dir)")
      else:
        parts.append(CocoJsonSource(coco_json_dir, split))
  return one_or_concat(parts)


def build_classification_source(spec, data_dir=None):
  """A classification source, the same grammar: parts ``"<tfds name>:<split>[+<split>...]"``
  (``imagenet2012:train``, ``digit_crops:train``) or ``"folder:<directory>"``
  (:class:`ImageFolderSource`)."""
  parts = []
  for name, location in parse_spec(spec, "imagenet2012:train"):
    if name == "folder":
      parts.append(ImageFolderSource(location))
    else:
      parts.extend(TfdsClassificationSource(name, split, data_dir)
                   for split in location.split("+"))
  return one_or_concat(parts)
