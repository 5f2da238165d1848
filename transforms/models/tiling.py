"""Tiling with overlap and feathered blending, for outputs above a model's size."""

from typing import Callable, List

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
  """Start offsets covering [0, length) with tiles of size tile.

  Consecutive tiles overlap by at least `overlap`; the last tile ends at the
  border. A length up to one tile gives a single tile at 0.
  """
  if length <= tile:
    return [0]
  step = max(1, tile - overlap)
  starts = list(range(0, length - tile, step))
  starts.append(length - tile)
  return starts


def feather_window(length: int, ramp: int) -> np.ndarray:
  """1 inside, rising linearly over `ramp` pixels at both ends (never 0)."""
  w = np.ones(length, np.float32)
  ramp = min(ramp, length // 2)
  if ramp > 0:
    edge = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
    w[:ramp] = edge
    w[length - ramp:] = edge[::-1]
  return w


def run_tiled(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray],
              tile: int, overlap: int) -> np.ndarray:
  """Runs fn on overlapping tiles of one float [H, W, 3] image and blends.

  fn takes a [1, h, w, 3] tile (h, w <= tile) and returns it stylized at the
  same size. Overlaps are blended with linear (feathered) weights, so tile
  boundaries leave no seams; all tiles share the caller's style state.
  """
  height, width, _ = image.shape
  overlap = max(0, min(overlap, tile // 2))
  ys = tile_starts(height, tile, overlap)
  xs = tile_starts(width, tile, overlap)
  if len(ys) == 1 and len(xs) == 1:
    return fn(image[np.newaxis])[0]
  out = np.zeros_like(image, dtype=np.float32)
  weight = np.zeros((height, width, 1), np.float32)
  for y in ys:
    for x in xs:
      patch = image[y:y + tile, x:x + tile]
      h, w, _ = patch.shape
      result = fn(patch[np.newaxis])[0]
      wy = feather_window(h, overlap if len(ys) > 1 else 0)
      wx = feather_window(w, overlap if len(xs) > 1 else 0)
      win = (wy[:, None] * wx[None, :])[..., None]
      out[y:y + h, x:x + w] += result * win
      weight[y:y + h, x:x + w] += win
  return out / weight
