"""The execution engines through the real pipeline (issue 19).

--engine tf is the reference; OpenVINO (bf16 on this CPU's AMX, or f32)
must give the same outputs within bf16's error: every output the size the
TF engine gives it, PSNR >= 35 dB and low-pass MSE <= 1e-3 overall and in
the bands along the padded edges (bucket padding never shows), for uniform
and mixed shapes, blends, strength, colours and tiles, the TF Lite pair,
and a model that cannot be split. Each run's rows and summary say which
engine and precision made each output, and switching engines redoes the
work.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from beam_jobs.stylize import run
from tests.conftest import shared_path
from tests.test_end_to_end import manifest_rows
from transforms.models.engine.quality import lowpass_mse, psnr

pytest.importorskip('openvino')
pytestmark = pytest.mark.slow

EDGE = 32
# Photo formats of a mixed archive at --max_size 512 (4:3, 3:2 and 16:9,
# landscape and portrait) and sizes between them.
SIZES = [(512, 384), (384, 512), (512, 341), (341, 512), (512, 288),
         (512, 300), (500, 375), (512, 384)]


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """The shared photos cut to the mixed sizes (content, not just noise)."""
  folder = tmp_path_factory.mktemp('mixed') / 'in'
  folder.mkdir()
  sources = sorted(shared_path('images', 'content').glob('*.jpg'))
  for i, (w, h) in enumerate(SIZES):
    with Image.open(sources[i % len(sources)]) as im:
      im.convert('RGB').resize((w, h), Image.Resampling.LANCZOS).save(
          folder / f'p{i}_{w}x{h}.png')
  return folder


@pytest.fixture(scope='module')
def model():
  return str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'))


def _styles(*names):
  return [str(shared_path('images', 'style', n)) for n in names]


def _run(tmp, name, photos, model, *extra):
  out = tmp / name
  run(['--input', str(photos), '--output', str(out), '--model', model,
       '--max_size', '512', '--output_format', 'png', *extra])
  return out


def _outputs(out):
  rows = manifest_rows(out)
  return {os.path.basename(r['input']): r for r in rows}


def _pixels(path):
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB'), np.float32) / 255.0


def _close(ref_rows, got_rows):
  """Every output the reference's size, and within bf16's error overall
  and along the right and bottom edges (where buckets pad)."""
  assert ref_rows.keys() == got_rows.keys()
  for name, ref in ref_rows.items():
    got = got_rows[name]
    assert (got['width'], got['height']) == (ref['width'], ref['height'])
    a, b = _pixels(ref['output']), _pixels(got['output'])
    assert a.shape == b.shape
    assert psnr(a, b) >= 35, name
    assert lowpass_mse(a, b) <= 1e-3, name
    for band in (np.s_[-EDGE:, :], np.s_[:, -EDGE:]):
      assert psnr(a[band], b[band]) >= 30, (name, 'edge')
      assert lowpass_mse(a[band], b[band]) <= 1e-3, (name, 'edge')


@pytest.fixture(scope='module')
def reference(tmp_path_factory, photos, model):
  """The TF engine on the mixed archive, plain and with every control."""
  tmp = tmp_path_factory.mktemp('reference')
  plain = _run(tmp, 'plain', photos, model, '--engine', 'tf', '--style',
               *_styles('towers_1916_sq.jpg'))
  controls = _run(tmp, 'controls', photos, model, '--engine', 'tf',
                  '--style', ','.join(f'{s}={w}' for s, w in zip(
                      _styles('towers_1916_sq.jpg', 'bricks_sq.jpg'),
                      (0.6, 0.4))), '--style_strength', '0.6',
                  '--preserve_colors', '--tile_size', '256',
                  '--tile_overlap', '32')
  return {'plain': _outputs(plain), 'controls': _outputs(controls),
          'tmp': tmp}


@pytest.mark.parametrize('cpu', ['bf16', 'without-bf16'])
def test_openvino_matches_the_tf_engine_on_a_mixed_archive(
    reference, photos, model, cpu, monkeypatch):
  """bf16 asked for; and on a CPU without bf16 (its capability check
  simulated) the defaults, --engine auto --precision auto, run f32."""
  if cpu == 'bf16':
    flags, precision = ['--engine', 'openvino', '--precision', 'bf16'], 'bf16'
    asked = {'engine': 'openvino', 'precision': 'bf16'}
  else:
    from transforms.models.engine import capabilities
    monkeypatch.setattr(capabilities, 'cpu_flags',
                        lambda: frozenset({'sse4_2', 'avx2', 'avx512f'}))
    flags, precision = [], 'f32'
    asked = {'engine': 'auto', 'precision': 'auto'}
  out = _run(reference['tmp'], f'ov-{cpu}', photos, model, *flags,
             '--style', *_styles('towers_1916_sq.jpg'))
  rows = _outputs(out)
  _close(reference['plain'], rows)
  assert {(r['engine'], r['precision']) for r in rows.values()} == {
      ('openvino', precision)}
  assert {r['params']['strength_mode'] for r in rows.values()} == {
      'style-vector'}
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['engines_used'] == {f'openvino {precision}': len(SIZES)}
  assert summary['engine'] == asked
  assert {(r['engine'], r['precision'])
          for r in reference['plain'].values()} == {('tf', 'f32')}


def test_controls_agree_on_both_engines(reference, photos, model):
  """A blend, strength (vectors), colour preservation and tiles."""
  out = _run(reference['tmp'], 'ov-controls', photos, model, '--engine',
             'openvino', '--style', ','.join(f'{s}={w}' for s, w in zip(
                 _styles('towers_1916_sq.jpg', 'bricks_sq.jpg'),
                 (0.6, 0.4))), '--style_strength', '0.6',
             '--preserve_colors', '--tile_size', '256', '--tile_overlap',
             '32')
  _close(reference['controls'], _outputs(out))


def test_switching_engines_redoes_the_work_and_says_so(tmp_path, photos,
                                                       model):
  # Two photos of one shape: the identity is the subject, not the shapes.
  argv = ['--input', str(photos / 'p0_512x384.png'), '--input',
          str(photos / 'p7_512x384.png'), '--output', str(tmp_path / 'out'),
          '--model', model, '--max_size', '256', '--style',
          *_styles('bricks_sq.jpg')]
  run(argv + ['--engine', 'tf'])
  assert {(r['status'], r['engine']) for r in manifest_rows(
      tmp_path / 'out')} == {('ok', 'tf')}
  run(argv + ['--engine', 'openvino'])
  rows = manifest_rows(tmp_path / 'out')
  assert {(r['status'], r['engine']) for r in rows} == {('ok', 'openvino')}
  run(argv + ['--engine', 'openvino'])
  rows = manifest_rows(tmp_path / 'out')
  # Skipped rows say what made the outputs they keep.
  assert {(r['status'], r['engine'], r['precision']) for r in rows} == {
      ('skipped', 'openvino', 'bf16')}


def test_a_model_that_cannot_be_split_still_works(tmp_path, photos, caplog):
  """A model without a style vector runs whole (model(content, style)) on
  OpenVINO, strength mixing pixels, as on the TF engine; the job says so
  once."""
  import logging
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()

  class Tint(tf.Module):
    """content * 2 * the style's mean colour: no style vector to cut at."""

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, content, style):
      tint = tf.reduce_mean(style, axis=[1, 2], keepdims=True)
      return [tf.clip_by_value(content * tint * 2.0, 0.0, 1.0)]

  model = str(tmp_path / 'tint')
  tf.saved_model.save(Tint(), model)
  caplog.set_level(logging.WARNING)
  outs = {}
  for engine in ('tf', 'openvino'):
    outs[engine] = _run(tmp_path, engine, photos, model, '--engine', engine,
                        '--style_strength', '0.5', '--style',
                        *_styles('bricks_sq.jpg'))
  ref, got = _outputs(outs['tf']), _outputs(outs['openvino'])
  _close(ref, got)
  assert {(r['engine'], r['params']['strength_mode'])
          for r in got.values()} == {('openvino', 'pixel-blend')}
  assert sum('cannot be split' in r.getMessage()
             for r in caplog.records) >= 1


def test_the_tf_lite_pair_on_both_engines(tmp_path, photos):
  """The shared TF Lite folder (its float16 transfer file is picked)
  batches its tiles; on OpenVINO within bf16's error of LiteRT."""
  lite = str(shared_path('models', 'magenta-arbitrary-v1-256-lite'))
  some = tmp_path / 'in'
  some.mkdir()
  for name in ('p0_512x384.png', 'p3_341x512.png'):
    os.link(photos / name, some / name)
  ref = _run(tmp_path, 'lite-tf', some, lite, '--engine', 'tf', '--style',
             *_styles('bricks_sq.jpg'))
  got = _run(tmp_path, 'lite-ov', some, lite, '--engine', 'openvino',
             '--style', *_styles('bricks_sq.jpg'))
  ref_rows, got_rows = _outputs(ref), _outputs(got)
  _close(ref_rows, got_rows)
  assert {r['engine'] for r in ref_rows.values()} == {'tf'}
  assert {r['engine'] for r in got_rows.values()} == {'openvino'}
