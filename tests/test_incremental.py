"""Incremental runs, interrupted runs, digests and failure-ratio exit codes."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from PIL import Image

from beam_jobs.options import ConfigError
from beam_jobs.stylize import main, run
from tests.conftest import ROOT, gradient
from tests.test_end_to_end import manifest_rows


def _photos(folder, n, size=(640, 480)):
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(n):
    gradient(*size, seed=i).save(folder / f'img{i:03d}.jpg', quality=90)


def _small_job(tmp_path, samples, n):
  """n small photos, the builtin model: (input folder, output, argv)."""
  inputs = tmp_path / 'in'
  _photos(inputs, n, (64, 48))
  out = tmp_path / 'out'
  argv = ['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
          '--model', 'builtin', '--output', str(out)]
  return inputs, out, argv


def _count_files(folder):
  return sum(len(files) for _, _, files in os.walk(folder))


def _statuses(out):
  return {os.path.basename(r['input']): r['status'] for r in manifest_rows(out)}


def test_rerun_after_adding_images_does_only_the_new(tmp_path, samples):
  inputs, out, argv = _small_job(tmp_path, samples, 6)
  run(argv)
  before = {p: os.path.getmtime(p) for p in glob.glob(f'{out}/waves/*.jpg')}
  assert len(before) == 6
  for i in range(6, 9):
    gradient(64, 48, seed=i).save(inputs / f'img{i:03d}.jpg')
  run(argv)
  status = _statuses(out)
  assert sorted(k for k, v in status.items() if v == 'skipped') == [
      f'img{i:03d}.jpg' for i in range(6)]
  assert sorted(k for k, v in status.items() if v == 'ok') == [
      f'img{i:03d}.jpg' for i in range(6, 9)]
  for path, mtime in before.items():
    assert os.path.getmtime(path) == mtime  # Not rewritten.


def test_changed_input_or_parameters_are_redone(tmp_path, samples):
  inputs, out, argv = _small_job(tmp_path, samples, 2)
  run(argv)
  gradient(80, 40, seed=99).save(inputs / 'img000.jpg')  # Edited photo.
  run(argv)
  assert _statuses(out) == {'img000.jpg': 'ok', 'img001.jpg': 'skipped'}
  run(argv + ['--jpeg_quality', '70'])  # Another parameter: all redone.
  assert {r['status'] for r in manifest_rows(out)} == {'ok'}
  run(argv + ['--jpeg_quality', '70', '--force'])
  assert {r['status'] for r in manifest_rows(out)} == {'ok'}


def test_deleted_output_is_redone(tmp_path, samples):
  _, out, argv = _small_job(tmp_path, samples, 2)
  run(argv)
  os.remove(out / 'waves' / 'img001.jpg.jpg')
  run(argv)
  assert _statuses(out) == {'img000.jpg': 'skipped', 'img001.jpg': 'ok'}
  assert (out / 'waves' / 'img001.jpg.jpg').exists()


# The job encodes 4 pairs, then holds every later encode: the test kills it
# there (an event from inside the job, not a race against its speed).
_HOLD_AFTER_4 = '''
    import pathlib, threading, sys
    from transforms import encode
    _real, _calls, _lock = encode.encode_image, [], threading.Lock()
    def held(*args, **kwargs):
      with _lock:
        _calls.append(1)
        n = len(_calls)
      if n > 4:
        pathlib.Path(sys.argv[-1] + '.held').touch()
        threading.Event().wait()  # Until killed.
      return _real(*args, **kwargs)
    encode.encode_image = held
'''


def test_killed_run_then_rerun_processes_each_input_exactly_once(
    tmp_path, samples):
  inputs = tmp_path / 'in'
  _photos(inputs, 12)
  out = tmp_path / 'out'
  argv = ['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
          '--model', 'builtin', '--batch_size', '2', '--output', str(out)]
  code = textwrap.dedent(_HOLD_AFTER_4) + textwrap.dedent('''
      import sys
      from beam_jobs.stylize import main
      sys.exit(main(sys.argv[1:]))
  ''')
  log = tmp_path / 'stderr.txt'
  with open(log, 'wb') as err:
    proc = subprocess.Popen([sys.executable, '-c', code] + argv, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=err)
  done_dir = out / '.stylize' / 'done'
  try:
    # Held, and the 4 encoded pairs written with their markers.
    while not (os.path.exists(f'{out}.held') and done_dir.exists()
               and _count_files(done_dir) >= 4):
      assert proc.poll() is None, log.read_text()[-3000:]
      threading.Event().wait(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  done_before = _count_files(done_dir)
  assert done_before == 4
  assert not list(out.glob('manifest*.jsonl'))  # It died before the manifest.
  # What a write killed half-way leaves: a file in the run's temporary
  # folder, never a final name.
  leftovers = list((out / '.stylize' / 'tmp').iterdir())
  (leftovers[0] / 'deadbeef0000').write_bytes(b'\xff')
  run(argv)
  rows = manifest_rows(out)
  assert sorted(os.path.basename(r['input']) for r in rows) == [
      f'img{i:03d}.jpg' for i in range(12)]
  skipped = [r for r in rows if r['status'] == 'skipped']
  assert len(skipped) == done_before
  assert all(r['status'] in ('ok', 'skipped') for r in rows)
  assert not list((out / '.stylize' / 'tmp').rglob('*'))
  files = sorted(out.glob('waves/*'))
  assert len(files) == 12
  for f in files:
    with Image.open(f) as im:
      im.load()  # Complete, decodable files only.


def test_model_digest_mismatch_fails_fast(tmp_path, samples, shared_savedmodel):
  photo = tmp_path / 'p.jpg'
  gradient(32, 32).save(photo)
  out = tmp_path / 'out'
  with pytest.raises(ConfigError, match='SHA-256 .* not the expected'):
    run(['--input', str(photo), '--style', str(samples / 'style' / 'waves.jpg'),
         '--model', str(shared_savedmodel), '--model_sha256', '0' * 64,
         '--output', str(out)])
  assert not (out / 'summary.json').exists()


def test_failure_ratio_decides_the_exit_code(tmp_path, samples, capsys):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(32, 32).save(inputs / 'good.jpg')
  (inputs / 'bad.jpg').write_bytes(b'broken')
  argv = ['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
          '--model', 'builtin']
  assert main(argv + ['--output', str(tmp_path / 'a')]) == 1
  assert 'more than --max_failure_ratio' in capsys.readouterr().err
  assert main(argv + ['--output', str(tmp_path / 'b'),
                      '--max_failure_ratio', '0.5']) == 0
  summary = json.loads((tmp_path / 'b' / 'summary.json').read_text())
  assert summary['counts'] == {'ok': 1, 'failed': 1, 'skipped': 0}
