"""Random-access detection datasets: TFDS (``coco/2017``, ``voc/2007``, ``voc/2012``, the
project's ``digit_scenes``) and folders in COCO-json format.

A source is a sequence of records in one format, the only place where dataset formats meet
jaxdet's conventions:

  ``source[i]`` -> dict(image: uint8 [h, w, 3] RGB, **source.annotations(i))
  ``source.annotations(i)`` -> dict(boxes: float64 [n, 4] (x1, y1, x2, y2) original pixels,
      labels: int64 [n] contiguous in [0, num_classes), ignore: bool [n] (COCO crowd / VOC
      difficult), area: float64 [n] (COCO's segment area where known, else box area),
      image_id: int, height: int, width: int)

Random access (not a stream) makes the input pipeline a pure function of the example index,
which is what lets a resumed run see exactly the batches it would have seen. Undecodable images
raise :class:`CorruptImageError` from ``source[i]``; the pipeline counts and skips them.

Nothing here downloads: a dataset that is not prepared gives an error saying how to prepare it.

The package: ``base`` (the interface, image decoding), ``tfds``, ``coco_json``, ``files`` (the
user's files, class folders), ``combined`` (concatenated and relabelled sources) and ``specs``
(sources by name); everything is importable from here.
"""
from jaxdet.data.sources.base import classification_annotations
from jaxdet.data.sources.base import CONVERTIBLE_MODES
from jaxdet.data.sources.base import CorruptImageError
from jaxdet.data.sources.base import DatasetNotFoundError
from jaxdet.data.sources.base import decode_image
from jaxdet.data.sources.base import EXIF_ORIENTATION_TAG
from jaxdet.data.sources.base import image_size_of
from jaxdet.data.sources.base import no_boxes
from jaxdet.data.sources.base import read_file
from jaxdet.data.sources.base import SIXTEEN_BIT_MODES
from jaxdet.data.sources.base import sixteen_bit_to_8_bit
from jaxdet.data.sources.base import Source
from jaxdet.data.sources.base import to_rgb
from jaxdet.data.sources.coco_json import annotation_file_of
from jaxdet.data.sources.coco_json import check_references
from jaxdet.data.sources.coco_json import coco_json_splits
from jaxdet.data.sources.coco_json import CocoJsonSource
from jaxdet.data.sources.coco_json import find_coco_json
from jaxdet.data.sources.coco_json import find_image_root
from jaxdet.data.sources.coco_json import image_roots
from jaxdet.data.sources.coco_json import read_json
from jaxdet.data.sources.combined import ConcatSource
from jaxdet.data.sources.combined import RelabeledSource
from jaxdet.data.sources.files import FileListSource
from jaxdet.data.sources.files import IMAGE_SUFFIXES
from jaxdet.data.sources.files import ImageFolderSource
from jaxdet.data.sources.specs import build_classification_source
from jaxdet.data.sources.specs import build_source
from jaxdet.data.sources.specs import parse_spec
from jaxdet.data.sources.tfds import PREPARE_HELP
from jaxdet.data.sources.tfds import random_access_tfds
from jaxdet.data.sources.tfds import TFDS_FIELDS
from jaxdet.data.sources.tfds import TfdsClassificationSource
from jaxdet.data.sources.tfds import TfdsSource

__all__ = [
    "classification_annotations", "CONVERTIBLE_MODES", "CorruptImageError",
    "DatasetNotFoundError", "decode_image", "EXIF_ORIENTATION_TAG", "image_size_of", "no_boxes",
    "read_file", "SIXTEEN_BIT_MODES", "sixteen_bit_to_8_bit", "Source", "to_rgb",
    "annotation_file_of", "check_references", "coco_json_splits", "CocoJsonSource",
    "find_coco_json", "find_image_root", "image_roots", "read_json", "ConcatSource",
    "RelabeledSource", "FileListSource", "IMAGE_SUFFIXES", "ImageFolderSource",
    "build_classification_source", "build_source", "parse_spec", "PREPARE_HELP",
    "random_access_tfds", "TFDS_FIELDS", "TfdsClassificationSource", "TfdsSource"]
