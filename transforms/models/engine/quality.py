"""How far one engine's images are from another's (tests and benchmarks).

Images are uint8 or float in [0, 1]; everything is measured in [0, 1].

- mse / psnr: per pixel.
- lowpass_mse: MSE of 8x8 block means (box low-pass, then 1/8 scale):
  colour and shading, not the phase of fine brush texture, which bf16
  and padding move around without changing what the picture looks like.
"""

import numpy as np

LOWPASS_BLOCK = 8


def as_unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  return x.astype(np.float32)


def mse(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.mean((as_unit(a) - as_unit(b)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  m = mse(a, b)
  return float('inf') if m == 0 else float(10.0 * np.log10(1.0 / m))


def block_mean(x: np.ndarray, block: int = LOWPASS_BLOCK) -> np.ndarray:
  """[..., H, W, C] -> [..., H // block, W // block, C] block means (the
  last partial blocks are dropped)."""
  x = as_unit(x)
  h, w = x.shape[-3] // block * block, x.shape[-2] // block * block
  x = x[..., :h, :w, :]
  shape = x.shape[:-3] + (h // block, block, w // block, block, x.shape[-1])
  return x.reshape(shape).mean(axis=(-4, -2))


def lowpass_mse(a: np.ndarray, b: np.ndarray,
                block: int = LOWPASS_BLOCK) -> float:
  return float(np.mean((block_mean(a, block) - block_mean(b, block)) ** 2))


def compare(a: np.ndarray, b: np.ndarray, edge: int = 32) -> dict:
  """psnr, mse, lowpass_mse overall, and psnr/lowpass_mse of the bottom and
  right `edge`-pixel bands (where padding would show)."""
  bottom = (a[..., -edge:, :, :], b[..., -edge:, :, :])
  right = (a[..., :, -edge:, :], b[..., :, -edge:, :])
  return {
      'psnr': round(psnr(a, b), 2), 'mse': float(f'{mse(a, b):.3g}'),
      'lowpass_mse': float(f'{lowpass_mse(a, b):.3g}'),
      'edge_psnr': round(min(psnr(*bottom), psnr(*right)), 2),
      'edge_lowpass_mse': float(
          f'{max(lowpass_mse(*bottom), lowpass_mse(*right)):.3g}'),
  }
