"""Small file-system helpers on top of Beam FileSystems (local and gs://)."""

import logging
import uuid
from typing import Iterable, List

from apache_beam.io.filesystems import FileSystems

from transforms import paths

logger = logging.getLogger(__name__)


def is_object_store(uri: str) -> bool:
  """gs://, s3:// and friends, where an upload appears whole or not at all."""
  return paths.has_scheme(uri) and not uri.startswith('file://')


def write_atomically(uri: str, data: bytes,
                     mime_type: str = 'application/octet-stream') -> None:
  """Writes data so that uri never holds a half-written file.

  An object store publishes an object only when its upload completes, so it
  is written in place. A local file is written under a temporary name beside
  it and renamed: a run killed mid-write leaves at most a '*.tmp-*' file,
  which the next run removes.
  """
  if is_object_store(uri):
    with FileSystems.create(uri, mime_type=mime_type) as f:
      f.write(data)
    return
  tmp = f'{uri}{TMP_MARK}{uuid.uuid4().hex[:12]}'
  with FileSystems.create(tmp, mime_type=mime_type) as f:
    f.write(data)
  try:
    FileSystems.rename([tmp], [uri])
  except Exception:
    FileSystems.delete([tmp])
    raise


TMP_MARK = '.tmp-'


def delete_files(uris: Iterable[str]) -> List[str]:
  """Deletes files one by one; returns those deleted.

  Written by hand rather than FileSystems.delete: on gs:// Beam sends JSON
  batch requests, which the fake-gcs-server emulator used in the tests does
  not answer (it needs a Content-ID per part that the Python client does not
  send). One request per file works on GCS and on the emulator alike; this
  is only used for a handful of stale files per run.
  """
  deleted = []
  for uri in uris:
    try:
      if is_object_store(uri) and uri.startswith('gs://'):
        from apache_beam.io.gcp.gcsio import GcsIO
        GcsIO(pipeline_options=FileSystems._pipeline_options).delete(uri)  # pylint: disable=protected-access
      else:
        FileSystems.delete([uri])
      deleted.append(uri)
    except Exception as e:  # pylint: disable=broad-except
      logger.warning('Could not delete %s: %s', uri, e)
  return deleted


def list_files(pattern: str) -> List:
  """FileMetadata for everything matching pattern ([] when nothing does)."""
  try:
    return list(FileSystems.match([pattern])[0].metadata_list)
  except Exception as e:  # pylint: disable=broad-except
    logger.debug('Nothing listed for %s: %s', pattern, e)
    return []
