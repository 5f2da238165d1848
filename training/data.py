"""The labelled image folder: listing, a deterministic split, model inputs."""

import collections
import dataclasses
import hashlib
import logging
from typing import Dict, List, Tuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms import paths
from transforms.decode import DEFAULT_MAX_PIXELS, decode_image
from transforms.models.router import fit_image
from transforms.storage import iter_files

logger = logging.getLogger(__name__)

TRAIN = 'train'
VALIDATION = 'validation'


@dataclasses.dataclass(frozen=True)
class LabelledImage:
  """One training image: where it is, its class index, its split ('' until
  the split is made, among the images that could be read)."""
  uri: str
  label: int
  split: str = ''


@dataclasses.dataclass
class Listing:
  """What --data holds: image URIs per class folder, and what was ignored."""
  classes: Dict[str, List[str]]
  ignored: List[str]


def list_labelled(data: str) -> Listing:
  """{data}/<class>/**/<image> -> URIs per class (local or gs://).

  Class names are the first-level folder names. Files directly in data,
  non-image files and hidden folders ('.name') are ignored. Listed in the
  launcher: a labelled set is thousands of files, not an archive.
  """
  classes = collections.defaultdict(list)
  ignored = []
  root = paths.join(data)
  for entry in iter_files(root, follow_links=True):
    rel = relative_name(root, entry.path)
    parts = rel.split('/')
    if (len(parts) < 2 or any(p.startswith('.') for p in parts) or
        not paths.is_image_name(rel)):
      ignored.append(entry.path)
      continue
    classes[parts[0]].append(entry.path)
  return Listing({k: sorted(v) for k, v in sorted(classes.items())},
                 sorted(ignored))


def labelled_images(classes: Dict[str, List[str]]
                    ) -> Tuple[List[str], List[LabelledImage]]:
  """(labels, images): class names sorted; each image with its index."""
  labels = sorted(classes)
  return labels, [LabelledImage(uri, index) for index, name in
                  enumerate(labels) for uri in classes[name]]


def relative_name(data: str, uri: str) -> str:
  """An image's name within the labelled folder: '<class>/.../<file>'."""
  root = paths.join(data)
  if not uri.startswith(root + '/'):
    raise ValueError(f'{uri!r} is not in the labelled folder {root!r}')
  return uri[len(root) + 1:]


def split_key(name: str, seed: int) -> str:
  return hashlib.sha1(f'{seed}\0{name}'.encode('utf-8')).hexdigest()


def split(data: str, classes: Dict[str, List[str]], fraction: float,
          seed: int) -> Tuple[List[str], List[LabelledImage]]:
  """(labels, images): per class, a fraction (at least one image) goes to
  validation and at least one stays for training.

  The split is stratified and deterministic: images are ordered by a hash of
  the seed and their name within the data folder (relative_name), so adding
  images moves few others between splits, and the same set copied elsewhere
  (another folder, a bucket) splits the same way: same data and --seed, same
  router. (Keyed by the whole URI, a copy split differently, and on a
  30-image set a different split trained a router that classified 7 of 9
  new images where the others did 9.)
  """
  labels = sorted(classes)
  images = []
  for index, name in enumerate(labels):
    uris = sorted(classes[name],
                  key=lambda u: split_key(relative_name(data, u), seed))
    n_val = min(len(uris) - 1, max(1, round(len(uris) * fraction)))
    for i, uri in enumerate(uris):
      images.append(LabelledImage(uri, index, VALIDATION if i < n_val
                                  else TRAIN))
  return labels, images


def read_bytes(uri: str) -> bytes:
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    return f.read()


def load_for_model(uri: str, size: int,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
  """An image file -> uint8 [size, size, 3], as the router will see it.

  Decoded like the job's inputs (EXIF orientation, any mode to RGB), at up
  to 4x the model's size (JPEG draft mode makes big photos cheap), then
  fitted exactly as transforms.models.router.fit_image does in the job.

  Raises:
    OSError, transforms.decode.DecodeError: unreadable or not an image.
  """
  pixels, _, _ = decode_image(read_bytes(uri), max_size=4 * size,
                              max_pixels=max_pixels)
  return fit_image(pixels, size)
