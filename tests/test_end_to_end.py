"""run([...]) end to end: real models, real files, the real Beam runners."""

import glob
import json
import os

import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from PIL import Image

from beam_jobs.stylize import main, run
from benchmarks.run import manifest_rows
from tests.conftest import CHILD_MODEL, ROOT, gradient, image_bytes


def summary(out):
  with open(os.path.join(out, 'summary.json'), encoding='utf-8') as f:
    return json.load(f)


def metric(result, name):
  counters = result.metrics().query(
      MetricsFilter().with_name(name))['counters']
  return sum(c.committed for c in counters)


@pytest.mark.slow
def test_shared_content_two_styles_real_model(tmp_path, shared_content,
                                             shared_styles, shared_savedmodel):
  out = tmp_path / 'out'
  styles = [shared_styles / 'towers_1916_sq.jpg', shared_styles / 'bricks_sq.jpg']
  run(['--input', str(shared_content), '--style', str(styles[0]),
       '--style', str(styles[1]), '--output', str(out),
       '--model', str(shared_savedmodel), '--max_size', '200'])
  rows = manifest_rows(out)
  assert len(rows) == 8
  assert {r['status'] for r in rows} == {'ok'}
  inputs = sorted(glob.glob(str(shared_content / '*.jpg')))
  assert sorted({r['input'] for r in rows}) == inputs
  for row in rows:
    with Image.open(row['output']) as im:
      im.load()
      assert im.size == (row['width'], row['height'])
    with Image.open(row['input']) as src:
      scale = 200 / max(src.size)
      assert (row['width'], row['height']) == (
          round(src.width * scale), round(src.height * scale))
    assert row['model'] == str(shared_savedmodel)
    assert row['error'] is None and row['timings']['stylize_s'] > 0
  # Stylized, not copied: outputs differ clearly from the resized inputs.
  row = rows[0]
  src = Image.open(row['input']).convert('RGB').resize(
      (row['width'], row['height']))
  diff = np.abs(np.asarray(Image.open(row['output']), dtype=float) -
                np.asarray(src, dtype=float)).mean()
  assert diff > 20
  assert summary(out)['counts'] == {'ok': 8, 'failed': 0, 'skipped': 0}


def _nested_photos(folder, n, start=0):
  for i in range(start, start + n):
    sub = folder / f'd{i % 3}'
    sub.mkdir(parents=True, exist_ok=True)
    gradient(24 + i, 16, seed=i).save(sub / f'img{i:03d}.jpg')


@pytest.mark.slow
def test_worker_processes_load_the_model_once_and_rerun_what_is_not_done(
    tmp_path, samples, monkeypatch):
  """The multi-process runner (one run, checked for everything that needs
  worker processes): the model is loaded once per worker process, never in
  the launcher's; the manifest is sharded; a rerun's keyed skip join does
  only the new and the missing pairs, each pair listed exactly once.
  (test_readme_multiprocess_example_is_quiet runs worker processes on the
  TensorFlow model, builtin.)"""
  load_log = tmp_path / 'loads.jsonl'
  # Inherited by the worker processes the multi-process runner starts.
  monkeypatch.setenv('STYLIZE_MODEL_LOAD_LOG', str(load_log))
  inputs, out = tmp_path / 'in', tmp_path / 'out'
  _nested_photos(inputs, 9)
  argv = ['--input', str(inputs), '--style',
          str(samples / 'style' / 'waves.jpg'), '--style',
          str(samples / 'style' / 'mosaic.png'), '--model', CHILD_MODEL,
          '--output', str(out), '--max_size', '32', '--batch_size', '2',
          '--manifest_shards', '3', '--direct_running_mode=multi_processing',
          '--direct_num_workers=2']
  result = run(argv)
  loads = metric(result, 'model_loads')
  load_pids = [json.loads(line)['pid'] for line in
               load_log.read_text().splitlines()]
  assert 1 <= loads <= 2
  assert len(load_pids) == loads
  assert len(set(load_pids)) == len(load_pids)  # Never twice in one process.
  assert os.getpid() not in load_pids  # Loaded in the workers.
  assert metric(result, 'stylized') == 18
  assert len(list(out.glob('manifest-*-of-00003.jsonl'))) == 3
  assert [r['status'] for r in manifest_rows(out)] == ['ok'] * 18

  _nested_photos(inputs, 3, start=9)
  os.remove(next(out.glob('waves/d0/img000.jpg.jpg')))  # Redone.
  run(argv)
  rows = manifest_rows(out)
  pairs = [(r['input'], r['style']) for r in rows]
  assert len(pairs) == len(set(pairs)) == 24  # Each pair exactly once.
  status = {}
  for r in rows:
    status[r['status']] = status.get(r['status'], 0) + 1
  assert status == {'skipped': 17, 'ok': 7}
  assert len({r['run_id'] for r in rows}) == 1
  assert rows[0]['run_id'] == summary(out)['run_id']
  assert summary(out)['verdict'] == 'ok'
  assert sorted(os.path.basename(m) for m in summary(out)['manifest']) == [
      f'manifest-0000{i}-of-00003.jsonl' for i in range(3)]


def _mixed_folder(root):
  """Good, broken and degenerate images mixed in nested folders."""
  (root / 'one' / 'sub').mkdir(parents=True)
  (root / 'two').mkdir()
  good = {
      'one/IMG_0001.jpg': gradient(120, 80),
      'two/IMG_0001.jpg': gradient(120, 80, seed=3),
      'one/sub/Straße_café.PNG': gradient(90, 60, seed=4),
      'two/portrait.JPEG': gradient(60, 90, seed=5),
      'two/tiny.png': Image.new('RGB', (1, 1), (10, 200, 30)),
      'one/strip.png': gradient(4000, 40, seed=6),
      'one/rgba.png': gradient(50, 50, seed=7).convert('RGBA'),
  }
  for rel, im in good.items():
    im.save(root / rel)
  broken = {
      'one/truncated.jpg': image_bytes(gradient(120, 80), 'JPEG')[:300],
      'two/empty.jpg': b'',
      'two/notes.png': b'this is not a png',
  }
  for rel, data in broken.items():
    (root / rel).write_bytes(data)
  (root / 'one' / '.DS_Store').write_bytes(b'\0')
  (root / 'two' / 'IMG_0001.xmp').write_text('<x/>')
  return sorted(good), sorted(broken)


def test_mixed_folder_every_image_once_nothing_lost(tmp_path, samples):
  inputs = tmp_path / 'in'
  good, broken = _mixed_folder(inputs)
  out = tmp_path / 'out'
  styles = [samples / 'style' / 'waves.jpg', samples / 'style' / 'mosaic.png']
  run(['--input', str(inputs), '--style', str(styles[0]), '--style',
       str(styles[1]), '--output', str(out), '--model', 'builtin',
       '--batch_size', '3', '--max_size', '512'])
  rows = manifest_rows(out)
  by_key = {}
  for row in rows:
    key = (row['input'], row['style'])
    assert key not in by_key, f'{key} appears twice'
    by_key[key] = row
  expected_inputs = {str(inputs / r) for r in good + broken}
  assert {r['input'] for r in rows} == expected_inputs
  assert len(rows) == 2 * len(expected_inputs)
  for row in rows:
    rel = os.path.relpath(row['input'], inputs)
    if rel in broken:
      assert row['status'] == 'failed' and row['output'] is None
      assert row['error'].startswith('decode: ')
    else:
      assert row['status'] == 'ok', row
      with Image.open(row['output']) as im:
        assert im.size == (row['width'], row['height'])
  outputs = [r['output'] for r in rows if r['output']]
  assert len(outputs) == len(set(outputs))
  assert by_key[(str(inputs / 'one/strip.png'), str(styles[0]))]['height'] == 5
  assert by_key[(str(inputs / 'two/tiny.png'), str(styles[0]))]['width'] == 1
  s = summary(out)
  assert s['counts'] == {'ok': 14, 'failed': 6, 'skipped': 0}
  assert s['files_ignored'] == 2


def _export_picky_model(path):
  """A real SavedModel that raises on any batch holding an all-black image."""
  import tensorflow as tf

  class Picky(tf.Module):

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, content, style):
      brightest = tf.reduce_max(content, axis=[1, 2, 3])
      check = tf.debugging.assert_greater(brightest, 0.0,
                                          message='all-black image')
      with tf.control_dependencies([check]):
        return [1.0 - content]

  tf.saved_model.save(Picky(), str(path))


def test_failing_batch_is_retried_image_by_image(tmp_path, samples):
  model = tmp_path / 'picky'
  _export_picky_model(model)
  inputs = tmp_path / 'in'
  inputs.mkdir()
  for i in range(4):
    gradient(40, 40, seed=i).save(inputs / f'ok{i}.png')
  Image.new('RGB', (40, 40), (0, 0, 0)).save(inputs / 'black.png')
  out = tmp_path / 'out'
  # On TensorFlow: OpenVINO drops TF's assertion ops when it converts.
  run(['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
       '--output', str(out), '--model', str(model), '--batch_size', '5',
       '--engine', 'tf'])
  rows = {os.path.basename(r['input']): r for r in manifest_rows(out)}
  assert len(rows) == 5
  assert rows['black.png']['status'] == 'failed'
  assert 'all-black image' in rows['black.png']['error']
  assert all(rows[f'ok{i}.png']['status'] == 'ok' for i in range(4))


def test_rerun_replaces_manifest_completely(tmp_path, samples):
  out = tmp_path / 'out'
  out.mkdir()
  stale = out / 'manifest-00001-of-00002.jsonl'
  stale.write_text('{"stale": true}\n')
  argv = ['--input', str(samples / 'content' / 'city.jpg'), '--style',
          str(samples / 'style' / 'waves.jpg'), '--output', str(out),
          '--model', 'builtin']
  run(argv)
  assert not stale.exists()
  first = summary(out)['run_id']
  run(argv)
  rows = manifest_rows(out)
  # The rerun found the work done: one row, now 'skipped', same output.
  assert len(rows) == 1 and rows[0]['status'] == 'skipped'
  assert rows[0]['output'].endswith('/waves/city.jpg.jpg')
  assert summary(out)['run_id'] != first


def test_quickstart_config_runs_offline(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(ROOT)
  out = tmp_path / 'quick'
  code = main(['--config', 'configs/local.yaml', '--output', str(out)])
  assert code == 0
  rows = manifest_rows(out)
  assert len(rows) == 8 and {r['status'] for r in rows} == {'ok'}
  assert 'ok 8' in capsys.readouterr().out
  # The README's first command shows the embedded network, not builtin.
  assert {r['model'] for r in rows} == {'magenta-lite'}
