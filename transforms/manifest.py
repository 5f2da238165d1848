"""The manifest sink: one JSON line per (input, style), plus summary.json."""

import json
import logging
from typing import Dict, Iterable, List, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import paths
from transforms.encode import write_atomically
from transforms.records import Failure, ManifestRow, Status, StyleRef

logger = logging.getLogger(__name__)

MANIFEST_PREFIX = 'manifest'
MANIFEST_SUFFIX = '.jsonl'
SUMMARY_NAME = 'summary.json'


def failure_rows(failure: Failure, styles: Sequence[StyleRef],
                 model: str, params: Dict) -> Iterable[ManifestRow]:
  """A Failure -> one failed row per affected style."""
  affected = [failure.style] if failure.style is not None else styles
  for style in affected:
    yield ManifestRow(
        input=failure.input.uri, style=style.uri, status=Status.FAILED,
        model=model, error=failure.error,
        source_width=failure.source_width,
        source_height=failure.source_height, params=dict(params),
        timings=dict(failure.timings))


def row_to_json(row: ManifestRow) -> str:
  return json.dumps(row.to_json_dict(), ensure_ascii=False, sort_keys=True)


def delete_stale_manifests(written: List[str], output: str) -> List[str]:
  """Removes manifest shards an earlier run left that this run did not write."""
  keep = {paths.join(w) for w in written}
  pattern = paths.join(output, MANIFEST_PREFIX + '*' + MANIFEST_SUFFIX)
  stale = [m.path for m in FileSystems.match([pattern])[0].metadata_list
           if paths.join(m.path) not in keep]
  if stale:
    logger.info('Removing %d stale manifest shard(s): %s', len(stale), stale)
    FileSystems.delete(stale)
  return sorted(keep)


class SummaryCombineFn(beam.CombineFn):
  """Counts rows per status and the most common failure reasons."""

  def create_accumulator(self):
    return {'counts': {s.value: 0 for s in Status}, 'errors': {}}

  def add_input(self, acc, row: ManifestRow):
    acc['counts'][row.status.value] += 1
    if row.error:
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
  return summary


def write_summary(acc: Dict, ignored: int, manifests: List[str],
                  output: str, info: Dict) -> Dict:
  summary = build_summary(acc, ignored, manifests, info)
  write_atomically(paths.join(output, SUMMARY_NAME),
                   json.dumps(summary, indent=2, sort_keys=True).encode(),
                   'application/json')
  return summary


class WriteManifest(beam.PTransform):
  """(ok ManifestRows, Failures, ignored paths) -> the written summary dict.

  Writes {output}/manifest-SSSSS-of-NNNNN.jsonl with Beam's WriteToText, then
  deletes shards of earlier runs, then writes {output}/summary.json, so the
  files always describe the latest run only.
  """

  def __init__(self, output: str, styles: Sequence[StyleRef], model: str,
               info: Dict, params: Dict):
    super().__init__()
    self._params = dict(params)
    self._output = output
    self._styles = list(styles)
    self._model = model
    self._info = dict(info)

  def expand(self, inputs):
    ok_rows, failures, ignored = inputs
    failed_rows = failures | 'FailureRows' >> beam.FlatMap(
        failure_rows, self._styles, self._model, self._params)
    rows = (ok_rows, failed_rows) | 'AllRows' >> beam.Flatten()
    written = (
        rows
        | 'ToJson' >> beam.Map(row_to_json)
        | 'WriteJsonl' >> beam.io.WriteToText(
            paths.join(self._output, MANIFEST_PREFIX),
            file_name_suffix=MANIFEST_SUFFIX,
            shard_name_template='-SSSSS-of-NNNNN'))
    manifests = (
        written
        | 'WrittenList' >> beam.combiners.ToList()
        | 'DeleteStale' >> beam.Map(delete_stale_manifests, self._output))
    counts = rows | 'Count' >> beam.CombineGlobally(SummaryCombineFn())
    n_ignored = ignored | 'CountIgnored' >> beam.combiners.Count.Globally()
    return counts | 'WriteSummary' >> beam.Map(
        write_summary,
        ignored=beam.pvalue.AsSingleton(n_ignored),
        manifests=beam.pvalue.AsSingleton(manifests),
        output=self._output, info=self._info)
