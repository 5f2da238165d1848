"""Listing inputs lazily inside the pipeline: --input specs and --input_list files.

Inputs are named by their canonical location (layout.canonical_uri: local
paths with links, '.' and '..' resolved), so every alias of a file is one
input, and keyed for output by the layout.
"""

import logging
from typing import Iterable, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import paths, storage
from transforms.layout import LayoutError, OutputLayout, canonical_uri
from transforms.records import InputFile

logger = logging.getLogger(__name__)

IGNORED = 'ignored'


def make_input_spec(arg: str) -> paths.InputSpec:
  """Turns one --input argument into an InputSpec, at launch.

  What exists is taken literally first: an existing file whose name holds
  glob characters ('IMG [1].jpg') is that file. Otherwise an argument with
  '*', '?' or '[' is a glob.

  Raises:
    FileNotFoundError: nothing exists there and it is no glob.
  """
  uri = canonical_uri(paths.absolute(arg))
  kind = storage.exists_literally(uri)
  if kind == 'file':
    return paths.InputSpec(pattern=uri, root=paths.dirname(uri),
                           kind=paths.FILE)
  if kind == 'folder':
    return paths.InputSpec(pattern=paths.join(uri), root=paths.join(uri),
                           kind=paths.FOLDER)
  if paths.is_glob(uri):
    return paths.InputSpec(pattern=uri, root=paths.glob_root(uri),
                           kind=paths.GLOB)
  raise FileNotFoundError(arg)


def make_input(listed_path: str, entry: storage.Entry,
               layout: OutputLayout) -> InputFile:
  """A listed or named file -> InputFile, with the reason if it cannot be
  stylized safely (then it becomes failed rows, never a crash)."""
  uri = canonical_uri(listed_path)
  error = f'read: {entry.error}' if entry.error else ''
  key = ''
  if layout.is_inside_output(uri):
    error = (f'input: the file is inside --output {layout.output}; the job '
             'never reads its own outputs as inputs')
  else:
    try:
      key = layout.key(uri)
      layout.output_uri('x', key)  # Checks the length limits once.
    except LayoutError as e:
      error = f'input: cannot be mapped to an output safely: {e}'
  return InputFile(uri=uri, key=key, size_bytes=entry.size, mtime=entry.mtime,
                   version=entry.version, error=error)


class ExpandInputSpec(beam.DoFn):
  """InputSpec -> InputFile for every image it matches; 'ignored' paths.

  Written by hand rather than fileio.MatchAll: the listing is streamed
  (MatchAll gathers each pattern's matches in one list), globs follow
  Python's glob(recursive=True) meaning of '**' (paths.glob_regex), symbolic
  links to folders are followed with loops refused (storage.iter_files),
  and non-image files below a folder go to the 'ignored' output so the
  summary can count them.
  """

  def __init__(self, layout: OutputLayout):
    self._layout = layout
    self._ignored = Metrics.counter('stylize', 'files_ignored')

  def process(self, spec: paths.InputSpec) -> Iterable:
    if spec.kind == paths.FILE:
      yield make_input(spec.pattern, storage.stat(spec.pattern), self._layout)
      return
    for entry in matching_files(spec):
      if not paths.is_image_name(entry.path):
        self._ignored.inc()
        yield beam.pvalue.TaggedOutput(IGNORED, entry.path)
        continue
      yield make_input(entry.path, entry, self._layout)


def matching_files(spec: paths.InputSpec) -> Iterable[storage.Entry]:
  """Every file a folder or glob spec matches, streamed (images or not)."""
  regex = paths.glob_regex(spec.pattern) if spec.kind == paths.GLOB else None
  for entry in storage.iter_files(spec.root, follow_links=True):
    if regex is None or regex.match(entry.path):
      yield entry


def count_inputs(specs: Sequence[paths.InputSpec],
                 list_files: Sequence[str]) -> int:
  """How many inputs the specs and list files name (aliases counted each
  time), streamed: the launcher's estimate for sizing waves."""
  n = 0
  for spec in specs:
    if spec.kind == paths.FILE:
      n += 1
    else:
      n += sum(1 for e in matching_files(spec) if paths.is_image_name(e.path))
  for list_file in list_files:
    n += sum(1 for _ in paths.list_entries(_lines(list_file)))
  return n


def _lines(uri: str) -> Iterable[str]:
  """A file's lines, streamed. Compression comes from the name, as
  ReadFromText reads the list (a .gz list); every FileSystems stream (local,
  GCS, compressed) offers readline()."""
  with FileSystems.open(uri) as f:
    for line in iter(f.readline, b''):
      yield line.decode('utf-8', 'replace')


def list_file_entry(line: str, list_dir: str,
                    layout: OutputLayout) -> InputFile:
  """An --input_list line -> InputFile.

  Entries are literal paths or URIs (no globbing); a relative local entry is
  relative to the list file's folder. Size and modification time come from
  one metadata look-up (they are part of the incremental identity); a
  missing file becomes failed rows with the reason.
  """
  uri = canonical_uri(paths.list_entry_uri(line, list_dir))
  return make_input(uri, storage.stat(uri), layout)


def _entries(line: str) -> List[str]:
  return list(paths.list_entries([line]))


class ListInputs(beam.PTransform):
  """PBegin -> PCollection[InputFile], plus an 'ignored' PCollection[str].

  Patterns are expanded on the workers, never globbed in the launcher, and
  every input is keyed for its outputs. A file reached twice (overlapping
  inputs, a list and a folder) appears twice here, with one canonical URI
  and key: SkipDone's join makes it one input.
  """

  def __init__(self, specs: Sequence[paths.InputSpec],
               list_files: Sequence[str], layout: OutputLayout):
    super().__init__()
    self._specs = list(specs)
    self._list_files = list(list_files)
    self._layout = layout

  def expand(self, pbegin):
    branches: List = []
    ignored = []
    if self._specs:
      matched = (
          pbegin
          # Spread by the named Reshuffle only (as SkipDone's folders).
          | 'InputSpecs' >> beam.Create(self._specs, reshuffle=False)
          | 'ReshuffleSpecs' >> beam.Reshuffle()
          | 'Match' >> beam.ParDo(ExpandInputSpec(self._layout)).with_outputs(
              IGNORED, main='images'))
      branches.append(matched.images)
      ignored.append(matched[IGNORED])
    for i, list_file in enumerate(self._list_files):
      branches.append(
          pbegin
          | f'ReadList{i}' >> beam.io.ReadFromText(
              paths.glob_escape(list_file))
          | f'ListEntries{i}' >> beam.FlatMap(_entries)
          | f'ListToInput{i}' >> beam.Map(list_file_entry,
                                          paths.dirname(list_file),
                                          self._layout))
    # Aliases (the same file through two entries) are merged by the
    # planning join (incremental.SkipDone), which groups by output key anyway.
    files = branches | 'AllInputs' >> beam.Flatten()
    if ignored:
      ignored_pc = ignored | 'AllIgnored' >> beam.Flatten()
    else:
      ignored_pc = pbegin | 'NoIgnored' >> beam.Create([])
    return files, ignored_pc


def any_match(spec: paths.InputSpec) -> bool:
  """True once a glob matches one file (the listing stops there)."""
  regex = paths.glob_regex(spec.pattern)
  return any(regex.match(e.path)
             for e in storage.iter_files(spec.root, follow_links=True))
