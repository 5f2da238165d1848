"""The builtin model: a deterministic colour-statistics transfer, as a SavedModel.

It is not a neural network. It moves the content image's colour
distribution onto the style image's by matching mean and covariance in RGB
(the Monge-Kantorovitch linear transfer of Pitie & Kokaram, 2007), the
closed-form optimal linear map between two Gaussians. It is exported by this
project as a TF2 SavedModel with TF Hub Magenta's calling convention
(`model(content, style)[0]`, float32 in [0, 1]) so that it loads through the
same `hub.load` path as every other model, and so everything works offline.
"""

import logging
import os
import shutil
import tempfile

logger = logging.getLogger(__name__)

BUILTIN_NAME = 'builtin'
# Bump when the exported graph changes, so stale caches are not reused.
BUILTIN_VERSION = 'mkl-colour-transfer-v1'
_EPS = 1e-4


def cache_dir() -> str:
  """STYLIZE_CACHE_DIR, else ~/.cache/stylize."""
  return os.environ.get('STYLIZE_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'stylize')


def builtin_path() -> str:
  return os.path.join(cache_dir(), 'models', BUILTIN_VERSION)


def _build_module():
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()

  def _sqrt_and_inv_sqrt(cov):
    vals, vecs = tf.linalg.eigh(cov)
    vals = tf.maximum(vals, _EPS)
    sqrt = tf.matmul(vecs * tf.sqrt(vals)[..., tf.newaxis, :], vecs,
                     transpose_b=True)
    inv = tf.matmul(vecs * tf.math.rsqrt(vals)[..., tf.newaxis, :], vecs,
                    transpose_b=True)
    return sqrt, inv

  def _stats(images):
    flat = tf.reshape(images, (tf.shape(images)[0], -1, 3))
    mean = tf.reduce_mean(flat, axis=1, keepdims=True)
    centred = flat - mean
    n = tf.cast(tf.shape(flat)[1], tf.float32)
    cov = tf.matmul(centred, centred, transpose_a=True) / n
    cov += _EPS * tf.eye(3, batch_shape=[tf.shape(images)[0]])
    return flat, mean, cov

  class ColourTransfer(tf.Module):
    """model(content [B,H,W,3], style [1 or B,h,w,3]) -> [stylized]."""

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name='content'),
        tf.TensorSpec([None, None, None, 3], tf.float32, name='style'),
    ])
    def __call__(self, content, style):
      flat, mu_c, cov_c = _stats(content)
      _, mu_s, cov_s = _stats(style)
      batch = tf.shape(content)[0]
      mu_s = tf.broadcast_to(mu_s, [batch, 1, 3])
      cov_s = tf.broadcast_to(cov_s, [batch, 3, 3])
      c_half, c_inv_half = _sqrt_and_inv_sqrt(cov_c)
      middle, _ = _sqrt_and_inv_sqrt(
          tf.matmul(tf.matmul(c_half, cov_s), c_half))
      transfer = tf.matmul(tf.matmul(c_inv_half, middle), c_inv_half)
      out = tf.matmul(flat - mu_c, transfer) + mu_s
      out = tf.clip_by_value(out, 0.0, 1.0)
      return [tf.reshape(out, tf.shape(content))]

  return ColourTransfer()


def export_builtin(path: str) -> str:
  """Writes the builtin SavedModel to path (atomically) and returns path."""
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.builtin-', dir=parent)
  try:
    module = _build_module()
    tf.saved_model.save(module, tmp,
                        signatures={'serving_default': module.__call__})
    try:
      os.rename(tmp, path)  # Atomic: concurrent workers never see half a model.
    except OSError:
      if not os.path.exists(os.path.join(path, 'saved_model.pb')):
        raise
      logger.info('Builtin model already exported by another process.')
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return path


def ensure_builtin() -> str:
  """Path of the builtin SavedModel, exporting it on first use."""
  path = builtin_path()
  if not os.path.exists(os.path.join(path, 'saved_model.pb')):
    logger.info('Exporting the builtin colour-transfer model to %s', path)
    export_builtin(path)
  return path
