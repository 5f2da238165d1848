"""What each Beam runner means for the job: local or remote, threads, launch.

- Local (DirectRunner, the default): Beam's in-process FnApiRunner, chosen
  directly rather than through DirectRunner, which first tries Prism (a
  binary it downloads when online), so online and offline runs behave the
  same. The launcher waits, prints the summary and sets the exit code.
- Remote (Dataflow, PortableRunner job services such as Flink, Spark or
  Beam's local job service): the launcher checks what it can without
  TensorFlow, submits and returns; with --wait it blocks and reports like a
  local run. The pipeline writes summary.json and the report itself, and
  fails the job when the verdict is bad.
- Templates (--template_location): the launcher writes the template and says
  where; no job runs.
"""

import ctypes
import os
import re
from typing import List, Optional

from apache_beam.options.pipeline_options import (DirectOptions,
                                                  GoogleCloudOptions,
                                                  PipelineOptions,
                                                  StandardOptions)

# Beam's in-process runners, by short name (see short_name).
LOCAL_RUNNERS = ('direct', 'fnapi', 'bundlebaseddirect', 'switchingdirect')


def runner_name(options: PipelineOptions) -> str:
  runner = options.view_as(StandardOptions).runner
  if runner is None:
    return 'DirectRunner'
  return runner if isinstance(runner, str) else type(runner).__name__


def short_name(name: str) -> str:
  """A runner name as Beam resolves it: case, module path and the 'Runner'
  suffix do not matter ('direct', 'DirectRunner' and
  'apache_beam.runners.direct.DirectRunner' are one runner;
  apache_beam.runners.runner.create_runner accepts all three)."""
  short = name.rsplit('.', 1)[-1].lower()
  return short[:-len('runner')] if short.endswith('runner') else short


def is_local(options: PipelineOptions) -> bool:
  return short_name(runner_name(options)) in LOCAL_RUNNERS


def is_in_process(options: PipelineOptions) -> bool:
  """A local run whose workers are this process (Beam's in-process runner,
  not --direct_running_mode=multi_processing)."""
  mode = options.view_as(DirectOptions).direct_running_mode
  return is_local(options) and mode in (None, 'in_memory')


def is_dataflow(options: PipelineOptions) -> bool:
  return short_name(runner_name(options)) in ('dataflow', 'testdataflow')


def template_location(options: PipelineOptions) -> Optional[str]:
  return options.view_as(GoogleCloudOptions).template_location


def default_tf_threads(options: PipelineOptions) -> int:
  """TF intra-op threads per worker process when --tf_threads is 0.

  In-process local runs: 0, TF's own default (all cores for one process).
  Local multi_processing: the cores divided among the worker processes.
  Every remote runner (Dataflow, Flink, Spark, portable job services) runs
  one SDK process per core or task slot, so each gets one thread and TF
  never oversubscribes the cores; --tf_threads overrides (e.g. GPU workers
  with one SDK process per machine).
  """
  if is_local(options):
    direct = options.view_as(DirectOptions)
    if getattr(direct, 'direct_running_mode', None) == 'multi_processing':
      workers = max(1, direct.direct_num_workers or 1)
      return max(1, (os.cpu_count() or 1) // workers)
    return 0
  return 1


# I/O threads per SDK process on remote runners: they start one process
# per core, so each process's decode pool is kept small (a pool per process
# sized to the cores would hold cores x cores decoded images per machine).
REMOTE_IO_THREADS = 2


def default_io_threads(options: PipelineOptions,
                       given: Optional[int]) -> Optional[int]:
  """--io_threads when given; else None (the pool's own default: the cores,
  at most 8) for local runs and REMOTE_IO_THREADS on remote runners."""
  if given is not None:
    return given
  return None if is_local(options) else REMOTE_IO_THREADS


# Beam's in-process runner, by the name Beam knows it by
# (StandardOptions.ALL_KNOWN_RUNNERS).
FN_API_RUNNER = 'FnApiRunner'


def make_runner(options: PipelineOptions):
  """The runner for a run: Beam's in-process FnApiRunner for local runs
  (its public name), rather than DirectRunner, which first tries Prism (a
  binary it downloads when online, so online and offline runs would
  differ); None (Beam picks by --runner) for the others."""
  if short_name(runner_name(options)) not in ('direct', 'fnapi'):
    return None  # Remote, or a local runner the user chose by name.
  return FN_API_RUNNER


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MALLOC_BLOCK = 128 * 1024


def tune_malloc() -> bool:
  """Local runs: hand memory freed after a stage back to the system.

  The in-process runner holds each stage's data as many large byte blocks
  and frees them when the next stage has read them. glibc keeps freed
  blocks in the heap (its mmap threshold rises as blocks are freed), so the
  peak memory of a long run grows with every stage. Fixing the mmap and
  trim thresholds at 128 KiB returns them: at 50,000 photos the peak fell
  from 889 to 848 MB in one measurement (benchmarks/scale.py). Applied to
  this process with mallopt, and to worker processes it starts through the
  MALLOC_*_ environment variables. Returns False off glibc.
  """
  os.environ.setdefault('MALLOC_MMAP_THRESHOLD_', str(MALLOC_BLOCK))
  os.environ.setdefault('MALLOC_TRIM_THRESHOLD_', str(MALLOC_BLOCK))
  try:
    libc = ctypes.CDLL('libc.so.6')
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_BLOCK) and
                libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_BLOCK))
  except (OSError, AttributeError):
    return False


class JobFailedError(RuntimeError):
  """The runner reported a failed job; the message is the workers' own
  reason (e.g. 'ModelLoadError: ...') where one could be found."""


# The last line of a worker traceback that names one of this package's
# errors, e.g. 'transforms.models.base.ModelLoadError: --model ... failed'
# (the local runner's and Dataflow's failures carry the traceback).
_OWN_ERROR = re.compile(
    r'^(?:transforms|beam_jobs)\.[\w.]*?(\w+(?:Error|Exception)): (.+)$',
    re.MULTILINE)


def wait_for(result, errors_folder: Optional[str] = None) -> None:
  """result.wait_until_finish(), but a failure names the workers' reason.

  errors_folder: where the job's workers note the errors they raise
  (transforms/worker_errors.py): a runner's own message is often generic
  (a portable job service's last one is 'Error running pipeline.').

  Raises:
    JobFailedError: the job failed and a worker raised one of this
      package's errors (its class and message).
    Exception: the runner's own error otherwise.
  """
  try:
    result.wait_until_finish()
  except Exception as error:  # pylint: disable=broad-except
    from transforms.worker_errors import read_and_remove
    notes = read_and_remove(errors_folder) if errors_folder else []
    reason = worker_reason([str(error)]) or (notes[-1] if notes else None)
    if reason:
      raise JobFailedError(reason) from error
    raise


def worker_reason(texts: List[str]) -> Optional[str]:
  """'ErrorName: message' for the last package error named in texts."""
  found = None
  for text in texts:
    for match in _OWN_ERROR.finditer(text or ''):
      found = f'{match.group(1)}: {match.group(2).strip()}'
  return found
