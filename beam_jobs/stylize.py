"""The stylize job: images in, stylized images and a manifest out."""

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import Callable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import runners
from beam_jobs.config import merge_config
from beam_jobs.errors import ConfigError
from beam_jobs.flags import (PROG, StylizeOptions, check_flags, help_parser,
                             is_dry_run, wants_help)
from beam_jobs.options import JobConfig, validate
from beam_jobs.waves import expected_pairs, run_waves, wave_count
from transforms import rows
from transforms.decode import ReadAndDecode
from transforms.encode import EncodeAndWrite
from transforms.incremental import (RecordFailures, RemoveStaleTemporary,
                                    SkipDone)
from transforms.inputs import ListInputs
from transforms.layout import NAMING_RULE, SUMMARY_NAME
from transforms.lease import (SUBMITTED_EXPIRY_S, Lease, LeaseHeld,
                              WorkerLease, held_message, release_at_end)
from transforms.manifest import WriteManifest, enforce_verdict
from transforms.native_logs import quiet_start
from transforms.progress import (ProgressMonitor, RecordProgress,
                                 record_expected)
from transforms.records import describe_error
from transforms.report import WriteReport
from transforms.routing import RouteImages
from transforms.storage import remove_own_temporary_at_exit
from transforms.stylize import Stylize

logger = logging.getLogger(__name__)


def build_pipeline(p: beam.Pipeline, job: JobConfig) -> None:
  """Wires the stages; no I/O happens here."""
  layout = job.layout
  o = job.settings
  row_info = rows.row_info(job.model, job.row_params, job.run_id)
  listed, ignored = p | 'ListInputs' >> ListInputs(
      job.input_specs, job.input_lists, layout)
  if job.wave is not None:
    # Each wave counts the ignored files of its own share of paths.
    ignored = ignored | 'IgnoredOfWave' >> beam.Filter(
        job.wave.holds)
  _ = p | 'RemoveStaleTemporary' >> RemoveStaleTemporary(layout)
  # The planning join merges aliases, skips done pairs and spreads the work
  # over the workers by key, before any pixels are read.
  todo, skipped, unusable, pairs, orphans = listed | 'SkipDone' >> SkipDone(
      layout, job.styles, job.job_key, job.failure_key, row_info, o.force,
      job.wave, o.retry_failed, job.io_threads)
  # The progress total: rows each input must give, known when work starts.
  _ = pairs | 'CountPairs' >> beam.ParDo(RecordProgress(job.progress_dir))
  decoded, decode_failed = todo | 'ReadAndDecode' >> ReadAndDecode(
      job.max_size, o.max_input_pixels, o.max_input_bytes, o.keep_gps,
      job.io_threads)
  decoded, route_skipped, route_failed, row_deltas = _route(
      decoded, job, row_info)
  stylized, stylize_failed = decoded | 'Stylize' >> Stylize(
      job.model_source, job.styles, o.style_size, o.batch_size,
      job.tf_threads, job.style_params, o.model_sha256,
      job.model_fingerprint, o.engine, o.precision, layout.errors_dir())
  # Every worker process that writes checks the run holds the lease on
  # --output; on remote runners the workers also keep its heartbeat.
  lease = WorkerLease(job.run_id, heartbeat=job.fail_job_on_verdict,
                      take=job.workers_take_lease)
  ok_rows, write_failed = stylized | 'EncodeAndWrite' >> EncodeAndWrite(
      layout, o.jpeg_quality, row_info, job.job_key, job.io_threads,
      lease=lease)
  # Progress is recorded on each branch where its rows are made, so it
  # moves while images are stylized (after a Flatten it would only move
  # once every branch is done).
  failures = []
  for name, failed in (('Decode', decode_failed), ('Stylize', stylize_failed),
                       ('Write', write_failed)) + route_failed:
    _ = failed | f'Progress{name}Failed' >> beam.ParDo(
        RecordProgress(job.progress_dir))
    failures.append(failed)
  other_rows = (skipped, unusable) + route_skipped
  for name, branch in (('Ok', ok_rows), ('Skipped', skipped),
                       ('Unusable', unusable)) + tuple(
                           ('RouteSkipped', r) for r in route_skipped):
    _ = branch | f'Progress{name}' >> beam.ParDo(
        RecordProgress(job.progress_dir))
  # A failed pair's files are set right before the manifest is written:
  # an earlier output made for another identity removed, a failure of the
  # image itself remembered in its marker (transforms/incremental.py).
  failures = (tuple(failures)
              | 'AllFailures' >> beam.Flatten()
              | 'RecordFailures' >> beam.ParDo(RecordFailures(
                  layout, job.styles, job.failure_key, job.run_id, lease)))
  info = {
      'run_id': job.run_id,
      'model': job.model,
      'model_fingerprint': job.model_fingerprint,
      'output': job.output,
      'styles': [{'uri': s.uri, 'label': s.label,
                  'fingerprint': s.fingerprint} for s in job.styles],
      'output_format': o.output_format,
      'max_size': job.max_size,
      'params': job.row_params,
      'engine': {'engine': o.engine, 'precision': o.precision},
      'naming_rule': NAMING_RULE,
      'started_at': job.started_at,
      'max_failure_ratio': o.max_failure_ratio,
  }
  if job.naming_note:
    info['naming_rule_note'] = job.naming_note
  if job.route_model:
    info['routing'] = {'route_model': job.route_model,
                       'router_id': job.router_id,
                       'router_fingerprint': job.router_fingerprint,
                       'routes': {c: list(s) for c, s in job.routes.items()}}
  manifest_inputs = (ok_rows, failures, other_rows, ignored, pairs,
                     row_deltas, orphans)
  if job.wave is not None:
    # Each wave lists every input: a later wave that sees another set than
    # the first makes the run incomplete (transforms/manifest.py).
    manifest_inputs += (listed | 'InputNames' >> beam.Map(input_name),)
  all_rows, summary = manifest_inputs | 'WriteManifest' >> WriteManifest(
      layout, job.styles, row_info, info, o.manifest_shards, job.wave,
      check_lease=True)
  report = (all_rows, summary) | 'WriteReport' >> WriteReport(
      layout, job.styles, job.wave, (o.max_input_bytes, o.max_input_pixels),
      job.io_threads)
  if job.fail_job_on_verdict:
    # Remote runners: the job releases its lease once summary.json and the
    # report are written; then a bad run fails as a job, so schedulers see
    # it.
    released = summary | 'ReleaseLease' >> beam.Map(
        release_lease, job.output, job.run_id,
        report_written=beam.pvalue.AsSingleton(report))
    _ = released | 'Verdict' >> beam.Map(enforce_verdict)


def input_name(item) -> str:
  """An input's name in the wave check: its canonical URI."""
  return item.uri


def release_lease(summary: dict, output: str, run_id: str,
                  report_written=None) -> dict:
  """The remote job's release of its lease (after the report)."""
  del report_written  # Only orders this step after the report.
  release_at_end(output, run_id)
  return summary


def _route(decoded, job: JobConfig, row_info):
  """With --route_model: classify, narrow each image's styles to its class's
  (transforms/routing.py). Returns (decoded, extra skipped rows, extra
  failures, row-count corrections); the extras are tuples, empty without a
  router."""
  if not job.route_model:
    return decoded, (), (), ()
  routed, skipped, failed, deltas = decoded | 'Route' >> RouteImages(
      job.route_model, job.router_id, job.routes, job.settings.batch_size,
      row_info, job.tf_threads, job.progress_dir, job.router_fingerprint,
      job.layout.errors_dir())
  return routed, (skipped,), (('Route', failed),), (deltas,)


def parse(argv: Optional[Sequence[str]]) -> PipelineOptions:
  """Options from argv (and --config); also set for Beam FileSystems.

  -h/--help prints the job's flags and exits (SystemExit 0).

  Raises:
    ConfigError: an unknown flag or --config key (naming the nearest real
      one), a stray value, or a value of the wrong type.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if wants_help(argv):
    help_parser().print_help()
    raise SystemExit(0)
  argv = bare_dry_run_means_true(merge_config(argv))
  check_flags(argv)
  argv = with_local_defaults(argv)
  options = PipelineOptions(argv)
  FileSystems.set_options(options)
  return options


def bare_dry_run_means_true(argv: List[str]) -> List[str]:
  """Beam's --dry_run takes a value: a bare --dry_run means --dry_run=true
  ('--dry_run false' keeps its value)."""
  out = []
  for i, arg in enumerate(argv):
    following = argv[i + 1].lower() if i + 1 < len(argv) else ''
    if arg == '--dry_run' and following not in ('true', 'false', '1', '0',
                                                'yes', 'no', 'on', 'off'):
      arg = '--dry_run=true'
    out.append(arg)
  return out


def with_local_defaults(argv: List[str]) -> List[str]:
  """Beam flags the job sets unless the command line sets them.

  - Local runs use Beam's in-process runner, one bundle at a time. Beam's
    DirectRunner multi_threading mode loses elements (see README "Local
    runs"), so it is not the default; decoding and file I/O overlap with
    inference through bounded pools inside the stages instead
    (transforms/overlap.py). validate() refuses multi_threading.
  - No runner pickles the launcher's __main__ session: every function the
    workers run lives in this package, which they import (Beam saves the
    main session by default on service runners with cloudpickle).
  - Local runs skip Beam's construction-time type check
    (--no_pipeline_type_check): it checks the type hints of this package's
    own transforms, the same in every run, and cost 0.35 s of a 1.45 s
    three-photo launch, for each wave (since Beam 2.78 it parses the
    options anew for every hint it compares, apache/beam#38275). Without
    it Beam also infers no output types, so data between stages is
    pickled rather than encoded with typed coders: fine within one machine,
    where only rows, markers and listings cross stages. Remote runners keep
    the check and the typed coders (what crosses their shuffle). The suite
    builds every shape of the job's and of stylize-train's pipelines with
    the check on (tests/test_pipeline_types.py).
  """
  argv = list(argv)
  remote = False
  for i, arg in enumerate(argv):
    runner = arg.split('=', 1)[1] if arg.startswith('--runner=') else (
        argv[i + 1] if arg == '--runner' and i + 1 < len(argv) else None)
    if runner and runners.short_name(runner) not in runners.LOCAL_RUNNERS:
      remote = True
  if not remote and '--no_pipeline_type_check' not in argv:
    argv.append('--no_pipeline_type_check')
  if not any(a.startswith(('--save_main_session', '--no_save_main_session'))
             for a in argv):
    argv.append('--no_save_main_session')
  flags = ('--direct_running_mode', '--direct_num_workers')
  if remote or any(a.startswith(flags) for a in argv):
    return argv
  return argv + ['--direct_running_mode=in_memory', '--direct_num_workers=1']


def run(argv: Optional[Sequence[str]] = None,
        test_pipeline: Optional[beam.Pipeline] = None,
        check_model: bool = True,
        progress_dir: Optional[str] = None,
        wait: Optional[bool] = None,
        status: Optional[Callable[[str], None]] = None,
        launched_at: Optional[float] = None):
  """Parses, validates, builds and runs the job; returns the PipelineResult.

  Local runs wait for the job; remote runs submit it and return, unless
  --wait (or wait=True) is given; creating a template (--template_location)
  never waits. The result carries `job` (the JobConfig), `waited` and
  `template`.

  Args:
    argv: command-line flags (sys.argv[1:] when None).
    test_pipeline: a TestPipeline to build on, instead of a new Pipeline.
    check_model: load the model once at launch to fail fast on a bad one
      (local runs; remote launches only check that it exists).
    progress_dir: local folder for live progress events (see
      transforms.progress); None records Beam counters only.
    wait: override --wait.
    status: prints a phase line (e.g. while the model loads).
    launched_at: when the command started (the run's elapsed time counts
      from it); now when None.

  Raises:
    ConfigError: a configuration mistake, before any work.
  """
  launched_at = launched_at or time.time()
  options = parse(argv)
  if runners.is_in_process(options):
    # The model the launch loads to check it is the one the workers (this
    # process) use, in every wave.
    from transforms.models.sharing import sharing_loaded_models
    with sharing_loaded_models():
      return _run(options, test_pipeline, check_model, progress_dir, wait,
                  status, launched_at)
  return _run(options, test_pipeline, check_model, progress_dir, wait,
              status, launched_at)


def _run(options: PipelineOptions, test_pipeline, check_model: bool,
         progress_dir: Optional[str], wait: Optional[bool],
         status: Optional[Callable[[str], None]], launched_at: float):
  """run() once the options are parsed."""
  check_lease_first(options)
  job = validate(options, check_model=check_model, status=status)
  job.progress_dir = progress_dir
  job.started_at = launched_at
  local = runners.is_local(options)
  if local:
    runners.tune_malloc()
  template = runners.template_location(options)
  if wait is None:
    wait = local or job.settings.wait
  waited = bool(wait) and not template
  # A classic template's job has no launcher to take its lease: its
  # workers take it (transforms/lease.py).
  job.workers_take_lease = bool(template)
  # One run per output folder: taken before any work, held (with a
  # heartbeat) while this process waits; a submitted remote job's workers
  # keep it and its last step releases it (transforms/lease.py).
  lease = None if template else take_lease(job, waited)

  def launch(one_job: JobConfig):
    p = test_pipeline or beam.Pipeline(runner=runners.make_runner(options),
                                       options=options)
    build_pipeline(p, one_job)
    return p.run()

  submitted = False
  try:
    waves = 1
    if local:
      # The launcher's count: the progress total from the start, and waves.
      pairs = expected_pairs(job)
      record_expected(progress_dir, pairs)
      if test_pipeline is None:
        waves = wave_count(job, pairs)
    if waves > 1:
      # Local runs only (job.wave_pairs is 0 on other runners), which wait.
      logger.info('%s: %d waves of about %d (input, style) pairs',
                  PROG, waves, job.wave_pairs)

      def launch_and_wait(wave_job: JobConfig):
        wave_result = launch(wave_job)
        runners.wait_for(wave_result, job.layout.errors_dir())
        return wave_result

      result = run_waves(job, waves, launch_and_wait)
    else:
      result = launch(job)
    submitted = True
    result.job = job
    result.template = template
    result.waited = waited
    if waited:
      runners.wait_for(result, job.layout.errors_dir())
  except BaseException as error:
    if isinstance(error, KeyboardInterrupt) or interrupted(error):
      remove_own_temporary_at_exit(job.layout)
    raise
  finally:
    if lease is not None and (waited or not submitted):
      # A remote job's last step releases its lease itself.
      lease.release(expect_held=local and submitted)
  # Taken over while this run ran (it was stale, or broken): not a success.
  result.lease_lost = lease.lost if lease else None
  result.elapsed_s = time.time() - job.started_at  # For the closing summary.
  return result


def check_lease_first(options: PipelineOptions) -> None:
  """A second run on a held output stops at once, before the checks that
  load the model (one read; the lease is taken after validation).

  Raises:
    ConfigError: another live run holds --output.
  """
  o = options.view_as(StylizeOptions)
  if not o.output or o.break_lease or runners.template_location(options):
    return
  try:
    output = result_output(o.output)
    current = Lease(output, '').current()
  except Exception:  # pylint: disable=broad-except
    return  # An output that cannot be read: validation says what is wrong.
  now = time.time()
  if current is not None and not (current.expired(now) or current.gone()):
    raise ConfigError(held_message(Lease(output, '').uri, current, now))


def take_lease(job: JobConfig, waited: bool) -> Lease:
  """This run's lease on --output (transforms/lease.py), heartbeat started
  where this process waits for the job. A local run's lease is this
  process's; a remote job's is the job's (its workers keep it), whoever
  submitted it.

  Raises:
    ConfigError: another run holds it; the message names it.
  """
  local = not job.fail_job_on_verdict
  lease = Lease(job.output, job.run_id, process=local, holder=(
      f'{PROG} on {socket.gethostname()} (pid {os.getpid()})' if local else
      f'a job submitted from {socket.gethostname()}'))
  try:
    lease.acquire(job.settings.break_lease,
                  expires_after_s=None if waited else SUBMITTED_EXPIRY_S)
  except LeaseHeld as e:
    raise ConfigError(str(e)) from None
  if waited:
    lease.start_heartbeat()
  return lease


def read_summary(output: str) -> dict:
  with FileSystems.open(f'{output}/{SUMMARY_NAME}') as f:
    return json.loads(f.read().decode('utf-8'))


# The closing summary names this many ignored files (summary.json more).
IGNORED_SHOWN = 3


def _waves_text(summary: dict) -> str:
  waves = summary.get('waves')
  if not waves:
    return ''
  done = summary.get('waves_done', waves)
  return f' in {waves} waves' if done >= waves else (
      f' in {done} of {waves} waves')


def format_summary(summary: dict, elapsed_s: Optional[float] = None) -> str:
  counts = summary['counts']
  total = summary['total']
  if elapsed_s is None:
    elapsed_s = summary.get('elapsed_s', 0.0)
  rate = counts.get('ok', 0) / elapsed_s if elapsed_s > 0 else 0.0
  engines = summary.get('engines_used') or {}
  made_with = (' on ' + ', '.join(engines) if engines else '')
  lines = [
      f"stylize run {summary['run_id']}: {total} (input, style) pairs in "
      f'{elapsed_s:.1f}s ({rate:.2f} images/s{made_with})' +
      _waves_text(summary),
      f"  ok {counts.get('ok', 0)}   failed {counts.get('failed', 0)}   "
      f"skipped {counts.get('skipped', 0)}   ignored files "
      f"{summary.get('files_ignored', 0)}",
      f"  output: {summary['output']}",
  ]
  ignored = summary.get('ignored_files') or []
  if ignored:
    more = summary.get('files_ignored', len(ignored)) - IGNORED_SHOWN
    lines.append('  ignored (not images): ' +
                 ', '.join(ignored[:IGNORED_SHOWN]) +
                 (f' and {more} more (the first {len(ignored)} in '
                  'summary.json)' if more > 0 else ''))
  for reason in summary.get('top_failure_reasons', [])[:5]:
    lines.append(f"  failed x{reason['count']}: {reason['reason']}")
  lines += _failed_lines(summary)
  orphans = summary.get('orphaned_outputs', 0)
  if orphans:
    lines.append(f'  outputs of files that are no inputs any more: {orphans} '
                 '(left in place; the first in summary.json)')
  if summary.get('naming_rule_note'):
    lines.append(f"  note: {summary['naming_rule_note']}")
  return '\n'.join(lines)


def _failed_lines(summary: dict) -> List[str]:
  """The failed pairs summary.json names (the first 10 by input), each with
  its style and reason; known ones (an earlier run failed them the same
  way) are marked."""
  failed = summary.get('failed_pairs') or []
  if not failed:
    return []
  labels = {s.get('uri'): s.get('label') for s in summary.get('styles', [])}
  known = summary.get('failed_known', 0)
  total = summary['counts'].get('failed', 0)
  head = f'  failed pairs ({total}'
  if known:
    head += (f', {known} known from earlier runs and not retried: '
             '--retry_failed retries them')
  head += ')' + (f'; the first {len(failed)}:' if total > len(failed) else
                 ':')
  lines = [head]
  for pair in failed:
    style = labels.get(pair.get('style'), pair.get('style')) or '-'
    mark = ' (known)' if pair.get('known') else ''
    lines.append(f"    {pair['input']} [{style}]: {pair['error']}{mark}")
  return lines


def _job_failed(output: Optional[str], error: BaseException,
                launched_at: float) -> int:
  """A job that raised: what this run's summary.json says, else the error;
  exit 1. A summary.json left by an earlier run is not this run's story."""
  summary = None
  if output:
    try:
      summary = read_summary(output)
    except Exception:  # pylint: disable=broad-except
      summary = None
  if summary is not None and summary.get('started_at', 0) < launched_at - 1:
    summary = None
  if summary is not None and summary.get('verdict') not in (None, 'ok'):
    print(format_summary(summary))
    if summary.get('waves_done', 0) < summary.get('waves', 0):
      # The summary of the waves before the one that failed: its error is
      # the story, the summary only says how far the run got.
      print(f'stylize: error: the job failed in wave '
            f'{summary["waves_done"] + 1} of {summary["waves"]}: '
            f'{describe_error(error)}', file=sys.stderr)
    print(f'stylize: {summary["verdict_reason"]}', file=sys.stderr)
    return 1
  print(f'stylize: error: the job failed: {describe_error(error)}',
        file=sys.stderr)
  return 1


def interrupted(error: BaseException) -> bool:
  """Ctrl-C, as it reaches the launcher: a KeyboardInterrupt, or wrapped by
  Beam's runner into another error that names it."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    first_line = (str(error).splitlines() or [''])[0]
    if isinstance(error, KeyboardInterrupt) or 'KeyboardInterrupt' in (
        first_line):
      return True
    error = error.__cause__ or error.__context__
  return False


def _interrupted(done: int) -> int:
  """One line and exit code 130 (as a shell reports SIGINT). The run's
  lease was released and its temporary files are removed when the process
  ends (run(), storage.remove_own_temporary_at_exit); outputs are written
  whole, so a rerun skips what is done."""
  print(f'{PROG}: interrupted; {done} pairs done, rerun to continue.',
        file=sys.stderr)
  return 130


def _drop_interruption(record: logging.LogRecord) -> bool:
  """Ctrl-C as Beam's runner logs it (the traceback of the DoFn it stopped
  in): the launcher says it in one line instead (_interrupted)."""
  error = record.exc_info[1] if record.exc_info else None
  return not (error is not None and interrupted(error))


def main(argv: Optional[List[str]] = None) -> int:
  """The console entry point: runs the job with progress and a summary."""
  # TF's C++ INFO/WARNING lines drown the job's own output; TF is imported
  # through transforms/native_logs.py, which also drops absl's start-up
  # noise; errors still show and surface as Python exceptions. Set before TF
  # is imported, so worker processes inherit it.
  quiet_start()
  logging.basicConfig(level=logging.WARNING,
                      format='%(levelname)s %(name)s: %(message)s')
  logging.getLogger('beam_jobs').setLevel(logging.INFO)
  # Progress and phase lines where there is no live bar (--quiet, logs).
  logging.getLogger('transforms.progress').setLevel(logging.INFO)
  for handler in logging.getLogger().handlers:
    if _drop_interruption not in handler.filters:
      handler.addFilter(_drop_interruption)
  argv = list(sys.argv[1:] if argv is None else argv)
  if wants_help(argv):
    help_parser().print_help()
    return 0
  output = None
  done = 0
  launched_at = time.time()
  try:
    options = parse(argv)
    output = options.view_as(StylizeOptions).output
    if is_dry_run(options):
      from beam_jobs.dry_run import dry_run, format_plan
      job = validate(options, check_model=False, probe_output=False)
      print(format_plan(dry_run(job, options), job))
      return 0
    o = options.view_as(StylizeOptions)
    local = runners.is_local(options)
    progress_dir = (tempfile.mkdtemp(prefix='stylize-progress-')
                    if local else None)
    monitor = ProgressMonitor(progress_dir, quiet=o.quiet,
                              log_every=o.progress_every) if local else None
    try:
      if monitor is not None:
        with monitor:
          result = run(argv, progress_dir=progress_dir, status=monitor.say,
                       launched_at=launched_at)
      else:
        result = run(argv, launched_at=launched_at)
    finally:
      if progress_dir:
        done = monitor.done() if monitor is not None else 0
        shutil.rmtree(progress_dir, ignore_errors=True)
  except ConfigError as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-except
    if interrupted(e):
      return _interrupted(done)
    logger.debug('The job failed', exc_info=True)
    return _job_failed(output and result_output(output), e, launched_at)
  except KeyboardInterrupt:
    return _interrupted(done)
  if result.template:
    print(f'stylize: template written to {result.template}')
    return 0
  if not result.waited:
    job_id = getattr(result, 'job_id', lambda: None)()
    print(f'stylize: submitted job {job_id or ""} '
          f'({runners.runner_name(options)}); it writes '
          f'{result.job.layout.summary_uri()} and report.html when done. '
          'Give --wait to wait here.')
    return 0
  summary = read_summary(result.job.output)
  print(format_summary(summary, result.elapsed_s))
  if summary['verdict'] != 'ok':
    print(f'stylize: {summary["verdict_reason"]}', file=sys.stderr)
    return 1
  if getattr(result, 'lease_lost', None):
    print(f'stylize: error: {result.lease_lost}', file=sys.stderr)
    return 1
  return 0


def result_output(output: str) -> str:
  """--output as the job names it (canonical), to find summary.json."""
  from transforms.layout import canonical_uri
  from transforms.paths import absolute, join
  return join(canonical_uri(absolute(output)))


if __name__ == '__main__':
  sys.exit(main())
