"""Image feature-vector models (TF Hub reusable SavedModels) for stylize-train.

A feature model maps float32 [B, H, W, 3] images in [0, 1] to [B, D]
vectors, e.g. TF Hub's google/tf2-preview/inception_v3/feature_vector/4
(D = 2048) or ../shared/models/magenta-style-features-v1-256 (D = 100).
"""

import logging
import re
from typing import Optional, Tuple

import numpy as np

from transforms.models import cache, tfhub
from transforms.models.base import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_FEATURE_MODEL = ('https://tfhub.dev/google/tf2-preview/inception_v3/'
                         'feature_vector/4')
# For a model that takes any size and whose handle names none: the size
# Magenta's style network (magenta-style-features-v1-256) was trained on.
DEFAULT_IMAGE_SIZE = 256

# Input sizes of TF Hub's image model families whose SavedModels accept any
# size, so the handle is all that says which one they were trained on.
_KNOWN_SIZES = (
    (re.compile(r'inception_v[34]|inception_resnet_v2'), 299),
    (re.compile(r'p?nasnet_large'), 331),
    (re.compile(r'nasnet_mobile'), 224),
    (re.compile(r'magenta'), 256),
    # mobilenet_v2_100_224, resnet_v2_50 ... _224, efficientnet ..._240 etc.
    (re.compile(r'_(\d{3})(?=/|$)'), None),
)


def size_from_handle(handle: str) -> Optional[int]:
  """The input size a TF Hub handle's name implies (None when it names none
  or is a path: a folder's name is no promise about its model)."""
  if not handle.startswith(('http://', 'https://')):
    return None
  name = handle.lower()
  for pattern, size in _KNOWN_SIZES:
    match = pattern.search(name)
    if match:
      return size or int(match.group(1))
  return None


def load_feature_model(handle: str, mirror: Optional[str] = None,
                       threads: int = 0) -> 'FeatureModel':
  """A FeatureModel; loaded once per stylize-train run (the launch's
  check, the model built around it and, on Beam's in-process runner, the
  extraction workers share it: transforms/models/sharing.py).

  threads: --tf_threads, for an extraction worker: TF's threads are capped
  before the load (configure_tf_threads). TF's pools are per process and
  fixed by its first op, so threads is not part of what is shared: the
  launcher (0, TF's default) loads first and in-process workers find that.

  Raises:
    ModelLoadError: as FeatureModel.
  """
  from transforms.models import sharing
  from transforms.stylize import configure_tf_threads
  source = tfhub.mirrored(handle, mirror)

  def load() -> FeatureModel:
    configure_tf_threads(threads)
    return FeatureModel(handle, mirror)
  return sharing.shared_load(('features', source), load)


class FeatureModel:
  """A loaded feature-vector model: features(uint8 images) -> [B, D]."""

  def __init__(self, handle: str, mirror: Optional[str] = None):
    """Loads the model (hub.load; no Keras needed).

    Args:
      handle: a TF Hub handle, a SavedModel folder (local or gs://) or a
        SavedModel .tar.gz.
      mirror: --tfhub_mirror (else $TFHUB_MIRROR applies).

    Raises:
      ModelLoadError: it will not load, is in the TF1 Hub format, or is not a
        callable model.
    """
    from transforms.native_logs import import_tensorflow
    tf = import_tensorflow()
    import tensorflow_hub as hub
    self._tf = tf
    self.handle = handle
    self.source = tfhub.mirrored(handle, mirror)
    self.path = tfhub.resolve(cache.localize(self.source))
    tfhub.check_not_tf1(self.path, handle)
    try:
      self._model = hub.load(self.path)
    except Exception as e:  # pylint: disable=broad-except
      detail = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise ModelLoadError(
          f'could not load feature model {handle!r} with tensorflow_hub.load: '
          f'{type(e).__name__}: {detail}. Give --feature_model a TF2 '
          'SavedModel folder (local or gs://), a .tar.gz of one, or a TF Hub '
          'handle.') from e
    if not callable(self._model):
      raise ModelLoadError(
          f'feature model {handle!r} loaded but is not callable: it is not a '
          'TF2 reusable SavedModel (model(images) -> feature vectors).')

  @property
  def module(self):
    """The loaded object (hub.load's), e.g. for hub.KerasLayer."""
    return self._model

  def fixed_image_size(self) -> Optional[int]:
    """The square input size the model declares, if it declares one."""
    shapes = []
    try:
      for fn in self._model.__call__.concrete_functions:
        args = fn.structured_input_signature[0]
        if args:
          shapes.append(tuple(args[0].shape))
    except (AttributeError, IndexError, TypeError):
      pass
    for shape in shapes:
      if len(shape) == 4 and shape[1] and shape[2] and shape[1] == shape[2]:
        return int(shape[1])
    return None

  def default_image_size(self) -> Tuple[int, str]:
    """(size, where it came from): the model's declared size, else what its
    TF Hub handle names, else DEFAULT_IMAGE_SIZE."""
    size = self.fixed_image_size()
    if size:
      return size, 'model signature'
    size = size_from_handle(self.handle)
    if size:
      return size, 'handle name'
    return DEFAULT_IMAGE_SIZE, 'default'

  def features(self, images: np.ndarray) -> np.ndarray:
    """uint8 [B, S, S, 3] -> float32 [B, D] (inference mode).

    Raises:
      ModelLoadError: the output is not one [B, D] tensor.
    """
    tf = self._tf
    x = tf.cast(tf.constant(images), tf.float32) * (1.0 / 255.0)
    out = self._model(x)
    if isinstance(out, dict) or len(out.shape) != 2:
      raise ModelLoadError(
          f'feature model {self.handle!r} returned '
          f'{type(out).__name__} {getattr(out, "shape", "")}, not one '
          '[batch, features] tensor: it is not an image feature-vector model.')
    return out.numpy().astype(np.float32)
