"""Remote and packed models copied once into a local per-worker cache, digests.

TF and LiteRT load from local files; a gs:// SavedModel folder, a `.tar.gz`
SavedModel or gs:// TF Lite files are copied (through Beam FileSystems) into
{STYLIZE_CACHE_DIR}/remote/<key>/ once per machine, where the key covers the
handle and the remote files' sizes and times, so a replaced model is fetched
again. Copies are made in a temporary folder and renamed into place, so
concurrent worker processes never load half a model.
"""

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from typing import List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms import paths
from transforms.identity import local_tree_digest
from transforms.models.base import ModelLoadError
from transforms.models.builtin import cache_dir
from transforms.storage import (durable_write, exists_literally, iter_files,
                                stat)

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _is_remote(path: str) -> bool:
  return paths.has_scheme(path) and not path.startswith(('http://', 'https://',
                                                         'file://'))


def needs_localizing(handle: str) -> bool:
  """gs:// (any FileSystems scheme but http) or a packed .tar.gz model."""
  parts = handle.split(',')
  return any(_is_remote(p) or p.endswith(('.tar.gz', '.tgz')) for p in parts)


def _remote_files(uri: str) -> List[Tuple[str, int, float]]:
  """(path, size, mtime) of a remote file, or of every file below a folder."""
  if exists_literally(uri) == 'file':
    entry = stat(uri)
    return [(entry.path, entry.size, entry.mtime)]
  entries = list(iter_files(uri))
  if not entries:
    raise ModelLoadError(f'model {uri!r} does not exist (no file or folder '
                         'there).')
  return sorted((e.path, e.size, e.mtime) for e in entries)


def _relative(path: str, folder: str) -> str:
  """path below folder, refusing names that would leave the cache folder."""
  rel = path[len(paths.join(folder)) + 1:]
  if any(level in ('', '.', '..') for level in rel.split('/')):
    raise ModelLoadError(f'unsafe file name {path!r} in model {folder!r}')
  return rel


def _copy(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  with FileSystems.open(src, compression_type='uncompressed') as fin, open(
      dst, 'wb') as fout:
    shutil.copyfileobj(fin, fout, _CHUNK)


def _safe_extract(archive: str, dest: str) -> None:
  with tarfile.open(archive, 'r:*') as tar:
    try:
      tar.extractall(dest, filter='data')  # Refuses absolute paths and '..'.
    except TypeError:  # pragma: no cover - Python without extraction filters
      for member in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, member.name))
        if not target.startswith(os.path.realpath(dest) + os.sep):
          raise ModelLoadError(f'unsafe path {member.name!r} in {archive}')
      tar.extractall(dest)


def _savedmodel_root(folder: str) -> str:
  """The folder holding saved_model.pb (archives often add one level)."""
  for root, _, files in os.walk(folder):
    if 'saved_model.pb' in files:
      return root
  return folder


# Beside each cached copy: the SHA-256 of its files when it was made, so a
# copy changed since (by a crash, a disk error, or another user) is noticed
# before it is used. Left out of every digest (identity.local_tree_digest).
DIGEST_NOTE = '.stylize-sha256'


def _noted_digest_holds(folder: str, note: str) -> bool:
  """Whether folder still has the digest written in note; a folder without
  a note (made by an earlier version) is noted now and passes. The digest
  is computed before the note is written, and the note written whole
  (durable_write), so a process reading it never sees it half-made."""
  digest = local_tree_digest([folder])
  try:
    with open(note, encoding='ascii') as f:
      noted = f.read().strip()
  except FileNotFoundError:
    noted = ''
  if not noted:
    durable_write(note, (digest + '\n').encode('ascii'))
    return True
  return noted == digest


def cached_copy_intact(folder: str) -> bool:
  """A cached copy still has the digest noted when it was made."""
  return _noted_digest_holds(folder, os.path.join(folder, DIGEST_NOTE))


def verify_hub_cache(folder: str, handle: str) -> None:
  """A TF Hub download in tensorflow_hub's cache still has the digest it
  had when this job first used it (noted beside the folder).

  Raises:
    ModelLoadError: it changed; saying how to download it again.
  """
  note = folder.rstrip('/') + DIGEST_NOTE
  if not _noted_digest_holds(folder, note):
    raise ModelLoadError(
        f'the cached download of {handle!r} in {folder} changed since it '
        f'was first used; delete {folder} and {note} to download it again.')


def _localize_one(uri: str) -> str:
  """One model part -> local path (file or folder)."""
  if _is_remote(uri):
    files = _remote_files(uri)
  else:
    files = [(uri, os.path.getsize(uri), os.path.getmtime(uri))]
  key = hashlib.sha1(repr((uri, files)).encode()).hexdigest()[:20]
  target = os.path.join(cache_dir(), 'remote', key)
  if os.path.exists(target) and not cached_copy_intact(target):
    logger.warning('The cached copy of %s in %s changed since it was made; '
                   'fetching it again.', uri, target)
    stale = tempfile.mkdtemp(prefix='.stale-', dir=os.path.dirname(target))
    os.rename(target, os.path.join(stale, 'copy'))
    shutil.rmtree(stale, ignore_errors=True)
  if not os.path.exists(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.fetch-', dir=os.path.dirname(target))
    try:
      single = len(files) == 1 and files[0][0] == uri
      for path, _, _ in files:
        rel = os.path.basename(path) if single else _relative(path, uri)
        if _is_remote(uri):
          _copy(path, os.path.join(tmp, rel))
        else:
          shutil.copy(path, os.path.join(tmp, rel))
      if uri.endswith(('.tar.gz', '.tgz')):
        archive = os.path.join(tmp, os.path.basename(uri))
        _safe_extract(archive, os.path.join(tmp, 'model'))
        os.remove(archive)
      _noted_digest_holds(tmp, os.path.join(tmp, DIGEST_NOTE))
      try:
        os.rename(tmp, target)
      except OSError:
        if not os.path.exists(target):
          raise
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    logger.info('Cached model %s in %s', uri, target)
  if uri.endswith(('.tar.gz', '.tgz')):
    return _savedmodel_root(os.path.join(target, 'model'))
  if len(files) == 1 and files[0][0] == uri:
    return os.path.join(target, os.path.basename(uri))
  return target


def localize(handle: str) -> str:
  """A handle loadable from local files (unchanged if it already is)."""
  if not needs_localizing(handle):
    return handle
  try:
    return ','.join(_localize_one(p.strip()) for p in handle.split(','))
  except ModelLoadError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ModelLoadError(f'could not fetch model {handle!r}: '
                         f'{type(e).__name__}: {e}') from e


def model_digest(local_handle: str) -> str:
  """SHA-256 of a model file; of a folder or file pair, of its listing
  (identity.local_tree_digest: the sorted lines
  '<relative path> <file sha256>\\n', the same whether the folder was
  copied from a bucket or not)."""
  return local_tree_digest([p.strip() for p in local_handle.split(',')])


def verify_digest(local_handle: str, expected: Optional[str],
                  handle: str) -> None:
  """Raises ModelLoadError when the model's digest is not the expected one."""
  if expected:
    check_digest(handle, model_digest(local_handle), expected)


def check_digest(handle: str, actual: str, expected: str,
                 flag: str = '--model_sha256') -> None:
  """The one digest comparison (and its message) of models and routers.

  Raises:
    ModelLoadError: actual is not expected.
  """
  if actual.lower() != expected.strip().lower():
    what = 'router' if flag == '--route_model_sha256' else 'model'
    raise ModelLoadError(
        f'{what} {handle!r} has SHA-256 {actual}, not the expected '
        f'{expected} ({flag}): the {what} changed or is not the one you '
        'meant. Refusing to use it.')
