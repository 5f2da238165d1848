"""File-system helpers on top of Beam FileSystems (local and gs://).

Every file the job writes goes through write_file(), which checks the path
against the output layout first (transforms/layout.py).
"""

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import uuid
from typing import Iterator, List, Optional

from apache_beam.io.filesystems import FileSystems

from transforms import gcs, paths
from transforms.identity import local_version
from transforms.layout import LayoutError, OutputLayout, real_parent_inside

logger = logging.getLogger(__name__)




class ListingError(RuntimeError):
  """A folder or bucket that could not be listed; the run must not go on."""


def is_object_store(uri: str) -> bool:
  """gs://, s3:// and friends, where an upload appears whole or not at all."""
  return paths.has_scheme(uri) and not uri.startswith('file://')


# ------------------------------------------------------------------ write --

# What durable_write names a file while writing it beside its final name
# ('.<name>.tmp-<12 hex>'); a killed process may leave one.
TEMPORARY_NAME = re.compile(r'^\..+\.tmp-[0-9a-f]{12}$')


def _fsync_folder(folder: str) -> None:
  """Makes a rename in folder durable (POSIX: the folder's entry)."""
  fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def durable_write(uri: str, data: bytes,
                  mime_type: str = 'application/octet-stream',
                  tmp_dir: Optional[str] = None) -> None:
  """The job's one way to write a file whole and durably.

  Object stores: the object exists, complete, once its upload returns
  (FileSystems.create closes the upload). Local files: written to a
  temporary name (in tmp_dir, which must be on the same file system, else
  beside the file as '.<name>.tmp-<random>'), fsync'ed, renamed into place,
  and the folder fsync'ed, so after a crash or power loss the file is either
  its old self or complete, never empty or half-written.
  """
  if is_object_store(uri):
    with FileSystems.create(uri, mime_type=mime_type,
                            compression_type='uncompressed') as f:
      f.write(data)
    return
  folder, name = os.path.split(uri)
  if not tmp_dir:
    os.makedirs(folder or '.', exist_ok=True)
  tmp = (os.path.join(tmp_dir, uuid.uuid4().hex) if tmp_dir else
         os.path.join(folder or '.', f'.{name}.tmp-{uuid.uuid4().hex[:12]}'))
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, uri)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  _fsync_folder(folder or '.')


class Writer:
  """Writes files inside the output folder, whole and durably.

  Every path is checked against the layout first (LayoutError if it is not
  inside --output), then written with durable_write(); local files go
  through this run's temporary folder ({output}/.stylize/tmp/<run id>/), so
  a run killed mid-write leaves only files in that folder, which the next
  run removes. Nothing outside the job's own folder is ever deleted. One
  Writer per DoFn instance: it remembers which folders it has made and
  checked, so a write costs no extra checks; it is safe to share between
  threads (a race only repeats a check).
  """

  def __init__(self, layout: OutputLayout):
    self._layout = layout
    self._checked_dirs = set()
    self._tmp_dir = None

  def write(self, uri: str, data: bytes,
            mime_type: str = 'application/octet-stream') -> None:
    layout = self._layout
    layout.check(uri)
    if is_object_store(uri):
      durable_write(uri, data, mime_type)
      return
    try:
      self._write_local(uri, data)
    except FileNotFoundError:
      # A folder removed since it was made or checked: once more, afresh.
      self._checked_dirs.clear()
      self._tmp_dir = None
      self._write_local(uri, data)

  def _write_local(self, uri: str, data: bytes) -> None:
    folder = os.path.dirname(uri)
    if folder not in self._checked_dirs:
      if not real_parent_inside(uri, self._layout.output):
        raise LayoutError(f'{uri!r} would be written outside --output '
                          'through a symbolic link')
      os.makedirs(folder, exist_ok=True)
      self._checked_dirs.add(folder)
    if self._tmp_dir is None:
      tmp_dir = self._layout.tmp_dir()
      if not real_parent_inside(os.path.join(tmp_dir, 'x'),
                                self._layout.output):
        raise LayoutError(f'{tmp_dir!r} would be outside --output through '
                          'a symbolic link')
      os.makedirs(tmp_dir, exist_ok=True)
      self._tmp_dir = tmp_dir
    durable_write(uri, data, tmp_dir=self._tmp_dir)

  def delete(self, uris: List[str], missing_ok: bool = False) -> None:
    """Deletes files of the job's own (checked against the layout); local
    deletions are made durable (the folder fsync'ed)."""
    for uri in uris:
      self._layout.check(uri)
    delete_files(uris, missing_ok)


def delete_files(uris: List[str], missing_ok: bool = False) -> None:
  """Deletes files (missing_ok: a file already gone is fine); local
  deletions are made durable, so a removed marker stays removed after a
  power loss."""
  folders = set()
  for uri in uris:
    if uri.startswith('gs://'):
      gcs.delete(uri)  # A missing object is fine there.
    elif is_object_store(uri):
      if missing_ok and not FileSystems.exists(uri):
        continue
      FileSystems.delete([uri])
    else:
      try:
        os.remove(uri)
      except FileNotFoundError:
        if not missing_ok:
          raise
        continue
      folders.add(os.path.dirname(uri))
  for folder in folders:
    _fsync_folder(folder)


def write_file(layout: OutputLayout, uri: str, data: bytes,
               mime_type: str = 'application/octet-stream') -> None:
  """One write through a fresh Writer (for the job's few one-off files)."""
  Writer(layout).write(uri, data, mime_type)


def remove_stale_temporary(layout: OutputLayout) -> List[str]:
  """Deletes temporary files that earlier, interrupted runs left behind.

  Only below {output}/.stylize/tmp/<other run id>/, where only this job
  writes; never this run's own folder, so it may run at any time.
  """
  root = layout.tmp_root()
  own = paths.basename(layout.tmp_dir())
  removed = set()
  if is_object_store(root):
    stale = []
    for entry in iter_files(root):
      run = entry.path[len(root) + 1:].split('/', 1)[0]
      if run != own:
        stale.append(entry.path)
        removed.add(run)
    if stale:
      FileSystems.delete(stale)
  elif os.path.isdir(root):
    if not real_parent_inside(os.path.join(root, 'x'), layout.output):
      logger.warning('%s is outside --output through a symbolic link: '
                     'nothing removed there', root)
      return []
    for name in os.listdir(root):
      path = os.path.join(root, name)
      if name != own and not os.path.islink(path):
        # A link here is not the job's: left alone (the job writes only
        # real folders here; rmtree unlinks links below, never follows).
        shutil.rmtree(path, ignore_errors=True)
        removed.add(name)
  if removed:
    logger.info('Removed temporary files of %d interrupted run(s)',
                len(removed))
  return sorted(removed)


def remove_own_temporary_at_exit(layout: OutputLayout) -> None:
  """An interrupted run: its temporary folder (half-written files, manifest
  shards, error notes) is removed when the process ends, after the worker
  threads that may still be writing there have finished (their outputs are
  whole: written there, then renamed)."""
  import atexit  # pylint: disable=import-outside-toplevel
  atexit.register(remove_tree, layout.tmp_dir())


def remove_tree(folder: str) -> None:
  """Deletes a folder of the job's own and everything below it."""
  if is_object_store(folder):
    with contextlib.suppress(Exception):
      delete_below(folder)
    return
  shutil.rmtree(folder, ignore_errors=True)


def remove_own_temporary(layout: OutputLayout) -> None:
  """Removes this run's (empty) temporary folder at the end of the run."""
  tmp = layout.tmp_dir()
  if not is_object_store(tmp):
    with contextlib.suppress(OSError):
      os.rmdir(tmp)


def delete_below(folder: str) -> int:
  """Deletes every file below folder (a tool's own folder); the count."""
  stale = [e.path for e in iter_files(folder)]
  if stale:
    FileSystems.delete(stale)
  return len(stale)


# -------------------------------------------------------------------- list --

@dataclasses.dataclass(frozen=True)
class Entry:
  """A listed file. size -1 and an error when it could not be looked at.

  version: its content version (transforms/identity.py): local, the
  modification time in ns; GCS, the CRC32C (else generation); crc32c: the
  object's CRC32C where the store keeps one ('' locally).
  """
  path: str
  size: int = -1
  mtime: float = 0.0
  error: str = ''
  version: str = ''
  crc32c: str = ''


def _raise(error: OSError):
  if isinstance(error, FileNotFoundError) and getattr(error, 'filename', None):
    return  # A folder that vanished while it was listed: nothing below it.
  raise error


def iter_files(folder: str, follow_links: bool = False) -> Iterator[Entry]:
  """Every file below folder, streamed (never held in one list).

  A folder that does not exist gives nothing. Local folders: with
  follow_links, symbolic links to folders are followed, each real folder
  once (a link loop is walked once, not forever); a file that cannot be
  looked at (a broken link) is an Entry with an error. A listing that fails
  raises ListingError: callers must never read a failed listing as "no
  files".
  """
  if is_object_store(folder):
    yield from _iter_objects(paths.join(folder) + '/', folder)
    return
  if not os.path.isdir(folder):
    return
  seen = set()
  try:
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise,
                                                followlinks=follow_links):
      if follow_links:
        st = os.stat(dirpath)
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for d in sorted(dirnames):
          try:
            st = os.stat(os.path.join(dirpath, d))
          except OSError:
            continue  # A broken link to a folder: nothing below it.
          if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            keep.append(d)
        dirnames[:] = keep
      else:
        dirnames.sort()
      for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        try:
          st = os.stat(path)
        except OSError as e:
          yield Entry(path, error=f'{type(e).__name__}: {e.strerror}')
          continue
        yield _local_entry(path, st)
  except OSError as e:
    raise ListingError(f'could not list {folder!r}: {type(e).__name__}: '
                       f'{e.strerror or e} ({e.filename})') from e


def iter_top_files(prefix: str) -> Iterator[Entry]:
  """Files directly in prefix's folder whose names start with its last part
  ('/out/manifest' -> /out/manifest*), without walking subfolders."""
  if is_object_store(prefix):
    for entry in _iter_objects(prefix, prefix):
      if '/' not in entry.path[len(paths.dirname(prefix)) + 1:]:
        yield entry
    return
  folder, start = os.path.split(prefix)
  try:
    with os.scandir(folder) as it:
      for e in it:
        if e.name.startswith(start) and e.is_file():
          yield _local_entry(e.path, e.stat())
  except FileNotFoundError:
    return


def _local_entry(path: str, st: os.stat_result) -> Entry:
  return Entry(path, st.st_size, st.st_mtime, version=local_version(st))


def _object_entry(info: 'gcs.ObjectInfo') -> Entry:
  return Entry(info.uri, info.size, info.mtime, version=info.version,
               crc32c=info.crc32c)


def _iter_objects(prefix: str, what: str) -> Iterator[Entry]:
  """Objects whose names start with prefix, streamed page by page. gs://
  through its client library (with checksums: transforms/gcs.py); other
  stores through FileSystems.match."""
  try:
    if prefix.startswith('gs://'):
      for info in gcs.list_objects(prefix):
        yield _object_entry(info)
      return
    for result in FileSystems.match([prefix + '**']):
      for meta in result.metadata_list:
        yield Entry(meta.path, meta.size_in_bytes,
                    float(meta.last_updated_in_seconds or 0.0),
                    version=f'mtime:{meta.last_updated_in_seconds}')
  except Exception as e:  # pylint: disable=broad-except
    raise ListingError(f'could not list {what!r}: {type(e).__name__}: '
                       f'{e}') from e


def stat(uri: str) -> Entry:
  """One file's size, modification time and content version, taken
  literally (no globbing)."""
  try:
    if uri.startswith('gs://'):
      info = gcs.stat(uri)
      if info is None:
        raise FileNotFoundError(f'no object {uri}')
      return _object_entry(info)
    if is_object_store(uri):
      meta = FileSystems.get_filesystem(uri).metadata(uri)
      return Entry(uri, meta.size_in_bytes,
                   float(meta.last_updated_in_seconds or 0.0),
                   version=f'mtime:{meta.last_updated_in_seconds}')
    return _local_entry(uri, os.stat(uri))
  except Exception as e:  # pylint: disable=broad-except
    return Entry(uri, error=f'{type(e).__name__}: {getattr(e, "strerror", None) or e}')


def exists_literally(uri: str) -> Optional[str]:
  """'file', 'folder' or None: what uri names, its characters taken as they
  are (a file called 'IMG [1].jpg' is that file, not a glob)."""
  if is_object_store(uri):
    if not stat(uri).error:
      return 'file'
    for _ in _iter_objects(paths.join(uri) + '/', uri):
      return 'folder'
    return None
  if os.path.isfile(uri):
    return 'file'
  if os.path.isdir(uri):
    return 'folder'
  return None
