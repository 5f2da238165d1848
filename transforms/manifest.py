"""The manifest sink: one JSON line per (input, style), plus summary.json."""

import hashlib
import json
import logging
from typing import Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam

from transforms import paths
from transforms.storage import delete_files, list_files, write_atomically
from transforms.progress import RecordProgress
from transforms.records import Failure, ManifestRow, Status, StyleRef

logger = logging.getLogger(__name__)

MANIFEST_PREFIX = 'manifest'
MANIFEST_SUFFIX = '.jsonl'
SUMMARY_NAME = 'summary.json'


def failure_rows(failure: Failure, styles: Sequence[StyleRef],
                 model: str, params: Dict) -> Iterable[ManifestRow]:
  """A Failure -> one failed row per affected style."""
  affected = [failure.style] if failure.style is not None else [
      s for s in styles if s.label in failure.input.todo]
  for style in affected:
    yield ManifestRow(
        input=failure.input.uri, style=style.uri, status=Status.FAILED,
        model=model, error=failure.error,
        source_width=failure.source_width,
        source_height=failure.source_height, params=dict(params),
        timings=dict(failure.timings),
        image_class=failure.input.image_class,
        class_score=failure.input.class_score)


def row_to_json(row: ManifestRow) -> str:
  return json.dumps(row.to_json_dict(), ensure_ascii=False, sort_keys=True)


def shard_name(output: str, index: int, count: int) -> str:
  return paths.join(output, f'{MANIFEST_PREFIX}-{index:05d}-of-{count:05d}'
                    f'{MANIFEST_SUFFIX}')


def shard_of(row: ManifestRow, count: int) -> int:
  """A stable shard for a row (the same on every worker and every run)."""
  digest = hashlib.sha1(f'{row.input}\0{row.style}'.encode()).digest()
  return int.from_bytes(digest[:4], 'big') % count


def write_shard(keyed: Tuple[int, Iterable[ManifestRow]], output: str,
                count: int) -> str:
  """Writes one manifest shard, rows sorted, under its final name.

  Written by hand rather than WriteToText: Beam's file sinks finalise with a
  batch rename, which the GCS emulator cannot serve, and a shard written
  whole under a deterministic name is already idempotent when a bundle is
  retried.
  """
  index, rows = keyed
  lines = sorted(row_to_json(r) for r in rows)
  uri = shard_name(output, index, count)
  write_atomically(uri, ('\n'.join(lines) + '\n').encode('utf-8'),
                   'application/x-ndjson')
  return uri


def delete_stale_manifests(written: List[str], output: str) -> List[str]:
  """Removes manifest shards an earlier run left that this run did not write."""
  keep = {paths.join(w) for w in written}
  pattern = paths.join(output, MANIFEST_PREFIX + '*' + MANIFEST_SUFFIX)
  stale = [m.path for m in list_files(pattern) if paths.join(m.path) not in keep]
  if stale:
    logger.info('Removing %d stale manifest shard(s): %s', len(stale), stale)
    delete_files(stale)
  return sorted(keep)


class SummaryCombineFn(beam.CombineFn):
  """Counts rows per status and the most common failure reasons."""

  def create_accumulator(self):
    return {'counts': {s.value: 0 for s in Status}, 'errors': {},
            'classes': {}}

  def add_input(self, acc, row: ManifestRow):
    acc['counts'][row.status.value] += 1
    if row.image_class is not None:
      # Routed runs: rows per class and status, for the report's grouping.
      per = acc['classes'].setdefault(row.image_class,
                                      {s.value: 0 for s in Status})
      per[row.status.value] += 1
    if row.error and row.status == Status.FAILED:
      # Group reasons without the image-specific detail after the first ':'
      # of the message proper, e.g. 'decode: corrupt or truncated image data'.
      reason = row.error.split(' (', 1)[0]
      acc['errors'][reason] = acc['errors'].get(reason, 0) + 1
    return acc

  def merge_accumulators(self, accs):
    out = self.create_accumulator()
    for acc in accs:
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


def build_summary(acc: Dict, ignored: int, manifests: List[str],
                  info: Dict) -> Dict:
  counts = acc['counts']
  top = sorted(acc['errors'].items(), key=lambda kv: (-kv[1], kv[0]))[:10]
  summary = dict(info)
  summary.update({
      'counts': counts,
      'total': sum(counts.values()),
      'files_ignored': ignored,
      'top_failure_reasons': [{'reason': r, 'count': n} for r, n in top],
      'manifest': manifests,
  })
  if acc.get('classes'):
    summary['classes'] = {k: acc['classes'][k] for k in sorted(acc['classes'])}
  return summary


def write_summary(acc: Dict, ignored: int, manifests: List[str],
                  output: str, info: Dict) -> Dict:
  summary = build_summary(acc, ignored, manifests, info)
  write_atomically(paths.join(output, SUMMARY_NAME),
                   json.dumps(summary, indent=2, sort_keys=True).encode(),
                   'application/json')
  return summary


class WriteManifest(beam.PTransform):
  """(ok rows, Failures, skipped rows, ignored paths) -> (rows, summary).

  Writes {output}/manifest-SSSSS-of-NNNNN.jsonl, then deletes shards of
  earlier runs, then writes {output}/summary.json, so the files always
  describe the latest run only.
  """

  def __init__(self, output: str, styles: Sequence[StyleRef], model: str,
               info: Dict, params: Dict, shards: int = 1,
               progress_dir: str = None):
    super().__init__()
    self._progress_dir = progress_dir
    self._shards = shards
    self._params = dict(params)
    self._output = output
    self._styles = list(styles)
    self._model = model
    self._info = dict(info)

  def expand(self, inputs):
    ok_rows, failures, skipped_rows, ignored = inputs
    failed_rows = failures | 'FailureRows' >> beam.FlatMap(
        failure_rows, self._styles, self._model, self._params)
    rows = (ok_rows, failed_rows, skipped_rows) | 'AllRows' >> beam.Flatten()
    _ = rows | 'Progress' >> beam.ParDo(RecordProgress(self._progress_dir))
    written = (
        rows
        | 'KeyByShard' >> beam.Map(lambda r, n: (shard_of(r, n), r),
                                   self._shards)
        | 'GroupByShard' >> beam.GroupByKey()
        | 'WriteJsonl' >> beam.Map(write_shard, self._output, self._shards))
    manifests = (
        written
        | 'WrittenList' >> beam.combiners.ToList()
        | 'DeleteStale' >> beam.Map(delete_stale_manifests, self._output))
    counts = rows | 'Count' >> beam.CombineGlobally(SummaryCombineFn())
    n_ignored = ignored | 'CountIgnored' >> beam.combiners.Count.Globally()
    summary = counts | 'WriteSummary' >> beam.Map(
        write_summary,
        ignored=beam.pvalue.AsSingleton(n_ignored),
        manifests=beam.pvalue.AsSingleton(manifests),
        output=self._output, info=self._info)
    return rows, summary
