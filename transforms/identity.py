"""What a piece of work is: the content identity of every file it depends on.

One (input, style) pair's identity is a SHA-256 of
- the input's URI, size and content version (local: modification time in
  nanoseconds; GCS: the object's CRC32C, else its generation; both come
  with the listing, nothing is read),
- the style's fingerprint (SHA-256 of each style image's bytes, with the
  blend weights),
- the job key: every setting declared Identity.VALUE
  (beam_jobs/settings.py), the model's and the router's fingerprints.

Fingerprints of the model and the router are computed once per run, at
launch (fingerprint()), from the files' content: replacing a model folder, a
style image or a router in place changes the identity and redoes the work.
Done markers (transforms/markers.py) hold the identity they were written
for; a pair is skipped only when its marker holds the current one.
"""

import base64
import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import google_crc32c

from transforms import paths

#: Bumped when the recipe below changes (every pair is then redone once).
IDENTITY_VERSION = 'stylize-identity-2'


def sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def crc32c(data: bytes) -> str:
  """CRC32C as GCS reports it (base64 of the big-endian 4 bytes), so an
  output's marker can be checked against a listing at no cost."""
  return base64.b64encode(
      google_crc32c.value(data).to_bytes(4, 'big')).decode('ascii')


def local_version(st: os.stat_result) -> str:
  """A local file's content version: its modification time in ns."""
  return f'mtime_ns:{st.st_mtime_ns}'


def style_fingerprint(parts: Iterable[Tuple[str, float]]) -> str:
  """A style (one image or a blend) from its images' digests and weights.

  parts: (sha256 of the image file, weight).
  """
  text = '\n'.join(f'{digest} {weight:.6g}' for digest, weight in parts)
  return sha256_bytes(text.encode('ascii'))


def with_routes(style, routes: Dict[str, Tuple[str, ...]]):
  """A routed style (StyleRef) whose fingerprint also says which classes are
  routed to it: another class's route, or the order and spelling of the
  --route flags, leave its pairs alone; routing it from another class
  redoes them."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  classes = sorted(c for c, labels in routes.items() if style.label in labels)
  text = f'{style.fingerprint}\nroutes {",".join(classes)}'
  return dataclasses.replace(style, fingerprint=sha256_bytes(
      text.encode('utf-8')))


def job_key(values: Dict[str, Any]) -> str:
  """Everything besides input and style that decides a pair's result, as
  canonical JSON."""
  return json.dumps(values, sort_keys=True, default=str)


def pair_identity(uri: str, size_bytes: int, version: str,
                  style_fingerprint_: str, key: str) -> str:
  """SHA-256 of everything that decides one pair's result (markers)."""
  text = '\0'.join([IDENTITY_VERSION, uri, str(size_bytes), version,
                    style_fingerprint_, key])
  return sha256_bytes(text.encode('utf-8', 'surrogatepass'))


# ---------------------------------------------------------- fingerprints --

def listing_digest(lines: List[str]) -> str:
  return sha256_bytes(''.join(sorted(lines)).encode('utf-8', 'surrogatepass'))


def local_tree_digest(parts: List[str]) -> str:
  """SHA-256 of one local file; for a folder or several files, of the
  sorted lines '<relative path> <file sha256>\\n' (the digest
  --model_sha256 takes). Files named .stylize-* (the job's own notes beside
  cached copies) are left out."""
  if len(parts) == 1 and os.path.isfile(parts[0]):
    return file_sha256(parts[0])
  lines = []
  for part in parts:
    if os.path.isfile(part):
      lines.append(f'{os.path.basename(part)} {file_sha256(part)}\n')
      continue
    for root, dirs, files in os.walk(part):
      dirs.sort()
      for name in sorted(files):
        if name.startswith('.stylize-'):
          continue
        full = os.path.join(root, name)
        rel = os.path.relpath(full, part).replace(os.sep, '/')
        lines.append(f'{rel} {file_sha256(full)}\n')
  return listing_digest(lines)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(chunk), b''):
      h.update(block)
  return h.hexdigest()


def gcs_digest(parts: List[str]) -> str:
  """A fingerprint of gs:// files or folders from their listed checksums
  (MD5, else CRC32C) and sizes: nothing is downloaded. Not the SHA-256 of
  the content (GCS does not keep one); it changes whenever a file does."""
  from transforms import gcs  # pylint: disable=import-outside-toplevel
  lines = []
  for part in parts:
    info = gcs.stat(part)
    if info is not None:
      lines.append(f'{paths.basename(part)} {info.md5 or info.crc32c} '
                   f'{info.size}\n')
      continue
    prefix = gcs.folder_prefix(part)
    for obj in gcs.list_objects(prefix):
      rel = obj.uri[len(prefix):]
      if not paths.basename(rel).startswith('.stylize-'):
        lines.append(f'{rel} {obj.md5 or obj.crc32c} {obj.size}\n')
  if not lines:
    raise FileNotFoundError(', '.join(parts))
  return 'gcs-md5:' + listing_digest(lines)


def files_fingerprint(handle: str) -> str:
  """The content fingerprint of a model or router given as files: local
  (SHA-256, the digest --model_sha256 takes) or gs:// (listed checksums).

  Raises:
    FileNotFoundError: nothing is there.
  """
  parts = [p.strip() for p in handle.split(',') if p.strip()]
  if all(p.startswith('gs://') for p in parts):
    return gcs_digest(parts)
  local = [p[len('file://'):] if p.startswith('file://') else p
           for p in parts]
  missing = [p for p in local if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(', '.join(missing))
  return 'sha256:' + local_tree_digest(local)


def check_unchanged(what: str, files: str, expected: str,
                    error: type, consequence: str = '') -> None:
  """The files of `what` (e.g. "model 'gs://b/m'") still have the
  fingerprint the launch took: the one check the model and the router
  loaders make before they load.

  files: a handle for files_fingerprint(). consequence: said before "Rerun
  the job." when they changed.

  Raises:
    error(message): they cannot be read, or they changed since the launch.
  """
  try:
    actual = files_fingerprint(files)
  except OSError as e:
    raise error(f'{what} cannot be read: {e}') from e
  if actual != expected:
    raise error(
        f'{what} changed since the job was launched (its files now have '
        f'fingerprint {actual}, the launch saw {expected}){consequence}. '
        'Rerun the job.')


def model_fingerprint(handle: str, resolved: Optional[str] = None) -> str:
  """The model's content fingerprint (computed once per run, at launch).

  - builtin: its version (the job builds it);
  - an embedded model (magenta-lite): the SHA-256 of its installed files;
  - a TF Hub handle (https://...): the handle itself. Published handles are
    versioned and immutable ('.../2'); pin the content with --model_sha256,
    which is checked on the downloaded folder.
  - files, local or gs://: files_fingerprint().

  resolved: where an embedded model's files are (its handle otherwise).
  """
  from transforms.models import builtin  # pylint: disable=import-outside-toplevel
  if handle == builtin.BUILTIN_NAME:
    return f'builtin:{builtin.BUILTIN_VERSION}'
  if handle.startswith(('http://', 'https://')):
    return f'hub:{handle}'
  return files_fingerprint(resolved or handle)
