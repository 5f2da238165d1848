"""Incremental runs: work already done is found by a keyed join, not a broadcast.

Identity of a piece of work: the input's URI, size and modification time
(on GCS the object's update time, which changes whenever it is rewritten),
the style (URIs and weights), the model and every parameter that changes the
pixels (JobConfig.job_key), and the output key (layout.work_identity). After
an output is written, an empty done marker named after the output and that
identity is written (layout.marker_uri):

    {output}/.stylize/done/{style}/{key}.{format}.{sha1 of the identity}

A rerun lists the style folders and the markers, streamed, and joins what it
finds to the work list by input key (a GroupByKey join), so no worker holds the
whole done set. A pair whose marker and output both exist is `skipped`;
anything else is (re)done. A listing that fails stops the run
(storage.ListingError): it is never read as "nothing done".
"""

import dataclasses
import logging
from typing import Dict, Iterable, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.layout import OutputLayout, work_identity
from transforms.records import InputFile, StyleRef
from transforms.rows import failed_input_rows, skipped_row
from transforms.waves import Wave

logger = logging.getLogger(__name__)

SKIPPED = 'skipped'
FAILED = 'failed'
PAIRS = 'pairs'


def identity_of(item: InputFile, style: StyleRef, job_key: str) -> str:
  return work_identity(item.uri, item.size_bytes, item.mtime, style.uri,
                       job_key, item.key, style.label)


class ListOutputFolder(beam.DoFn):
  """A folder below {output} -> (input key, Listed.token()) for each file of
  the job.

  Streams the listing (storage.iter_files), so memory does not grow with the
  number of outputs; files the job did not write are left out.
  """

  def __init__(self, layout: OutputLayout, labels: Sequence[str]):
    self._layout = layout
    self._labels = frozenset(labels)
    self._listed = Metrics.counter('stylize', 'output_files_listed')

  def setup(self):
    storage.use_anonymous_gcs_for_emulator()

  def process(self, folder: str) -> Iterable[Tuple[str, str]]:
    for entry in storage.iter_files(folder):
      listed = self._layout.parse_listed(entry.path)
      if listed is not None and listed.label in self._labels:
        self._listed.inc()
        yield listed.key, listed.token()


class PlanWork(beam.DoFn):
  """(key, [InputFile | listing token]) -> InputFile with the styles to do;
  'skipped' rows for done pairs; 'failed' rows for inputs with an error;
  'pairs': the number of rows each input must give (one per style).

  The inputs of one key are aliases of one file (the key is a function of
  the canonical URI), reached through several --input or --input_list
  entries: they are one input, so this join also deduplicates.
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               job_key: str, row_info: Dict, force: bool):
    self._layout = layout
    self._styles = list(styles)
    self._job_key = job_key
    self._row_info = dict(row_info)
    self._force = force
    self._skipped = Metrics.counter('stylize', 'skipped')

  def process(self, joined) -> Iterable:
    key, values = joined
    aliases, outputs, markers = [], set(), set()
    for value in values:
      if isinstance(value, InputFile):
        aliases.append(value)
      elif '/' in value:  # A marker: 'label/identity'.
        markers.add(tuple(value.split('/', 1)))
      else:  # An output: 'label'.
        outputs.add(value)
    if aliases:  # Else outputs of a file that is no input (any more).
      # One without an error wins (aliases differ only in how they failed).
      item = min(aliases, key=lambda i: (bool(i.error), i.error))
      yield beam.pvalue.TaggedOutput(PAIRS, len(self._styles))
      yield from self._plan(key, item, outputs, markers)

  def _plan(self, key: str, item: InputFile, outputs, markers) -> Iterable:
    if item.error:
      yield from (beam.pvalue.TaggedOutput(FAILED, row) for row in
                  failed_input_rows(item, self._styles, item.error,
                                    self._row_info))
      return
    todo = []
    for style in self._styles:
      identity = identity_of(item, style, self._job_key)
      if (not self._force and style.label in outputs and
          (style.label, identity) in markers):
        self._skipped.inc()
        yield beam.pvalue.TaggedOutput(SKIPPED, skipped_row(
            item, style, self._layout.output_uri(style.label, key),
            self._row_info))
      else:
        todo.append(style.label)
    if todo:
      yield dataclasses.replace(item, todo=tuple(todo))


def _by_key(item: InputFile) -> Tuple[str, InputFile]:
  # Inputs with an error have no key; their URI keeps them apart.
  return (item.key if item.key else f'\0{item.uri}'), item


def _of_wave(keyed: Tuple[str, object], wave: Wave) -> bool:
  return wave.holds(keyed[0])


class SkipDone(beam.PTransform):
  """PCollection[InputFile] -> (work to do, skipped rows, failed rows,
  rows expected per input).

  The style folders and markers below the output are listed inside the
  pipeline, one folder per worker call, and joined to the inputs by key
  (GroupByKey): aliases become one input, done pairs are skipped, and the
  work is spread over the workers by key. With force, nothing is listed and
  everything is done again.
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               job_key: str, row_info: Dict, force: bool,
               wave: Optional[Wave] = None):
    """wave: only inputs (and listed outputs) of this wave's keys are
    planned (transforms/waves.py); None plans all."""
    super().__init__()
    self._layout = layout
    self._styles = list(styles)
    self._plan = PlanWork(layout, styles, job_key, row_info, force)
    self._force = force
    self._wave = wave

  def expand(self, files):
    keyed = files | 'KeyByOutput' >> beam.Map(_by_key)
    labels = [s.label for s in self._styles]
    folders = [] if self._force else self._layout.listing_patterns(labels)
    listed = (files.pipeline
              | 'OutputFolders' >> beam.Create(folders)
              | 'SpreadFolders' >> beam.Reshuffle()
              | 'ListOutput' >> beam.ParDo(ListOutputFolder(self._layout,
                                                            labels)))
    if self._wave is not None:
      # Fused into the listing steps: other waves' elements are dropped as
      # they are listed, before any grouping holds them.
      keyed = keyed | 'InputsOfWave' >> beam.Filter(_of_wave, self._wave)
      listed = listed | 'OutputsOfWave' >> beam.Filter(_of_wave, self._wave)
    # The join by key: a GroupByKey over both sides, told apart by type.
    # Written so rather than with CoGroupByKey, whose tagging wraps every
    # value once more: on the in-process runner, which holds a grouping in
    # memory, that is a third more per listed file.
    planned = ((keyed, listed)
               | 'BothSides' >> beam.Flatten()
               | 'JoinDone' >> beam.GroupByKey()
               | 'Plan' >> beam.ParDo(self._plan).with_outputs(
                   SKIPPED, FAILED, PAIRS, main='todo'))
    return planned.todo, planned[SKIPPED], planned[FAILED], planned[PAIRS]


class RemoveStaleTemporary(beam.PTransform):
  """PBegin -> removes temporary folders of interrupted earlier runs.

  Only {output}/.stylize/tmp/<other run>/ (storage.remove_stale_temporary),
  never this run's, so it needs no ordering against this run's writes.
  """

  def __init__(self, layout: OutputLayout):
    super().__init__()
    self._layout = layout

  def expand(self, pbegin):
    return (pbegin
            | 'Output' >> beam.Create([self._layout])
            | 'Remove' >> beam.Map(storage.remove_stale_temporary))
