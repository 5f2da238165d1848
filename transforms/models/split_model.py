"""Adapters for SavedModel / TF Hub models split at their style vector.

The model comes from where it comes from today (tensorflow_hub.load of a
TF Hub handle, a local or cached gs:// SavedModel, the builtin model);
its style vector is found by graph structure (engine.bottleneck); then:

- TFSplitStylizer: the TF engine (the reference): the loaded function's
  graph pruned into predictor and transfer (engine.tf_split), padding to
  multiples of 8 as HubStylizer does.
- OpenVINOSplitStylizer: the loaded function converted to OpenVINO and cut
  at the vector (engine.ov_split; in a child process, cached per machine:
  engine.ov_ir); the transfer network in bf16 or f32,
  compiled per bucket shape (engine.buckets), uint8 in and out on the
  plain path (and for strength alone); the predictor in OpenVINO f32.

Both have has_style_vector=True: the predictor runs once per style per
worker, blends and --style_strength mix vectors (Magenta's
w * v_style + (1 - w) * v_content).

A model without a style vector (the builtin colour transfer) cannot be
split: OpenVINOFullStylizer runs its full model(content, style) call in
OpenVINO, and where OpenVINO cannot convert it (builtin: no OpenVINO
conversion for SelfAdjointEigV2), HubStylizer runs it in TF, as today.
Each fallback is logged once per process as a warning.
"""

import dataclasses
import logging
import threading
from typing import Any, Optional

import numpy as np

from transforms.models.base import (BlendState, StyleParams, Stylizer,
                                   auto_tile_side)
from transforms.models.engine import buckets, tiles

logger = logging.getLogger(__name__)

#: The predictor's input side for a content image's own vector (strength <
#: 1), fitted (centre-cropped) like a style image: Magenta computes it on the
#: content resized as its styles are (256).
VECTOR_SIZE = 256

_warned = set()
_warned_lock = threading.Lock()


def warn_once(key: Any, message: str, *args) -> None:
  """logger.warning, once per process per key."""
  with _warned_lock:
    if key in _warned:
      return
    _warned.add(key)
  logger.warning(message, *args)


def fit_for_vector(image: np.ndarray, size: int = VECTOR_SIZE) -> np.ndarray:
  """float [H, W, 3] (or uint8) -> float32 [1, size, size, 3], fitted as
  transforms.styles.load_style_image fits style images."""
  from PIL import Image, ImageOps  # pylint: disable=import-outside-toplevel
  if image.dtype != np.uint8:
    image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
  if image.shape[:2] != (size, size):
    image = np.asarray(ImageOps.fit(Image.fromarray(image), (size, size),
                                    Image.Resampling.LANCZOS))
  return (image.astype(np.float32) / 255.0)[np.newaxis]


class VectorStylizer(Stylizer):
  """Shared by the split adapters: style and content vectors."""

  has_style_vector = True
  engine = ''
  precision = ''
  vector_size = VECTOR_SIZE

  def __init__(self, handle: str, kind: str, vector_name: str,
               vector_shape):
    self.handle = handle
    self.kind = kind
    self.vector_name = vector_name
    self.vector_shape = tuple(vector_shape)
    self.predict_calls = 0  # Counted so tests can check styles are cached.

  def _predict(self, image: np.ndarray) -> np.ndarray:
    """float32 [1, h, w, 3] -> float32 [1, ...vector]."""
    raise NotImplementedError

  def prepare_style(self, style: np.ndarray) -> Any:
    self.predict_calls += 1
    return np.asarray(self._predict(np.asarray(style, np.float32)[np.newaxis]),
                      np.float32)

  def content_vector(self, content: np.ndarray) -> Any:
    self.predict_calls += 1
    return np.asarray(self._predict(fit_for_vector(content, self.vector_size)),
                      np.float32)

  def stylize(self, content: np.ndarray, style_state: Any,
              params: StyleParams = StyleParams()) -> np.ndarray:
    """As Stylizer.stylize; strength < 1 alone stays on the uint8 path.

    Strength mixes vectors, so the pixels never need to be floats on the
    host: each image's own vector comes from its uint8 pixels (fitted to
    256 px), and the batch runs with per-image vectors through run_uint8.
    The result equals the base class's float path (its float copy gives
    the same vectors: x = content / 255 rounds back to content).
    """
    _, height, width, _ = content.shape
    if (params.strength < 1.0 and not params.preserve_colors and
        not (params.max_untiled_pixels and
             height * width > params.max_untiled_pixels) and
        self._plain(content, style_state,
                    dataclasses.replace(params, strength=1.0))):
      vectors = np.concatenate([
          self.mix_vectors([(params.strength, style_state),
                            (1.0 - params.strength, self.content_vector(img))])
          for img in content])
      out = self.run_uint8(content, vectors)
      if out is not None:
        return out
    return super().stylize(content, style_state, params)

  def _vectors(self, state: Any, count: int) -> np.ndarray:
    """[1 | B, ...] -> [B, ...] (a split transfer net may not broadcast)."""
    v = np.asarray(state, np.float32)
    return np.repeat(v, count, axis=0) if v.shape[0] == 1 and count > 1 else v

  def describe(self) -> dict:
    return {'convention': 'predictor(style) -> vector; transfer(content, '
                          'vector) -> image, split from model(content, '
                          'style)[0]',
            'style_vector': f'{self.vector_name} {list(self.vector_shape)} '
                            '(strength and blends mix vectors)',
            'engine': self.engine, 'precision': self.precision}

  def _run(self, x: np.ndarray, state: Any, params: StyleParams) -> np.ndarray:
    # Tiles of an image go to the network as one batch (parallel requests)
    # rather than one by one; same tiles, same blending as the base class.
    _, height, width, _ = x.shape
    tile = params.tile_size
    if (isinstance(state, BlendState) or self.fixed_size or not tile or
        max(height, width) <= tile):
      return super()._run(x, state, params)
    v = np.asarray(state)
    if v.shape[0] > 1:
      return np.concatenate([
          tiles.run_tiled_batch(x[i:i + 1],
                                lambda t, i=i: self._call(t, v[i:i + 1]),
                                tile, params.tile_overlap)
          for i in range(x.shape[0])])
    return tiles.run_tiled_batch(x, lambda t: self._call(t, v), tile,
                                 params.tile_overlap)


class TFSplitStylizer(VectorStylizer):
  """The split model under TensorFlow f32 (the reference engine)."""

  engine = 'tf'
  precision = 'f32'

  def __init__(self, handle: str, kind: str, split):
    """split: a tf_split.TFSplit."""
    super().__init__(handle, kind, split.vector.name, split.vector.shape)
    from transforms.native_logs import import_tensorflow  # pylint: disable=import-outside-toplevel
    self._tf = import_tensorflow()
    self._split = split

  def _predict(self, image: np.ndarray) -> np.ndarray:
    return self._split.predictor(self._tf.constant(image)).numpy()

  def run_uint8(self, content: np.ndarray, style_state: Any):
    tf = self._tf
    x = tf.cast(tf.constant(content), tf.float32) * (1.0 / 255.0)
    v = tf.constant(self._vectors(style_state, content.shape[0]))
    out = self._split.transfer(x, v)
    if tuple(out.shape) != tuple(content.shape):
      return None  # The model rounded the size: the general path crops.
    return tf.cast(tf.clip_by_value(out * 255.0 + 0.5, 0.0, 255.0),
                   tf.uint8).numpy()

  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    v = self._vectors(style_state, content.shape[0])
    return self._split.transfer(self._tf.constant(content),
                                self._tf.constant(v)).numpy()


class _TileExact:
  """OpenVINO adapters: tiles padded exactly as the TF engine pads them.

  Tiles have one size per job, so buckets buy nothing for them, and
  padding beyond the TF engine's would change every tile's borders (and
  through the feathered overlaps, the image). Tiles reach run_batch from
  Stylizer._run (tile_size) and Stylizer.stylize_large
  (max_untiled_pixels); a thread-local flag marks those calls, so Beam
  threads sharing the adapter do not see each other's.
  """

  def _tile_local(self):
    local = self.__dict__.get('_tiles')
    if local is None:
      local = self.__dict__.setdefault('_tiles', threading.local())
    return local

  def _in_tiles(self) -> bool:
    return getattr(self._tile_local(), 'depth', 0) > 0

  def _tiled(self, fn, *args):
    local = self._tile_local()
    local.depth = getattr(local, 'depth', 0) + 1
    try:
      return fn(*args)
    finally:
      local.depth -= 1

  def stylize_large(self, image, style_state, params):
    return self._tiled(super().stylize_large, image, style_state, params)

  def large_tile_side(self, params: StyleParams) -> int:
    # The TF engine's tile side (its pad_multiple is 8; ours is 1).
    if not params.tile_size and not self.fixed_size:
      return auto_tile_side(params.max_untiled_pixels,
                            buckets.REFERENCE_MULTIPLE)
    return super().large_tile_side(params)

  def _run(self, x, state, params):
    _, height, width, _ = x.shape
    tile = params.tile_size
    if tile and max(height, width) > tile:
      return self._tiled(super()._run, x, state, params)
    return super()._run(x, state, params)


class _BucketLists:
  """OpenVINO adapters: a bucket's images of different sizes in one call.

  The pipeline batches images by bucket shape (transforms/stylize.py,
  BatchByBucket), so a batch may hold, say, 1024x683 and 1024x680 photos:
  on the plain path each is padded into the same bucket in the network's
  own buffers and cropped back (BucketedNetwork.run_uint8_list); other
  paths (colours, pixel strength, tiles) go shape by shape.
  """

  def stylize_many(self, images, style_state, params=StyleParams()):
    if len({image.shape for image in images}) > 1 and self._plain_list(
        images, style_state, params):
      state = style_state
      if params.strength < 1.0:
        # Vector models only (_plain_list): per-image vectors.
        state = np.concatenate([
            self.mix_vectors([(params.strength, style_state),
                              (1.0 - params.strength,
                               self.content_vector(image))])
            for image in images])
      return self.network.run_uint8_list(images, np.asarray(state,
                                                             np.float32))
    return super().stylize_many(images, style_state, params)

  def _plain_list(self, images, state, params) -> bool:
    if params.preserve_colors or isinstance(state, BlendState) or (
        params.strength < 1.0 and not self.has_style_vector):
      return False
    for image in images:
      height, width = image.shape[:2]
      if params.tile_size and max(height, width) > params.tile_size:
        return False
      if (params.max_untiled_pixels and
          height * width > params.max_untiled_pixels):
        return False
    return True


class OpenVINOSplitStylizer(_BucketLists, _TileExact, VectorStylizer):
  """The split model under OpenVINO, in bucket shapes.

  pad_multiple and min_size are 1: the base class never pads (its float
  copy); every batch is padded to its bucket inside the network's own input
  buffers (engine.ov_bucketed), so the plain path (no strength, colours,
  blend or tiling) is uint8 end to end.
  """

  engine = 'openvino'
  pad_multiple = 1
  min_size = 1

  def __init__(self, handle: str, kind: str, predictor_model, transfer_model,
               vector_name: str, vector_shape, precision: str,
               threads: int = 0, max_shapes: int = 8,
               bucket=buckets.bucket_shape):
    super().__init__(handle, kind, vector_name, vector_shape)
    from transforms.models.engine import ov_bucketed  # pylint: disable=import-outside-toplevel
    self.precision = precision
    self.network = ov_bucketed.BucketedNetwork(transfer_model, precision,
                                               threads, max_shapes, bucket)
    self._predictor = ov_bucketed.Predictor(
        predictor_model, threads, core=self.network.float_runner.core)

  def _predict(self, image: np.ndarray) -> np.ndarray:
    return self._predictor(image)

  def run_uint8(self, content: np.ndarray, style_state: Any):
    return self.network.run_uint8(content, np.asarray(style_state, np.float32),
                                  self._in_tiles())

  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    return self.network.run_float(np.asarray(content, np.float32),
                                  np.asarray(style_state, np.float32),
                                  self._in_tiles())

  def describe(self) -> dict:
    info = super().describe()
    from transforms.models.engine import ov_bucketed  # pylint: disable=import-outside-toplevel
    info.update(ov_bucketed.describe(self.network))
    return info


class OpenVINOFullStylizer(_BucketLists, _TileExact, Stylizer):
  """A model without a style vector, its full call under OpenVINO.

  The style image is the network's second input (compiled per bucket and
  style size); strength and blends mix pixels, as with HubStylizer.
  """

  engine = 'openvino'
  pad_multiple = 1
  min_size = 1

  def __init__(self, handle: str, kind: str, model, precision: str,
               threads: int = 0, max_shapes: int = 8,
               bucket=buckets.bucket_shape):
    from transforms.models.engine import ov_bucketed  # pylint: disable=import-outside-toplevel
    self.handle = handle
    self.kind = kind
    self.precision = precision
    self.network = ov_bucketed.BucketedNetwork(model, precision, threads,
                                               max_shapes, bucket, name='full')

  def prepare_style(self, style: np.ndarray) -> Any:
    return np.asarray(style, np.float32)[np.newaxis]

  def run_uint8(self, content: np.ndarray, style_state: Any):
    return self.network.run_uint8(content, style_state, self._in_tiles())

  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    return self.network.run_float(np.asarray(content, np.float32),
                                  style_state, self._in_tiles())

  def describe(self) -> dict:
    from transforms.models.engine import ov_bucketed  # pylint: disable=import-outside-toplevel
    info = {'convention': 'model(content, style)[0], float32 in [0, 1]',
            'style_vector': 'hidden (strength and blends mix pixels)',
            'engine': self.engine}
    info.update(ov_bucketed.describe(self.network))
    return info


def _openvino(handle: str, kind: str, converted, precision: str,
              threads: int, max_shapes: int, bucket) -> Optional[Stylizer]:
  """The OpenVINO adapter of a model converted by engine.ov_ir, or None
  where OpenVINO cannot convert it."""
  if converted.unconvertible:
    warn_once(('convert', handle),
              'OpenVINO cannot convert model %s (%s); it runs under '
              'TensorFlow f32.', handle, converted.unconvertible)
    return None
  parts = converted.parts
  if parts is None:
    from transforms.models.engine import tf_split  # pylint: disable=import-outside-toplevel
    _warn_unsplittable(handle, tf_split.NO_VECTOR)
    return OpenVINOFullStylizer(handle, kind, converted.full, precision,
                                threads, max_shapes, bucket)
  # The converted models own their weights: the TF model may go.
  return OpenVINOSplitStylizer(handle, kind, parts.predictor, parts.transfer,
                               parts.vector_name, parts.vector_shape,
                               precision, threads, max_shapes, bucket)


def _warn_unsplittable(handle: str, why: Any) -> None:
  warn_once(('split', handle),
            'Model %s cannot be split at a style vector (%s): it runs as one '
            'model(content, style) call, each style image goes through it '
            'with every batch, and strength and blends mix pixels.',
            handle, why)


def build(handle: str, kind: str, model: Any, engine: str, precision: str,
          threads: int = 0, fallback: Optional[Stylizer] = None,
          max_shapes: int = 8, bucket=buckets.bucket_shape,
          converted=None) -> Stylizer:
  """The adapter for a loaded Magenta-convention model on a resolved engine.

  Args:
    handle: the --model value. kind: 'hub', 'savedmodel' or 'builtin'.
    model: what tensorflow_hub.load returned; None only with a
      `converted` that converted (nothing else to fall back on).
    engine, precision: resolved ('tf'/'openvino', 'f32'/'bf16').
    threads: OpenVINO's threads (0: all cores).
    fallback: the full-call TF adapter (HubStylizer), returned for models
      that can be neither split nor converted.
    max_shapes: compiled bucket shapes kept per network (OpenVINO).
    bucket: (height, width) -> padded shape (OpenVINO): buckets.bucket_shape
      (few shapes), or buckets.exact_shape (the TF engine's padding, one
      compile per size: outputs match the TF engine at every size).
    converted: the model converted for OpenVINO already (engine.ov_ir,
      in a child process); None converts `model` here.

  OpenVINO: the model converted and cut (OpenVINOSplitStylizer), else its
  full call (OpenVINOFullStylizer); where it does not convert, TF. TF: the
  split model (TFSplitStylizer), else `fallback`. Each fallback is logged
  once per process.
  """
  from transforms.models.engine import tf_split  # pylint: disable=import-outside-toplevel
  if kind == 'builtin' and fallback is not None:
    # The colour transfer is no network: no style vector, no OpenVINO
    # conversion (SelfAdjointEigV2); its TF call, without a warning.
    logger.info('Model builtin runs on TensorFlow (a colour transfer, not a '
                'network).')
    return fallback
  if engine == 'openvino':
    from transforms.models.engine import ov_ir  # pylint: disable=import-outside-toplevel
    stylizer = _openvino(handle, kind,
                         converted or ov_ir.convert_loaded(model), precision,
                         threads, max_shapes, bucket)
    if stylizer is not None:
      return stylizer
  try:
    return TFSplitStylizer(handle, kind, tf_split.split(model))
  except tf_split.NotSplittable as e:
    _warn_unsplittable(handle, e)
    return fallback
