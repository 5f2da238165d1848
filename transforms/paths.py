"""Pure path logic: input roots, relative paths, output paths, style labels."""

import dataclasses
import hashlib
import posixpath
import re
from typing import Iterable, List, Sequence

from apache_beam.io.filesystems import FileSystems

# Files below a directory input count as images by extension, whatever its
# case. HEIC/HEIF/HIF (iPhones; Fujifilm and Canon cameras) are read through
# pillow-heif, AVIF by Pillow itself (see transforms/formats.py).
IMAGE_EXTENSIONS = frozenset({
    '.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.webp', '.tif', '.tiff',
    '.bmp', '.gif', '.ppm', '.pgm', '.pbm', '.pnm', '.tga', '.jp2', '.j2k',
    '.heic', '.heif', '.hif', '.avif', '.ico', '.psd'
})

_GLOB_CHARS = re.compile(r'[*?\[]')
_SCHEME = re.compile(r'^([a-zA-Z][a-zA-Z0-9+.-]*)://')


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """One --input argument, resolved at launch without listing any files.

  Attributes:
    pattern: what FileSystems.match is given.
    root: the folder outputs are made relative to (no trailing slash).
    explicit: True for a file named explicitly (kept whatever its extension).
  """
  pattern: str
  root: str
  explicit: bool


def absolute(path: str) -> str:
  """Local paths made absolute (manifests then name files unambiguously)."""
  if has_scheme(path):
    return path
  import os
  return os.path.abspath(os.path.expanduser(path))


def has_scheme(path: str) -> bool:
  return bool(_SCHEME.match(path))


def is_glob(path: str) -> bool:
  return bool(_GLOB_CHARS.search(path))


def is_image_name(path: str) -> bool:
  return posixpath.splitext(path.lower())[1] in IMAGE_EXTENSIONS


def _norm(path: str) -> str:
  """Normalises separators and drops a trailing slash (not from 'gs://b/')."""
  path = path.replace('\\', '/') if not has_scheme(path) else path
  while path.endswith('/') and not path.endswith('://') and len(path) > 1:
    path = path[:-1]
  return path


def dirname(path: str) -> str:
  path = _norm(path)
  m = _SCHEME.match(path)
  if m:
    head, rest = path[:m.end()], path[m.end():]
    return head + posixpath.dirname(rest)
  return posixpath.dirname(path) or '.'


def is_directory(path: str) -> bool:
  """True for an existing local directory or an object-store prefix."""
  if has_scheme(path):
    # Object stores have no directories: a path that is not an object but
    # has objects below it is treated as a folder.
    if FileSystems.exists(path):
      return False
    prefix = _norm(path) + '/'
    result = FileSystems.match([prefix + '**'], limits=[1])[0]
    return bool(result.metadata_list)
  import os  # Local only; FileSystems has no isdir.
  return os.path.isdir(path)


def make_input_spec(arg: str) -> InputSpec:
  """Turns one --input argument into a match pattern and a root folder."""
  arg = absolute(arg)
  if is_glob(arg):
    prefix = _GLOB_CHARS.split(arg, maxsplit=1)[0]
    root = _norm(prefix) if prefix.endswith('/') else dirname(prefix)
    return InputSpec(pattern=arg, root=root, explicit=False)
  if is_directory(arg):
    root = _norm(arg)
    return InputSpec(pattern=root + '/**', root=root, explicit=False)
  return InputSpec(pattern=arg, root=dirname(arg), explicit=True)


def _components(path: str) -> List[str]:
  path = _norm(path)
  m = _SCHEME.match(path)
  if m:
    return [path[:m.end()]] + [c for c in path[m.end():].split('/') if c]
  if path.startswith('/'):
    return ['/'] + [c for c in path.split('/') if c]
  return [c for c in path.split('/') if c and c != '.']


def common_base(roots: Sequence[str]) -> str:
  """Longest common folder of the roots ('' when they share nothing)."""
  if not roots:
    return ''
  parts = [_components(r) for r in roots]
  common = []
  for group in zip(*parts):
    if all(g == group[0] for g in group):
      common.append(group[0])
    else:
      break
  if not common:
    return ''
  head = common[0]
  if head.endswith('://'):
    return head + '/'.join(common[1:])
  if head == '/':
    return '/' + '/'.join(common[1:])
  return '/'.join(common)


def is_within(child: str, parent: str) -> bool:
  """True when child is parent or below it (local paths compared absolute)."""
  import os
  if not has_scheme(child):
    child = os.path.abspath(child)
  if not has_scheme(parent):
    parent = os.path.abspath(parent)
  c, p = _components(child), _components(parent)
  return c[:len(p)] == p


def strip_scheme(uri: str) -> str:
  """'gs://bucket/a/b.jpg' -> 'bucket/a/b.jpg'; '/data/b.jpg' -> 'data/b.jpg'."""
  return '/'.join(c for c in _components(uri) if not c.endswith('://') and
                  c != '/')


def relative_path(uri: str, base: str) -> str:
  """Path of uri below base with '/' separators; scheme-stripped if outside."""
  uri_parts = _components(uri)
  base_parts = _components(base) if base else []
  if base_parts and uri_parts[:len(base_parts)] == base_parts and len(
      uri_parts) > len(base_parts):
    return '/'.join(uri_parts[len(base_parts):])
  return strip_scheme(uri)


def style_labels(uris: Sequence[str]) -> List[str]:
  """Unique, filesystem-safe labels for style images (their file stems).

  Two styles with the same stem get a short hash of their URI appended, so
  labels are deterministic for a given set of --style arguments.
  """
  stems = [safe_name(posixpath.splitext(posixpath.basename(_norm(u)))[0])
           for u in uris]
  labels = []
  for uri, stem in zip(uris, stems):
    if stems.count(stem) > 1:
      stem = f'{stem}-{short_hash(uri)}'
    labels.append(stem)
  return labels


def safe_name(name: str) -> str:
  """Keeps letters (any script), digits, '-', '_' and '.'; others become '_'."""
  cleaned = re.sub(r'[^\w.-]+', '_', name, flags=re.UNICODE).strip('.')
  return cleaned or 'style'


def short_hash(text: str, n: int = 8) -> str:
  return hashlib.sha1(text.encode('utf-8')).hexdigest()[:n]


def join(base: str, *parts: str) -> str:
  """Joins with '/', for local paths and URIs alike."""
  out = _norm(base)
  for p in parts:
    p = p.strip('/')
    if p:
      out = f'{out}/{p}' if not out.endswith('/') else out + p
  return out


def output_uri(output: str, style_label: str, out_stem: str, fmt: str) -> str:
  """{output}/{style label}/{input path below its root}.{fmt}."""
  return join(output, style_label, f'{out_stem}.{fmt}')


def list_entries(lines: Iterable[str]) -> Iterable[str]:
  """Image URIs from a list file: blank lines and '#' comments ignored."""
  for line in lines:
    line = line.strip()
    if line and not line.startswith('#'):
      yield line
