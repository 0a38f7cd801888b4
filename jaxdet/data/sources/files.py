"""Sources of image files: the user's files for prediction, and folders of class folders
(torchvision's ImageFolder layout) for classification."""
import os

from jaxdet.data.sources.base import classification_annotations
from jaxdet.data.sources.base import DatasetNotFoundError
from jaxdet.data.sources.base import image_size_of
from jaxdet.data.sources.base import no_boxes
from jaxdet.data.sources.base import read_file
from jaxdet.data.sources.base import Source


class FileListSource(Source):
  """The user's image files, without annotations (scripts/predict.py); image id = position."""

  def __init__(self, paths, class_names):
    self.name, self.paths, self.class_names = "files", list(paths), tuple(class_names)

  def __len__(self):
    return len(self.paths)

  def encoded_image(self, index):
    return read_file(self.paths[index])

  def read(self, index):
    # One read: the decoded image gives the size, no header pass needed.
    return self.encoded_image(index), no_boxes(index, 0, 0)

  def describe(self, index):
    return self.paths[index]

  def annotations(self, index):
    height, width = image_size_of(self.encoded_image(index), self.paths[index])
    return no_boxes(index, height, width)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class ImageFolderSource(Source):
  """A folder of class folders, ``<directory>/<class name>/<image files>`` (torchvision's
  ImageFolder layout): classes sorted by name, images sorted by path."""

  def __init__(self, directory):
    self.name = f"folder:{directory}"
    if not os.path.isdir(directory):
      raise DatasetNotFoundError(f"classification folder {directory!r} does not exist")
    self.class_names = tuple(sorted(d for d in os.listdir(directory)
                                    if os.path.isdir(os.path.join(directory, d))))
    self._items = [(os.path.join(directory, name, f), label)
                   for label, name in enumerate(self.class_names)
                   for f in sorted(os.listdir(os.path.join(directory, name)))
                   if f.lower().endswith(IMAGE_SUFFIXES)]
    if not self._items:
      raise DatasetNotFoundError(f"{directory!r} holds no images in class folders "
                                 "(<directory>/<class name>/<image files>)")

  def __len__(self):
    return len(self._items)

  def encoded_image(self, index):
    return read_file(self._items[index][0])

  def read(self, index):
    path, label = self._items[index]
    return read_file(path), classification_annotations(label, index, 0, 0)

  def describe(self, index):
    return self._items[index][0]

  def annotations(self, index):
    path, label = self._items[index]
    return classification_annotations(label, index, *image_size_of(read_file(path), path))
