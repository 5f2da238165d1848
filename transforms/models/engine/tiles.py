"""Tiling with every tile of an image in one batched call.

tiling.run_tiled calls the network once per tile, so a fixed-size network
(the TF Lite pair's 384x384) or a tiled large image keeps one request (one
stream, one core of two) busy at a time. run_tiled_batch cuts the same
tiles, runs them as one batch (OpenVINO spreads a batch over its parallel
infer requests; LiteRT runs it as one invoke) and blends them with the
same feathered weights in the same order, so the result equals run_tiled's
for a network that gives the same output for a tile alone or in a batch.
"""

from typing import Callable, List, Tuple

import numpy as np

from transforms.models import tiling


def _grid(height: int, width: int, tile: int,
          overlap: int) -> Tuple[List[int], List[int], int]:
  overlap = max(0, min(overlap, tile // 2))
  return (tiling.tile_starts(height, tile, overlap),
          tiling.tile_starts(width, tile, overlap), overlap)


def run_tiled_batch(images: np.ndarray,
                    fn: Callable[[np.ndarray], np.ndarray],
                    tile: int, overlap: int) -> np.ndarray:
  """float [B, H, W, 3] -> [B, H, W, 3], as tiling.run_tiled per image.

  fn takes a [N, h, w, 3] stack of tiles (h, w <= tile, one shape per call)
  and returns them stylized at the same size. Images that are one tile go
  to fn together; larger ones one image's tiles per call.
  """
  batch, height, width, _ = images.shape
  ys, xs, overlap = _grid(height, width, tile, overlap)
  if len(ys) == 1 and len(xs) == 1:
    return np.asarray(fn(images), np.float32)
  results = []
  for image in images:
    tiles = np.stack([image[y:y + tile, x:x + tile] for y in ys for x in xs])
    stylized = fn(tiles)
    out = np.zeros_like(image, dtype=np.float32)
    weight = np.zeros((height, width, 1), np.float32)
    k = 0
    for y in ys:
      for x in xs:
        result = stylized[k]
        k += 1
        h, w, _ = result.shape
        wy = tiling.feather_window(h, overlap if len(ys) > 1 else 0)
        wx = tiling.feather_window(w, overlap if len(xs) > 1 else 0)
        win = (wy[:, None] * wx[None, :])[..., None]
        out[y:y + h, x:x + w] += result * win
        weight[y:y + h, x:x + w] += win
    results.append(out / weight)
  return results[0][np.newaxis] if batch == 1 else np.stack(results)
