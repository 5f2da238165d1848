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
  return tf_split.split(tf_split.freeze(model))


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
  # The Magenta bottleneck: [B, 1, 1, 100], the last style-only cut.
  assert split.vector.shape == (None, 1, 1, 100)
  assert split.vector.is_float


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


def test_openvino_cut_matches_tf(split, images):
  import tensorflow as tf
  from transforms.models.engine import ov_split
  from transforms.models.engine.openvino_runtime import OpenVINORunner
  frozen = split.frozen
  converted = ov_split.convert(frozen.graph_def)
  predictor, transfer = ov_split.cut(converted, split.vector.name,
                                     frozen.content, frozen.style)
  content, style = images
  v_tf = split.predictor(tf.constant(style)).numpy()
  v_ov = OpenVINORunner(predictor, 'f32', 'LATENCY').infer([style])
  assert np.abs(v_ov - v_tf).max() <= 1e-5
  out_tf = split.transfer(tf.constant(content), tf.constant(v_tf)).numpy()
  out_ov = OpenVINORunner(transfer, 'f32').infer([content, v_tf])
  assert np.abs(out_ov - out_tf).max() <= 1e-4


def test_openvino_search_without_names_finds_the_same_tensor(split):
  # The structural search run on OpenVINO's own graph, given no TF name.
  from transforms.models.engine import ov_split
  converted = ov_split.convert(split.frozen.graph_def)
  out = ov_split._find_output(converted, None, 0, 1)  # pylint: disable=protected-access
  assert split.vector.name in out.get_names()


def test_builtin_cannot_be_split(model_cache):
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  import tensorflow_hub as hub
  from transforms.models import builtin
  from transforms.models.engine import tf_split
  frozen = tf_split.freeze(hub.load(builtin.ensure_builtin()))
  with pytest.raises(tf_split.NotSplittable, match='no style-vector'):
    tf_split.split(frozen)


def test_failed_conversion_keeps_logging(model_cache, caplog):
  # ov.convert_model leaves the root logger at ERROR when it fails.
  import logging
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  import tensorflow_hub as hub
  from transforms.models import builtin
  from transforms.models.engine import ov_split, tf_split
  frozen = tf_split.freeze(hub.load(builtin.ensure_builtin()))
  root = logging.getLogger()
  level, handlers = root.level, list(root.handlers)
  with pytest.raises(Exception, match='SelfAdjointEigV2'):
    ov_split.convert(frozen.graph_def)
  assert root.level == level and root.handlers == handlers
  assert not root.filters
