"""A record to trust across nightly runs: identity, markers, durability,
one run per output folder, known failures (issue 18).

Every test runs the real pipeline (the builtin model unless the model is the
subject; conftest.CHILD_MODEL where a job runs in a child process) on small
images; crashes are real process deaths at the named point (os._exit or
SIGKILL in a subprocess).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from PIL import Image

from beam_jobs.stylize import main, run
from tests.conftest import CHILD_MODEL, ROOT, gradient, shared_path
from tests.test_end_to_end import manifest_rows
from transforms.lease import Lease, LeaseHeld, LeaseInfo, LeaseLost


def _photos(folder, n, size=(64, 48)):
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(n):
    gradient(*size, seed=i).save(folder / f'img{i:03d}.jpg', quality=90)


def _job(tmp_path, n=3, style=None, model='builtin'):
  inputs = tmp_path / 'in'
  _photos(inputs, n)
  if style is None:
    style = tmp_path / 'style.bmp'
    gradient(64, 64, seed=50).save(style)
  out = tmp_path / 'out'
  return out, ['--input', str(inputs), '--style', str(style), '--model',
               model, '--output', str(out)]


def _statuses(out):
  return {os.path.basename(r['input']): r['status'] for r in manifest_rows(out)}


def _outputs(out, label='style'):
  return {p.name: p.read_bytes() for p in sorted((out / label).glob('*'))}


def _subprocess_run(argv, hook='', env=None):
  """stylize in a child process, with Python code run first (a crash or a
  pause placed at a point of the job)."""
  code = textwrap.dedent(hook) + textwrap.dedent('''
      import sys
      from beam_jobs.stylize import main
      sys.exit(main(sys.argv[1:]))
  ''')
  return subprocess.Popen([sys.executable, '-c', code] + list(argv),
                          cwd=ROOT, env=env or dict(os.environ),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


# --------------------------------------------------------------- identity --

def test_a_setting_changed_and_changed_back_redoes_the_pairs(tmp_path):
  out, argv = _job(tmp_path)
  run(argv + ['--jpeg_quality', '90'])
  q90 = _outputs(out)
  run(argv + ['--jpeg_quality', '20'])
  assert set(_statuses(out).values()) == {'ok'}
  q20 = _outputs(out)
  assert all(len(q20[k]) < len(q90[k]) for k in q90)
  run(argv + ['--jpeg_quality', '90'])
  # Not "skipped": the markers said q20. The files are q90 again.
  assert set(_statuses(out).values()) == {'ok'}
  assert _outputs(out) == q90
  run(argv + ['--jpeg_quality', '90'])
  assert set(_statuses(out).values()) == {'skipped'}
  # One marker per output, replaced each time: none accumulate.
  markers = sorted(p.name for p in (out / '.stylize' / 'done' / 'style').iterdir())
  assert markers == sorted(f'{k}.json' for k in q90)


def test_an_input_restored_with_its_old_size_and_time_is_redone(tmp_path):
  out, argv = _job(tmp_path, n=1)
  photo = tmp_path / 'in' / 'img000.jpg'
  original = photo.read_bytes()
  stat = photo.stat()
  run(argv)
  first = _outputs(out)
  gradient(64, 48, seed=77).save(photo, quality=90)
  run(argv)
  assert _statuses(out) == {'img000.jpg': 'ok'}
  photo.write_bytes(original)
  os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  run(argv)
  assert _statuses(out) == {'img000.jpg': 'ok'}  # The marker said the other.
  assert _outputs(out) == first


def test_a_style_replaced_in_place_redoes_its_pairs(tmp_path):
  style = tmp_path / 'style.bmp'
  gradient(64, 64, seed=1).save(style)
  out, argv = _job(tmp_path, style=style)
  run(argv)
  before = _outputs(out)
  stat = style.stat()
  # Another painting: same name, same size in bytes (BMP), same time.
  gradient(64, 64, seed=2).transpose(Image.Transpose.ROTATE_90).save(style)
  os.utime(style, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert style.stat().st_size == stat.st_size
  run(argv)
  assert set(_statuses(out).values()) == {'ok'}
  assert _outputs(out) != before
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['styles'][0]['fingerprint']


def test_a_model_folder_replaced_in_place_redoes_everything(tmp_path):
  lite = shared_path('models', 'magenta-arbitrary-v1-256-lite')
  model = tmp_path / 'model'
  model.mkdir()
  shutil.copy(lite / 'style_predict_quantized_256.tflite', model)
  transfer = model / 'style_transfer.tflite'
  shutil.copy(lite / 'style_transfer_quantized_384.tflite', transfer)
  out, argv = _job(tmp_path, n=2)
  argv = argv[:argv.index('--model')] + argv[argv.index('--model') + 2:] + [
      '--model', str(model)]
  run(argv)
  run(argv)
  assert set(_statuses(out).values()) == {'skipped'}
  # The transfer network replaced by the float16 one, under the same name.
  shutil.copy(lite / 'style_transfer_f16_384.tflite', transfer)
  run(argv)
  assert set(_statuses(out).values()) == {'ok'}
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['model_fingerprint'].startswith('sha256:')


# ---------------------------------------------------- markers, durability --

def test_outputs_are_byte_for_byte_reproducible_across_processes(tmp_path):
  """Equal pixels encode to equal bytes whichever process writes them (the
  embedded sRGB profile carries a fixed date)."""
  code = ('import sys, numpy as np; from transforms.encode import '
          'encode_image; from transforms.icc import srgb_profile; '
          'sys.stdout.buffer.write(encode_image(np.full((8, 8, 3), 90, '
          'np.uint8), "jpg", 90, icc_profile=srgb_profile()))')
  runs = [subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                         capture_output=True).stdout for _ in range(2)]
  assert runs[0] == runs[1] and len(runs[0]) > 500


def test_an_empty_or_truncated_output_with_its_marker_is_redone(tmp_path):
  out, argv = _job(tmp_path, n=3)
  run(argv)
  good = _outputs(out)
  (out / 'style' / 'img000.jpg.jpg').write_bytes(b'')  # Power loss.
  data = good['img001.jpg.jpg']
  (out / 'style' / 'img001.jpg.jpg').write_bytes(data[:len(data) // 2])
  run(argv)
  assert _statuses(out) == {'img000.jpg': 'ok', 'img001.jpg': 'ok',
                            'img002.jpg': 'skipped'}
  assert _outputs(out) == good


CRASH_AFTER_OUTPUT = '''
    import os
    from transforms import storage
    _write = storage.Writer.write
    _seen = []
    def write(self, uri, data, mime_type='application/octet-stream'):
      _write(self, uri, data, mime_type)
      if '/.stylize/' not in uri and uri.endswith('.jpg.jpg'):
        _seen.append(uri)
        if len(_seen) == 2:
          os._exit(9)  # After an output, before its marker.
    storage.Writer.write = write
'''

CRASH_BEFORE_MANIFEST = '''
    import os
    from transforms import manifest
    def pre_finalize(self, *args):
      os._exit(9)  # Every output and marker written; no manifest yet.
    manifest.ManifestSink.pre_finalize = pre_finalize
'''


@pytest.mark.parametrize('hook', [CRASH_AFTER_OUTPUT, CRASH_BEFORE_MANIFEST],
                         ids=['output-then-crash', 'markers-then-crash'])
def test_a_crash_between_writes_loses_nothing(tmp_path, hook):
  out, argv = _job(tmp_path, n=4, model=CHILD_MODEL)
  crashed = _subprocess_run(argv + ['--io_threads', '0'], hook)
  crashed.communicate(timeout=300)
  assert crashed.returncode == 9
  assert not list(out.glob('manifest*.jsonl'))
  markers = list((out / '.stylize' / 'done' / 'style').glob('*.json'))
  code = main(argv)
  assert code == 0
  rows = manifest_rows(out)
  assert sorted(os.path.basename(r['input']) for r in rows) == [
      f'img{i:03d}.jpg' for i in range(4)]
  statuses = _statuses(out)
  # Exactly the pairs whose marker was written are skipped.
  assert sorted(k for k, v in statuses.items() if v == 'skipped') == sorted(
      m.name[:-len('.jpg.json')] for m in markers)
  if hook is CRASH_AFTER_OUTPUT:
    assert 'ok' in statuses.values()  # The output without its marker.
  for f in (out / 'style').iterdir():
    with Image.open(f) as im:
      im.load()
  assert not list((out / '.stylize' / 'tmp').rglob('*.jsonl'))


# ---------------------------------------------------------------- lease --

def test_a_second_run_on_the_output_is_refused_while_the_first_runs(
    tmp_path, monkeypatch):
  out, argv = _job(tmp_path, n=4)
  from transforms import encode
  started, go = threading.Event(), threading.Event()
  real = encode.encode_image

  def paused(*args, **kwargs):
    started.set()
    assert go.wait(300)
    return real(*args, **kwargs)

  monkeypatch.setattr(encode, 'encode_image', paused)
  result = {}
  first = threading.Thread(target=lambda: result.update(code=main(argv)))
  first.start()
  try:
    assert started.wait(300)
    lease = json.loads((out / '.stylize' / 'lease.json').read_text())
    second = _subprocess_run(argv)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2, err
    assert err.startswith('stylize: error: --output is in use by another '
                          f'stylize run {lease["run_id"]}')
    assert f'pid {os.getpid()}' in err and '--break_lease' in err
  finally:
    go.set()
    first.join()
  assert result['code'] == 0
  # The first run's manifest holds all its rows.
  assert sorted(_statuses(out)) == [f'img{i:03d}.jpg' for i in range(4)]
  assert set(_statuses(out).values()) == {'ok'}
  assert not (out / '.stylize' / 'lease.json').exists()  # Released.


PAUSE_IN_ENCODE = '''
    import pathlib, threading, sys
    from transforms import encode
    _real = encode.encode_image
    def paused(*args, **kwargs):
      pathlib.Path(sys.argv[-1] + '.started').touch()
      threading.Event().wait()  # Until killed.
    encode.encode_image = paused
'''


def test_the_lease_of_a_killed_run_is_taken_over(tmp_path):
  out, argv = _job(tmp_path, n=3, model=CHILD_MODEL)
  flag = tmp_path / 'out.started'
  killed = _subprocess_run(argv + ['--output', str(out)], PAUSE_IN_ENCODE)
  try:
    # The child touches the flag from inside the job: an event, no timing.
    while not flag.exists():
      assert killed.poll() is None, killed.communicate()
      threading.Event().wait(0.05)
  finally:
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
  lease = json.loads((out / '.stylize' / 'lease.json').read_text())
  assert lease['pid'] == killed.pid
  rerun = _subprocess_run(argv)
  _, err = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, err
  assert 'Took over the lease on --output from run ' in err
  assert 'it was stale' in err
  assert sorted(_statuses(out)) == [f'img{i:03d}.jpg' for i in range(3)]


def test_a_dry_run_says_the_output_is_in_use_and_takes_nothing(tmp_path,
                                                               capsys):
  out, argv = _job(tmp_path, n=1)
  holder = Lease(str(out), 'nightly-7', holder='stylize on another terminal')
  holder.acquire()
  assert main(argv + ['--dry_run']) == 0
  text = capsys.readouterr().out
  assert 'note: --output is in use by run nightly-7' in text
  assert Lease(str(out), 'x').current().run_id == 'nightly-7'
  holder.release()


def test_lease_expiry_break_and_loss_with_a_fake_clock(tmp_path):
  now = [1000.0]

  def clock():
    return now[0]

  a = Lease(str(tmp_path), 'run-a', clock=clock, heartbeat_s=30)
  b = Lease(str(tmp_path), 'run-b', clock=clock, heartbeat_s=30)
  a.acquire()
  # Held by a live process of this host, heartbeat recent: refused.
  now[0] += 299
  with pytest.raises(LeaseHeld, match='run run-a .* last heartbeat 299s ago'):
    b.acquire()
  a.refresh()
  now[0] += 299
  with pytest.raises(LeaseHeld):
    b.acquire()
  # Ten heartbeats missed: stale, taken over; the first run learns it.
  now[0] += 2
  replaced = b.acquire()
  assert replaced.run_id == 'run-a'
  with pytest.raises(LeaseLost, match='now held by run run-b'):
    a.refresh()
  # --break_lease takes a live lease.
  c = Lease(str(tmp_path), 'run-c', clock=clock)
  assert c.acquire(break_lease=True).run_id == 'run-b'
  # run-b notices at its next check, and when it releases.
  with pytest.raises(LeaseLost):
    b.check_recent()
  b.release()
  assert 'now held by run run-c' in b.lost
  c.release()
  assert c.lost is None
  assert not (tmp_path / '.stylize' / 'lease.json').exists()


def test_a_lease_of_a_process_that_is_gone_is_stale_at_once():
  import dataclasses
  import socket
  from transforms.lease import machine_id, process_start
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  child.wait()
  gone = LeaseInfo(run_id='old', host=socket.gethostname(), pid=child.pid,
                   started_at=0, heartbeat_at=1e12, expires_after_s=300,
                   machine=machine_id())
  assert gone.gone()
  alive = dataclasses.replace(gone, pid=os.getpid(),
                              process_start=process_start(os.getpid()))
  assert not alive.gone()
  # The same pid, reused by a later process: its start time differs.
  assert dataclasses.replace(alive, process_start='1').gone()
  # Another host's process, or another pid namespace's (a container with
  # the host's name), or a job's lease (pid 0), is never judged from here.
  assert not dataclasses.replace(gone, host='elsewhere').gone()
  assert not dataclasses.replace(gone, machine='boot/pid:[1]').gone()
  assert not dataclasses.replace(gone, pid=0).gone()


def test_a_submitted_jobs_lease_outlives_its_launcher(tmp_path):
  """A remote job's lease is the job's (pid 0): the launcher that took it
  has exited, the workers keep it, and another run on this host is
  refused; the job's last step releases it."""
  from transforms import lease as L
  launcher = Lease(str(tmp_path), 'job-1', process=False,
                   holder='a job submitted from here')
  launcher.acquire(expires_after_s=L.SUBMITTED_EXPIRY_S)
  worker = L.keep_on_worker(str(tmp_path), 'job-1', heartbeat=False)
  worker.refresh()
  with pytest.raises(LeaseHeld, match='run job-1 .a job submitted from'):
    Lease(str(tmp_path), 'night-2').acquire()
  L.release_at_end(str(tmp_path), 'job-1')
  Lease(str(tmp_path), 'night-2').acquire()
  with pytest.raises(LeaseLost, match='now held by run night-2'):
    L.release_at_end(str(tmp_path), 'job-1')  # Taken over: not a success.


def test_an_unreadable_lease_is_held_until_broken(tmp_path):
  (tmp_path / '.stylize').mkdir()
  (tmp_path / '.stylize' / 'lease.json').write_text('{"format": "v9"')
  with pytest.raises(LeaseHeld, match='cannot read.*--break_lease'):
    Lease(str(tmp_path), 'a').acquire()
  Lease(str(tmp_path), 'a').acquire(break_lease=True)


# ------------------------------------------------------- known failures --

def test_known_failures_fail_one_night_then_are_listed_not_retried(
    tmp_path, capsys):
  out, argv = _job(tmp_path, n=3)
  (tmp_path / 'in' / 'broken1.jpg').write_bytes(b'not a jpeg')
  (tmp_path / 'in' / 'broken2.png').write_bytes(b'\x89PNG\r\n\x1a\n-cut')
  assert main(argv) == 1  # 2 of 5 failed: over --max_failure_ratio.
  first = capsys.readouterr()
  assert 'broken1.jpg [style]: decode:' in first.out
  assert main(argv) == 0  # Nothing new: the same two, known.
  printed = capsys.readouterr().out
  rows = {os.path.basename(r['input']): r for r in manifest_rows(out)}
  for name in ('broken1.jpg', 'broken2.png'):
    assert rows[name]['status'] == 'failed' and rows[name]['known'] is True
    assert rows[name]['error'].startswith('decode: ')
    assert f'{name} [style]: decode: ' in printed
  assert 'failed pairs (2, 2 known from earlier runs' in printed
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['failed_known'], summary['failed_new']) == (2, 0)
  assert summary['verdict'] == 'ok'
  assert 'known' not in rows['img000.jpg']
  # --retry_failed tries them again: new failures again.
  assert main(argv + ['--retry_failed']) == 1
  rows = {os.path.basename(r['input']): r for r in manifest_rows(out)}
  assert rows['broken1.jpg']['known'] is False
  # A new broken file beside the known ones is named first.
  capsys.readouterr()
  (tmp_path / 'in' / 'zz_new.jpg').write_bytes(b'also broken')
  assert main(argv) == 1
  printed = capsys.readouterr()
  listed = [l for l in printed.out.splitlines() if '[style]:' in l]
  assert 'zz_new.jpg' in listed[0] and '(known)' not in listed[0]
  assert '1 of 6 pairs (16.7%) are new failures' in printed.err
  (tmp_path / 'in' / 'zz_new.jpg').unlink()
  # A fixed file is a new identity: done, whatever the markers say.
  gradient(64, 48, seed=9).save(tmp_path / 'in' / 'broken1.jpg')
  assert main(argv) == 0
  assert _statuses(out)['broken1.jpg'] == 'ok'


def test_a_limit_raised_retries_the_failures_it_caused(tmp_path):
  out, argv = _job(tmp_path, n=2)
  argv += ['--max_failure_ratio', '1']
  big = tmp_path / 'in' / 'big.jpg'
  gradient(400, 300, seed=3).save(big, quality=95)
  run(argv + ['--max_input_pixels', '50000'])
  run(argv + ['--max_input_pixels', '50000'])
  rows = {os.path.basename(r['input']): r for r in manifest_rows(out)}
  assert rows['big.jpg']['known'] is True
  run(argv + ['--max_input_pixels', '500000'])
  assert _statuses(out)['big.jpg'] == 'ok'


def test_a_run_whose_folder_is_taken_over_stops_writing_and_fails(
    tmp_path, monkeypatch, capsys):
  """Run A pauses; run B breaks A's lease (--break_lease) and finishes.
  A then writes nothing more (no output, no marker, no manifest over B's)
  and exits 1 saying it lost the folder."""
  out, argv = _job(tmp_path, n=3, model=CHILD_MODEL)
  from transforms import encode
  started, go = threading.Event(), threading.Event()
  real = encode.encode_image

  def paused(*args, **kwargs):
    if not started.is_set():
      started.set()
      assert go.wait(300)
    return real(*args, **kwargs)

  monkeypatch.setattr(encode, 'encode_image', paused)
  result = {}
  first = threading.Thread(target=lambda: result.update(code=main(argv)))
  first.start()
  try:
    assert started.wait(300)
    second = _subprocess_run(argv + ['--break_lease'])
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert 'broken with --break_lease' in err
    b_manifest = {p.name: p.read_bytes() for p in out.glob('manifest-*')}
    b_outputs = _outputs(out)
    b_markers = _outputs(out / '.stylize' / 'done')
  finally:
    go.set()
    first.join()
  assert result['code'] == 1
  err = capsys.readouterr().err
  assert 'lost its lease' in err
  # B's manifest and outputs are as B left them.
  assert {p.name: p.read_bytes() for p in out.glob('manifest-*')} == b_manifest
  assert _outputs(out) == b_outputs
  assert _outputs(out / '.stylize' / 'done') == b_markers


def test_a_pair_that_now_fails_leaves_no_older_output_behind(tmp_path):
  out, argv = _job(tmp_path, n=2)
  run(argv)
  assert (out / 'style' / 'img000.jpg.jpg').exists()
  (tmp_path / 'in' / 'img000.jpg').write_bytes(b'now broken')
  run(argv + ['--max_failure_ratio', '1'])
  rows = {os.path.basename(r['input']): r for r in manifest_rows(out)}
  assert rows['img000.jpg']['status'] == 'failed'
  assert rows['img000.jpg']['output'] is None
  # The manifest says failed: no image of the pair is on disk any more.
  assert not (out / 'style' / 'img000.jpg.jpg').exists()
  marker = json.loads((out / '.stylize' / 'done' / 'style' /
                       'img000.jpg.jpg.json').read_text())
  assert marker['status'] == 'failed'


def test_a_model_replaced_while_the_run_runs_fails_the_run(tmp_path,
                                                         monkeypatch):
  """Between waves the model folder is replaced: the next wave's workers
  refuse it (the launch took its fingerprint), and nothing made with it is
  marked done under the first model's identity."""
  from beam_jobs import stylize
  lite = shared_path('models', 'magenta-arbitrary-v1-256-lite')
  model = tmp_path / 'model'
  model.mkdir()
  shutil.copy(lite / 'style_predict_quantized_256.tflite', model)
  transfer = model / 'style_transfer.tflite'
  shutil.copy(lite / 'style_transfer_quantized_384.tflite', transfer)
  out, argv = _job(tmp_path, n=4)
  argv = argv[:argv.index('--model')] + argv[argv.index('--model') + 2:] + [
      '--model', str(model), '--wave_pairs', '2']
  real = stylize.run_waves

  def replace_after_first_wave(job, waves, run_one):
    def one(wave_job):
      result = run_one(wave_job)
      shutil.copy(lite / 'style_transfer_f16_384.tflite', transfer)
      return result
    return real(job, waves, one)

  monkeypatch.setattr(stylize, 'run_waves', replace_after_first_wave)
  with pytest.raises(Exception, match='changed since the job was launched'):
    run(argv)
