"""Incremental runs: what is already done, decided from one listing of the output.

Identity of a piece of work: the input's URI, size and modification time
(on GCS the object's update time, which changes whenever it is rewritten),
the style (URIs and weights), the model and every parameter that changes the
pixels (see JobConfig.job_key). After an output is written, an empty marker
named by the SHA-1 of that identity is written to
{output}/.stylize/done/<sha1>. A rerun lists {output} once: a pair whose
marker and output both exist is `skipped`; anything else is (re)done. A run
killed at any point leaves either a complete output with its marker, or no
marker (the output, if any, is redone), and never a half-written output
under a final name (see storage.write_atomically); leftover temporary files
are removed by the next run.
"""

import dataclasses
import hashlib
import logging
from typing import Dict, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import paths
from transforms.records import InputFile, ManifestRow, Status, StyleRef
from transforms.storage import TMP_MARK, delete_files, list_files

logger = logging.getLogger(__name__)

STATE_DIR = '.stylize'
DONE_DIR = f'{STATE_DIR}/done'
SKIPPED = 'skipped'


def work_identity(item: InputFile, style: StyleRef, job_key: str) -> str:
  text = '\0'.join([item.uri, str(item.size_bytes), repr(float(item.mtime)),
                    style.uri, job_key, item.out_stem, style.label])
  return hashlib.sha1(text.encode('utf-8')).hexdigest()


def marker_uri(output: str, identity: str) -> str:
  return paths.join(output, DONE_DIR, identity)


def scan_output(output: str) -> Dict[str, object]:
  """One listing of {output}: done markers, existing files, leftovers."""
  markers, files, leftovers = set(), set(), []  # list_files sets up auth
  done_prefix = paths.join(output, DONE_DIR) + '/'
  for meta in list_files(paths.join(output, '**')):
    path = paths.join(meta.path)
    if path.startswith(done_prefix):
      markers.add(path[len(done_prefix):])
    elif TMP_MARK in path.rsplit('/', 1)[-1]:
      leftovers.append(path)
    else:
      files.add(path)
  return {'markers': markers, 'files': files, 'leftovers': leftovers}


def remove_leftovers(state: Dict[str, object]) -> int:
  """Deletes temporary files an interrupted earlier run left behind."""
  leftovers = state['leftovers']
  if leftovers:
    logger.info('Removing %d temporary file(s) left by an interrupted run',
                len(leftovers))
  return len(delete_files(leftovers))


class PlanWork(beam.DoFn):
  """InputFile -> InputFile with the styles still to do; 'skipped' rows."""

  def __init__(self, output: str, styles: Sequence[StyleRef], fmt: str,
               job_key: str, model: str, params: Dict, force: bool):
    self._output = output
    self._styles = list(styles)
    self._fmt = fmt
    self._job_key = job_key
    self._model = model
    self._params = dict(params)
    self._force = force
    self._skipped = Metrics.counter('stylize', 'skipped')

  def process(self, item: InputFile, state: Dict[str, object]) -> Iterable:
    todo = []
    for style in self._styles:
      out = paths.output_uri(self._output, style.label, item.out_stem, self._fmt)
      identity = work_identity(item, style, self._job_key)
      if (not self._force and identity in state['markers'] and
          out in state['files']):
        self._skipped.inc()
        yield beam.pvalue.TaggedOutput(SKIPPED, ManifestRow(
            input=item.uri, style=style.uri, status=Status.SKIPPED,
            model=self._model, output=out,
            error=None, params=dict(self._params)))
      else:
        todo.append(style.label)
    if todo:
      yield dataclasses.replace(item, todo=tuple(todo))


class SkipDone(beam.PTransform):
  """PCollection[InputFile] -> (work to do, skipped ManifestRows).

  The output folder is listed once, inside the pipeline, before any work;
  that listing is a side input of the planning step.
  """

  def __init__(self, output: str, styles: Sequence[StyleRef], fmt: str,
               job_key: str, model: str, params: Dict, force: bool,
               clean_leftovers: bool = True):
    super().__init__()
    self._clean = clean_leftovers
    self._output = output
    self._plan = PlanWork(output, styles, fmt, job_key, model, params, force)

  def expand(self, files):
    state = (files.pipeline
             | 'OutputFolder' >> beam.Create([self._output])
             | 'ListOutput' >> beam.Map(scan_output))
    if self._clean:
      _ = state | 'RemoveLeftovers' >> beam.Map(remove_leftovers)
    planned = files | 'Plan' >> beam.ParDo(
        self._plan, state=beam.pvalue.AsSingleton(state)).with_outputs(
            SKIPPED, main='todo')
    return planned.todo, planned[SKIPPED]
