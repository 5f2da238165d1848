"""Launch checks of a --model without loading it: existence, kind, digest.

A launcher for a remote runner must not need TensorFlow or download the
model: it checks what it can from the file system (local or gs://), and the
workers' setup() loads and tries the model, failing fast with a clear error
(transforms/stylize.py).
"""

import hashlib
import urllib.error
import urllib.request
from typing import List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms import paths, storage
from transforms.identity import listing_digest
from transforms.models import builtin, embedded
from transforms.models.base import ModelLoadError

_CHUNK = 1 << 20


def _parts(handle: str) -> List[str]:
  return [p.strip() for p in handle.split(',')]


def _files(part: str) -> List[Tuple[str, str]]:
  """(relative name, uri) of a model file, or of every file of a folder."""
  kind = storage.exists_literally(part)
  if kind == 'file':
    return [(paths.basename(part), part)]
  if kind == 'folder':
    root = paths.join(part)
    return sorted((e.path[len(root) + 1:], e.path)
                  for e in storage.iter_files(root))
  raise ModelLoadError(f'model {part!r} does not exist (no file or folder '
                       'there). Give a SavedModel folder, TF Lite files, a '
                       '.tar.gz, a TF Hub handle, "magenta-lite" or '
                       '"builtin".')


def _sha256(uri: str) -> str:
  h = hashlib.sha256()
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      h.update(chunk)
  return h.hexdigest()


def digest(handle: str) -> str:
  """The model's SHA-256, as cache.model_digest computes it for a local copy,
  streamed from wherever the files are (no local copy is made)."""
  parts = _parts(handle)
  listed = [_files(p) for p in parts]
  if len(parts) == 1 and len(listed[0]) == 1 and (
      storage.exists_literally(parts[0]) == 'file'):
    return _sha256(listed[0][0][1])
  lines = []
  for part, files in zip(parts, listed):
    single = storage.exists_literally(part) == 'file'
    for rel, uri in files:
      if not paths.basename(rel).startswith('.stylize-'):
        lines.append(f'{paths.basename(uri) if single else rel} '
                     f'{_sha256(uri)}\n')
  return listing_digest(lines)


def check_model(handle: str, sha256: Optional[str] = None,
                timeout_s: float = 10.0) -> str:
  """Checks that the model exists (and its digest); returns its kind.

  Kinds: 'builtin', 'hub' (an http(s) handle, checked for an answer),
  'tflite' or 'savedmodel' (an embedded model, e.g. magenta-lite, is its
  installed files). Nothing is downloaded but the bytes a digest needs.

  Raises:
    ModelLoadError: with what to do about it.
  """
  if handle == builtin.BUILTIN_NAME:
    if sha256:
      raise ModelLoadError('--model_sha256 does not apply to "builtin".')
    return 'builtin'
  name, handle = handle, embedded.resolve(handle)
  if handle.startswith(('http://', 'https://')):
    # With --model_sha256 the downloaded folder is checked where it is
    # downloaded: by the local launch, or by each worker.
    _check_reachable(handle, timeout_s)
    return 'hub'
  names = []
  for part in _parts(handle):
    names += [rel for rel, _ in _files(part)]
  if any(n.endswith('.tflite') for n in names):
    kind = 'tflite'
  elif (handle.endswith(('.tar.gz', '.tgz')) or
        any(n == 'saved_model.pb' or n.endswith('/saved_model.pb')
            for n in names)):
    kind = 'savedmodel'
  else:
    raise ModelLoadError(
        f'{handle!r} holds no saved_model.pb and no .tflite file, so it is '
        'not a model. Give a SavedModel folder, TF Lite files, a .tar.gz, a '
        'TF Hub handle, "magenta-lite" or "builtin".')
  if sha256:
    from transforms.models.cache import check_digest
    check_digest(name, digest(handle), sha256)
  return kind


def _check_reachable(handle: str, timeout_s: float) -> None:
  url = handle + ('&' if '?' in handle else '?') + 'tf-hub-format=compressed'
  request = urllib.request.Request(url, method='HEAD')
  try:
    with urllib.request.urlopen(request, timeout=timeout_s):
      return
  except urllib.error.HTTPError as e:
    if e.code < 400:
      return
    raise ModelLoadError(f'TF Hub handle {handle!r} answered HTTP {e.code}: '
                         'check the handle.') from None
  except (urllib.error.URLError, OSError) as e:
    raise ModelLoadError(
        f'TF Hub handle {handle!r} cannot be reached from here '
        f'({getattr(e, "reason", e)}). Mirror the model into a bucket and '
        'give that path (README "Models in buckets").') from None


def is_local_path(handle: str) -> bool:
  """A model (or any part of it) in local files, which remote workers
  cannot read. Embedded models are not: every install holds them."""
  if embedded.is_embedded(handle):
    return False
  return handle != builtin.BUILTIN_NAME and any(
      not paths.has_scheme(p) for p in _parts(handle))
