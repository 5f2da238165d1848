"""Listing inputs lazily inside the pipeline: --input specs and --input_list files."""

import dataclasses
import logging
from typing import Iterable, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import paths
from transforms.records import InputFile
from transforms.storage import use_anonymous_gcs_for_emulator

logger = logging.getLogger(__name__)

IGNORED = 'ignored'


class ExpandInputSpec(beam.DoFn):
  """InputSpec -> InputFile for every image it matches.

  Written by hand rather than fileio.MatchAll because each match must keep
  the root it came from (outputs mirror the input tree) and must apply the
  image-extension filter; the matching itself is FileSystems.match, which is
  what MatchAll calls. Non-image files below a folder go to the 'ignored'
  output so the summary can count them.
  """

  def __init__(self, base: str):
    self._base = base
    self._ignored = Metrics.counter('stylize', 'files_ignored')

  def setup(self):
    use_anonymous_gcs_for_emulator()

  def process(self, spec: paths.InputSpec) -> Iterable:
    for result in FileSystems.match([spec.pattern]):
      for meta in result.metadata_list:
        path = meta.path
        if not spec.explicit and not paths.is_image_name(path):
          self._ignored.inc()
          yield beam.pvalue.TaggedOutput(IGNORED, path)
          continue
        yield InputFile(
            uri=path,
            rel=paths.relative_path(path, self._base),
            size_bytes=meta.size_in_bytes,
            mtime=float(meta.last_updated_in_seconds or 0.0))


def list_file_entry(line: str, list_dir: str) -> InputFile:
  """An --input_list line -> InputFile; rel is the URI without its scheme.

  A relative local entry is taken relative to the list file's folder. Size
  and modification time come from one metadata look-up (they are part of
  the incremental identity); a missing file keeps -1 and fails when read.
  """
  uri = line
  if not paths.has_scheme(line) and not line.startswith('/'):
    uri = paths.join(list_dir, line)
  use_anonymous_gcs_for_emulator()
  size, mtime = -1, 0.0
  try:
    metas = FileSystems.match([uri])[0].metadata_list
    if metas:
      size = metas[0].size_in_bytes
      mtime = float(metas[0].last_updated_in_seconds or 0.0)
  except Exception as e:  # pylint: disable=broad-except
    logger.debug('No metadata for %s: %s', uri, e)
  return InputFile(uri=uri, rel=paths.strip_scheme(uri), size_bytes=size,
                   mtime=mtime)


def _first_by_rel(keyed: Tuple[str, Iterable[InputFile]]) -> InputFile:
  """The same URI reached twice (overlapping inputs) is processed once."""
  _, items = keyed
  return min(items, key=lambda i: (i.rel, -i.size_bytes))


def _unique_outputs(keyed: Tuple[str, Iterable[InputFile]]
                    ) -> Iterable[InputFile]:
  """Gives inputs that would share an output name distinct names.

  'a/x.jpg' and 'a/x.png' both map to 'a/x': both then keep their source
  extension in the name ('a/x.jpg', 'a/x.png', before the output extension
  is added). The same relative path reached from two roots (a list file and
  a folder) also gets a hash of the URI. Deterministic for a given set of
  inputs.
  """
  _, items = keyed
  items = sorted(items, key=lambda i: i.uri)
  if len(items) == 1:
    yield items[0]
    return
  rels = [i.rel for i in items]
  for item in items:
    stem = item.rel
    if rels.count(item.rel) > 1:
      stem = f'{item.rel}-{paths.short_hash(item.uri)}'
    yield dataclasses.replace(item, out_stem=stem)


class ListInputs(beam.PTransform):
  """PBegin -> PCollection[InputFile], plus an 'ignored' PCollection[str].

  Patterns are expanded on the workers, never globbed in the launcher. Each
  input URI appears once, and no two inputs share an output name. (The
  caller reshuffles the result to spread the work.)
  """

  def __init__(self, specs: Sequence[paths.InputSpec], list_files: Sequence[str],
               base: str):
    super().__init__()
    self._specs = list(specs)
    self._list_files = list(list_files)
    self._base = base

  def expand(self, pbegin):
    branches: List = []
    ignored = []
    if self._specs:
      matched = (
          pbegin
          | 'InputSpecs' >> beam.Create(self._specs)
          | 'ReshuffleSpecs' >> beam.Reshuffle()
          | 'Match' >> beam.ParDo(ExpandInputSpec(self._base)).with_outputs(
              IGNORED, main='images'))
      branches.append(matched.images)
      ignored.append(matched[IGNORED])
    for i, list_file in enumerate(self._list_files):
      list_file = paths.absolute(list_file)
      branches.append(
          pbegin
          | f'ReadList{i}' >> beam.io.ReadFromText(list_file)
          | f'ListEntries{i}' >> beam.FlatMap(lambda line: paths.list_entries([line]))
          | f'ListToInput{i}' >> beam.Map(list_file_entry,
                                          paths.dirname(list_file)))
    files = (
        branches
        | 'AllInputs' >> beam.Flatten()
        | 'KeyByUri' >> beam.Map(lambda i: (i.uri, i))
        | 'GroupByUri' >> beam.GroupByKey()
        | 'OnePerUri' >> beam.Map(_first_by_rel)
        | 'KeyByOutputName' >> beam.Map(lambda i: (i.out_stem, i))
        | 'GroupByOutputName' >> beam.GroupByKey()
        | 'UniqueOutputs' >> beam.FlatMap(_unique_outputs))
    if ignored:
      ignored_pc = ignored | 'AllIgnored' >> beam.Flatten()
    else:
      ignored_pc = pbegin | 'NoIgnored' >> beam.Create([])
    return files, ignored_pc
