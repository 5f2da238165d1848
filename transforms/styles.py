"""Loading style images: read, decode, centre-crop to a square, resize."""

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageOps

from transforms.decode import decode_image

DEFAULT_STYLE_SIZE = 256


def load_style_image(uri: str, style_size: int = DEFAULT_STYLE_SIZE) -> np.ndarray:
  """float32 [style_size, style_size, 3] in [0, 1].

  Magenta's network was trained on 256x256 styles; like the TF Hub example,
  the style is centre-cropped to a square so it is not distorted.

  Raises:
    OSError / transforms.decode.DecodeError: unreadable or not an image.
  """
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    data = f.read()
  pixels, _, _ = decode_image(data)
  im = ImageOps.fit(Image.fromarray(pixels), (style_size, style_size),
                    Image.Resampling.LANCZOS)
  return np.asarray(im, dtype=np.float32) / 255.0
