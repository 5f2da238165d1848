"""Adapter for models with TF Hub's Magenta convention, loaded with hub.load."""

import logging
from typing import Any

import numpy as np

from transforms.models.base import ModelLoadError, Stylizer

logger = logging.getLogger(__name__)


class HubStylizer(Stylizer):
  """`model(content, style)[0]`, float32 images in [0, 1].

  Serves TF Hub handles (URLs), local SavedModel directories and the builtin
  model: all of them go through `tensorflow_hub.load`.
  """

  def __init__(self, handle: str, path: str = None, kind: str = 'hub'):
    """Loads the model.

    Args:
      handle: the --model value (recorded in the manifest).
      path: what hub.load gets, when it differs from handle (builtin).
    """
    from transforms.native_logs import import_tensorflow
    tf = import_tensorflow()
    import tensorflow_hub as hub
    self.handle = handle
    self.kind = kind
    self._tf = tf
    from transforms.models import tfhub
    target = tfhub.resolve(path or handle)
    tfhub.check_not_tf1(target, handle)
    try:
      self._model = hub.load(target)
    except Exception as e:  # pylint: disable=broad-except
      first = (str(e).strip().splitlines() or [''])[0].rstrip('.')
      raise ModelLoadError(
          f'could not load model {handle!r} with tensorflow_hub.load: '
          f'{type(e).__name__}: {first}'
          '. Give a local SavedModel folder, a reachable TF Hub handle, '
          '"magenta-lite" or "builtin". (tfhub.dev handles are served by Kaggle '
          'Models; without internet access, mirror the model into a folder or '
          'bucket and give that path.)') from e
    if not callable(self._model):
      raise ModelLoadError(
          f'model {handle!r} loaded but is not callable as model(content, '
          'style); it does not follow the TF Hub Magenta convention.')

  @property
  def model(self):
    """What tensorflow_hub.load returned (split_model splits it)."""
    return self._model

  def describe(self) -> dict:
    """Inputs and outputs as the SavedModel declares them."""
    info = {'convention': 'model(content, style)[0], float32 in [0, 1]',
            'style_vector': 'hidden (strength and blends mix pixels)'}
    try:
      sig = self._model.signatures['serving_default']
      info['inputs'] = {k: f'{v.dtype.name} {v.shape}' for k, v in
                        sig.structured_input_signature[1].items()}
      info['outputs'] = {k: f'{v.dtype.name} {v.shape}' for k, v in
                         sig.structured_outputs.items()}
    except (AttributeError, KeyError, TypeError):
      try:
        concrete = self._model.__call__.concrete_functions[0]
        args = concrete.structured_input_signature[0]
        info['inputs'] = [f'{a.dtype.name} {a.shape}' for a in args]
      except (AttributeError, IndexError, TypeError):
        info['inputs'] = 'not declared (traced on first call)'
    return info

  def prepare_style(self, style: np.ndarray) -> Any:
    # The style tensor is built once per worker and reused for every batch.
    return self._tf.constant(style[np.newaxis].astype(np.float32))

  def run_uint8(self, content: np.ndarray, style_state: Any):
    # Scaling and rounding as TF ops: they run on TF's (multi-threaded) pool
    # and only uint8 crosses between numpy and TF, 4x less copying.
    tf = self._tf
    x = tf.cast(tf.constant(content), tf.float32) * (1.0 / 255.0)
    out = self._model(x, style_state)[0]
    if tuple(out.shape) != tuple(content.shape):
      return None  # The model rounded the size: the general path crops.
    return tf.cast(tf.clip_by_value(out * 255.0 + 0.5, 0.0, 255.0),
                   tf.uint8).numpy()

  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    outputs = self._model(self._tf.constant(content), style_state)
    return outputs[0].numpy()
