"""The one small interface every model adapter implements, and shared helpers."""

import abc
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
  """A model that will not load; the message says what to do about it."""


class Stylizer(abc.ABC):
  """A loaded stylization model.

  Loading (handle -> Stylizer) is separate from running a batch, as in
  Beam's ModelHandler: adapters are built once per worker process.
  """

  #: Where the model came from (the --model value), recorded in the manifest.
  handle: str = ''
  #: Spatial sizes are padded to a multiple of this before the model call
  #: (the Magenta transfer network has stride-2 layers and rounds sizes).
  pad_multiple: int = 8
  #: Images smaller than this on either side are padded up to it (reflect
  #: padding inside the network needs a few pixels to work with).
  min_size: int = 32

  @abc.abstractmethod
  def prepare_style(self, style: np.ndarray) -> Any:
    """Turns a float32 [h, w, 3] style image into what stylize() takes.

    Called once per style per worker, never per image.
    """

  @abc.abstractmethod
  def stylize_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    """float32 [B, H, W, 3] in [0, 1] -> float32 [B, H', W', 3] in [0, 1].

    H and W are already multiples of pad_multiple and at least min_size; the
    output may be of another size, in which case it is resized back.
    """

  def stylize(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    """uint8 [B, H, W, 3] of one shape -> uint8 [B, H, W, 3], same size.

    Pads (reflecting the image) to the model's multiple and minimum size,
    runs the model, and crops back, so an output always has exactly the
    dimensions of its input.
    """
    batch, height, width, _ = content.shape
    padded = pad_to_multiple(content, self.pad_multiple, self.min_size)
    out = self.stylize_batch(padded.astype(np.float32) / 255.0, style_state)
    out = np.asarray(out, dtype=np.float32)
    if out.shape[1:3] != padded.shape[1:3]:
      out = resize_batch(out, padded.shape[1], padded.shape[2])
    out = out[:, :height, :width, :]
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def padded_shape(height: int, width: int, multiple: int,
                 min_size: int) -> tuple:
  def up(n):
    n = max(n, min_size)
    return -(-n // multiple) * multiple
  return up(height), up(width)


def pad_to_multiple(batch: np.ndarray, multiple: int,
                    min_size: int) -> np.ndarray:
  """Pads [B, H, W, C] at the bottom/right by mirroring the image.

  numpy's 'symmetric' mode repeats the mirror as often as needed, so even a
  1x1 image can be padded to any size (reflect padding would need pad < size).
  """
  _, height, width, _ = batch.shape
  new_h, new_w = padded_shape(height, width, multiple, min_size)
  if (new_h, new_w) == (height, width):
    return batch
  return np.pad(batch, ((0, 0), (0, new_h - height), (0, new_w - width),
                        (0, 0)), mode='symmetric')


def resize_batch(batch: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a float batch, for models that round sizes."""
  import tensorflow as tf  # Heavy import kept out of module import time.
  return tf.image.resize(batch, (height, width), method='bilinear').numpy()
