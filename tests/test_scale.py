"""Archive-scale guarantees: retried bundles, sharded manifest sink, guards, progress
(the keyed skip join on worker processes: test_end_to_end)."""

import json
import os
import threading

import pytest
from apache_beam.io.filesystems import FileSystems

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from beam_jobs.stylize import main, run
from tests.conftest import gradient
from tests.test_end_to_end import manifest_rows, summary
from transforms import storage
from transforms.encode import EncodeAndWriteFn
from transforms.layout import OutputLayout
from transforms.manifest import ManifestSink
from transforms.progress import EXPECTED, read_events
from transforms.records import InputFile, StyleRef, StylizedImage


def _photos(folder, n, start=0, size=(24, 16)):
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(start, start + n):
    sub = folder / f'd{i % 3}'
    sub.mkdir(exist_ok=True)
    gradient(*size, seed=i).save(sub / f'img{i:03d}.jpg')


def _argv(tmp_path, samples, *extra):
  return ['--input', str(tmp_path / 'in'), '--style',
          str(samples / 'style' / 'waves.jpg'), '--style',
          str(samples / 'style' / 'mosaic.png'), '--model', 'builtin',
          '--output', str(tmp_path / 'out'), '--max_size', '32'] + list(extra)


def _stylized(tmp_path):
  src = tmp_path / 'in' / 'a.jpg'
  src.parent.mkdir(parents=True)
  gradient(24, 16).save(src)
  import numpy as np
  item = InputFile(uri=str(src), key='a.jpg', size_bytes=1, todo=('waves',))
  return StylizedImage(input=item, style=StyleRef(uri='/s/waves.jpg',
                                                  label='waves'),
                       pixels=np.zeros((16, 24, 3), np.uint8))


def test_retried_write_bundle_neither_duplicates_nor_loses(tmp_path):
  """A runner retries a failed bundle by running it again: the outputs and
  markers of the first attempt are overwritten in place, and the manifest
  sink keeps only the committed attempt's rows."""
  lay = OutputLayout.create(str(tmp_path / 'out'), 'jpg', str(tmp_path / 'in'),
                            run_id='r1')
  fn = EncodeAndWriteFn(lay, 90, {'model': 'm', 'params': {}, 'run_id': 'r1'},
                        'job')
  fn.setup()
  item = _stylized(tmp_path)
  attempts = []
  for _ in range(2):  # The first attempt's bundle "failed" after its write.
    fn.start_bundle()
    attempts.append(list(fn.process(item, timestamp=MIN_TIMESTAMP,
                                    window=GlobalWindow())) +
                    list(fn.finish_bundle()))
  fn.teardown()
  assert [len(a) for a in attempts] == [1, 1]
  files = sorted(p.relative_to(tmp_path / 'out').as_posix()
                 for p in (tmp_path / 'out').rglob('*') if p.is_file())
  assert len(files) == 2  # One output, one marker; nothing left in tmp.
  assert files[1] == 'waves/a.jpg.jpg'
  assert files[0].startswith('.stylize/done/waves/a.jpg.jpg.')

  # The manifest sink, driven through Beam's file-sink protocol: bundle 1
  # is written twice (a failed attempt and its retry), bundle 2 once.
  sink = ManifestSink(lay)
  init = sink.initialize_write()

  def bundle(uid, lines):
    writer = sink.open_writer(init, uid)
    for line in lines:
      writer.write(line)
    return writer.close()

  bundle('attempt-1', [b'{"a": 1}', b'{"a": 2}'])  # Lost with its worker.
  committed = [bundle('attempt-2', [b'{"a": 1}', b'{"a": 2}']),
               bundle('other', [b'{"a": 3}'])]
  sink.pre_finalize(init, committed)
  finals = list(sink.finalize_write(init, committed, None))
  lines = sorted(l for f in finals
                 for l in open(f, encoding='utf-8').read().splitlines())
  assert lines == ['{"a": 1}', '{"a": 2}', '{"a": 3}']
  assert not os.path.exists(init)  # The temporary folder is gone.


def test_a_manifest_missing_pairs_cannot_exit_0(tmp_path, samples, capsys,
                                                 monkeypatch):
  """The guard: drop one row on its way to the manifest (as a runner bug
  would) and the run must fail, saying what is missing."""
  _photos(tmp_path / 'in', 3)
  original = EncodeAndWriteFn.work
  dropped = []

  def lossy(self, item):
    outputs, counts = original(self, item)
    if not dropped:
      dropped.append(item.input.uri)
      return [], counts
    return outputs, counts

  monkeypatch.setattr(EncodeAndWriteFn, 'work', lossy)
  code = main(_argv(tmp_path, samples))
  err = capsys.readouterr().err
  assert code == 1
  assert 'holds 5 rows for 6 listed (input, style) pairs; 1 missing' in err
  assert summary(tmp_path / 'out')['verdict'] == 'incomplete'
  monkeypatch.setattr(EncodeAndWriteFn, 'work', original)
  assert main(_argv(tmp_path, samples)) == 0  # A rerun completes it.


def test_a_listing_error_fails_the_run_instead_of_redoing_everything(
    tmp_path, samples, monkeypatch):
  _photos(tmp_path / 'in', 2)
  run(_argv(tmp_path, samples))
  real_scandir = os.scandir
  broken = str(tmp_path / 'out' / 'waves')

  def scandir(path='.'):
    if str(path) == broken:
      raise PermissionError(13, 'Permission denied', str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, 'scandir', scandir)
  with pytest.raises(Exception, match='could not list .*waves.*Permission'):
    run(_argv(tmp_path, samples))
  monkeypatch.setattr(os, 'scandir', real_scandir)
  assert {r['status'] for r in manifest_rows(tmp_path / 'out')} == {'ok'}


def test_iter_files_streams_and_refuses_nothing_silently(tmp_path):
  (tmp_path / 'a' / 'b').mkdir(parents=True)
  (tmp_path / 'a' / 'b' / 'x.jpg').write_bytes(b'x')
  it = storage.iter_files(str(tmp_path / 'a'))
  assert not isinstance(it, list)  # A generator: nothing gathered.
  assert [e.path for e in it] == [str(tmp_path / 'a' / 'b' / 'x.jpg')]
  assert list(storage.iter_files(str(tmp_path / 'missing'))) == []


def test_progress_moves_while_images_are_stylized(tmp_path, samples,
                                                 monkeypatch):
  """The 11th encode waits until the launcher's event files show pairs done:
  progress is seen in the middle of the run (an event, not a sampling
  race), while that pair and the ones after it are still to do."""
  _photos(tmp_path / 'in', 30, size=(480, 360))
  progress = tmp_path / 'progress'
  progress.mkdir()
  from transforms import encode
  real = encode.encode_image
  calls, seen = [], []

  def encode_after_progress(*args, **kwargs):
    calls.append(1)
    if len(calls) == 11:
      for _ in range(6000):  # Up to 10 minutes; the flush is every 0.5 s.
        done = sum(read_events(str(progress)).get(k, 0)
                   for k in ('ok', 'failed', 'skipped'))
        if done:
          seen.append(done)
          break
        threading.Event().wait(0.1)
    return real(*args, **kwargs)

  monkeypatch.setattr(encode, 'encode_image', encode_after_progress)
  run(_argv(tmp_path, samples, '--batch_size', '1', '--max_size', '480'),
      progress_dir=str(progress))
  events = read_events(str(progress))
  assert events['ok'] == 60
  assert events[EXPECTED] == 60  # The total was known from the start.
  # Pairs were seen done while the 11th was still to encode.
  assert seen and 0 < seen[0] < 60, seen


def test_manifest_rows_carry_the_run_id_and_shards_read_back(tmp_path,
                                                            samples):
  _photos(tmp_path / 'in', 2)
  run(_argv(tmp_path, samples, '--manifest_shards', '2'))
  out = tmp_path / 'out'
  run_id = summary(out)['run_id']
  rows = manifest_rows(out)
  assert len(rows) == 4 and {r['run_id'] for r in rows} == {run_id}
  for name in summary(out)['manifest']:
    with FileSystems.open(name) as f:
      assert all(json.loads(l) for l in f.read().decode().splitlines())
