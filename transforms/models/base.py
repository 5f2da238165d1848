"""The one small interface every model adapter implements, and what they share.

An adapter says how to turn a style image into a style state and how to run
one padded batch; this base class adds, for every model kind alike: padding
and cropping to exact sizes, tiling with feathered overlaps, style strength,
style blends and colour preservation.
"""

import abc
import dataclasses
import logging
import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from transforms.models import tiling
from transforms.color import preserve_colors as keep_colors

logger = logging.getLogger(__name__)

STRENGTH_VECTOR = 'style-vector'
STRENGTH_PIXEL = 'pixel-blend'


class ModelLoadError(RuntimeError):
  """A model that will not load; the message says what to do about it."""


@dataclasses.dataclass(frozen=True)
class StyleParams:
  """Per-job style controls (the same for every image)."""
  strength: float = 1.0
  preserve_colors: bool = False
  tile_size: int = 0  # 0: only where the model needs it (fixed-size nets).
  tile_overlap: int = 64
  # Images with more pixels are stylized one at a time in tiles, with
  # bounded memory (see Stylizer.stylize); 0: no such limit.
  max_untiled_pixels: int = 0


def auto_tile_side(max_pixels: int, multiple: int = 8) -> int:
  """The tile side used above max_untiled_pixels: the largest square within
  the budget, rounded down to the network's size multiple."""
  side = math.isqrt(max_pixels)
  return max(multiple, side // multiple * multiple)


@dataclasses.dataclass
class BlendState:
  """Several prepared styles with weights (summing to 1)."""
  parts: List[Tuple[float, Any]]


class Stylizer(abc.ABC):
  """A loaded stylization model.

  Loading (handle -> Stylizer) is separate from running a batch, as in
  Beam's ModelHandler: adapters are built once per worker process.
  """

  #: Where the model came from (the --model value), recorded in the manifest.
  handle: str = ''
  #: 'builtin', 'savedmodel', 'hub' or 'tflite'.
  kind: str = ''
  #: What actually runs the network: 'tf' (TensorFlow or LiteRT) or
  #: 'openvino', in 'f32' or 'bf16' (transforms/models/engine).
  engine: str = 'tf'
  precision: str = 'f32'
  #: Spatial sizes are padded to a multiple of this before the model call
  #: (the Magenta transfer network has stride-2 layers and rounds sizes).
  pad_multiple: int = 8
  #: Images smaller than this on either side are padded up to it (reflect
  #: padding inside the network needs a few pixels to work with).
  min_size: int = 32
  #: (height, width) for networks that only take one input size.
  fixed_size: Optional[Tuple[int, int]] = None
  #: True where the style vector is exposed, so strength and blends mix
  #: vectors (Magenta's meaning); otherwise they mix pixels.
  has_style_vector: bool = False

  # -- what adapters implement -------------------------------------------

  @abc.abstractmethod
  def prepare_style(self, style: np.ndarray) -> Any:
    """Turns a float32 [h, w, 3] style image into what run_batch() takes.

    Called once per style per worker, never per image.
    """

  @abc.abstractmethod
  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    """float32 [B, H, W, 3] in [0, 1] -> float32 [B, H', W', 3] in [0, 1].

    H and W are multiples of pad_multiple, at least min_size, and equal to
    fixed_size where that is set. style_state is one prepared style, or for
    vector models a [B, ...] stack of per-image vectors.
    """

  def describe(self) -> dict:
    """Inputs, outputs and conventions, for `stylize-inspect`."""
    return {}

  def content_vector(self, content: np.ndarray) -> Any:
    """The content image's own style vector (vector models only)."""
    raise NotImplementedError

  def mix_vectors(self, parts: Sequence[Tuple[float, Any]]) -> Any:
    """Weighted sum of style vectors (vector models only)."""
    return sum(w * np.asarray(v) for w, v in parts)

  # -- shared behaviour --------------------------------------------------

  def prepare_blend(self, parts: Sequence[Tuple[float, np.ndarray]]) -> Any:
    """Weighted style images -> one style state.

    Vector models mix the style vectors (as Magenta does); models that hide
    the vector keep the parts and mix the stylized pixels instead.
    """
    total = float(sum(w for w, _ in parts))
    prepared = [(w / total, self.prepare_style(img)) for w, img in parts]
    if len(prepared) == 1:
      return prepared[0][1]
    if self.has_style_vector:
      return self.mix_vectors(prepared)
    return BlendState(prepared)

  def strength_mode(self) -> str:
    return STRENGTH_VECTOR if self.has_style_vector else STRENGTH_PIXEL

  def run_uint8(self, content: np.ndarray, style_state: Any):
    """Optional fast path: uint8 batch in, uint8 batch out, or None.

    Used when nothing needs the float pixels on the host (no strength,
    colours, tiling, padding or blend), so adapters can convert inside the
    framework's own thread pool.
    """
    return None

  def _plain(self, content: np.ndarray, state: Any,
             params: StyleParams) -> bool:
    _, height, width, _ = content.shape
    return (params.strength >= 1.0 and not params.preserve_colors and
            not isinstance(state, BlendState) and self.fixed_size is None and
            not (params.tile_size and max(height, width) > params.tile_size)
            and padded_shape(height, width, self.pad_multiple,
                             self.min_size) == (height, width))

  def stylize(self, content: np.ndarray, style_state: Any,
              params: StyleParams = StyleParams()) -> np.ndarray:
    """uint8 [B, H, W, 3] of one shape -> uint8 [B, H, W, 3], same size.

    Images over params.max_untiled_pixels go one by one through tiles
    (stylize_large), whatever the model and the other settings.
    """
    _, height, width, _ = content.shape
    if (params.max_untiled_pixels and
        height * width > params.max_untiled_pixels):
      outs = [self.stylize_large(img, style_state, params) for img in content]
      return outs[0][np.newaxis] if len(outs) == 1 else np.stack(outs)
    if self._plain(content, style_state, params):
      out = self.run_uint8(content, style_state)
      if out is not None:
        return out
    x = content.astype(np.float32)
    x *= 1.0 / 255.0  # In place: a 1024x768 batch is tens of MB.
    state = style_state
    if params.strength < 1.0 and self.has_style_vector:
      # Magenta's identity interpolation: w * v_style + (1 - w) * v_content.
      state = np.concatenate([
          self.mix_vectors([(params.strength, style_state),
                            (1.0 - params.strength, self.content_vector(img))])
          for img in x])
    out = self._run(x, state, params)
    if params.strength < 1.0 and not self.has_style_vector:
      out = params.strength * out + (1.0 - params.strength) * x
    if params.preserve_colors:
      out = keep_colors(x, out)
    out = np.asarray(out, np.float32) * 255.0
    out += 0.5  # Round half up, then truncate: in place, no temporaries.
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)

  def stylize_many(self, images: Sequence[np.ndarray], style_state: Any,
                   params: StyleParams = StyleParams()) -> List[np.ndarray]:
    """uint8 [H, W, 3] images of any sizes -> their outputs, in order.

    Images of one shape share a model call (stylize on their stack);
    adapters that pad to bucket shapes (the OpenVINO ones) take all the
    images of a bucket in one call.
    """
    out: List[Any] = [None] * len(images)
    groups: dict = {}
    for i, image in enumerate(images):
      groups.setdefault(image.shape, []).append(i)
    for indices in groups.values():
      stacked = (images[indices[0]][np.newaxis] if len(indices) == 1 else
                 np.stack([images[i] for i in indices]))
      for i, result in zip(indices, self.stylize(stacked, style_state,
                                                 params)):
        out[i] = result
    return out

  def large_tile_side(self, params: StyleParams) -> int:
    """The tile side stylize_large uses."""
    if self.fixed_size:
      return min(params.tile_size or min(self.fixed_size), min(self.fixed_size))
    if params.tile_size:
      return params.tile_size
    return auto_tile_side(params.max_untiled_pixels, self.pad_multiple)

  def stylize_large(self, image: np.ndarray, style_state: Any,
                    params: StyleParams) -> np.ndarray:
    """One large uint8 [H, W, 3] image -> uint8 [H, W, 3], in tiles.

    Only one tile at a time is ever in float (strength and colour
    preservation are applied per tile; both are per-pixel), and blending
    keeps one row of tiles (tiling.run_tiled_uint8). So memory stays about
    that of the uint8 image, its uint8 result and one row of tiles, where
    stylize() on the whole image would hold several full-size float copies
    and the network's activations for every pixel at once.
    """
    state = style_state
    if params.strength < 1.0 and self.has_style_vector:
      # The content's own style vector, from a reduced copy (the predictor
      # sees 256 px anyway) rather than a full-size float one.
      from PIL import Image  # pylint: disable=import-outside-toplevel
      small = Image.fromarray(image)
      small.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
      content = np.asarray(small, np.float32) / 255.0
      state = self.mix_vectors([(params.strength, style_state),
                                (1.0 - params.strength,
                                 self.content_vector(content))])

    def stylize_tile(tile: np.ndarray) -> np.ndarray:
      x = tile.astype(np.float32)
      x *= 1.0 / 255.0
      out = self._run(x, state, params)
      if params.strength < 1.0 and not self.has_style_vector:
        out = params.strength * out + (1.0 - params.strength) * x
      if params.preserve_colors:
        out = keep_colors(x, out)
      return out

    return tiling.run_tiled_uint8(image, stylize_tile,
                                  self.large_tile_side(params),
                                  params.tile_overlap)

  def _run(self, x: np.ndarray, state: Any, params: StyleParams) -> np.ndarray:
    if isinstance(state, BlendState):
      return sum(w * self._run(x, s, params) for w, s in state.parts)
    tile = params.tile_size
    if self.fixed_size:
      tile = min(tile or min(self.fixed_size), min(self.fixed_size))
    _, height, width, _ = x.shape
    if self.fixed_size or (tile and max(height, width) > tile):
      return np.stack([
          tiling.run_tiled(img, lambda t, i=i: self._call(t, _pick(state, i)),
                           tile, params.tile_overlap)
          for i, img in enumerate(x)])
    return self._call(x, state)

  def _call(self, x: np.ndarray, state: Any) -> np.ndarray:
    """Pads to what the network takes, runs it, crops back to x's size."""
    _, height, width, _ = x.shape
    if self.fixed_size:
      target = self.fixed_size
    else:
      target = padded_shape(height, width, self.pad_multiple, self.min_size)
    padded = pad_to(x, *target)
    out = np.asarray(self.run_batch(padded, state), dtype=np.float32)
    if out.shape[1:3] != padded.shape[1:3]:
      out = resize_batch(out, padded.shape[1], padded.shape[2])
    return out[:, :height, :width, :]


def _pick(state: Any, i: int) -> Any:
  """The i-th image's vector from a per-image stack, else the shared state."""
  if isinstance(state, np.ndarray) and state.ndim == 4 and state.shape[0] > 1:
    return state[i:i + 1]
  return state


def padded_shape(height: int, width: int, multiple: int,
                 min_size: int) -> tuple:
  def up(n):
    n = max(n, min_size)
    return -(-n // multiple) * multiple
  return up(height), up(width)


def pad_to(batch: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pads [B, H, W, C] at the bottom/right by mirroring the image.

  numpy's 'symmetric' mode repeats the mirror as often as needed, so even a
  1x1 image can be padded to any size (reflect padding needs pad < size).
  """
  _, h, w, _ = batch.shape
  if (h, w) == (height, width):
    return batch
  return np.pad(batch, ((0, 0), (0, height - h), (0, width - w), (0, 0)),
                mode='symmetric')


def resize_batch(batch: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a float batch, for models that round sizes."""
  # Heavy import kept out of module import time.
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()
  return tf.image.resize(batch, (height, width), method='bilinear').numpy()
