"""The stylize job: images in, stylized images and a manifest out."""

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs.options import (ConfigError, JobConfig, StylizeOptions,
                               is_dry_run, merge_config, validate)
from transforms import paths
from transforms.decode import ReadAndDecode
from transforms.encode import EncodeAndWrite
from transforms.incremental import SkipDone
from transforms.inputs import ListInputs
from transforms.manifest import SUMMARY_NAME, WriteManifest
from transforms.progress import ProgressMonitor, RecordProgress
from transforms.report import WriteReport
from transforms.routing import RouteImages
from transforms.storage import (use_anonymous_gcs_for_emulator,
                                write_atomically)
from transforms.stylize import Stylize

logger = logging.getLogger(__name__)


def build_pipeline(p: beam.Pipeline, job: JobConfig) -> None:
  """Wires the stages; no I/O happens here."""
  listed, ignored = p | 'ListInputs' >> ListInputs(
      job.input_specs, job.input_lists, job.base)
  # Counted before the reshuffle, so the total is known when work starts.
  _ = listed | 'CountPairs' >> beam.ParDo(
      RecordProgress(job.progress_dir, len(job.styles)))
  # Spread the file records over the workers before any pixels are read.
  files = listed | 'SpreadWork' >> beam.Reshuffle()
  todo, skipped = files | 'SkipDone' >> SkipDone(
      job.output, job.styles, job.output_format, job.job_key, job.model,
      job.row_params, job.force)
  decoded, decode_failed = todo | 'ReadAndDecode' >> ReadAndDecode(
      job.max_size, job.max_input_pixels)
  decoded, route_skipped, route_failed = _route(decoded, job)
  stylized, stylize_failed = decoded | 'Stylize' >> Stylize(
      job.model_source or job.model, job.styles, job.style_size,
      job.batch_size, job.tf_threads, job.style_params, job.model_sha256)
  ok_rows, write_failed = stylized | 'EncodeAndWrite' >> EncodeAndWrite(
      job.output, job.output_format, job.jpeg_quality, job.model,
      job.row_params, job.job_key)
  failures = ((decode_failed, stylize_failed, write_failed) + route_failed
              | 'AllFailures' >> beam.Flatten())
  if route_skipped:
    skipped = (skipped,) + route_skipped | 'AllSkipped' >> beam.Flatten()
  info = {
      'run_id': job.run_id,
      'model': job.model,
      'output': job.output,
      'styles': [{'uri': s.uri, 'label': s.label} for s in job.styles],
      'output_format': job.output_format,
      'max_size': job.max_size,
      'params': job.row_params,
  }
  if job.route_model:
    info['routing'] = {'route_model': job.route_model,
                       'router_id': job.router_id,
                       'routes': {c: list(s) for c, s in job.routes.items()}}
  rows, summary = (ok_rows, failures, skipped,
                   ignored) | 'WriteManifest' >> WriteManifest(
      job.output, job.styles, job.model, info, job.row_params,
      job.manifest_shards, job.progress_dir)
  _ = (rows, summary) | 'WriteReport' >> WriteReport(job.output, job.styles)


def _route(decoded, job: JobConfig):
  """With --route_model: classify, narrow each image's styles to its class's
  (transforms/routing.py). Returns (decoded, extra skipped, extra failed),
  the extras as tuples of PCollections to flatten in (empty without it)."""
  if not job.route_model:
    return decoded, (), ()
  routed, skipped, failed = decoded | 'Route' >> RouteImages(
      job.route_model, job.router_id, job.routes, job.batch_size, job.model,
      job.row_params, job.tf_threads, job.progress_dir)
  return routed, (skipped,), (failed,)


def parse(argv: Optional[Sequence[str]]) -> PipelineOptions:
  """Options from argv (and --config); also set for Beam FileSystems.

  With STORAGE_EMULATOR_HOST set (a GCS emulator), GCS is used anonymously
  at once (see transforms.storage.use_anonymous_gcs_for_emulator).
  """
  argv = merge_config(list(sys.argv[1:] if argv is None else argv))
  # Beam's --dry_run takes a value; a bare --dry_run means true.
  argv = ['--dry_run=true' if a == '--dry_run' else a for a in argv]
  argv = with_local_threads(argv)
  options = PipelineOptions(argv)
  FileSystems.set_options(options)
  use_anonymous_gcs_for_emulator()
  return options


def with_local_threads(argv: List[str]) -> List[str]:
  """Local runs use one worker thread per core unless told otherwise.

  Beam's DirectRunner runs one bundle at a time by default, so decoding the
  next images waits for the model. With a thread per core (cores capped at
  8), Pillow decodes (which releases the GIL) while TF infers; measured on 2
  cores at 1024 px: 2.82 -> 3.29 images/s. The threads share one model (see
  transforms/stylize.py). --direct_running_mode or --direct_num_workers on
  the command line (or a non-direct --runner) turn this off.
  """
  flags = ('--direct_running_mode', '--direct_num_workers')
  if any(a.startswith(flags) for a in argv):
    return argv
  for i, arg in enumerate(argv):
    runner = arg.split('=', 1)[1] if arg.startswith('--runner=') else (
        argv[i + 1] if arg == '--runner' and i + 1 < len(argv) else None)
    if runner and 'Direct' not in runner:
      return argv
  workers = max(1, min(8, os.cpu_count() or 1))
  return argv + ['--direct_running_mode=multi_threading',
                 f'--direct_num_workers={workers}']


def run(argv: Optional[Sequence[str]] = None,
        test_pipeline: Optional[beam.Pipeline] = None,
        check_model: bool = True,
        progress_dir: Optional[str] = None):
  """Parses, validates, builds and runs the job; returns the PipelineResult.

  Args:
    argv: command-line flags (sys.argv[1:] when None).
    test_pipeline: a TestPipeline to build on, instead of a new Pipeline.
    check_model: load the model once at launch to fail fast on a bad one.
    progress_dir: local folder for live progress events (see
      transforms.progress); None records Beam counters only.

  Raises:
    ConfigError: a configuration mistake, before any work.
  """
  options = parse(argv)
  job = validate(options, check_model=check_model)
  job.progress_dir = progress_dir
  start = time.time()
  p = test_pipeline or beam.Pipeline(options=options)
  build_pipeline(p, job)
  result = p.run()
  result.wait_until_finish()
  result.elapsed_s = time.time() - start  # For the closing summary.
  result.job = job
  finish_summary(job.output, result.elapsed_s)
  return result


def finish_summary(output: str, elapsed_s: float) -> dict:
  """Adds the run's wall time and throughput to summary.json."""
  summary = read_summary(output)
  summary['elapsed_s'] = round(elapsed_s, 3)
  summary['images_per_s'] = round(
      summary['counts'].get('ok', 0) / elapsed_s, 3) if elapsed_s > 0 else 0.0
  write_atomically(paths.join(output, SUMMARY_NAME),
                   json.dumps(summary, indent=2, sort_keys=True).encode(),
                   'application/json')
  return summary


def is_local_runner(options: PipelineOptions) -> bool:
  runner = options.view_as(StandardOptions).runner
  return runner is None or 'Direct' in str(runner) or 'Prism' in str(runner)


def read_summary(output: str) -> dict:
  with FileSystems.open(paths.join(output, SUMMARY_NAME)) as f:
    return json.loads(f.read().decode('utf-8'))


def format_summary(summary: dict, elapsed_s: float) -> str:
  counts = summary['counts']
  total = summary['total']
  rate = counts.get('ok', 0) / elapsed_s if elapsed_s > 0 else 0.0
  lines = [
      f"stylize run {summary['run_id']}: {total} (input, style) pairs in "
      f'{elapsed_s:.1f}s ({rate:.2f} images/s)',
      f"  ok {counts.get('ok', 0)}   failed {counts.get('failed', 0)}   "
      f"skipped {counts.get('skipped', 0)}   ignored files "
      f"{summary.get('files_ignored', 0)}",
      f"  output: {summary['output']}",
  ]
  for reason in summary.get('top_failure_reasons', [])[:5]:
    lines.append(f"  failed x{reason['count']}: {reason['reason']}")
  return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  """The console entry point: runs the job with progress and a summary."""
  # TF's C++ INFO/WARNING lines drown the job's own output; errors still show
  # and surface as Python exceptions. Must be set before TF is imported.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  logging.basicConfig(level=logging.WARNING,
                      format='%(levelname)s %(name)s: %(message)s')
  logging.getLogger('beam_jobs').setLevel(logging.INFO)
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    options = parse(argv)
    if is_dry_run(options):
      from beam_jobs.dry_run import dry_run, format_plan
      job = validate(options, check_model=False, probe_output=False)
      print(format_plan(dry_run(job, options), job))
      return 0
    quiet = options.view_as(StylizeOptions).quiet
    progress_dir = (tempfile.mkdtemp(prefix='stylize-progress-')
                    if is_local_runner(options) else None)
    try:
      if progress_dir:
        with ProgressMonitor(progress_dir, quiet=quiet):
          result = run(argv, progress_dir=progress_dir)
      else:
        result = run(argv)
    finally:
      if progress_dir:
        shutil.rmtree(progress_dir, ignore_errors=True)
  except ConfigError as e:
    print(f'stylize: error: {e}', file=sys.stderr)
    return 2
  summary = read_summary(result.job.output)
  print(format_summary(summary, result.elapsed_s))
  ratio = failure_ratio(summary)
  if ratio > result.job.max_failure_ratio:
    print(f'stylize: {ratio:.1%} of the pairs failed, more than '
          f'--max_failure_ratio {result.job.max_failure_ratio:.1%}; see the '
          'failed rows in the manifest.', file=sys.stderr)
    return 1
  return 0


def failure_ratio(summary: dict) -> float:
  total = summary.get('total', 0)
  return summary['counts'].get('failed', 0) / total if total else 0.0


if __name__ == '__main__':
  sys.exit(main())
