"""Pure path helpers for local paths and URIs; input specs; glob semantics.

Where outputs go is decided in transforms/layout.py, not here.
"""

import dataclasses
import hashlib
import os
import posixpath
import re
import warnings
from typing import Iterable, List, Optional, Sequence

# Files below a directory input count as images by extension, whatever its
# case. HEIC/HEIF/HIF (iPhones; Fujifilm and Canon cameras) are read through
# pillow-heif, AVIF by Pillow itself (see transforms/formats.py).
IMAGE_EXTENSIONS = frozenset({
    '.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.webp', '.tif', '.tiff',
    '.bmp', '.gif', '.ppm', '.pgm', '.pbm', '.pnm', '.tga', '.jp2', '.j2k',
    '.heic', '.heif', '.hif', '.avif', '.ico', '.psd'
})
#: macOS AppleDouble metadata files ('._' + the file's name): not images.
APPLEDOUBLE_PREFIX = '._'

_GLOB_CHARS = re.compile(r'[*?\[]')
SCHEME = re.compile(r'^([a-zA-Z][a-zA-Z0-9+.-]*)://')

FILE = 'file'
FOLDER = 'folder'
GLOB = 'glob'


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """One --input argument, resolved at launch without listing any files.

  Attributes:
    pattern: the canonical file, folder or glob (local: real path).
    root: the folder outputs are keyed from (no trailing slash): the folder
      itself, the folder before a glob's first wildcard, or a file's folder.
    kind: FILE (taken literally, whatever its extension or characters),
      FOLDER (every image below it) or GLOB.
  """
  pattern: str
  root: str
  kind: str

  @property
  def explicit(self) -> bool:
    return self.kind == FILE


def absolute(path: str) -> str:
  """Local paths made absolute (manifests then name files unambiguously)."""
  if has_scheme(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


# Beam compiles an escaped '[' ('[[]', see glob_escape) to the regex '[[]',
# which Python flags as a possible future nested set; it matches '[' today
# and Beam offers no other way to quote it.
warnings.filterwarnings('ignore', message='Possible nested set',
                        category=FutureWarning,
                        module='apache_beam.io.filesystem')


def glob_escape(path: str) -> str:
  """path with glob characters escaped ('a[1].txt' -> 'a[[]1].txt'), for
  Beam reads that take a file pattern (ReadFromText) but must read one file
  literally (fnmatch and Beam's matchers read '[[]' as a literal '[')."""
  return re.sub(r'([*?\[])', r'[\1]', path)


def has_scheme(path: str) -> bool:
  return bool(SCHEME.match(path))


def is_glob(path: str) -> bool:
  return bool(_GLOB_CHARS.search(path))


def is_image_name(path: str) -> bool:
  """An image by its extension (any case): what follows the name's last
  dot, if something precedes that dot. Not posixpath.splitext, which skips
  all leading dots: it gives '..jpg' no extension, so a folder's '..jpg'
  was ignored while the same file named in a list file was stylized. A
  name that is a dot and an extension only ('.jpg') is a dotfile, as
  splitext has it.

  macOS's AppleDouble files ('._IMG_1.JPG', the metadata beside every file
  a Mac copies to a volume without its attributes) are not images: as
  inputs they would be one failed row per photo, enough to fail a run over
  --max_failure_ratio."""
  name = posixpath.basename(path)
  if name.startswith(APPLEDOUBLE_PREFIX):
    return False
  stem, dot, ext = name.rpartition('.')
  return bool(dot and stem) and f'.{ext.lower()}' in IMAGE_EXTENSIONS


def _norm(path: str) -> str:
  """Drops trailing slashes (not from 'gs://' or '/'). A backslash is a
  character of a POSIX file name or an object name, never a separator."""
  while path.endswith('/') and not path.endswith('://') and len(path) > 1:
    path = path[:-1]
  return path


def dirname(path: str) -> str:
  path = _norm(path)
  m = SCHEME.match(path)
  if m:
    head, rest = path[:m.end()], path[m.end():]
    return head + posixpath.dirname(rest)
  return posixpath.dirname(path) or '.'


def basename(path: str) -> str:
  return posixpath.basename(_norm(path))


def glob_root(pattern: str) -> str:
  """The deepest folder of a glob before its first wildcard level."""
  m = SCHEME.match(pattern)
  head, rest = (pattern[:m.end()], pattern[m.end():]) if m else ('', pattern)
  levels = rest.split('/')
  literal = []
  for level in levels[:-1]:
    if is_glob(level):
      break
    literal.append(level)
  return _norm(head + '/'.join(literal)) or '/'


def glob_regex(pattern: str) -> 're.Pattern':
  """A compiled regex with Python's glob(recursive=True) meaning of pattern.

  `**` as a whole level matches zero or more folders (so 'dir/**/*.jpg'
  matches 'dir/a.jpg'); `*` and `?` never cross a '/'; `[...]` is a class.
  Hidden files are matched too (as gsutil does). Written here because Beam's
  FileSystems.match translates `**` to '.*' (so 'dir/**/*.jpg' misses
  'dir/a.jpg'), and Python's own glob.translate arrives in 3.13.
  """
  m = SCHEME.match(pattern)
  head, rest = (pattern[:m.end()], pattern[m.end():]) if m else ('', pattern)
  out = [re.escape(head)]
  levels = rest.split('/')
  for i, level in enumerate(levels):
    last = i == len(levels) - 1
    if level == '**':
      out.append('.*' if last else '(?:[^/]*/)*')
      continue
    out.append(_level_regex(level))
    if not last:
      out.append('/')
  return re.compile(''.join(out) + r'\Z', re.DOTALL)


def _level_regex(level: str) -> str:
  i, n, res = 0, len(level), []
  while i < n:
    c = level[i]
    i += 1
    if c == '*':
      while i < n and level[i] == '*':
        i += 1
      res.append('[^/]*')
    elif c == '?':
      res.append('[^/]')
    elif c == '[':
      j = i
      if j < n and level[j] in '!^':
        j += 1
      if j < n and level[j] == ']':
        j += 1
      while j < n and level[j] != ']':
        j += 1
      if j >= n:
        res.append(r'\[')
      else:
        stuff = level[i:j]
        i = j + 1
        negate = stuff[:1] in ('!', '^')
        if negate:
          stuff = stuff[1:]
        # Each character escaped (ranges keep their '-'), so '[[]' (how
        # glob.escape quotes '[') is no nested set.
        stuff = ''.join(c if c == '-' else re.escape(c) for c in stuff)
        res.append(f'[^/{stuff}]' if negate else f'(?:(?!/)[{stuff}])')
    else:
      res.append(re.escape(c))
  return ''.join(res)


def components(path: str) -> List[str]:
  path = _norm(path)
  m = SCHEME.match(path)
  if m:
    return [path[:m.end()]] + [c for c in path[m.end():].split('/') if c]
  if path.startswith('/'):
    return ['/'] + [c for c in path.split('/') if c]
  return [c for c in path.split('/') if c and c != '.']


def common_base(roots: Sequence[str]) -> str:
  """Longest common folder of the roots ('' when they share nothing)."""
  if not roots:
    return ''
  parts = [components(r) for r in roots]
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
  if not has_scheme(child):
    child = os.path.abspath(child)
  if not has_scheme(parent):
    parent = os.path.abspath(parent)
  c, p = components(child), components(parent)
  return c[:len(p)] == p


def short_hash(text: str, n: int = 8) -> str:
  return hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()[:n]


def join(base: str, *parts: str) -> str:
  """Joins with '/', for local paths and URIs alike."""
  out = _norm(base)
  for p in parts:
    p = p.strip('/')
    if p:
      out = f'{out}/{p}' if not out.endswith('/') else out + p
  return out


def list_entries(lines: Iterable[str]) -> Iterable[str]:
  """Image URIs from a list file: blank lines and '#' comments ignored."""
  for line in lines:
    line = line.strip()
    if line and not line.startswith('#'):
      yield line


def list_entry_uri(line: str, list_dir: str) -> Optional[str]:
  """An --input_list line -> its URI (relative to the list file's folder)."""
  if has_scheme(line) or line.startswith('/'):
    return line
  return join(list_dir, line)
