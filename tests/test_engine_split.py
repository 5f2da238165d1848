"""Splitting the shared Magenta SavedModel at its style vector, TF and OpenVINO."""

import numpy as np
import pytest

from tests.conftest import shared_path

pytest.importorskip('openvino')


@pytest.fixture(scope='module')
def model():
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  import tensorflow_hub as hub
  return hub.load(str(shared_path('models',
                                  'magenta-arbitrary-v1-256-savedmodel')))


@pytest.fixture(scope='module')
def split(model):
  from transforms.models.engine import tf_split
  return tf_split.split(model)


@pytest.fixture(scope='module')
def converted(model):
  from transforms.models.engine import ov_split, tf_split
  fn = tf_split.concrete_function(model)
  content, style = tf_split.image_inputs(fn)
  assert (content.name, style.name) == ('content_image:0', 'style_image:0')
  return ov_split.convert(fn)


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  from PIL import Image
  photo = Image.open(shared_path('images', 'content', 'golden_gate_sq.jpg'))
  content = np.stack([
      np.asarray(photo.convert('RGB').resize((320, 200)), np.float32) / 255,
      rng.random((200, 320, 3), dtype=np.float32)])
  style = np.asarray(Image.open(shared_path('images', 'style',
                                            'bricks_sq.jpg')).convert('RGB')
                     .resize((256, 256)), np.float32)[np.newaxis] / 255
  return content, style


def test_vector_found_by_structure(split):
  # The Magenta bottleneck: [B, 1, 1, 100], the last style-only cut, found
  # in the loaded graph itself (no frozen copy of the weights).
  assert split.vector.shape == (None, 1, 1, 100)
  assert split.vector.is_float and not split.traced.frozen


def test_split_reproduces_full_call(model, split, images):
  import tensorflow as tf
  content, style = images
  full = model(tf.constant(content), tf.constant(style))[0].numpy()
  vector = split.predictor(tf.constant(style))
  assert tuple(vector.shape) == (1, 1, 1, 100)
  out = split.transfer(tf.constant(content), vector).numpy()
  assert out.shape == full.shape
  assert np.abs(out - full).max() <= 1e-5
  # Per-image vectors: each image gets its own.
  other = split.predictor(tf.constant(content[1:2]))
  both = split.transfer(tf.constant(content),
                        tf.concat([vector, other], 0)).numpy()
  np.testing.assert_allclose(both[0], full[0], atol=1e-5)
  alone = split.transfer(tf.constant(content[1:2]), other).numpy()
  np.testing.assert_allclose(both[1], alone[0], atol=1e-5)


def test_openvino_cut_matches_tf(split, converted, images):
  import tensorflow as tf
  from transforms.models.engine import ov_split
  from transforms.models.engine.openvino_runtime import OpenVINORunner
  parts = ov_split.cut(converted, split.vector.name, 'content_image:0',
                       'style_image:0')
  content, style = images
  v_tf = split.predictor(tf.constant(style)).numpy()
  v_ov = OpenVINORunner(parts.predictor, 'f32', 'LATENCY').infer([style])
  assert np.abs(v_ov - v_tf).max() <= 1e-5
  out_tf = split.transfer(tf.constant(content), tf.constant(v_tf)).numpy()
  out_ov = OpenVINORunner(parts.transfer, 'f32').infer([content, v_tf])
  assert np.abs(out_ov - out_tf).max() <= 1e-4


def test_openvino_search_without_names_finds_the_same_tensor(split, converted):
  # The structural search run on OpenVINO's own graph, given no TF name.
  from transforms.models.engine import ov_split
  parts = ov_split.cut(converted)
  assert parts.vector_name == split.vector.name
  assert parts.vector_shape == (None, 1, 1, 100)


def test_nested_functions_are_frozen_and_split(model, split, images):
  # A model reached through its serving signature: the network sits in a
  # nested call, so the top-level graph shows no vector; freezing inlines it.
  import tensorflow as tf
  from transforms.models.engine import tf_split

  class OnlySignature:
    signatures = model.signatures

  nested = tf_split.split(OnlySignature())
  assert nested.traced.frozen and nested.vector.shape == (None, 1, 1, 100)
  content, style = images
  want = split.transfer(tf.constant(content),
                        split.predictor(tf.constant(style))).numpy()
  got = nested.transfer(tf.constant(content),
                        nested.predictor(tf.constant(style))).numpy()
  assert np.abs(got - want).max() <= 1e-5


def test_builtin_cannot_be_split(model_cache):
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  import tensorflow_hub as hub
  from transforms.models import builtin
  from transforms.models.engine import tf_split
  with pytest.raises(tf_split.NotSplittable, match='no style-vector'):
    tf_split.split(hub.load(builtin.ensure_builtin()))


def test_failed_conversion_keeps_logging(model_cache, caplog):
  # ov.convert_model leaves the root logger at ERROR when it fails.
  import logging
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  import tensorflow_hub as hub
  from transforms.models import builtin
  from transforms.models.engine import ov_split, tf_split
  fn = tf_split.concrete_function(hub.load(builtin.ensure_builtin()))
  root = logging.getLogger()
  level, handlers = root.level, list(root.handlers)
  with pytest.raises(Exception, match='SelfAdjointEigV2'):
    ov_split.convert(fn)
  assert root.level == level and root.handlers == handlers
  assert not root.filters


def test_openvino_adapter_owns_its_weights(model, images, monkeypatch):
  # The OpenVINO adapter keeps no reference to the TF model it was
  # converted from (workers would hold both): its weights are a copy
  # (share_weights=False), so it computes what an adapter of a live model
  # does once that model is freed.
  import gc
  import weakref
  import openvino
  import tensorflow_hub as hub
  from transforms.models import split_model
  conversions, real = [], openvino.convert_model

  def observed(*args, **kwargs):  # An observer: the conversion still runs.
    conversions.append(kwargs)
    return real(*args, **kwargs)
  monkeypatch.setattr(openvino, 'convert_model', observed)
  loaded = hub.load(str(shared_path('models',
                                    'magenta-arbitrary-v1-256-savedmodel')))
  gone = weakref.ref(loaded)
  orphan = split_model.build('m', 'savedmodel', loaded, 'openvino', 'f32')
  assert conversions[-1].get('share_weights') is False
  del loaded
  gc.collect()
  assert gone() is None
  content, style = images
  ours = orphan.run_batch(content, orphan.prepare_style(style[0]))
  live = split_model.build('m', 'savedmodel', model, 'openvino', 'f32')
  reference = live.run_batch(content, live.prepare_style(style[0]))
  np.testing.assert_allclose(ours, reference, atol=1e-6)
