"""Colour preservation: the stylized luminance with the content's chroma."""

import numpy as np

# ITU-R BT.601 full-range RGB <-> YCbCr, as JPEG and Pillow use.
_TO_YCC = np.array([[0.299, 0.587, 0.114],
                    [-0.168736, -0.331264, 0.5],
                    [0.5, -0.418688, -0.081312]], np.float32)
_FROM_YCC = np.linalg.inv(_TO_YCC).astype(np.float32)


def rgb_to_ycc(rgb: np.ndarray) -> np.ndarray:
  return rgb @ _TO_YCC.T


def ycc_to_rgb(ycc: np.ndarray) -> np.ndarray:
  return ycc @ _FROM_YCC.T


def preserve_colors(content: np.ndarray, stylized: np.ndarray) -> np.ndarray:
  """float RGB in [0, 1], same shapes -> the stylized Y with content CbCr.

  Written by hand (Pillow's convert('YCbCr') works on 8-bit images and would
  round twice); the matrix is the same BT.601 one.
  """
  ycc = rgb_to_ycc(content)
  ycc[..., 0] = rgb_to_ycc(stylized)[..., 0]
  return np.clip(ycc_to_rgb(ycc), 0.0, 1.0)
