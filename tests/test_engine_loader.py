"""engine_loader.load_stylizer: what runs for each model kind and engine."""

import logging

import numpy as np
import pytest

from tests.conftest import gradient, shared_path
from transforms.models.engine import capabilities
from transforms.models.engine_loader import load_stylizer

pytest.importorskip('openvino')


def _content():
  return np.asarray(gradient(96, 64))[np.newaxis]


def test_builtin_falls_back_to_the_full_tf_call_once(caplog, monkeypatch):
  from transforms.models import split_model
  from transforms.models.loader import load_stylizer as load_today
  monkeypatch.setattr(split_model, '_warned', set())  # A fresh process.
  style = np.asarray(gradient(64, 64, seed=3), np.float32) / 255
  today = load_today('builtin')
  want = today.stylize(_content(), today.prepare_style(style))
  caplog.set_level(logging.WARNING)
  for _ in range(2):
    s = load_stylizer('builtin', engine='openvino')
    assert type(s).__name__ == 'HubStylizer'
    assert (s.engine, s.precision) == ('tf', 'f32')
    assert not s.has_style_vector
    np.testing.assert_array_equal(
        s.stylize(_content(), s.prepare_style(style)), want)
  messages = [r.getMessage() for r in caplog.records]
  # Said once per process, not per load.
  assert sum('cannot be split' in m for m in messages) == 1
  assert sum('SelfAdjointEigV2' in m for m in messages) == 1
  assert type(load_stylizer('builtin', engine='tf')).__name__ == 'HubStylizer'


def test_savedmodel_auto():
  s = load_stylizer(str(shared_path('models',
                                    'magenta-arbitrary-v1-256-savedmodel')))
  assert type(s).__name__ == 'OpenVINOSplitStylizer'
  assert s.engine == 'openvino' and s.has_style_vector
  assert s.precision == ('bf16' if capabilities.has_bf16() else 'f32')
  style = np.asarray(gradient(256, 256, seed=4), np.float32) / 255
  out = s.stylize(_content(), s.prepare_style(style))
  assert out.shape == (1, 64, 96, 3) and out.dtype == np.uint8
  assert s.describe()['style_vector'].startswith('clip_by_value_64:0')


def test_lite_auto_and_bad_flags():
  lite = str(shared_path('models', 'magenta-arbitrary-v1-256-lite'))
  s = load_stylizer(lite)
  assert type(s).__name__ == 'BatchedLiteStylizer' and s.engine == 'openvino'
  # The embedded int8 pair keeps LiteRT under auto.
  assert load_stylizer('magenta-lite').engine == 'tf'
  with pytest.raises(ValueError, match='needs --engine openvino'):
    load_stylizer(lite, engine='tf', precision='bf16')


def test_unsplittable_model_runs_whole_on_openvino(tmp_path, caplog,
                                                    monkeypatch):
  """A model OpenVINO converts but without a style vector: its full call
  runs on OpenVINO (OpenVINOFullStylizer), matching TF."""
  from transforms.native_logs import import_tensorflow
  from transforms.models import split_model
  from transforms.models.loader import load_stylizer as load_today
  tf = import_tensorflow()

  class Tint(tf.Module):
    """content * 2 * mean colour of the style: style stats [B, 1, 1, 3]."""

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, content, style):
      tint = tf.reduce_mean(style, axis=[1, 2], keepdims=True)
      return [tf.clip_by_value(content * tint * 2.0, 0.0, 1.0)]

  path = str(tmp_path / 'tint')
  tf.saved_model.save(Tint(), path)
  monkeypatch.setattr(split_model, '_warned', set())
  caplog.set_level(logging.WARNING)
  s = load_stylizer(path, engine='openvino', precision='f32')
  assert type(s).__name__ == 'OpenVINOFullStylizer' and not s.has_style_vector
  assert any('cannot be split' in r.getMessage() for r in caplog.records)
  style = np.asarray(gradient(64, 64, seed=5), np.float32) / 255
  today = load_today(path)
  content = np.asarray(gradient(100, 70, seed=6))[np.newaxis]
  want = today.stylize(content, today.prepare_style(style))
  got = s.stylize(content, s.prepare_style(style))
  assert got.shape == want.shape
  assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_exact_buckets_option():
  from transforms.models.engine import buckets
  s = load_stylizer(str(shared_path('models',
                                    'magenta-arbitrary-v1-256-savedmodel')),
                    exact_buckets=True)
  assert s.network.bucket is buckets.exact_shape
  style = np.asarray(gradient(256, 256, seed=4), np.float32) / 255
  s.stylize(np.asarray(gradient(1024, 600))[np.newaxis], s.prepare_style(style))
  assert (1, 600, 1024, 3) in s.describe()['compiled_shapes']
