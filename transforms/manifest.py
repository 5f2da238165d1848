"""The manifest sink: one JSON line per (input, style), plus summary.json.

Rows are written by a Beam file sink (temporary files, then finalize), so the
runner shards them and a retried bundle never duplicates or loses a row; the
summary comes from a combiner, which lifts before the shuffle. No step
gathers every row on one worker.
"""

import hashlib
import json
import logging
import posixpath
import time
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystems import FileSystems

from transforms import storage
from transforms.layout import MANIFEST_SUFFIX, OutputLayout, naming_rule_uri
from transforms.lease import Lease
from transforms.records import ManifestRow, Status, StyleRef
from transforms.rows import failure_rows, with_run_fields
from transforms.waves import Wave

logger = logging.getLogger(__name__)

SHARD_TEMPLATE = '-SSSSS-of-NNNNN'


def row_to_json(row: ManifestRow) -> str:
  return json.dumps(row.to_json_dict(), ensure_ascii=False, sort_keys=True)


def row_to_line(row: ManifestRow, info: Optional[Dict] = None) -> bytes:
  """One manifest line. Names that are not valid UTF-8 (possible in local
  file names) are written as JSON \\u escapes, so every line stays valid
  UTF-8 JSON and reads back to the exact name."""
  if info is not None:
    row = with_run_fields(row, info)
  text = row_to_json(row)
  try:
    return text.encode('utf-8')
  except UnicodeEncodeError:
    return json.dumps(row.to_json_dict(), ensure_ascii=True,
                      sort_keys=True).encode('ascii')


class ManifestSink(filebasedsink.FileBasedSink):
  """JSON lines in {output}/manifest-SSSSS-of-NNNNN.jsonl, through Beam's
  file-sink protocol: each bundle writes a temporary file, and finalize
  renames the committed ones into place (a retried bundle's file is dropped).

  The temporary files live in the run's own folder below {output}/.stylize/
  (not Beam's default beam-temp-* folder beside the shards), so a killed run
  leaves nothing among the user's files, and the next run removes them.
  """

  def __init__(self, layout: OutputLayout, num_shards: int = 0,
               wave: Optional[Wave] = None, check_lease: bool = False):
    """check_lease: the run holds a lease on the output (transforms/
    lease.py): the shards replace the earlier manifest only while it does,
    so a run whose folder was taken over never overwrites the new
    holder's manifest."""
    super().__init__(
        layout.manifest_prefix(wave.shard_tag() if wave else ''),
        coder=coders.BytesCoder(),
        file_name_suffix=MANIFEST_SUFFIX, num_shards=num_shards,
        shard_name_template=SHARD_TEMPLATE, mime_type='application/x-ndjson',
        compression_type='uncompressed')
    self._layout = layout
    self._wave = wave
    self._check_lease = check_lease

  def initialize_write(self):
    tmp = posixpath.join(self._layout.tmp_dir(), f'manifest-{uuid.uuid4().hex}')
    FileSystems.mkdirs(tmp)
    return tmp

  def write_encoded_record(self, file_handle, encoded_value):
    file_handle.write(encoded_value)
    file_handle.write(b'\n')

  def pre_finalize(self, init_result, writer_results):
    """Before the shards are renamed into place: removes every manifest
    shard of earlier runs (Beam's own pre_finalize only removes those with
    this run's shard count), so {output}/manifest-*.jsonl is this run's
    alone. Only top-level files of exactly the shard shape are touched. In
    a run split into waves only the first wave does this: the later waves'
    shards join the first's."""
    if self._check_lease:
      Lease(self._layout.output, self._layout.run_id,
            process=False).check_recent(0)  # Raises LeaseLost.
    if self._wave is not None and not self._wave.first:
      return
    stale = [e.path for e in storage.iter_top_files(
        self._layout.manifest_prefix())
             if self._layout.is_manifest_shard(e.path)]
    if stale:
      logger.info('Replacing %d manifest shard(s) of an earlier run',
                  len(stale))
      FileSystems.delete(stale)


class SummaryCombineFn(beam.CombineFn):
  """Counts rows per status and the most common failure reasons."""

  def create_accumulator(self):
    return {'counts': {s.value: 0 for s in Status}, 'errors': {},
            'classes': {}, 'known': 0, 'engines': {}}

  def add_input(self, acc, row: ManifestRow):
    acc['counts'][row.status.value] += 1
    if row.status == Status.OK and row.engine:
      made_with = f'{row.engine} {row.precision}'
      acc['engines'][made_with] = acc['engines'].get(made_with, 0) + 1
    if row.status == Status.FAILED and row.known:
      acc['known'] += 1
    if row.image_class is not None:
      # Routed runs: rows per class and status, for the report's grouping.
      per = acc['classes'].setdefault(row.image_class,
                                      {s.value: 0 for s in Status})
      per[row.status.value] += 1
    if row.error and row.status == Status.FAILED:
      # Group reasons without the image-specific detail in parentheses,
      # e.g. 'decode: corrupt or truncated image data'.
      reason = row.error.split(' (', 1)[0]
      acc['errors'][reason] = acc['errors'].get(reason, 0) + 1
    return acc

  def merge_accumulators(self, accs):
    out = self.create_accumulator()
    for acc in accs:
      out['known'] += acc.get('known', 0)
      for k, v in acc.get('engines', {}).items():
        out['engines'][k] = out['engines'].get(k, 0) + v
      for k, v in acc['counts'].items():
        out['counts'][k] += v
      for k, v in acc['errors'].items():
        out['errors'][k] = out['errors'].get(k, 0) + v
      for name, per in acc.get('classes', {}).items():
        mine = out['classes'].setdefault(name, {s.value: 0 for s in Status})
        for k, v in per.items():
          mine[k] += v
    return out

  def extract_output(self, acc):
    return acc


# summary.json names at most this many ignored files (the first by path).
IGNORED_LISTED = 20
# ... and this many failed pairs (the first by input path), with reasons.
FAILED_LISTED = 10
# ... and this many outputs of files that are no inputs (any more).
ORPHANS_LISTED = 5


def failed_sample(row: ManifestRow) -> Tuple[bool, str, str, str]:
  """A failed row as summary.json's `failed_pairs` keep it: sorted new
  failures first (they decide the verdict), then by input."""
  return (bool(row.known), row.input, row.style or '', row.error or '')


def _failed_pairs(samples: Sequence[Tuple[bool, str, str, str]]) -> List[Dict]:
  return [{'input': i, 'style': s or None, 'error': e, 'known': k}
          for k, i, s, e in sorted(samples)[:FAILED_LISTED]]


def build_summary(acc: Dict, ignored: int, manifests: List[str],
                  info: Dict, expected_pairs: Optional[int] = None,
                  ignored_files: Sequence[str] = (),
                  failed: Sequence[Tuple[bool, str, str, str]] = ()) -> Dict:
  """summary.json's content, with the run's verdict (see verdict())."""
  counts = acc['counts']
  top = sorted(acc['errors'].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
  summary = dict(info)
  elapsed = max(0.0, time.time() - info.get('started_at', time.time()))
  summary.update({
      'elapsed_s': round(elapsed, 3),
      'images_per_s': round(counts.get('ok', 0) / elapsed, 3) if elapsed else 0.0,
      'counts': counts,
      'total': sum(counts.values()),
      'files_ignored': ignored,
      'ignored_files': sorted(ignored_files)[:IGNORED_LISTED],
      'top_failure_reasons': [{'reason': r, 'count': n} for r, n in top],
      # Known: failed the same way in an earlier run and not retried; they
      # do not count against --max_failure_ratio.
      'failed_known': acc.get('known', 0),
      'failed_new': counts.get('failed', 0) - acc.get('known', 0),
      'failed_pairs': _failed_pairs(failed),
      # What ran the network for this run's outputs: 'openvino bf16': n.
      'engines_used': dict(sorted(acc.get('engines', {}).items())),
      'manifest': manifests,
      'expected_pairs': expected_pairs,
  })
  if acc.get('classes'):
    summary['classes'] = {k: acc['classes'][k] for k in sorted(acc['classes'])}
  summary['verdict'], summary['verdict_reason'] = verdict(summary)
  return summary


def verdict(summary: Dict) -> Tuple[str, str]:
  """('ok' | 'incomplete' | 'too_many_failures', why) for a summary.

  'incomplete': the manifest does not hold the rows the listed inputs must
  give (one per (input, style) pair; with routing, one per routed style or
  one for an unrouted image); such a run must never pass as a success.
  """
  total = summary['total']
  expected = summary.get('expected_pairs')
  if expected is not None and total != expected:
    return 'incomplete', (
        f'the manifest holds {total} rows for {expected} listed (input, style) '
        f'pairs; {abs(expected - total)} '
        f'{"missing" if total < expected else "too many"}. Rerun: finished '
        'outputs are skipped, the rest is redone.')
  failed = summary.get('failed_new', summary['counts'].get('failed', 0))
  limit = summary.get('max_failure_ratio')
  ratio = failed / total if total else 0.0
  if limit is not None and ratio > limit:
    known = summary.get('failed_known', 0)
    return 'too_many_failures', (
        f'{failed} of {total} pairs ({ratio:.1%}) are new failures, more '
        f'than --max_failure_ratio {limit:.1%}; see the failed rows in the '
        'manifest.' + (f' ({known} known failure(s) from earlier runs are '
                       'not counted.)' if known else ''))
  return 'ok', ''


class JobFailed(RuntimeError):
  """Raised by the pipeline's last step on runners that must fail the job."""


def enforce_verdict(summary: Dict) -> Dict:
  """The job's last step where the job itself must fail (remote runners):
  after summary.json and the report are written, a bad verdict fails it."""
  if summary['verdict'] != 'ok':
    raise JobFailed(f'stylize run {summary["run_id"]}: '
                    f'{summary["verdict_reason"]}')
  return summary


def write_summary(acc: Dict, ignored: int, manifests: List[str],
                  expected_pairs: int, layout: OutputLayout,
                  info: Dict, ignored_files: Sequence[str] = (),
                  wave: Optional[Wave] = None,
                  failed: Sequence[Tuple[bool, str, str, str]] = (),
                  input_set: Optional[Tuple[int, int]] = None,
                  orphans: int = 0,
                  orphan_files: Sequence[str] = ()) -> Dict:
  """Writes summary.json (in a run split into waves: of every wave so far).

  input_set: (count, digest) of every input this wave listed (all waves'
  shares, InputSetFn); a later wave that lists another set than the first
  makes the run 'incomplete': a file renamed between waves could fall into
  a wave that already ran.
  """
  changed = ''
  if wave is not None:
    # The run so far: this wave's counts merged with the earlier waves', so
    # summary.json always describes every wave done (transforms/waves.py).
    earlier = wave.load('summary')
    first_set = input_set
    if earlier is not None:
      first_set = earlier['input_set']
      changed = earlier['inputs_changed']
      if not changed and input_set != first_set:
        changed = (f'wave 1 listed {first_set[0]} input files, wave '
                   f'{wave.index + 1} {input_set[0]} (or other ones)')
      acc = SummaryCombineFn().merge_accumulators([earlier['acc'], acc])
      ignored += earlier['ignored']
      manifests = sorted(earlier['manifests'] + list(manifests))
      expected_pairs += earlier['expected_pairs']
      ignored_files = sorted(list(earlier['ignored_files']) +
                             list(ignored_files))[:IGNORED_LISTED]
      failed = sorted(list(earlier['failed']) + list(failed))[:FAILED_LISTED]
      orphans += earlier.get('orphans', 0)
      orphan_files = sorted(list(earlier.get('orphan_files', [])) +
                            list(orphan_files))[:ORPHANS_LISTED]
    if not wave.last:
      wave.save('summary', {'acc': acc, 'ignored': ignored,
                            'manifests': list(manifests),
                            'expected_pairs': expected_pairs,
                            'ignored_files': list(ignored_files),
                            'failed': list(failed),
                            'orphans': orphans,
                            'orphan_files': list(orphan_files),
                            'input_set': first_set,
                            'inputs_changed': changed})
    info = dict(info, waves=wave.count)
  summary = build_summary(acc, ignored, manifests, info, expected_pairs,
                          ignored_files, failed)
  # Outputs of files that are no inputs any more (deleted, moved, or named
  # by an earlier naming rule): left in place, and said.
  summary['orphaned_outputs'] = orphans
  summary['orphaned_output_files'] = sorted(orphan_files)[:ORPHANS_LISTED]
  if wave is not None:
    summary['waves_done'] = wave.index + 1
    if changed and summary['verdict'] == 'ok':
      summary['verdict'], summary['verdict_reason'] = 'incomplete', (
          f'the inputs changed while the run ran: {changed}. A file added, '
          'removed or renamed between waves may have been left out. Rerun: '
          'finished outputs are skipped, the rest is done.')
    if not wave.last:
      # Read before the run ends (or after it was killed), this file must not
      # pass for a finished run.
      summary['verdict'], summary['verdict_reason'] = 'incomplete', (
          f'{wave.index + 1} of {wave.count} waves done; the run stopped '
          'before the rest. Rerun: finished outputs are skipped.')
  storage.write_file(layout, layout.summary_uri(),
                     json.dumps(summary, indent=2, sort_keys=True).encode(),
                     'application/json')
  if info.get('naming_rule') and (wave is None or wave.last):
    # The rule this run named outputs by: a later run notes a change once.
    storage.write_file(layout, naming_rule_uri(layout.output),
                       f'{info["naming_rule"]}\n'.encode())
  return summary


class InputSetFn(beam.CombineFn):
  """Listed inputs -> (count, order-free digest of their names): equal for
  equal listings, whatever the order (a sum of 64-bit hashes)."""

  def create_accumulator(self):
    return (0, 0)

  def add_input(self, acc, name: str):
    digest = hashlib.blake2b(name.encode('utf-8', 'surrogatepass'),
                             digest_size=8).digest()
    return acc[0] + 1, (acc[1] + int.from_bytes(digest, 'big')) % (1 << 64)

  def merge_accumulators(self, accs):
    count = total = 0
    for n, digest in accs:
      count += n
      total = (total + digest) % (1 << 64)
    return count, total

  def extract_output(self, acc):
    return acc


# What RunTotalsFn adds up, by kind of element.
ROW, IGNORED, ORPHAN, PAIRS, INPUT = 'row', 'ignored', 'orphan', 'pairs', 'input'


def _smallest(items: List, n: int) -> List:
  return sorted(items)[:n]


class RunTotalsFn(beam.CombineFn):
  """Everything summary.json adds up, in one combiner: (kind, value)
  elements -> the rows' counts (SummaryCombineFn), the first failed pairs,
  the ignored files and the orphaned outputs (counts and the first of each
  by name), the expected rows and the listed input set (waves).

  Written as one CombineFn rather than a Beam combiner per figure (Count,
  Top.Smallest, ToList, ...) because each global combine is its own stages
  and side input: eight of them were most of the pipeline's graph, paid
  again by every run and every wave. Lists are kept to their first n as
  they grow, so the accumulator stays small.
  """

  _LISTS = {'failed': FAILED_LISTED, 'ignored_files': IGNORED_LISTED,
            'orphan_files': ORPHANS_LISTED}

  def __init__(self):
    self._rows = SummaryCombineFn()
    self._inputs = InputSetFn()

  def create_accumulator(self):
    return {'acc': self._rows.create_accumulator(), 'failed': [],
            'ignored': 0, 'ignored_files': [], 'orphans': 0,
            'orphan_files': [], 'expected_pairs': 0,
            'input_set': self._inputs.create_accumulator()}

  def _trim(self, acc, key):
    if len(acc[key]) > 2 * self._LISTS[key]:
      acc[key] = _smallest(acc[key], self._LISTS[key])

  def add_input(self, acc, element):
    kind, value = element
    if kind == ROW:
      acc['acc'] = self._rows.add_input(acc['acc'], value)
      if value.status == Status.FAILED:
        acc['failed'].append(failed_sample(value))
        self._trim(acc, 'failed')
    elif kind == IGNORED:
      acc['ignored'] += 1
      acc['ignored_files'].append(value)
      self._trim(acc, 'ignored_files')
    elif kind == ORPHAN:
      acc['orphans'] += 1
      acc['orphan_files'].append(value)
      self._trim(acc, 'orphan_files')
    elif kind == PAIRS:
      acc['expected_pairs'] += value
    elif kind == INPUT:
      acc['input_set'] = self._inputs.add_input(acc['input_set'], value)
    else:
      raise ValueError(f'RunTotalsFn: unknown kind {kind!r}')
    return acc

  def merge_accumulators(self, accs):
    accs = list(accs)
    out = self.create_accumulator()
    out['acc'] = self._rows.merge_accumulators([a['acc'] for a in accs])
    out['input_set'] = self._inputs.merge_accumulators(
        [a['input_set'] for a in accs])
    for key in ('ignored', 'orphans', 'expected_pairs'):
      out[key] = sum(a[key] for a in accs)
    for key, n in self._LISTS.items():
      out[key] = _smallest([x for a in accs for x in a[key]], n)
    return out

  def extract_output(self, acc):
    return dict(acc, **{key: _smallest(acc[key], n)
                        for key, n in self._LISTS.items()})


def _tagged(kind: str):
  return lambda value: (kind, value)


def summarize(totals: Dict, manifests: List[str], layout: OutputLayout,
              info: Dict, wave: Optional[Wave] = None,
              with_input_set: bool = False) -> Dict:
  """RunTotalsFn's totals -> write_summary."""
  return write_summary(
      totals['acc'], totals['ignored'], sorted(manifests),
      totals['expected_pairs'], layout, info,
      ignored_files=totals['ignored_files'], wave=wave,
      failed=totals['failed'],
      input_set=tuple(totals['input_set']) if with_input_set else None,
      orphans=totals['orphans'], orphan_files=totals['orphan_files'])


class WriteManifest(beam.PTransform):
  """(ok rows, Failures, other rows, ignored paths) -> (rows, summary).

  Writes the manifest shards (replacing those of earlier runs), then
  {output}/summary.json, so the files always describe the latest run only.
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               row_info: Dict, info: Dict, shards: int = 0,
               wave: Optional[Wave] = None, check_lease: bool = False):
    """Args:
      info: what summary.json carries besides counts (run id, model, ...,
        max_failure_ratio).
      wave: in a run split into waves, this wave (transforms/waves.py).
    """
    super().__init__()
    self._layout = layout
    self._styles = list(styles)
    self._row_info = dict(row_info)
    self._info = dict(info)
    self._shards = shards
    self._wave = wave
    self._check_lease = check_lease

  def expand(self, inputs):
    """inputs: (ok rows, Failures, (other row PCollections), ignored paths,
    rows expected per input (ints), (row-count corrections)). The manifest
    must hold exactly the expected rows: one per (input, style), give or
    take the corrections (routing: rows for an image's class only)."""
    ok_rows, failures, other_rows, ignored, expected_rows, deltas = inputs[:6]
    orphans = inputs[6] if len(inputs) > 6 else None
    input_names = inputs[7] if len(inputs) > 7 else None
    failed_rows = failures | 'FailureRows' >> beam.FlatMap(
        failure_rows, self._styles, self._row_info)
    rows = ((ok_rows, failed_rows) + tuple(other_rows)
            | 'AllRows' >> beam.Flatten())
    written = (rows
               | 'ToJson' >> beam.Map(row_to_line, self._row_info)
               | 'WriteJsonl' >> beam.io.Write(
                   ManifestSink(self._layout, self._shards, self._wave,
                                self._check_lease)))
    manifests = written | 'WrittenList' >> beam.combiners.ToList()
    # Every figure of the summary, tagged by kind, in one combiner.
    parts = [rows | 'TagRows' >> beam.Map(_tagged(ROW)),
             ignored | 'TagIgnored' >> beam.Map(_tagged(IGNORED)),
             expected_rows | 'TagPairs' >> beam.Map(_tagged(PAIRS))]
    parts += [d | f'TagCorrections{i}' >> beam.Map(_tagged(PAIRS))
              for i, d in enumerate(deltas)]
    if orphans is not None:
      parts.append(orphans | 'TagOrphans' >> beam.Map(_tagged(ORPHAN)))
    if input_names is not None:
      parts.append(input_names | 'TagInputs' >> beam.Map(_tagged(INPUT)))
    totals = (parts
              | 'AllFigures' >> beam.Flatten()
              | 'Totals' >> beam.CombineGlobally(RunTotalsFn()))
    summary = totals | 'WriteSummary' >> beam.Map(
        summarize, manifests=beam.pvalue.AsSingleton(manifests),
        layout=self._layout, info=self._info, wave=self._wave,
        with_input_set=input_names is not None)
    return rows, summary
