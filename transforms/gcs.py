"""Google Cloud Storage through its client library: listings with checksums,
conditional writes.

Beam's FileSystems reads and writes objects, but its listings carry only a
size and a time, and it has no conditional writes. The job needs both: an
object's CRC32C and generation are its content identity (free in a listing,
no read), and the lease on an output folder (transforms/lease.py) is an
object created only if absent (ifGenerationMatch=0) and replaced only if
unchanged. This module uses google-cloud-storage, the library Beam's own GCS
support is built on, with a client made the way Beam makes its own
(apache_beam.io.gcp.gcsio.create_storage_client); with a GCS emulator
(STORAGE_EMULATOR_HOST) the client is anonymous.
"""

import dataclasses
import functools
import os
import threading
from typing import Iterator, Optional, Tuple

from transforms import paths

EMULATOR_ENV = 'STORAGE_EMULATOR_HOST'
# Only the fields the job uses: a listing page is much smaller.
_LIST_FIELDS = ('items(name,size,updated,generation,crc32c,md5Hash),'
                'nextPageToken')
_lock = threading.Lock()


class PreconditionFailed(RuntimeError):
  """A conditional write or delete found the object changed (or present)."""


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
  """One object: its URI, size, update time, generation and checksums."""
  uri: str
  size: int
  mtime: float
  generation: int
  crc32c: str = ''
  md5: str = ''

  @property
  def version(self) -> str:
    """The content identity: CRC32C (same bytes, same value, whoever
    uploaded them), else the generation (changes on every write)."""
    return f'crc32c:{self.crc32c}' if self.crc32c else (
        f'generation:{self.generation}')


def split(uri: str) -> Tuple[str, str]:
  """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
  if not uri.startswith('gs://'):
    raise ValueError(f'not a gs:// URI: {uri!r}')
  bucket, _, name = uri[len('gs://'):].partition('/')
  return bucket, name


@functools.lru_cache(maxsize=None)
def _client_for(emulator: Optional[str]):
  from google.cloud import storage  # pylint: disable=import-outside-toplevel
  if emulator:
    return storage.Client.create_anonymous_client()
  from apache_beam.io.gcp.gcsio import create_storage_client
  from apache_beam.options.pipeline_options import PipelineOptions
  return create_storage_client(PipelineOptions())


def client():
  """One storage client per process (and per emulator address)."""
  with _lock:
    return _client_for(os.environ.get(EMULATOR_ENV) or None)


def _info(bucket: str, blob) -> ObjectInfo:
  updated = blob.updated.timestamp() if blob.updated else 0.0
  return ObjectInfo(uri=f'gs://{bucket}/{blob.name}', size=int(blob.size or 0),
                    mtime=updated, generation=int(blob.generation or 0),
                    crc32c=blob.crc32c or '', md5=blob.md5_hash or '')


def list_objects(prefix_uri: str) -> Iterator[ObjectInfo]:
  """Every object whose name starts with the prefix, streamed page by page
  (never gathered in one list)."""
  bucket, prefix = split(prefix_uri)
  for blob in client().list_blobs(bucket, prefix=prefix, fields=_LIST_FIELDS):
    yield _info(bucket, blob)


def stat(uri: str) -> Optional[ObjectInfo]:
  """One object's metadata, or None if there is none."""
  bucket, name = split(uri)
  blob = client().bucket(bucket).get_blob(name)
  return _info(bucket, blob) if blob is not None else None


def read(uri: str) -> Tuple[bytes, int]:
  """(content, generation) of one object.

  Raises:
    FileNotFoundError: no such object.
  """
  from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
  bucket, name = split(uri)
  blob = client().bucket(bucket).get_blob(name)
  if blob is None:
    raise FileNotFoundError(uri)
  try:
    data = blob.download_as_bytes(if_generation_match=blob.generation)
  except (exceptions.NotFound, exceptions.PreconditionFailed) as e:
    raise FileNotFoundError(uri) from e
  return data, int(blob.generation)


def write(uri: str, data: bytes, if_generation_match: Optional[int] = None,
          content_type: str = 'application/json') -> int:
  """Uploads data; with if_generation_match, only if the object's current
  generation is that one (0: only if there is no object). Returns the new
  generation.

  Raises:
    PreconditionFailed: the condition did not hold.
  """
  from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
  bucket, name = split(uri)
  blob = client().bucket(bucket).blob(name)
  try:
    blob.upload_from_string(data, content_type=content_type,
                            if_generation_match=if_generation_match)
  except exceptions.PreconditionFailed as e:
    raise PreconditionFailed(f'{uri} changed (or exists)') from e
  return int(blob.generation)


def delete(uri: str, if_generation_match: Optional[int] = None) -> None:
  """Deletes one object (only if its generation is if_generation_match);
  an object that is already gone is fine.

  Raises:
    PreconditionFailed: the object changed.
  """
  from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
  bucket, name = split(uri)
  try:
    client().bucket(bucket).blob(name).delete(
        if_generation_match=if_generation_match)
  except exceptions.NotFound:
    return
  except exceptions.PreconditionFailed as e:
    raise PreconditionFailed(f'{uri} changed') from e


def folder_prefix(uri: str) -> str:
  """A folder URI as a listing prefix ('gs://b/a' -> 'gs://b/a/')."""
  return paths.join(uri) + '/'
