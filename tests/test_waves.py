"""Local runs in waves (--wave_pairs): the same manifest, summary and report
as one pipeline would give, each input in exactly one wave."""

import collections
import gzip
import json
import os
import re

import pytest
from hypothesis import given, settings, strategies as st

from beam_jobs.stylize import format_summary, run
from tests.conftest import CHILD_MODEL, gradient
from tests.test_end_to_end import manifest_rows, summary
from transforms import report
from transforms.inputs import count_inputs, make_input_spec
from transforms.waves import Wave, in_wave


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.integers(1, 50))
def test_every_key_is_in_exactly_one_wave(key, count):
  holders = [i for i in range(count) if in_wave(key, i, count)]
  assert len(holders) == 1
  # Stable: a worker process computes the same (no per-process hash seed).
  assert Wave(holders[0], count, '/unused').holds(key)


def test_wave_state_is_handed_to_the_next_wave_only(tmp_path):
  first, second = Wave(0, 2, str(tmp_path)), Wave(1, 2, str(tmp_path))
  assert first.load('summary') is None
  first.save('summary', {'n': 1})
  assert second.load('summary') == {'n': 1}
  assert first.load('summary') is None  # A first wave never reads state.


def test_inputs_are_counted_as_the_workers_list_them(tmp_path):
  (tmp_path / 'in' / 'sub').mkdir(parents=True)
  for name in ('a.jpg', 'b.png', 'notes.txt', 'sub/c.JPG', 'sub/d.heic'):
    (tmp_path / 'in' / name).write_bytes(b'x')
  listing = tmp_path / 'todo.txt'
  listing.write_text('# a comment\n/x/1.jpg\n\n/x/2.jpg\n/x/3.jpg')
  specs = [make_input_spec(str(tmp_path / 'in')),
           make_input_spec(str(tmp_path / 'in' / '**' / '*.jpg')),
           make_input_spec(str(tmp_path / 'in' / 'b.png'))]
  gzipped = tmp_path / 'more.txt.gz'
  with gzip.open(gzipped, 'wt') as f:
    f.write('/x/4.jpg\n/x/5.jpg\n')  # Read as ReadFromText reads it.
  # The folder: 4 images (notes.txt is no image); the glob: a.jpg (globs
  # are case-sensitive, as Python's); the file: 1; the lists: 3 and 2.
  assert count_inputs(specs, [str(listing), str(gzipped)]) == 4 + 1 + 1 + 3 + 2


def test_a_later_wave_without_its_predecessors_state_fails(tmp_path):
  with pytest.raises(FileNotFoundError, match='wave 2 of 3'):
    Wave(1, 3, str(tmp_path)).load('summary')


def test_shard_names_of_many_waves_are_still_the_jobs_own(tmp_path):
  from transforms.layout import OutputLayout
  layout = OutputLayout.create(str(tmp_path), 'jpg')
  for wave in (Wave(3, 5, '/x'), Wave(12345, 20000, '/x')):
    name = f'{layout.manifest_prefix(wave.shard_tag())}-00000-of-00001.jsonl'
    assert layout.is_manifest_shard(name)  # So a later run removes it.
  assert not layout.is_manifest_shard(str(tmp_path / 'manifest-notes.jsonl'))


def test_a_wave_that_fails_names_its_error(tmp_path, capsys):
  import time
  from beam_jobs.stylize import _job_failed
  mine = {'run_id': 'r', 'started_at': time.time(), 'verdict': 'incomplete',
          'verdict_reason': '2 of 5 waves done', 'waves': 5, 'waves_done': 2,
          'counts': {'ok': 4}, 'total': 4, 'output': str(tmp_path)}
  (tmp_path / 'summary.json').write_text(json.dumps(mine))
  assert _job_failed(str(tmp_path), OSError(28, 'No space left on device'),
                     launched_at=mine['started_at'] - 5) == 1
  captured = capsys.readouterr()
  assert 'failed in wave 3 of 5' in captured.err
  assert 'No space left on device' in captured.err
  assert 'in 2 of 5 waves' in captured.out


def test_a_summary_written_between_waves_is_incomplete(tmp_path):
  from transforms.layout import OutputLayout
  from transforms.manifest import SummaryCombineFn, write_summary
  layout = OutputLayout.create(str(tmp_path / 'out'), 'jpg', str(tmp_path),
                               'run1')
  fn = SummaryCombineFn()
  acc = fn.create_accumulator()
  acc['counts']['ok'] = 3
  first = write_summary(acc, 0, ['m0'], 3, layout, {'run_id': 'run1'},
                        wave=Wave(0, 2, str(tmp_path)))
  assert first['verdict'] == 'incomplete' and first['waves_done'] == 1
  assert '1 of 2 waves done' in first['verdict_reason']
  assert json.loads((tmp_path / 'out' / 'summary.json').read_text())[
      'verdict'] == 'incomplete'
  last = write_summary(acc, 0, ['m1'], 3, layout, {'run_id': 'run1'},
                       wave=Wave(1, 2, str(tmp_path)))
  assert last['verdict'] == 'ok' and last['total'] == 6
  assert last['manifest'] == ['m0', 'm1'] and last['waves'] == 2


def _photos(folder, n):
  for i in range(n):
    sub = folder / f'd{i % 3}'
    sub.mkdir(parents=True, exist_ok=True)
    gradient(24, 16, seed=i).save(sub / f'img{i:03d}.jpg')


def _argv(tmp_path, samples, *extra, model='builtin'):
  return ['--input', str(tmp_path / 'in'), '--style',
          str(samples / 'style' / 'waves.jpg'), '--style',
          str(samples / 'style' / 'mosaic.png'), '--model', model,
          '--output', str(tmp_path / 'out'), '--max_size', '32',
          '--max_failure_ratio', '1'] + list(extra)


def _shown_outputs(page: str):
  """The outputs the report's grid shows (each caption's title is the
  output's path below --output)."""
  return re.findall(r'<figcaption title="([^"]+)">[^<]* \((?:ok|skipped)\)'
                    r'</figcaption>', page)


@pytest.mark.slow
def test_a_run_in_waves_accounts_for_every_pair_once(tmp_path, samples,
                                                     monkeypatch):
  _photos(tmp_path / 'in', 14)
  for name in ('broken1.jpg', 'd1/broken2.jpg', 'd2/broken3.png'):
    (tmp_path / 'in' / name).write_bytes(b'not an image')
  (tmp_path / 'in' / 'readme.txt').write_text('not an image')
  # The same file again through a list: an alias, one pair per style.
  listing = tmp_path / 'todo.txt'
  listing.write_text(str(tmp_path / 'in' / 'd0' / '.' / 'img000.jpg') + '\n')
  monkeypatch.setattr(report, 'MAX_SAMPLES', 5)
  argv = _argv(tmp_path, samples, '--input_list', str(listing),
               '--wave_pairs', '12')
  result = run(argv)
  out = tmp_path / 'out'
  # 17 inputs and one alias, 2 styles: 36 pairs counted -> 3 waves.
  shards = sorted(p.name for p in out.glob('manifest*.jsonl'))
  assert shards == [f'manifest-w000{i}-of-0003-00000-of-00001.jsonl'
                    for i in range(3)]
  rows = manifest_rows(out)
  pairs = [(r['input'], r['style']) for r in rows]
  assert len(pairs) == len(set(pairs)) == 34  # 17 files x 2 styles, once.
  assert collections.Counter(r['status'] for r in rows) == {'ok': 28,
                                                            'failed': 6}
  assert {r['run_id'] for r in rows} == {result.job.run_id}
  s = summary(out)
  assert s['counts'] == {'ok': 28, 'failed': 6, 'skipped': 0}
  assert s['total'] == s['expected_pairs'] == 34
  assert s['files_ignored'] == 1 and s['waves'] == 3
  assert s['verdict'] == 'ok'
  assert sorted(s['manifest']) == sorted(str(out / n) for n in shards)
  # The report shows the first pairs of the whole run (not of one wave),
  # every failure, and thumbnails that exist.
  page = (out / 'report.html').read_text()
  done = sorted((r['input'], r['style'], r['output']) for r in rows
                if r['status'] == 'ok')
  assert sorted(_shown_outputs(page)) == sorted(
      os.path.relpath(o, out) for _, _, o in done[:5])
  for r in rows:
    if r['status'] == 'failed':
      assert r['input'] in page
  for src in re.findall(r'<img src="([^"]+)"', page):
    assert (out / src).is_file()
  assert not list((out / '.stylize' / 'tmp').glob('*'))
  assert 'in 3 waves' in format_summary(s).splitlines()[0]

  # A rerun in a different number of waves skips everything; then a run in
  # one wave replaces the wave shards with its own.
  run(_argv(tmp_path, samples, '--input_list', str(listing),
            '--wave_pairs', '20'))
  assert collections.Counter(r['status'] for r in manifest_rows(out)) == {
      'skipped': 28, 'failed': 6}
  assert len(list(out.glob('manifest*.jsonl'))) == 2
  run(_argv(tmp_path, samples, '--wave_pairs', '0'))
  assert [p.name for p in out.glob('manifest*.jsonl')] == [
      'manifest-00000-of-00001.jsonl']
  assert summary(out)['total'] == 34 and 'waves' not in summary(out)
  # And back: the first wave removes the one-pipeline run's shard.
  run(_argv(tmp_path, samples, '--wave_pairs', '20'))
  assert sorted(p.name for p in out.glob('manifest*.jsonl')) == [
      f'manifest-w000{i}-of-0002-00000-of-00001.jsonl' for i in range(2)]
  assert len(manifest_rows(out)) == 34


@pytest.mark.slow
def test_waves_on_worker_processes(tmp_path, samples):
  """The wave state is written and read by the worker processes that make
  the summary and the report."""
  _photos(tmp_path / 'in', 6)
  run(_argv(tmp_path, samples, '--wave_pairs', '6',
            '--direct_running_mode=multi_processing',
            '--direct_num_workers=2', model=CHILD_MODEL))
  out = tmp_path / 'out'
  rows = manifest_rows(out)
  assert len({(r['input'], r['style']) for r in rows}) == len(rows) == 12
  s = summary(out)
  assert s['waves'] == 2 and s['counts']['ok'] == 12
  assert s['total'] == s['expected_pairs'] == 12
  page = (out / 'report.html').read_text()
  assert sorted(_shown_outputs(page)) == sorted(
      os.path.relpath(r['output'], out) for r in rows)  # Both waves' pairs.
  on_disk = sorted(str(p) for p in out.glob('manifest*.jsonl'))
  assert sorted(s['manifest']) == on_disk
  assert {re.search(r'-w(\d{4})-of-0002-', m).group(1) for m in on_disk} == {
      '0000', '0001'}


def test_inputs_that_change_between_waves_make_the_run_incomplete(
    tmp_path, samples, monkeypatch, capsys):
  """A file renamed between waves can fall into a wave that already ran:
  the run must not say ok."""
  from beam_jobs import stylize
  from beam_jobs.stylize import main
  inputs = tmp_path / 'in'
  inputs.mkdir()
  for i in range(6):
    gradient(32, 24, seed=i).save(inputs / f'p{i}.jpg')
  real = stylize.run_waves

  def rename_after_first_wave(job, waves, run_one):
    done = []

    def one(wave_job):
      result = run_one(wave_job)
      if not done:
        done.append(1)
        os.rename(inputs / 'p0.jpg', inputs / 'renamed.jpg')
      return result
    return real(job, waves, one)

  monkeypatch.setattr(stylize, 'run_waves', rename_after_first_wave)
  out = tmp_path / 'out'
  code = main(['--input', str(inputs), '--style',
               str(samples / 'style' / 'waves.jpg'), '--model', 'builtin',
               '--output', str(out), '--wave_pairs', '2'])
  assert code == 1
  s = summary(out)
  assert s['verdict'] == 'incomplete'
  assert 'the inputs changed while the run ran' in s['verdict_reason']
  assert 'inputs changed' in capsys.readouterr().err
  # The rerun sees one set throughout and finishes the job.
  monkeypatch.undo()
  assert main(['--input', str(inputs), '--style',
               str(samples / 'style' / 'waves.jpg'), '--model', 'builtin',
               '--output', str(out), '--wave_pairs', '2']) == 0
