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


def to_uint8(x: np.ndarray) -> np.ndarray:
  """float in [0, 1] -> uint8, rounding half up (as Stylizer.stylize does)."""
  x = x * 255.0
  x += 0.5
  np.clip(x, 0.0, 255.0, out=x)
  return x.astype(np.uint8)


def run_tiled_uint8(image: np.ndarray,
                    fn: Callable[[np.ndarray], np.ndarray],
                    tile: int, overlap: int) -> np.ndarray:
  """run_tiled for large images: uint8 [H, W, 3] in, uint8 out, bounded memory.

  fn takes a uint8 [1, h, w, 3] tile and returns it stylized as float32 in
  [0, 1]. The same tiles and feathered weights as run_tiled, but the
  blending accumulators span one row of tiles, not the image: once a row of
  tiles is done, the rows above the next row of tiles are final and are
  written out as uint8. So the float memory is about tile x width x 16
  bytes, whatever the height, and no full-size float copy of the image
  exists (a 100 MP photo would need 1.2 GB per float copy).
  """
  height, width, _ = image.shape
  overlap = max(0, min(overlap, tile // 2))
  ys = tile_starts(height, tile, overlap)
  xs = tile_starts(width, tile, overlap)
  if len(ys) == 1 and len(xs) == 1:
    return to_uint8(np.asarray(fn(image[np.newaxis])[0], np.float32))
  out = np.empty_like(image, dtype=np.uint8)
  carry = carry_weight = None
  for i, y in enumerate(ys):
    h = min(tile, height - y)
    band = np.zeros((h, width, 3), np.float32)
    weight = np.zeros((h, width, 1), np.float32)
    if carry is not None:
      # Rows the previous row of tiles overlapped: their partial sums.
      n = carry.shape[0]
      band[:n] += carry
      weight[:n] += carry_weight
    wy = feather_window(h, overlap if len(ys) > 1 else 0)
    for x in xs:
      patch = image[y:y + h, x:x + tile]
      w = patch.shape[1]
      result = np.asarray(fn(patch[np.newaxis])[0], np.float32)
      wx = feather_window(w, overlap if len(xs) > 1 else 0)
      win = (wy[:, None] * wx[None, :])[..., None]
      band[:, x:x + w] += result * win
      weight[:, x:x + w] += win
    next_y = ys[i + 1] if i + 1 < len(ys) else height
    done = next_y - y
    out[y:next_y] = to_uint8(band[:done] / weight[:done])
    carry, carry_weight = band[done:].copy(), weight[done:].copy()
  return out
