"""Errors of worker processes, noted where the launcher can read them.

A remote runner's failure message is often generic (a portable job
service's last message is 'Error running pipeline.'), while the reason a
user can act on (a model that does not load, a style that changed, a lease
taken over) is raised in a worker's DoFn.setup(). The workers note that
reason in a small file below the run's temporary folder
({output}/.stylize/tmp/<run id>/errors/), through Beam FileSystems, so it
works on every runner; the launcher reads the notes when the job fails
(beam_jobs/runners.py) and removes them.
"""

import contextlib
import logging
import os
import uuid
from typing import Iterator, List, Optional

from apache_beam.io.filesystems import FileSystems

from transforms import paths
from transforms.records import describe_error

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def noted(folder: Optional[str]) -> Iterator[None]:
  """Re-raises any exception of the block, after noting it in folder
  ('ErrorName: message', one file per error); None notes nothing."""
  try:
    yield
  except Exception as e:
    if folder:
      try:
        uri = paths.join(folder, f'{os.getpid()}-{uuid.uuid4().hex[:8]}.txt')
        with FileSystems.create(uri, compression_type='uncompressed') as f:
          f.write(describe_error(e).encode('utf-8', 'replace'))
      except Exception as note_error:  # pylint: disable=broad-except
        logger.warning('Could not note a worker error in %s: %s', folder,
                       note_error)
    raise


def read_and_remove(folder: str) -> List[str]:
  """The notes in folder ('ErrorName: message'), which are then removed."""
  try:
    found = FileSystems.match([paths.join(folder, '*.txt')])[0].metadata_list
  except Exception:  # pylint: disable=broad-except
    return []
  notes, names = [], []
  for meta in sorted(found, key=lambda m: m.path):
    try:
      with FileSystems.open(meta.path, compression_type='uncompressed') as f:
        notes.append(f.read().decode('utf-8', 'replace'))
      names.append(meta.path)
    except Exception:  # pylint: disable=broad-except
      continue
  with contextlib.suppress(Exception):
    FileSystems.delete(names)
  return notes
