"""Models shipped inside the package, named by --model (e.g. magenta-lite).

Their files are package data (pyproject.toml), so every install has them:
editable or not, on a laptop or in the Dataflow worker image. The name is
what the manifest and the job key record; each process resolves it to its
own installed copy, so a remote worker never needs the launcher's files.
"""

import os
from typing import Dict, Tuple

from transforms.models.base import ModelLoadError

MAGENTA_LITE = 'magenta-lite'

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')

# name -> (folder below data/, files). magenta-lite: Magenta's int8 style
# predictor and int8 384x384 transfer network (about 3 MB together; the
# float16 transfer net would add 0.4 MB for a barely visible difference).
_MODELS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    MAGENTA_LITE: ('magenta_lite', ('style_predict_quantized_256.tflite',
                                    'style_transfer_quantized_384.tflite')),
}


def names() -> Tuple[str, ...]:
  return tuple(sorted(_MODELS))


def is_embedded(handle: str) -> bool:
  return handle in _MODELS


def folder(name: str) -> str:
  """The installed folder of an embedded model (files, LICENSE, README.md)."""
  return os.path.join(_DATA, _MODELS[name][0])


def resolve(handle: str) -> str:
  """An embedded model's name -> its installed files as a --model value
  ('predict.tflite,transfer.tflite'); any other handle unchanged.

  Raises:
    ModelLoadError: the files are missing (a broken or partial install).
  """
  if handle not in _MODELS:
    return handle
  files = [os.path.join(folder(handle), f) for f in _MODELS[handle][1]]
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise ModelLoadError(
        f'the embedded model {handle!r} is missing from this installation '
        f'({", ".join(missing)}); reinstall stylize (pip install .).')
  return ','.join(files)
