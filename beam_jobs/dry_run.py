"""--dry_run: what a run would do, from the real listing and plan, no model."""

import collections
import json
import os
import tempfile
from typing import Dict, List

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import runners
from beam_jobs.options import JobConfig
from transforms import paths, rows
from transforms.incremental import SkipDone
from transforms.inputs import ListInputs
from transforms.records import InputFile

SHOW_OUTPUTS = 5


def _root_of(item: InputFile, roots: List[str]) -> str:
  """The --input folder an input came from, else 'from --input_list'."""
  best = ''
  for root in roots:
    if paths.is_within(item.uri, root) and len(root) > len(best):
      best = root
  return best or 'from --input_list'


def plan_entries(item: InputFile, roots: List[str], job: JobConfig):
  """One ('todo', root, style label, output) per pair still to do."""
  root = _root_of(item, roots)
  for label in item.todo:
    yield ('todo', root, label, job.layout.output_uri(label, item.key))


def summarise(entries, skipped, ignored: int, n_styles: int,
              known: int = 0) -> Dict:
  todo_per_root = collections.Counter()
  todo_per_style = collections.Counter()
  outputs = []
  for _, root, label, out in entries:
    todo_per_root[root] += 1
    todo_per_style[label] += 1
    outputs.append(out)
  skipped_per_style = collections.Counter(label for label in skipped)
  return {
      'pairs_to_do': sum(todo_per_style.values()),
      'pairs_skipped_as_done': sum(skipped_per_style.values()),
      'pairs_known_to_fail': known,
      'pairs_to_do_per_input_root': dict(sorted(todo_per_root.items())),
      'pairs_to_do_per_style': dict(sorted(todo_per_style.items())),
      'skipped_per_style': dict(sorted(skipped_per_style.items())),
      'files_ignored': ignored,
      'first_outputs': sorted(outputs)[:SHOW_OUTPUTS],
      'styles': n_styles,
  }


def dry_run(job: JobConfig, options: PipelineOptions) -> Dict:
  """Lists inputs and the output folder and plans the work, on this machine.

  Runs a small pipeline on the DirectRunner whatever --runner says (it only
  lists files and reads metadata), writes nothing to the output folder, and
  never loads the model.
  """
  with tempfile.TemporaryDirectory(prefix='stylize-dry-') as tmp:
    return _plan(job, os.path.join(tmp, 'plan.json'))


def _plan(job: JobConfig, result_path: str) -> Dict:
  roots = [s.root for s in job.input_specs]
  label_by_uri = {s.uri: s.label for s in job.styles}
  local = PipelineOptions(['--runner=DirectRunner',
                           '--direct_running_mode=in_memory',
                           '--direct_num_workers=1'])
  with beam.Pipeline(runner=runners.make_runner(local), options=local) as p:
    listed, ignored = p | 'ListInputs' >> ListInputs(
        job.input_specs, job.input_lists, job.layout)
    todo, skipped, failed, _, _ = listed | 'SkipDone' >> SkipDone(
        job.layout, job.styles, job.job_key, job.failure_key,
        rows.row_info(job.model, job.row_params, job.run_id),
        job.settings.force, retry_failed=job.settings.retry_failed,
        remove_legacy=False)
    entries = (todo
               | 'Plan' >> beam.FlatMap(plan_entries, roots, job)
               | 'Entries' >> beam.combiners.ToList())
    skipped_labels = (skipped
                      | 'SkippedStyle' >> beam.Map(
                          lambda r: label_by_uri.get(r.style, r.style))
                      | 'Skipped' >> beam.combiners.ToList())
    n_ignored = ignored | 'Ignored' >> beam.combiners.Count.Globally()
    n_known = (failed
               | 'Known' >> beam.Filter(is_known)
               | 'CountKnown' >> beam.combiners.Count.Globally())
    _ = (entries
         | 'Summarise' >> beam.Map(
             summarise, skipped=beam.pvalue.AsSingleton(skipped_labels),
             ignored=beam.pvalue.AsSingleton(n_ignored),
             known=beam.pvalue.AsSingleton(n_known),
             n_styles=len(job.styles))
         | 'Save' >> beam.Map(_save, result_path))
  with open(result_path, encoding='utf-8') as f:
    return json.load(f)


def is_known(row) -> bool:
  """A failed row of a pair that failed the same way before (not retried)."""
  return bool(row.known)


def lease_note(job: JobConfig) -> str:
  """A line saying another run holds --output now (read, never taken: a
  dry run writes nothing), or ''."""
  import time
  from transforms.lease import Lease
  current = Lease(job.output, job.run_id).current()
  if current is None:
    return ''
  now = time.time()
  if current.expired(now) or current.gone():
    return (f'  note: a stale lease of {current.describe(now)} is on '
            '--output; a real run takes it over.')
  return (f'  note: --output is in use by {current.describe(now)}; a real '
          'run now would stop before any work (exit code 2).')


def _save(plan: Dict, path: str) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(plan, f)


def format_plan(plan: Dict, job: JobConfig) -> str:
  known = plan.get('pairs_known_to_fail', 0)
  lines = [
      f'dry run: {plan["pairs_to_do"]} (input, style) pairs to do, '
      f'{plan["pairs_skipped_as_done"]} skipped as already done, ' + (
          f'{known} known to fail (not retried without --retry_failed), '
          if known else '') +
      f'{plan["files_ignored"]} non-image files ignored; '
      f'{plan["styles"]} style(s); model not loaded.']
  if plan['pairs_to_do_per_input_root']:
    lines.append('  to do per input root:')
  for root, n in plan['pairs_to_do_per_input_root'].items():
    lines.append(f'    {root}: {n}')
  lines.append('  per style (to do / done):')
  for style in job.styles:
    lines.append(f'    {style.label}: {plan["pairs_to_do_per_style"].get(style.label, 0)}'
                 f' / {plan["skipped_per_style"].get(style.label, 0)}')
  if plan['first_outputs']:
    lines.append('  first outputs:')
    lines += [f'    {o}' for o in plan['first_outputs']]
  note = lease_note(job)
  if note:
    lines.append(note)
  if job.route_model:
    # Classes are only known once the router has seen the pixels.
    lines.append('  routing: router not loaded, so these count every route '
                 'style for every input (an upper bound); routes: ' +
                 '; '.join(f'{c} -> {", ".join(s)}'
                           for c, s in sorted(job.routes.items())))
  return '\n'.join(lines)
