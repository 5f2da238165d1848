"""Small file-system helpers on top of Beam FileSystems (local and gs://)."""

import logging
import os
import uuid
from typing import Iterable, List

from apache_beam.io.filesystems import FileSystems

from transforms import paths

logger = logging.getLogger(__name__)


EMULATOR_ENV = 'STORAGE_EMULATOR_HOST'


def use_anonymous_gcs_for_emulator() -> None:
  """With a GCS emulator (STORAGE_EMULATOR_HOST), skip the credential hunt.

  Beam looks for Google default credentials with retries and backoff (about
  25 s) before it connects anonymously, and its --no_auth flag does not
  reach its GCS client. An emulator needs no credentials, so when one is
  configured, Beam's process-wide credential cache is set to "anonymous" up
  front. This reaches into apache_beam.internal (no public switch exists);
  it is a no-op without the emulator variable. Called by the launcher and by
  the setup() of every DoFn that does I/O, since workers are other processes.
  """
  if not os.environ.get(EMULATOR_ENV):
    return
  try:
    from apache_beam.internal.gcp import auth
  except ImportError:  # pragma: no cover - Beam without the gcp extra
    return
  creds = getattr(auth, '_Credentials', None)
  if creds is not None and not getattr(creds, '_credentials_init', True):
    with creds._credentials_lock:  # pylint: disable=protected-access
      creds._credentials = None  # pylint: disable=protected-access
      creds._credentials_init = True  # pylint: disable=protected-access


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
    use_anonymous_gcs_for_emulator()
    with FileSystems.create(uri, mime_type=mime_type,
                            compression_type='uncompressed') as f:
      f.write(data)
    return
  tmp = f'{uri}{TMP_MARK}{uuid.uuid4().hex[:12]}'
  with FileSystems.create(tmp, mime_type=mime_type,
                          compression_type='uncompressed') as f:
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
  use_anonymous_gcs_for_emulator()
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
  use_anonymous_gcs_for_emulator()
  try:
    return list(FileSystems.match([pattern])[0].metadata_list)
  except Exception as e:  # pylint: disable=broad-except
    logger.debug('Nothing listed for %s: %s', pattern, e)
    return []
