"""Resolves a --model value to the adapter that loads it."""

import logging
import os
from typing import Optional

from transforms import paths
from transforms.models.base import ModelLoadError, Stylizer
from transforms.models import builtin, cache, embedded, tfhub

logger = logging.getLogger(__name__)

DEFAULT_MODEL = ('https://tfhub.dev/google/magenta/'
                 'arbitrary-image-stylization-v1-256/2')


def describe_model(handle: str) -> str:
  """What a handle names: 'builtin', 'tflite', 'savedmodel' or 'hub'."""
  if handle == builtin.BUILTIN_NAME:
    return 'builtin'
  if embedded.is_embedded(handle):
    return 'tflite'
  if paths.has_scheme(handle) and not handle.startswith(
      ('http://', 'https://', 'file://')):
    # gs:// and other FileSystems schemes: what the files are is known once
    # they are in the local cache.
    return describe_model(cache.localize(handle))
  if handle.endswith('.tflite') or ('.tflite,' in handle) or (
      os.path.isdir(handle) and any(f.endswith('.tflite')
                                    for f in os.listdir(handle))):
    return 'tflite'
  if '://' in handle and not handle.startswith('file://'):
    return 'hub'
  return 'savedmodel'


def load_stylizer(handle: str, threads: int = 0,
                  expected_sha256: Optional[str] = None,
                  expected_fingerprint: Optional[str] = None) -> Stylizer:
  """Loads the model named by handle (copied to the local cache if remote).

  A tfhub.dev handle is fetched from $TFHUB_MIRROR when that is set (the
  job passes handles already rewritten for --tfhub_mirror).
  expected_fingerprint: the content fingerprint the launch took
  (transforms/identity.py); a model whose files changed since is refused.

  Raises:
    ModelLoadError: with a message that says what to fix.
  """
  verify_fingerprint(handle, expected_fingerprint)
  original = handle
  handle = cache.localize(tfhub.mirrored(embedded.resolve(handle)))
  if describe_model(handle) == 'hub':
    # Downloaded (once) into tensorflow_hub's cache; the folder is checked
    # against the digest noted when it was first used, and --model_sha256.
    folder = tfhub.resolve(handle)
    cache.verify_hub_cache(folder, original)
    cache.verify_digest(folder, expected_sha256, original)
    from transforms.models.hub_model import HubStylizer
    stylizer = HubStylizer(original, path=folder, kind='hub')
  else:
    cache.verify_digest(handle, expected_sha256, original)
    stylizer = _load_local(handle, threads)
  stylizer.handle = original
  return stylizer


def verify_fingerprint(handle: str, expected: Optional[str]) -> None:
  """The model's files still have the fingerprint the launch took (models
  in files: local, gs:// or embedded; a TF Hub handle and builtin are their
  names).

  Raises:
    ModelLoadError: they changed since the launch.
  """
  if not expected or not expected.startswith(('sha256:', 'gcs-md5:')):
    return
  from transforms.identity import files_fingerprint
  try:
    actual = files_fingerprint(embedded.resolve(handle))
  except OSError as e:
    raise ModelLoadError(f'model {handle!r} cannot be read: {e}') from e
  if actual != expected:
    raise ModelLoadError(
        f'model {handle!r} changed since the job was launched (its files '
        f'now have fingerprint {actual}, the launch saw {expected}): the '
        'outputs would not be what the run records. Rerun the job.')


def _load_local(handle: str, threads: int) -> Stylizer:
  from transforms.models.hub_model import HubStylizer
  kind = describe_model(handle)
  if kind == 'tflite':
    from transforms.models.lite import LiteStylizer
    return LiteStylizer(handle, threads=threads)
  if kind == 'builtin':
    return HubStylizer(handle, path=builtin.ensure_builtin(), kind='builtin')
  if kind == 'savedmodel':
    path = handle[len('file://'):] if handle.startswith('file://') else handle
    if not os.path.exists(path):
      raise ModelLoadError(
          f'model path {path!r} does not exist. Give a SavedModel folder, '
          'TF Lite files, a TF Hub handle (https://...), "magenta-lite" or '
          '"builtin".')
    if os.path.isdir(path) and not os.path.exists(
        os.path.join(path, 'saved_model.pb')):
      raise ModelLoadError(
          f'{path!r} is a directory without saved_model.pb, so it is not a '
          'TF SavedModel.')
    return HubStylizer(handle, path=path, kind='savedmodel')
  return HubStylizer(handle)
