"""The TF Lite pair with batched tiles, on LiteRT and on OpenVINO."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from transforms.models.base import StyleParams
from transforms.models.engine import quality
from transforms.models.lite import LiteStylizer
from transforms.models.lite_batched import BatchedLiteStylizer, is_quantized
from transforms.styles import load_style_image


@pytest.fixture(scope='module')
def lite_dir():
  return str(shared_path('models', 'magenta-arbitrary-v1-256-lite'))


@pytest.fixture(scope='module')
def one_by_one(lite_dir):
  return LiteStylizer(lite_dir)


@pytest.fixture(scope='module')
def batched(lite_dir):
  return BatchedLiteStylizer(lite_dir, engine='tf')


@pytest.fixture(scope='module')
def style():
  return load_style_image(str(shared_path('images', 'style', 'bricks_sq.jpg')))


def content(height, width, names=('golden_gate_sq.jpg', 'eiffel_tower.jpg')):
  return np.stack([
      np.asarray(Image.open(shared_path('images', 'content', n)).convert('RGB')
                 .resize((width, height), Image.Resampling.BICUBIC))
      for n in names])


@pytest.mark.parametrize('height,width', [(768, 1024), (300, 500),
                                          (384, 384)])
def test_batched_equals_one_at_a_time(one_by_one, batched, style, height,
                                      width):
  images = content(height, width)
  want = one_by_one.stylize(images, one_by_one.prepare_style(style))
  got = batched.stylize(images, batched.prepare_style(style))
  assert got.shape == want.shape
  # LiteRT gives a tile the same result alone or in a batch, up to float
  # rounding in the last bit (at most one level after rounding to uint8).
  assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
  assert quality.psnr(got, want) > 60


def test_batched_strength_and_blend(one_by_one, batched, style):
  images = content(384, 512)
  other = load_style_image(str(shared_path('images', 'style',
                                           'La_forma.jpg')))
  for params in (StyleParams(strength=0.5), StyleParams(preserve_colors=True)):
    want = one_by_one.stylize(
        images, one_by_one.prepare_blend([(0.7, style), (0.3, other)]), params)
    got = batched.stylize(
        images, batched.prepare_blend([(0.7, style), (0.3, other)]), params)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_tiles_go_in_one_call(batched, style, monkeypatch):
  sizes = []
  run = batched._transfer.run  # pylint: disable=protected-access

  def counting(image, vector=None):
    sizes.append(image.shape[0])
    return run(image, vector)

  monkeypatch.setattr(batched._transfer, 'run', counting)  # pylint: disable=protected-access
  batched.stylize(content(768, 1024, ('golden_gate_sq.jpg',)),
                  batched.prepare_style(style))
  assert sizes == [9]  # 3x3 tiles of 384 with 64 overlap, one invoke.


def test_openvino_on_the_f16_file(lite_dir, one_by_one, style):
  pytest.importorskip('openvino')
  ov = BatchedLiteStylizer(lite_dir, engine='openvino', precision='bf16')
  assert ov.engine == 'openvino' and ov.files[1].endswith('f16_384.tflite')
  images = content(768, 1024)
  want = one_by_one.stylize(images, one_by_one.prepare_style(style))
  got = ov.stylize(images, ov.prepare_style(style))
  q = quality.compare(got, want)
  assert q['psnr'] >= 35 and q['lowpass_mse'] <= 1e-3, q


def test_int8_transfer_stays_on_litert_unless_asked(lite_dir):
  pytest.importorskip('openvino')
  predict = f'{lite_dir}/style_predict_quantized_256.tflite'
  int8 = f'{lite_dir}/style_transfer_quantized_384.tflite'
  assert is_quantized(int8) and not is_quantized(
      f'{lite_dir}/style_transfer_f16_384.tflite')
  auto = BatchedLiteStylizer(f'{predict},{int8}', engine='openvino')
  assert auto.engine == 'tf'
  forced = BatchedLiteStylizer(f'{predict},{int8}', engine='openvino',
                               int8_on_openvino=True)
  assert forced.engine == 'openvino'
  dynamic = f'{lite_dir}/style_transfer_quantized_dynamic.tflite'
  assert BatchedLiteStylizer(f'{predict},{dynamic}', engine='openvino',
                             int8_on_openvino=True).engine == 'tf'
