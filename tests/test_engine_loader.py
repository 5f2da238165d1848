"""loader.load_stylizer: what runs for each model kind and engine."""

import logging

import numpy as np
import pytest

from tests.conftest import gradient, shared_path
from transforms.models.engine import capabilities
from transforms.models.loader import load_stylizer

pytest.importorskip('openvino')


def _content():
  return np.asarray(gradient(96, 64))[np.newaxis]


def test_builtin_runs_its_tf_call_quietly_on_any_engine(caplog):
  """The builtin colour transfer is no network (no style vector, no
  OpenVINO conversion): it runs on TensorFlow, without a warning."""
  from transforms.models.loader import load_full_call as load_today
  style = np.asarray(gradient(64, 64, seed=3), np.float32) / 255
  today = load_today('builtin')
  want = today.stylize(_content(), today.prepare_style(style))
  caplog.set_level(logging.WARNING)
  for engine in ('auto', 'openvino', 'tf'):
    s = load_stylizer('builtin', engine=engine)
    assert type(s).__name__ == 'HubStylizer'
    assert (s.engine, s.precision) == ('tf', 'f32')
    assert not s.has_style_vector
    np.testing.assert_array_equal(
        s.stylize(_content(), s.prepare_style(style)), want)
  assert not caplog.records


def test_a_model_openvino_cannot_convert_falls_back_to_tf_once(
    tmp_path, caplog, monkeypatch):
  """A model whose ops OpenVINO has no conversion for (an eigen-
  decomposition, as the builtin's) and without a style vector: its full
  call on TensorFlow, said once per process."""
  from transforms.native_logs import import_tensorflow
  from transforms.models import split_model
  tf = import_tensorflow()

  class Eig(tf.Module):

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, content, style):
      flat = tf.reshape(style, [-1, 3])
      values, _ = tf.linalg.eigh(tf.matmul(flat, flat, transpose_a=True))
      return [tf.clip_by_value(content * tf.reduce_max(values) * 0.0 +
                               content, 0.0, 1.0)]

  path = str(tmp_path / 'eig')
  tf.saved_model.save(Eig(), path)
  monkeypatch.setattr(split_model, '_warned', set())  # A fresh process.
  caplog.set_level(logging.WARNING)
  for _ in range(2):
    s = load_stylizer(path, engine='openvino')
    assert type(s).__name__ == 'HubStylizer'
    assert (s.engine, s.precision) == ('tf', 'f32')
  messages = [r.getMessage() for r in caplog.records]
  assert sum('cannot be split' in m for m in messages) == 1
  assert sum('SelfAdjointEigV2' in m for m in messages) == 1


def test_unsplittable_model_runs_whole_on_openvino(tmp_path, caplog,
                                                    monkeypatch):
  """A model OpenVINO converts but without a style vector: its full call
  runs on OpenVINO (OpenVINOFullStylizer), matching TF."""
  from transforms.native_logs import import_tensorflow
  from transforms.models import split_model
  from transforms.models.loader import load_full_call as load_today
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
