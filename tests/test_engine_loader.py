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
