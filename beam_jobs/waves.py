"""How many waves a local run needs, and running them (transforms/waves.py)."""

import dataclasses
import logging
import math
import shutil
import tempfile
from typing import Callable

from beam_jobs.options import JobConfig
from transforms.inputs import count_inputs
from transforms.waves import Wave

logger = logging.getLogger(__name__)


def expected_pairs(job: JobConfig) -> int:
  """The run's (input, style) pairs as the launcher counts them: a
  streamed listing on this machine (local runs: their workers list the same
  files); aliases count each time, so it errs upwards."""
  return count_inputs(job.input_specs, job.input_lists) * len(job.styles)


def wave_count(job: JobConfig, pairs: int) -> int:
  """1, or enough waves of at most --wave_pairs of the pairs."""
  if not job.wave_pairs:
    return 1
  return max(1, math.ceil(pairs / job.wave_pairs))


def run_waves(job: JobConfig, waves: int, run_one: Callable[[JobConfig], object]):
  """Runs run_one(job for wave i) for each wave in turn; the last result.

  A wave that fails stops the run (its exception propagates): the outputs
  of the waves before it are complete and marked done, so a rerun skips
  them.
  """
  state_dir = tempfile.mkdtemp(prefix='stylize-waves-')
  try:
    result = None
    for index in range(waves):
      logger.info('Wave %d of %d', index + 1, waves)
      result = run_one(dataclasses.replace(
          job, wave=Wave(index, waves, state_dir)))
    return result
  finally:
    shutil.rmtree(state_dir, ignore_errors=True)
