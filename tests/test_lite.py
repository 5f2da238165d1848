"""The TF Lite two-stage Magenta pair on the shared files and images."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, shared_path
from transforms.color import rgb_to_ycc
from transforms.models.base import StyleParams
from transforms.models.lite import find_pair
from transforms.models.loader import describe_model, load_stylizer
from transforms.records import StyleRef
from transforms.stylize import load_model_and_styles
from transforms.styles import load_style_image


@pytest.fixture(scope='module')
def lite_dir():
  return shared_path('models', 'magenta-arbitrary-v1-256-lite')


@pytest.fixture(scope='module')
def lite(lite_dir):
  return load_stylizer(str(lite_dir))


@pytest.fixture(scope='module')
def style():
  return load_style_image(str(shared_path('images', 'style', 'bricks_sq.jpg')))


def content(size=(384, 384), name='golden_gate_sq.jpg'):
  path = shared_path('images', 'content', name)
  return np.asarray(Image.open(path).convert('RGB').resize(
      size, Image.Resampling.BICUBIC))[np.newaxis]


def test_pair_found_by_inputs_not_names(lite_dir):
  predict, transfer = find_pair(str(lite_dir))
  assert predict.endswith('style_predict_quantized_256.tflite')
  assert transfer.endswith('style_transfer_f16_384.tflite')
  assert describe_model(str(lite_dir)) == 'tflite'
  # Explicit files, in any order.
  explicit = f'{transfer},{predict}'
  assert find_pair(explicit) == (predict, transfer)


def test_adapter_shapes(lite, style):
  vec = lite.prepare_style(style)
  assert vec.shape == (1, 1, 1, 100)
  assert lite.fixed_size == (384, 384)
  for h, w in [(384, 384), (256, 256), (300, 500), (1, 1), (20, 900)]:
    out = lite.stylize(np.zeros((1, h, w, 3), np.uint8) + 100, vec)
    assert out.shape == (1, h, w, 3) and out.dtype == np.uint8


def test_style_vector_computed_once_per_style(lite_dir):
  styles = [StyleRef(uri=str(shared_path('images', 'style', n)), label=n)
            for n in ('bricks_sq.jpg', 'towers_1916_sq.jpg')]
  loaded = load_model_and_styles(str(lite_dir), styles, 256, 0)
  assert loaded.stylizer.predict_calls == 2
  img = content((256, 256))
  for _ in range(3):
    for s in styles:
      loaded.stylizer.stylize(img, loaded.style_states[s.label])
  assert loaded.stylizer.predict_calls == 2  # Reused, never per image.


def test_strength_zero_and_one_differ_and_move_monotonically(lite, style):
  vec = lite.prepare_style(style)
  img = content()
  outs = {w: lite.stylize(img, vec, StyleParams(strength=w)).astype(float)
          for w in (0.0, 0.25, 0.5, 0.75, 1.0)}
  dist = [np.abs(outs[w] - outs[1.0]).mean() for w in (0.0, 0.25, 0.5, 0.75)]
  assert dist[0] > 20  # Strength 0 and 1 clearly differ.
  assert all(a > b for a, b in zip(dist, dist[1:]))  # Monotonic.


def test_lite_and_savedmodel_agree(lite, style):
  saved = load_stylizer(str(shared_path(
      'models', 'magenta-arbitrary-v1-256-savedmodel')))
  img = content()
  a = lite.stylize(img, lite.prepare_style(style)) / 255.0
  b = saved.stylize(img, saved.prepare_style(style)) / 255.0
  assert np.abs(a - b).mean() < 0.02


def test_preserve_colors_keeps_content_chroma(lite, style):
  img = content()
  plain = lite.stylize(img, lite.prepare_style(style)) / 255.0
  kept = lite.stylize(img, lite.prepare_style(style),
                      StyleParams(preserve_colors=True)) / 255.0
  src = rgb_to_ycc(img / 255.0)
  chroma_err = np.abs(rgb_to_ycc(kept)[..., 1:] - src[..., 1:]).mean()
  plain_err = np.abs(rgb_to_ycc(plain)[..., 1:] - src[..., 1:]).mean()
  assert chroma_err < 0.01 < plain_err
  luma = np.abs(rgb_to_ycc(kept)[..., 0] - rgb_to_ycc(plain)[..., 0]).mean()
  assert luma < 0.02  # The luminance is the stylized one.


def test_tiled_and_untiled_agree_away_from_borders(style):
  saved = load_stylizer(str(shared_path(
      'models', 'magenta-arbitrary-v1-256-savedmodel')))
  img = content((640, 480))
  state = saved.prepare_style(style)
  whole = saved.stylize(img, state) / 255.0
  tiled = saved.stylize(img, state, StyleParams(tile_size=320,
                                                tile_overlap=96)) / 255.0
  inner = (slice(None), slice(48, -48), slice(48, -48))
  assert np.abs(whole[inner] - tiled[inner]).mean() < 0.06


def _column_jumps(img):
  """Mean absolute change between neighbouring columns, per column."""
  return np.abs(np.diff(img.astype(float), axis=2)).mean(axis=(0, 1, 3))


def test_no_visible_seams_on_flat_colour(lite, style):
  flat = np.full((1, 500, 1000, 3), (90, 140, 200), np.uint8)
  out = lite.stylize(flat, lite.prepare_style(style))
  jumps = _column_jumps(out)
  # Tile edges (and the blend zones around them) of the 384 tiles.
  from transforms.models.tiling import tile_starts
  starts = tile_starts(1000, 384, 64)
  edges = sorted({s for s in starts[1:]} | {s + 384 for s in starts[:-1]})
  near = np.zeros_like(jumps, bool)
  for e in edges:
    near[max(0, e - 3):e + 3] = True
  # The style's own texture varies from column to column; a seam would be
  # a jump beyond anything the texture does elsewhere.
  assert jumps[near].max() <= np.percentile(jumps[~near], 99.5) * 1.1


@pytest.mark.slow
def test_3000x2000_through_384_network_in_bounded_memory(lite_dir, tmp_path):
  """Runs in a child process so its peak RSS is its own."""
  script = f'''
import json, sys, numpy as np
sys.path.insert(0, {str(ROOT)!r})
from transforms.models.loader import load_stylizer
m = load_stylizer({str(lite_dir)!r})
vec = m.prepare_style(np.full((256, 256, 3), 0.5, np.float32))
img = (np.random.default_rng(0).random((1, 2000, 3000, 3)) * 255).astype(np.uint8)
out = m.stylize(img, vec)
# VmHWM is this program's own peak; ru_maxrss would include the RSS of the
# (large) pytest process it was forked from.
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]
print(json.dumps({{"shape": list(out.shape),
                  "peak_mb": int(hwm.split()[1]) / 1024}}))
'''
  res = subprocess.run([sys.executable, '-c', script], capture_output=True,
                       text=True, timeout=300, check=True)
  info = json.loads(res.stdout.strip().splitlines()[-1])
  assert info['shape'] == [1, 2000, 3000, 3]
  # The image itself is 18 MB (uint8) / 72 MB (float32); tiles keep the
  # network's activations at 384x384, so the process stays small.
  assert info['peak_mb'] < 1500, info


def test_pipeline_with_lite_strength_blend_and_colours(tmp_path, lite_dir):
  from beam_jobs.stylize import run
  from tests.test_end_to_end import manifest_rows
  styles = shared_path('images', 'style')
  big = tmp_path / 'in'
  big.mkdir()
  # One photo upscaled past the 384 network, so the run is tiled.
  Image.fromarray(content((900, 600))[0]).save(big / 'wide.jpg', quality=95)
  out = tmp_path / 'out'
  run(['--input', str(shared_path('images', 'content')), '--input', str(big),
       '--style', f'{styles / "bricks_sq.jpg"}=0.7',
       '--style', f'{styles / "towers_1916_sq.jpg"}=0.3',
       '--style', str(styles / 'La_forma.jpg'),
       '--model', str(lite_dir), '--style_strength', '0.5',
       '--preserve_colors', '--max_size', '2048', '--output', str(out)])
  rows = manifest_rows(out)
  assert len(rows) == 10 and {r['status'] for r in rows} == {'ok'}
  for row in rows:
    assert row['params']['style_strength'] == 0.5
    assert row['params']['strength_mode'] == 'style-vector'
    assert row['params']['preserve_colors'] is True
  blend = [r for r in rows if '=0.7' in r['style']]
  assert len(blend) == 5
  assert all('/bricks_sq-70+towers_1916_sq-30/' in r['output'] for r in blend)
  wide = [r for r in rows if r['input'].endswith('wide.jpg')]
  assert {(r['width'], r['height']) for r in wide} == {(900, 600)}
