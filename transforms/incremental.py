"""Incremental runs: work already done is found by a keyed join, not a broadcast.

Each (input, style) pair has one done marker (transforms/markers.py) below
{output}/.stylize/done/, holding the identity it was made for
(transforms/identity.py) and its output's size and CRC32C, or the failure
it met. A rerun lists the style folders and the markers, streamed, reads
the markers (a few at a time on each worker), and joins what it finds to
the work list by input key (a GroupByKey join), so no worker holds the
whole done set. A pair is `skipped` only when its marker holds the current
identity and its output is there with the marker's size (and CRC32C where
the listing gives one); a pair whose marker says it failed the same way
before is a known failure (not retried unless --retry_failed); anything
else is (re)done. A listing that fails stops the run
(storage.ListingError): it is never read as "nothing done".
"""

import dataclasses
import logging
from typing import Dict, Iterable, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms import identity, storage
from transforms.layout import (LEGACY_MARKER, MARKER, OUTPUT, OutputLayout)
from transforms.lease import LeaseLost, WorkerLease, worker_lease
from transforms.markers import FAILED as MARKER_FAILED
from transforms.markers import OK as MARKER_OK
from transforms.markers import Marker
from transforms.overlap import OverlappedDoFn
from transforms.records import Failure, InputFile, StyleRef
from transforms.rows import (affected_styles, failed_input_rows,
                             known_failed_row, skipped_row)
from transforms.waves import Wave

logger = logging.getLogger(__name__)

SKIPPED = 'skipped'
FAILED = 'failed'
PAIRS = 'pairs'
ORPHANS = 'orphans'
MARKERS = 'markers'
LEGACY = 'legacy'


def identity_of(item: InputFile, style: StyleRef, job_key: str) -> str:
  """A pair's identity under job_key (the job's output or failure key)."""
  return identity.pair_identity(item.uri, item.size_bytes, item.version,
                                style.fingerprint, job_key)


class ListOutputFolder(beam.DoFn):
  """A folder below {output} -> (input key, ('o', label, size, crc32c)) per
  output; 'markers': (input key, (label, marker path)); 'legacy': paths of
  markers of the earlier format.

  Streams the listing (storage.iter_files), so memory does not grow with the
  number of outputs; files the job did not write are left out.
  """

  def __init__(self, layout: OutputLayout, labels: Sequence[str]):
    self._layout = layout
    self._labels = frozenset(labels)
    self._listed = Metrics.counter('stylize', 'output_files_listed')

  def process(self, folder: str) -> Iterable:
    for entry in storage.iter_files(folder):
      listed = self._layout.parse_listed(entry.path)
      if listed is None:
        continue
      if listed.kind == LEGACY_MARKER:
        yield beam.pvalue.TaggedOutput(LEGACY, entry.path)
        continue
      if listed.label not in self._labels:
        continue
      self._listed.inc()
      if listed.kind == OUTPUT:
        yield listed.key, ('o', listed.label, entry.size, entry.crc32c)
      elif listed.kind == MARKER:
        yield beam.pvalue.TaggedOutput(
            MARKERS, (listed.key, (listed.label, entry.path)))


class ReadMarkers(OverlappedDoFn):
  """(key, (label, marker path)) -> (key, ('m', label, Marker)), reading a
  few markers at once (one small read each). An unreadable or malformed
  marker counts as absent: its pair is redone."""

  def setup(self):
    super().setup()

  def work(self, element):
    key, (label, path) = element
    try:
      with FileSystems.open(path, compression_type='uncompressed') as f:
        marker = Marker.from_bytes(f.read(1 << 16))
    except Exception as e:  # pylint: disable=broad-except
      # Gone since the listing (another style's rerun cannot touch it; a
      # user may delete it): the pair is redone, which is always safe.
      logger.debug('Marker %s unreadable: %s', path, e)
      marker = None
    return ([(key, ('m', label, marker))] if marker is not None else []), {}


def remove_files(uris: Sequence[str], layout: OutputLayout) -> int:
  """Deletes job files (markers of the earlier format); the count."""
  storage.Writer(layout).delete(list(uris))
  return len(uris)


class PlanWork(beam.DoFn):
  """(key, [InputFile | listed output | marker]) -> InputFile with the styles
  to do; 'skipped' rows for done pairs; 'failed' rows for inputs with an
  error and for known failures; 'pairs': the number of rows each input
  must give (one per style).

  The inputs of one key are aliases of one file (the key is a function of
  the canonical URI), reached through several --input or --input_list
  entries: they are one input, so this join also deduplicates.
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               job_key: str, failure_key: str, row_info: Dict, force: bool,
               retry_failed: bool = False):
    self._layout = layout
    self._styles = list(styles)
    self._job_key = job_key
    self._failure_key = failure_key
    self._row_info = dict(row_info)
    self._force = force
    self._retry_failed = retry_failed
    self._skipped = Metrics.counter('stylize', 'skipped')
    self._known = Metrics.counter('stylize', 'known_failures')

  def process(self, joined) -> Iterable:
    key, values = joined
    aliases, outputs, markers = [], {}, {}
    for value in values:
      if isinstance(value, InputFile):
        aliases.append(value)
      elif value[0] == 'o':
        outputs[value[1]] = value
      else:
        markers[value[1]] = value[2]
    if not aliases:
      # Outputs of a file that is no input (any more): deleted or moved,
      # or named by an earlier naming rule. Left in place, and counted.
      for label in outputs:
        yield beam.pvalue.TaggedOutput(ORPHANS, self._layout.output_uri(
            label, key))
      return
    # One without an error wins (aliases differ only in how they failed).
    item = min(aliases, key=lambda i: (bool(i.error), i.error))
    yield beam.pvalue.TaggedOutput(PAIRS, len(self._styles))
    yield from self._plan(key, item, outputs, markers)

  def _done(self, item, style, output, marker: Optional[Marker]) -> bool:
    """The marker holds the current identity and the output is there, with
    the marker's size (and CRC32C, where the listing gives it)."""
    if (marker is None or marker.status != MARKER_OK or output is None or
        marker.identity != identity_of(item, style, self._job_key)):
      return False
    _, _, size, crc = output
    return size == marker.size and (not crc or not marker.crc32c or
                                    crc == marker.crc32c)

  def _known_failure(self, item, style, marker: Optional[Marker]) -> bool:
    return (marker is not None and marker.status == MARKER_FAILED and
            not self._retry_failed and
            marker.identity == identity_of(item, style, self._failure_key))

  def _plan(self, key: str, item: InputFile, outputs, markers) -> Iterable:
    if item.error:
      yield from (beam.pvalue.TaggedOutput(FAILED, row) for row in
                  failed_input_rows(item, self._styles, item.error,
                                    self._row_info))
      return
    todo, stale = [], []
    for style in self._styles:
      if style.label in outputs or style.label in markers:
        stale.append(style.label)
      marker = None if self._force else markers.get(style.label)
      if self._done(item, style, outputs.get(style.label), marker):
        self._skipped.inc()
        yield beam.pvalue.TaggedOutput(SKIPPED, skipped_row(
            item, style, self._layout.output_uri(style.label, key),
            self._row_info, marker.engine, marker.precision))
      elif self._known_failure(item, style, marker):
        self._known.inc()
        yield beam.pvalue.TaggedOutput(FAILED, known_failed_row(
            item, style, marker.error, self._row_info))
      else:
        todo.append(style.label)
    if todo:
      yield dataclasses.replace(item, todo=tuple(todo), stale=tuple(
          label for label in stale if label in todo))


def _by_key(item: InputFile) -> Tuple[str, InputFile]:
  # Inputs with an error have no key; their URI keeps them apart.
  return (item.key if item.key else f'\0{item.uri}'), item


def _of_wave(keyed: Tuple[str, object], wave: Wave) -> bool:
  return wave.holds(keyed[0])


class SkipDone(beam.PTransform):
  """PCollection[InputFile] -> (work to do, skipped rows, failed rows,
  rows expected per input, outputs of files that are no inputs).

  The style folders and markers below the output are listed inside the
  pipeline, one folder per worker call, the markers read a few at a time,
  and both joined to the inputs by key (GroupByKey): aliases become one
  input, done pairs are skipped, known failures listed, and the work is
  spread over the workers by key. With force, nothing is listed and
  everything is done again.
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               job_key: str, failure_key: str, row_info: Dict, force: bool,
               wave: Optional[Wave] = None, retry_failed: bool = False,
               threads: Optional[int] = None, remove_legacy: bool = True):
    """wave: only inputs (and listed outputs) of this wave's keys are
    planned (transforms/waves.py); None plans all. remove_legacy: delete
    markers of the earlier format as they are found (not in a dry run)."""
    super().__init__()
    self._layout = layout
    self._styles = list(styles)
    self._plan = PlanWork(layout, styles, job_key, failure_key, row_info,
                          force, retry_failed)
    self._force = force
    self._wave = wave
    self._threads = threads
    self._remove_legacy = remove_legacy

  def expand(self, files):
    keyed = files | 'KeyByOutput' >> beam.Map(_by_key)
    labels = [s.label for s in self._styles]
    folders = [] if self._force else self._layout.listing_patterns(labels)
    listed = (files.pipeline
              # Spread by the named Reshuffle only: beam.Create's own
              # (for more than one element) would be a second one.
              | 'OutputFolders' >> beam.Create(folders, reshuffle=False)
              | 'SpreadFolders' >> beam.Reshuffle()
              | 'ListOutput' >> beam.ParDo(ListOutputFolder(
                  self._layout, labels)).with_outputs(MARKERS, LEGACY,
                                                      main='outputs'))
    outputs, markers = listed.outputs, listed[MARKERS]
    if self._wave is not None:
      # Fused into the listing steps: other waves' elements are dropped as
      # they are listed, before any grouping holds them.
      keyed = keyed | 'InputsOfWave' >> beam.Filter(_of_wave, self._wave)
      outputs = outputs | 'OutputsOfWave' >> beam.Filter(_of_wave,
                                                          self._wave)
      markers = markers | 'MarkersOfWave' >> beam.Filter(_of_wave,
                                                         self._wave)
    read = (markers
            | 'SpreadMarkers' >> beam.Reshuffle()
            | 'ReadMarkers' >> beam.ParDo(ReadMarkers(self._threads)))
    if self._remove_legacy:
      _ = (listed[LEGACY]
           | 'BatchLegacy' >> beam.BatchElements(min_batch_size=1,
                                                 max_batch_size=500)
           | 'RemoveLegacy' >> beam.Map(remove_files, self._layout))
    # The join by key: a GroupByKey over all sides, told apart by type.
    # Written so rather than with CoGroupByKey, whose tagging wraps every
    # value once more: on the in-process runner, which holds a grouping in
    # memory, that is a third more per listed file.
    planned = ((keyed, outputs, read)
               | 'AllSides' >> beam.Flatten()
               | 'JoinDone' >> beam.GroupByKey()
               | 'Plan' >> beam.ParDo(self._plan).with_outputs(
                   SKIPPED, FAILED, PAIRS, ORPHANS, main='todo'))
    return (planned.todo, planned[SKIPPED], planned[FAILED], planned[PAIRS],
            planned[ORPHANS])


class RecordFailures(beam.DoFn):
  """Failure -> the same Failure, once its pairs' files say so.

  For each pair of the failure: an output or marker an earlier run left
  (InputFile.stale, made for another identity) is removed, so no file on
  disk claims what the manifest does not; and where the failure is the
  image's own (Failure.permanent), a 'failed' marker remembers it: the next
  run with the same input and settings lists it as known instead of failing
  on it again. I/O failures are not remembered (retried next run).
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               failure_key: str, run_id: str,
               lease: Optional[WorkerLease] = None):
    """lease: as for EncodeAndWrite: files are only changed while this run
    holds the lease; None: no check."""
    self._layout = layout
    self._styles = list(styles)
    self._failure_key = failure_key
    self._run_id = run_id
    self._lease_spec = lease
    self._shared = shared.Shared()
    self._lease = None
    self._writer = None

  def setup(self):
    self._writer = storage.Writer(self._layout)
    if self._lease_spec:
      self._lease = worker_lease(self._shared, self._layout.output,
                                 self._lease_spec)

  def process(self, failure: Failure) -> Iterable[Failure]:
    item = failure.input
    if not item.key:
      yield failure
      return
    if self._lease is not None:
      try:
        self._lease.check_recent()
      except LeaseLost:
        yield failure  # Another run holds the folder now: touch nothing.
        return
    for style in affected_styles(failure, self._styles):
      marker_uri = self._layout.marker_uri(style.label, item.key)
      try:
        if style.label in item.stale:
          self._writer.delete([
              marker_uri, self._layout.output_uri(style.label, item.key)],
                              missing_ok=True)
        if failure.permanent:
          marker = Marker(status=MARKER_FAILED, identity=identity_of(
              item, style, self._failure_key), error=failure.error,
                          run_id=self._run_id)
          self._writer.write(marker_uri, marker.to_bytes(),
                             'application/json')
      except Exception as e:  # pylint: disable=broad-except
        # Not recorded: the next run tries the pair again.
        logger.warning('Could not record the failure of %s: %s', item.uri, e)
    yield failure


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
