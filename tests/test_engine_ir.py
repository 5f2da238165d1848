"""OpenVINO conversions made once per machine in a child process
(transforms/models/engine/ov_ir.py): workers never import TensorFlow for a
SavedModel, a converted model computes what the in-process conversion
does, a replaced model or a changed conversion converts again, a model
OpenVINO cannot convert is noted, and a child that fails leaves the load
to the worker, which says so."""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, shared_path

pytest.importorskip('openvino')

RUN = '''
import json, sys
from beam_jobs.stylize import main
rc = main(sys.argv[1:])
print(json.dumps({'rc': rc, 'tensorflow': 'tensorflow' in sys.modules}))
'''


def _converted_folders(cache):
  root = cache / 'openvino'
  return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_openvino_runs_never_import_tensorflow(tmp_path):
  # The job's own process (the in-process runner's worker, and the launch
  # that checks the model) reads the converted models with OpenVINO alone;
  # the second run finds the conversion the first one made.
  from tests.test_end_to_end import manifest_rows
  cache = tmp_path / 'cache'
  env = dict(os.environ, STYLIZE_CACHE_DIR=str(cache))
  model = shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')
  content = shared_path('images', 'content')
  style = sorted(shared_path('images', 'style').glob('*.jpg'))[0]
  made = None
  for run in (1, 2):
    out = tmp_path / f'out{run}'
    done = subprocess.run(
        [sys.executable, '-c', RUN, '--input', f'{content}/*.jpg',
         '--style', str(style), '--model', str(model), '--output', str(out),
         '--engine', 'openvino', '--max_size', '256', '--quiet'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {'rc': 0, 'tensorflow': False}
    rows = manifest_rows(out)
    assert rows and {r['status'] for r in rows} == {'ok'}
    assert {r['engine'] for r in rows} == {'openvino'}
    folders = _converted_folders(cache)
    assert len(folders) == 1
    stamp = {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()}
    if made is None:
      made = stamp
    else:
      assert stamp == made  # Read, not converted again.


# Loaded by every Python process started with it on PYTHONPATH (the job, its
# worker processes, the converter child): notes each process that imports
# TensorFlow, with its command line (an observer: the import goes on).
OBSERVER = '''
import json, os, sys
class _Noter:
  def find_spec(self, name, path=None, target=None):
    if name == 'tensorflow':
      with open(os.environ['TF_IMPORT_LOG'], 'a') as f:
        f.write(json.dumps({'pid': os.getpid(), 'argv': sys.argv}) + '\\n')
    return None
sys.meta_path.insert(0, _Noter())
'''


@pytest.mark.slow
def test_multi_process_workers_never_import_tensorflow(tmp_path):
  # Worker processes cap TF's threads (--tf_threads: 1 per process on
  # remote runners, cores / workers here): that must not import TF either.
  # Only the converter child does (once: the cache is new).
  from tests.test_end_to_end import manifest_rows
  observer = tmp_path / 'observer'
  observer.mkdir()
  (observer / 'sitecustomize.py').write_text(OBSERVER)
  tf_log, load_log = tmp_path / 'tf.jsonl', tmp_path / 'loads.jsonl'
  env = dict(os.environ, STYLIZE_CACHE_DIR=str(tmp_path / 'cache'),
             TF_IMPORT_LOG=str(tf_log), STYLIZE_MODEL_LOAD_LOG=str(load_log),
             PYTHONPATH=os.pathsep.join(
                 [str(observer), os.environ.get('PYTHONPATH', '')]))
  model = shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')
  content = shared_path('images', 'content')
  style = sorted(shared_path('images', 'style').glob('*.jpg'))[0]
  out = tmp_path / 'out'
  done = subprocess.run(
      [sys.executable, '-c', RUN, '--input', f'{content}/*.jpg', '--style',
       str(style), '--model', str(model), '--output', str(out), '--engine',
       'openvino', '--max_size', '128', '--tf_threads', '1',
       '--direct_running_mode=multi_processing', '--direct_num_workers=2',
       '--quiet'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = manifest_rows(out)
  assert rows and {(r['status'], r['engine']) for r in rows} == {
      ('ok', 'openvino')}
  loads = [json.loads(l)['pid'] for l in load_log.read_text().splitlines()]
  importers = [json.loads(l) for l in tf_log.read_text().splitlines()]
  assert loads and not set(loads) & {i['pid'] for i in importers}
  assert len(importers) == 1 and str(model) in importers[0]['argv']


CAP = '''
import sys
from transforms.stylize import configure_tf_threads
configure_tf_threads(3)
print('imported:', 'tensorflow' in sys.modules)
from transforms.native_logs import import_tensorflow
tf = import_tensorflow()
print('threads:', tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
'''


def test_tf_thread_caps_wait_for_tensorflow_to_be_imported():
  done = subprocess.run(
      [sys.executable, '-c', CAP,
       str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'))],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'imported: False' in done.stdout
  assert 'threads: 3 2' in done.stdout


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
  cache = tmp_path / 'cache'
  monkeypatch.setenv('STYLIZE_CACHE_DIR', str(cache))
  return cache


@pytest.fixture(scope='module')
def images():
  from PIL import Image
  photo = Image.open(shared_path('images', 'content', 'golden_gate_sq.jpg'))
  content = np.asarray(photo.convert('RGB').resize((320, 200)),
                       np.float32)[np.newaxis] / 255
  style = np.asarray(Image.open(shared_path('images', 'style',
                                            'bricks_sq.jpg')).convert('RGB')
                     .resize((256, 256)), np.float32) / 255
  return content, style


def test_the_cached_conversion_computes_what_the_in_process_one_does(
    own_cache, images):
  import tensorflow_hub as hub
  from transforms.models import split_model
  from transforms.models.engine import ov_ir
  folder = str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'))
  cached, why = ov_ir.load(folder)
  assert not why and cached.parts is not None
  here = ov_ir.convert_loaded(hub.load(folder))
  assert cached.parts.vector_name == here.parts.vector_name
  content, style = images
  outs = []
  for converted in (cached, here):
    s = split_model.build('m', 'savedmodel', None, 'openvino', 'f32',
                          converted=converted)
    outs.append(s.run_batch(content, s.prepare_style(style)))
  np.testing.assert_array_equal(outs[0], outs[1])


def test_a_replaced_model_or_a_changed_conversion_converts_again(
    own_cache, tmp_path, caplog):
  from transforms.models.engine import ov_ir
  model = tmp_path / 'model'
  shutil.copytree(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'),
                  model)
  killed = own_cache / 'openvino' / '.convert-killed'  # A worker killed
  killed.mkdir(parents=True)  # mid-conversion left it.
  (killed / 'transfer.bin').write_bytes(b'half')
  first, _ = ov_ir.load(str(model))
  assert not killed.exists()
  (before,) = _converted_folders(own_cache)
  # Replaced in place (a file more): another key, converted again.
  (model / 'assets').mkdir(exist_ok=True)
  (model / 'assets' / 'note.txt').write_text('v2')
  ov_ir.load(str(model))
  folders = _converted_folders(own_cache)
  assert len(folders) == 2 and before in folders
  # A conversion changed after it was made is not used: made again.
  after = next(f for f in folders if f != before)
  with open(after / 'transfer.bin', 'r+b') as f:
    head = f.read(4)
    f.seek(0)
    f.write(bytes(255 - b for b in head))
  caplog.set_level(logging.INFO, logger='transforms.models.engine.ov_ir')
  again, why = ov_ir.load(str(model))
  assert not why and again.parts is not None
  assert 'changed since it was made; converting it again' in caplog.text
  assert ov_ir.cache_key(str(model)) == after.name
  assert first.parts.vector_name == again.parts.vector_name
  from transforms.models import cache
  assert cache.cached_copy_intact(after)  # Made whole again.
  # One that cannot be read (its digest note lost as well): made again.
  (after / cache.DIGEST_NOTE).unlink()
  (after / 'meta.json').write_text('{')
  caplog.clear()
  again, why = ov_ir.load(str(model))
  assert not why and again.parts is not None
  assert 'cannot be read (JSONDecodeError' in caplog.text
  assert json.loads((after / 'meta.json').read_text())['vector_name']


def test_a_changed_converter_converts_again(own_cache, tmp_path,
                                            monkeypatch):
  from transforms.models.engine import ov_ir
  model = str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'))
  code = tmp_path / 'converter.py'
  code.write_text('# version 1')
  sources = ov_ir._converter_sources()  # pylint: disable=protected-access
  monkeypatch.setattr(ov_ir, '_converter_sources',
                      lambda: sources + (str(code),))
  before = ov_ir.cache_key(model)
  code.write_text('# version 2')
  assert ov_ir.cache_key(model) != before


def test_a_model_openvino_cannot_convert_is_noted_and_runs_on_tensorflow(
    tmp_path, model_cache, monkeypatch, caplog, calls_to):
  # The builtin colour transfer as a SavedModel folder: OpenVINO has no
  # conversion for its SelfAdjointEigV2.
  from transforms.models import builtin
  from transforms.models.loader import load_stylizer
  folder = str(tmp_path / 'builtin-model')
  shutil.copytree(builtin.ensure_builtin(), folder)  # The session's export.
  own_cache = tmp_path / 'cache'
  monkeypatch.setenv('STYLIZE_CACHE_DIR', str(own_cache))
  caplog.set_level(logging.INFO)
  s = load_stylizer(folder, engine='openvino', precision='f32')
  assert s.engine == 'tf'
  assert 'OpenVINO cannot convert model' in caplog.text
  (noted,) = _converted_folders(own_cache)
  meta = json.loads((noted / 'meta.json').read_text())
  assert 'SelfAdjointEigV2' in meta['unconvertible']
  caplog.clear()
  from transforms.models.engine import ov_split
  conversions = calls_to(ov_split, 'convert')
  assert load_stylizer(folder, engine='openvino',
                       precision='f32').engine == 'tf'
  assert 'Converted' not in caplog.text  # No child again,
  assert not conversions  # and no conversion here either.
  assert _converted_folders(own_cache) == [noted]


@pytest.mark.parametrize('cause', ['no python', 'cache unwritable'])
def test_a_failed_child_leaves_the_load_to_the_worker_which_says_so(
    own_cache, monkeypatch, caplog, cause):
  from transforms.models.loader import load_stylizer
  if cause == 'no python':
    monkeypatch.setattr(sys, 'executable', str(own_cache / 'no-python'))
    said = 'no-python'
  else:
    own_cache.parent.mkdir(exist_ok=True)
    own_cache.write_text('a file where the cache folder would be')
    said = 'Not a directory'
  caplog.set_level(logging.WARNING)
  s = load_stylizer(
      str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')),
      engine='openvino', precision='f32')
  assert s.engine == 'openvino'
  assert 'was converted for OpenVINO in this process' in caplog.text
  assert said in caplog.text
  if cause == 'no python':
    assert _converted_folders(own_cache) == []


def test_the_child_ignores_a_transforms_folder_where_the_job_runs(
    own_cache, tmp_path, monkeypatch):
  # `python -c` would put the working folder first on the child's path.
  work = tmp_path / 'work'
  (work / 'transforms').mkdir(parents=True)
  (work / 'transforms' / '__init__.py').write_text('raise SystemExit(9)')
  monkeypatch.chdir(work)
  from transforms.models.engine import ov_ir
  converted, why = ov_ir.load(
      str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')))
  assert not why and converted.parts is not None


def test_a_conversion_that_fails_for_want_of_memory_is_not_noted(
    monkeypatch, tmp_path, model_cache):
  # Only the model's own refusals are noted for good; the trouble of one
  # try (memory, files) is not, so the next load tries again.
  from transforms.models import builtin
  from transforms.models.engine import ov_ir, ov_split
  import tensorflow_hub as hub
  def no_memory(fn):
    raise MemoryError('no memory left')
  monkeypatch.setattr(ov_split, 'convert', no_memory)
  model = hub.load(str(shared_path('models',
                                   'magenta-arbitrary-v1-256-savedmodel')))
  failed = ov_ir.convert_loaded(model)
  assert failed.unconvertible and not failed.lasting
  with pytest.raises(RuntimeError, match='no memory left'):
    ov_ir.save(failed, str(tmp_path))
  assert not (tmp_path / ov_ir.META).exists()
  monkeypatch.undo()  # The real conversion: a refusal is noted.
  refused = ov_ir.convert_loaded(hub.load(builtin.ensure_builtin()))
  assert refused.lasting and 'SelfAdjointEigV2' in refused.unconvertible
