"""The output layout: every path the job writes, derived in one place.

The rule (README "What you get"): an input's output is

    {output}/{style label}/{key}.{format}

where the key is the input's location below the job's input base (the common
folder of the --input roots), one escaped name per folder level, the source
file name kept whole (`a/IMG_1.jpg` -> `a/IMG_1.jpg.jpg`). An input outside
the base (only --input_list entries and files reached through symbolic links
can be) is keyed by its full location under a reserved first level:
`@file/data/x.jpg`, `@gs/bucket/x.jpg`.

Properties this module guarantees (tests/test_layout.py checks them over
generated names with Hypothesis):
- Containment: every path it gives is below {output}; names never hold '/',
  '\\', '.' or '..' as a level, control characters or leading '@'; each level
  stays under MAX_NAME_BYTES; anything else is escaped as %XX.
- Uniqueness: escaping is injective ('%' itself is escaped), so two different
  inputs never share an output.
- Stability: a key depends only on the input's own location and the base,
  never on which other files exist.
- Output names are in Unicode NFC, so a photo named in NFD (macOS) and one in
  NFC keep distinct outputs that survive copying between file systems.

Escaping is written here rather than taken from urllib.parse.quote because
quote keeps no non-ASCII letters (outputs would be unreadable for non-English
archives) and has no notion of '.', '..' or NFC stability.
"""

import dataclasses
import hashlib
import os
import posixpath
import re
import unicodedata
from typing import List, Optional, Tuple

from transforms import paths

STATE_DIR = '.stylize'
DONE_DIR = f'{STATE_DIR}/done'
TMP_DIR = f'{STATE_DIR}/tmp'
REPORT_NAME = 'report.html'
THUMB_DIR = 'report/thumbs'
SUMMARY_NAME = 'summary.json'
MANIFEST_PREFIX = 'manifest'
MANIFEST_SUFFIX = '.jsonl'
# Shard names of Beam's file sinks: manifest-00000-of-00004.jsonl, and in
# runs split into waves (transforms/waves.py) manifest-w0001-of-0003-00000-
# of-00001.jsonl. Only files of exactly these shapes are ever deleted as stale
# manifests.
MANIFEST_SHARD = re.compile(
    rf'^{MANIFEST_PREFIX}(-w\d{{4,}}-of-\d{{4,}})?-\d{{5,}}-of-\d{{5,}}'
    rf'{re.escape(MANIFEST_SUFFIX)}$')

#: Longest escaped name of one level, in UTF-8 bytes. File systems allow 255;
#: an output adds '.jpg' and its done marker '.<40 hex>' to it.
MAX_NAME_BYTES = 160
#: GCS object names are at most 1024 bytes; local paths at most 4096.
MAX_OBJECT_NAME_BYTES = 1024
MAX_LOCAL_PATH_BYTES = 4000

OUTSIDE_MARK = '@'  # First character of the reserved level for full locations.
TRUNCATION_MARK = '~'

#: The naming rule's version (README "The layout rule"); 1 was the rule
#: before 2026-12 (letters, digits and '-_.,+=@() ' kept, all else escaped).
NAMING_RULE = 2
# What no file system or object store takes well, escaped whatever else:
# separators ('/', '\\'), what Windows forbids (': * ? " < > |'), what gsutil
# and gcloud read as wildcards or generations ('[ ] #'), and '%' (the
# escape itself).
_UNSAFE = frozenset('/\\:*?"<>|[]#%')
# Windows device names: no file or folder may be called so (with any
# extension), so their first letter is escaped.
_DEVICES = frozenset({'CON', 'PRN', 'AUX', 'NUL'} |
                     {f'{d}{i}' for d in ('COM', 'LPT') for i in range(1, 10)})
_SAFE_ASCII_V1 = frozenset(
    'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.,+=@() ')
# Top-level names the job itself uses: a style label never takes one.
_RESERVED_LABELS = frozenset({STATE_DIR, 'report', REPORT_NAME, SUMMARY_NAME})
_HANGUL_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


class LayoutError(ValueError):
  """An input that cannot be mapped to an output safely; the message says why."""


def _escape_char(char: str) -> str:
  code = ord(char)
  if 0xDC80 <= code <= 0xDCFF:
    # A byte that was not UTF-8 in a local file name (Python's
    # surrogateescape): escaped as that byte.
    return f'%{code - 0xDC00:02X}'
  return ''.join(f'%{b:02X}' for b in char.encode('utf-8', 'surrogatepass'))


def _nfc_alone(char: str) -> bool:
  """A character that is its own NFC form and composes with nothing (no
  combining mark, no conjoining jamo): a name of such characters is NFC."""
  code = ord(char)
  if any(lo <= code <= hi for lo, hi in _HANGUL_JAMO):
    return False
  return (not unicodedata.combining(char) and
          unicodedata.normalize('NFC', char) == char)


def _keeps(char: str) -> bool:
  """Naming rule 2: every character but the unsafe ones (_UNSAFE), control
  and format characters (Cc, Cf: they can hide or reorder a name on
  screen), spaces other than ' ', line and paragraph separators, private
  use, unassigned and surrogate code points, and characters that are not
  NFC on their own (combining marks): letters, digits, punctuation, symbols
  and emoji of every script are kept."""
  if char in _UNSAFE:
    return False
  if char == ' ':
    return True
  if unicodedata.category(char) in ('Cc', 'Cf', 'Cs', 'Co', 'Cn', 'Zs', 'Zl',
                                    'Zp'):
    return False
  return ord(char) < 128 or _nfc_alone(char)


def _keeps_v1(char: str) -> bool:
  """Naming rule 1: letters and digits of any script and '-_.,+=@() '."""
  if char in _SAFE_ASCII_V1:
    return True
  if ord(char) < 128:
    return False
  return unicodedata.category(char)[0] in 'LN' and _nfc_alone(char)


def encode_name(name: str, rule: int = NAMING_RULE) -> str:
  """One folder or file name -> a safe, injective, NFC output name.

  rule: the naming rule (NAMING_RULE; 1 only to find outputs an earlier
  version named).
  """
  if name in ('', '.', '..'):
    # '' only on object stores ('a//b'); '.' and '..' are literal object
    # names there. None of them can be a level of an output path.
    return {'': '%2F', '.': '%2E', '..': '%2E%2E'}[name]
  keeps = _keeps if rule >= 2 else _keeps_v1
  out = []
  last = len(name) - 1
  device = rule >= 2 and name.split('.', 1)[0].upper() in _DEVICES
  for i, char in enumerate(name):
    edge_space = char == ' ' and i in (0, last)
    trailing_dot = rule >= 2 and char == '.' and i == last
    leading_mark = char == OUTSIDE_MARK and i == 0
    if (keeps(char) and not edge_space and not leading_mark and
        not trailing_dot and not (device and i == 0)):
      out.append(char)
    else:
      out.append(_escape_char(char))
  encoded = ''.join(out)
  if len(encoded.encode('utf-8')) <= MAX_NAME_BYTES:
    return encoded
  return _truncate(out, name)


def _truncate(pieces: List[str], name: str) -> str:
  """A long name: its start, '~' and a hash of the whole name."""
  digest = hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:16]
  budget = MAX_NAME_BYTES - len(TRUNCATION_MARK) - len(digest)
  kept, used = [], 0
  for piece in pieces:  # Whole characters and whole escapes only.
    size = len(piece.encode('utf-8'))
    if used + size > budget:
      break
    kept.append(piece)
    used += size
  return ''.join(kept) + TRUNCATION_MARK + digest


def canonical_uri(uri: str) -> str:
  """The one name of a file: what is read, deduplicated and keyed.

  Local paths: absolute, with symbolic links, '.', '..' and repeated slashes
  resolved (os.path.realpath), so every alias of a file gives one path.
  file:// URIs are local paths. Object stores have no aliases: an object
  name is taken literally ('gs://b/a/./x.jpg' is the object 'a/./x.jpg').
  """
  if uri.startswith('file://'):
    uri = uri[len('file://'):]
  if paths.has_scheme(uri):
    return uri
  return os.path.realpath(os.path.expanduser(uri))


def _levels(uri: str) -> Tuple[str, List[str]]:
  """(scheme or 'file', names) of a canonical URI; names may be ''/'.'."""
  match = paths.SCHEME.match(uri)
  if match:
    return match.group(1), uri[match.end():].split('/')
  return 'file', [n for n in uri.split('/') if n]


def input_key(uri: str, base: Optional[str],
              rule: int = NAMING_RULE) -> str:
  """The key of a canonical input URI (see the module docstring)."""
  scheme, names = _levels(uri)
  if base:
    base_scheme, base_names = _levels(base)
    base_names = [n for n in base_names if n]  # 'gs://' alone: no names.
    if (scheme == base_scheme and len(names) > len(base_names) and
        names[:len(base_names)] == base_names):
      return '/'.join(encode_name(n, rule) for n in names[len(base_names):])
  return '/'.join([OUTSIDE_MARK + encode_name(scheme, rule)] +
                  [encode_name(n, rule) for n in names])


def naming_rule_uri(output: str) -> str:
  """Where a run records the naming rule it named outputs by."""
  return paths.join(output, STATE_DIR, 'naming-rule')


def style_label(label: str, rule: int = NAMING_RULE) -> str:
  """A style's folder name: escaped, and never one of the job's own names."""
  label = encode_name(label, rule)
  if label in _RESERVED_LABELS or label.startswith(MANIFEST_PREFIX):
    label = f'{label}-style'
  return label


# Markers of the earlier format: an empty file named after the output and
# the SHA-1 of a path-based identity. Never trusted; removed when seen.
_LEGACY_MARKER = re.compile(r'\.[0-9a-f]{40}$')
MARKER_SUFFIX = '.json'

OUTPUT = 'output'
MARKER = 'marker'
LEGACY_MARKER = 'legacy-marker'


@dataclasses.dataclass(frozen=True)
class Listed:
  """A file found below {output}, as the skip step sees it.

  kind: OUTPUT (a stylized image), MARKER (its done marker) or
  LEGACY_MARKER (a marker of the earlier format, to remove).
  """
  kind: str
  label: str
  key: str


@dataclasses.dataclass(frozen=True)
class OutputLayout:
  """Where the job writes, for one --output, format and input base.

  Attributes:
    output: the output folder: canonical (local: real, absolute path).
    fmt: output format extension ('jpg', 'png', ...).
    base: the common folder of the --input roots ('' if none).
    run_id: this run's id (names its temporary folder).
  """
  output: str
  fmt: str
  base: str = ''
  run_id: str = ''

  @classmethod
  def create(cls, output: str, fmt: str, base: str = '',
             run_id: str = '') -> 'OutputLayout':
    return cls(output=paths.join(canonical_uri(output)), fmt=fmt,
               base=paths.join(base) if base else '', run_id=run_id)

  def key(self, uri: str) -> str:
    return input_key(uri, self.base)

  def is_inside_output(self, uri: str) -> bool:
    """True for a canonical input URI in (or equal to) the output folder."""
    return paths.is_within(uri, self.output)

  # -- outputs and markers ----------------------------------------------

  def output_uri(self, label: str, key: str) -> str:
    uri = paths.join(self.output, label, f'{key}.{self.fmt}')
    self.check(uri)
    return uri

  def marker_uri(self, label: str, key: str) -> str:
    """The one done marker of a pair (transforms/markers.py)."""
    uri = paths.join(self.output, DONE_DIR, label,
                     f'{key}.{self.fmt}{MARKER_SUFFIX}')
    self.check(uri)
    return uri

  def listing_patterns(self, labels) -> List[str]:
    """What the skip step lists: each style folder and the markers."""
    return [paths.join(self.output, label) for label in labels] + [
        paths.join(self.output, DONE_DIR)]

  def parse_listed(self, uri: str) -> Optional[Listed]:
    """A listed file below {output} -> Listed, or None if not the job's.

    Markers of the earlier format are recognised whatever output format
    they were made for (they are all removed); everything else only for
    this run's format.
    """
    prefix = self.output + '/'
    if not uri.startswith(prefix):
      return None
    rel = uri[len(prefix):]
    kind = OUTPUT
    if rel.startswith(DONE_DIR + '/'):
      rel = rel[len(DONE_DIR) + 1:]
      match = _LEGACY_MARKER.search(rel)
      if match and '/' in rel:
        label, _, rest = rel[:match.start()].partition('/')
        return Listed(kind=LEGACY_MARKER, label=label,
                      key=posixpath.splitext(rest)[0])
      if not rel.endswith(MARKER_SUFFIX):
        return None
      kind, rel = MARKER, rel[:-len(MARKER_SUFFIX)]
    label, _, rest = rel.partition('/')
    suffix = '.' + self.fmt
    if not rest.endswith(suffix):
      return None
    return Listed(kind=kind, label=label, key=rest[:-len(suffix)])

  # -- the job's own files ----------------------------------------------

  def summary_uri(self) -> str:
    return paths.join(self.output, SUMMARY_NAME)

  def report_uri(self) -> str:
    return paths.join(self.output, REPORT_NAME)

  def manifest_prefix(self, wave_tag: str = '') -> str:
    name = f'{MANIFEST_PREFIX}-{wave_tag}' if wave_tag else MANIFEST_PREFIX
    return paths.join(self.output, name)

  def is_manifest_shard(self, uri: str) -> bool:
    return (paths.dirname(uri) == self.output and
            bool(MANIFEST_SHARD.match(posixpath.basename(uri))))

  def thumb_rel(self, source_uri: str) -> str:
    """A thumbnail's path relative to the report (links stay relative)."""
    digest = hashlib.sha1(source_uri.encode('utf-8', 'surrogatepass'))
    return f'{THUMB_DIR}/{digest.hexdigest()[:16]}.jpg'

  def thumb_uri(self, source_uri: str) -> str:
    return paths.join(self.output, self.thumb_rel(source_uri))

  def tmp_dir(self) -> str:
    """This run's folder of temporary files (local outputs only)."""
    return paths.join(self.output, TMP_DIR, encode_name(self.run_id or 'run'))

  def errors_dir(self) -> str:
    """Where this run's workers note the errors they raise
    (transforms/worker_errors.py)."""
    return paths.join(self.tmp_dir(), 'errors')

  def tmp_root(self) -> str:
    return paths.join(self.output, TMP_DIR)

  # -- the guarantee ----------------------------------------------------

  def check(self, uri: str) -> None:
    """Raises LayoutError unless uri is strictly below the output folder.

    Every write goes through this check (storage.write_file calls it), so a
    bug elsewhere cannot write outside --output either.
    """
    if not is_inside(uri, self.output):
      raise LayoutError(f'{uri!r} is not inside --output {self.output!r}')
    size = len(uri.encode('utf-8', 'surrogatepass'))
    if uri.startswith('gs://'):
      name = uri[len('gs://'):].partition('/')[2]
      if len(name.encode('utf-8', 'surrogatepass')) > MAX_OBJECT_NAME_BYTES:
        raise LayoutError(
            f'the output name would be {len(name.encode())} bytes, over GCS\'s '
            f'limit of {MAX_OBJECT_NAME_BYTES}; shorten the input\'s folders')
    elif not paths.has_scheme(uri) and size > MAX_LOCAL_PATH_BYTES:
      raise LayoutError(
          f'the output path would be {size} bytes, over the limit of '
          f'{MAX_LOCAL_PATH_BYTES}; shorten the input\'s folders or --output')


def is_inside(uri: str, folder: str) -> bool:
  """True when uri is strictly below folder, with no '.', '..' or '' level."""
  prefix = folder.rstrip('/') + '/'
  if not uri.startswith(prefix):
    return False
  levels = uri[len(prefix):].split('/')
  return all(level not in ('', '.', '..') and '\\' not in level
             for level in levels)


def real_parent_inside(path: str, folder: str) -> bool:
  """Local guard against symbolic links inside the output folder.

  The nearest existing folder above path, with links resolved, must be the
  (real) output folder or below it; otherwise a link such as
  {output}/waves -> /photos would take a write outside.
  """
  folder = os.path.realpath(folder)
  parent = os.path.dirname(path)
  while parent and not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  real = os.path.realpath(parent)
  if real == folder or real.startswith(folder.rstrip('/') + '/'):
    return True
  # The output folder itself does not exist yet: parent is above it.
  return folder.startswith(real.rstrip('/') + '/') and not os.path.lexists(
      folder)
