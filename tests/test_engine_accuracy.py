"""OpenVINO (bf16, f32, bucket shapes) against the TF f32 reference engine.

Targets from the issue: PSNR >= 35 dB and low-pass MSE <= 1e-3 on the
shared photos at 512 and 1024 px, landscape and portrait, 3:2 included;
the same for strength, blends, colour preservation and tiling.
"""

import threading

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from transforms.models.base import StyleParams
from transforms.models.engine import buckets, quality

pytest.importorskip('openvino')

PHOTOS = ('golden_gate_sq.jpg', 'eiffel_tower.jpg', 'colva_beach_sq.jpg',
          'statue_of_liberty_sq.jpg')
MIN_PSNR = 35.0
MAX_LOWPASS = 1e-3


def photos(height, width, names=PHOTOS):
  """uint8 [len(names), height, width, 3]: the 256 px photos upscaled."""
  return np.stack([
      np.asarray(Image.open(shared_path('images', 'content', n)).convert('RGB')
                 .resize((width, height), Image.Resampling.BICUBIC))
      for n in names])


def style_image(name='bricks_sq.jpg'):
  from transforms.styles import load_style_image
  return load_style_image(str(shared_path('images', 'style', name)))


@pytest.fixture(scope='module')
def engines():
  # What loader.load_stylizer builds, with one load, freeze and
  # conversion for the three (test time).
  from transforms.models import split_model
  from transforms.models.engine import ov_split, tf_split
  from transforms.models.loader import load_full_call
  handle = str(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'))
  model = load_full_call(handle).model
  split = tf_split.split(model)
  fn = tf_split.concrete_function(model)
  predictor, transfer = ov_split.cut(ov_split.convert(fn), split.vector.name,
                                     *[t.name for t in tf_split.image_inputs(fn)])
  engines = {'tf': split_model.TFSplitStylizer(handle, 'savedmodel', split)}
  for precision in ('bf16', 'f32'):
    engines[precision] = split_model.OpenVINOSplitStylizer(
        handle, 'savedmodel', predictor, transfer, split.vector.name,
        split.vector.shape, precision)
  return engines


@pytest.fixture(scope='module')
def styles(engines):
  img = style_image()
  return {k: s.prepare_style(img) for k, s in engines.items()}


def check(out, ref, min_psnr=MIN_PSNR):
  assert out.shape == ref.shape and out.dtype == ref.dtype
  q = quality.compare(out, ref)
  assert q['psnr'] >= min_psnr, q
  assert q['lowpass_mse'] <= MAX_LOWPASS, q
  return q


# 1024 and 512 px outputs: 4:3, 3:2 (1024x683, 512x341), 16:9, portraits.
SIZES = [(768, 1024), (683, 1024), (1024, 683), (384, 512), (341, 512),
         (512, 341), (512, 384), (288, 512)]


@pytest.mark.parametrize('height,width', SIZES)
def test_openvino_matches_tf(engines, styles, height, width):
  # All four photos at 512 px; at 1024 px two (the test's time), among them
  # the Statue of Liberty, the farthest from TF at the edges.
  content = photos(height, width, PHOTOS if max(height, width) <= 512 else
                   PHOTOS[::3])
  ref = engines['tf'].stylize(content, styles['tf'])
  q16 = check(engines['bf16'].stylize(content, styles['bf16']), ref)
  q32 = check(engines['f32'].stylize(content, styles['f32']), ref)
  # Photo formats pad exactly as the TF engine does, so f32 is TF itself
  # (to float rounding) and the bucket's padding never shows at the edges.
  assert buckets.bucket_shape(height, width) == buckets.reference_shape(
      height, width)
  assert q32['psnr'] >= 60 and q32['edge_psnr'] >= 60, q32
  assert q16['edge_psnr'] >= MIN_PSNR, q16
  assert q16['edge_lowpass_mse'] <= MAX_LOWPASS, q16


def test_sizes_between_formats(engines, styles):
  """Extra padding (1024x600 -> 688 rows) moves the last rows' texture.

  The TF engine's own output has a light border line in its last rows
  (the network's edge); padded further, that line falls in the padding.
  Measured: 29-31.5 dB overall, low-pass 2-6e-4 (within target), the 32 px
  bottom band 17.5-19.6 dB. exact_shape buckets give 41+ dB here.
  """
  content = photos(600, 1024)
  ref = engines['tf'].stylize(content, styles['tf'])
  out = engines['bf16'].stylize(content, styles['bf16'])
  q = check(out, ref, min_psnr=27.0)
  assert q['edge_lowpass_mse'] <= 2e-2, q
  network = engines['bf16'].network
  network.bucket = buckets.exact_shape
  try:
    check(engines['bf16'].stylize(content, styles['bf16']), ref)
  finally:
    network.bucket = buckets.bucket_shape


def test_style_controls_match_tf(engines):
  content = photos(384, 512, PHOTOS[:2])
  styles2 = [(0.6, style_image()), (0.4, style_image('La_forma.jpg'))]
  for params, blend in [(StyleParams(strength=0.4), False),
                        (StyleParams(preserve_colors=True), False),
                        (StyleParams(), True),
                        (StyleParams(strength=0.7, preserve_colors=True), True)]:
    outs = {}
    for name in ('tf', 'bf16'):
      s = engines[name]
      state = (s.prepare_blend(styles2) if blend else
               s.prepare_style(style_image()))
      outs[name] = s.stylize(content, state, params)
    check(outs['bf16'], outs['tf'])
    if params.strength < 1:
      # Strength mixes vectors: less styled, not a pixel blend.
      full = engines['tf'].stylize(content, engines['tf'].prepare_style(
          style_image()))
      assert quality.psnr(outs['tf'], full) < 30


def test_tiling_matches_tf_and_batches_tiles(engines, styles):
  content = photos(768, 1024, PHOTOS[:1])
  params = StyleParams(tile_size=384, tile_overlap=64)
  ref = engines['tf'].stylize(content, styles['tf'], params)
  out = engines['bf16'].stylize(content, styles['bf16'], params)
  check(out, ref)
  # Large images (over max_untiled_pixels) go tile by tile, also matching.
  large = StyleParams(max_untiled_pixels=400 * 400, tile_overlap=64)
  check(engines['bf16'].stylize(content, styles['bf16'], large),
        engines['tf'].stylize(content, styles['tf'], large))


def test_style_predicted_once_per_style(engines):
  s = engines['bf16']
  before = s.predict_calls
  state = s.prepare_blend([(1, style_image()), (1, style_image('La_forma.jpg'))])
  assert s.predict_calls == before + 2
  assert np.asarray(state).shape == (1, 1, 1, 100)
  for _ in range(3):
    s.stylize(photos(64, 96, PHOTOS[:2]), state)
  assert s.predict_calls == before + 2


def test_one_compile_per_bucket(engines, styles):
  s = engines['bf16']
  s.stylize(photos(683, 1024, PHOTOS[:1]), styles['bf16'])
  compiles = s.network.compiles
  for height in (682, 684, 688, 681):  # All in the 688 bucket.
    out = s.stylize(photos(height, 1024, PHOTOS[:1]), styles['bf16'])
    assert out.shape == (1, height, 1024, 3)
  assert s.network.compiles == compiles
  assert (1, 688, 1024, 3) in s.describe()['compiled_shapes']


def test_threads_share_the_network(engines, styles):
  s = engines['bf16']
  work = [photos(h, w, PHOTOS[i:i + 2]) for i, (h, w) in
          enumerate([(384, 512), (341, 512), (512, 384), (384, 512)])]
  expected = [s.stylize(x, styles['bf16']) for x in work]
  results, errors = [None] * len(work), []

  def run(i):
    try:
      for _ in range(3):
        results[i] = s.stylize(work[i], styles['bf16'])
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  assert not errors
  for got, want in zip(results, expected):
    np.testing.assert_array_equal(got, want)


def test_precision_is_what_runs(engines):
  assert engines['tf'].engine == 'tf' and engines['tf'].precision == 'f32'
  assert engines['bf16'].engine == 'openvino'
  assert engines['bf16'].precision == 'bf16'
  assert engines['bf16'].has_style_vector and engines['tf'].has_style_vector


def test_strength_stays_uint8(engines, styles, monkeypatch):
  """Strength < 1 alone: per-image vectors on the uint8 path, no float
  copies, the same result as the base class's float path."""
  from transforms.models.base import Stylizer
  s = engines['bf16']
  content = photos(341, 512, PHOTOS[:2])
  params = StyleParams(strength=0.4)
  want = Stylizer.stylize(s, content, styles['bf16'], params)  # Float path.

  def no_floats(*args):
    raise AssertionError('float path taken')

  monkeypatch.setattr(s, 'run_batch', no_floats)
  np.testing.assert_array_equal(s.stylize(content, styles['bf16'], params),
                                want)
