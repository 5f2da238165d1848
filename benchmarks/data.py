"""A deterministic, camera-like benchmark data set made from the shared photos."""

import hashlib
import io
import logging
import os
from typing import List

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

CAMERA_SIZE = (4000, 3000)


def cache_folder(name: str) -> str:
  """Where a benchmark keeps the data it makes between runs: the job's
  cache ($STYLIZE_CACHE_DIR, else ~/.cache/stylize), never the shared
  temporary folder, which a benchmark leaves as it found it."""
  from transforms.models.builtin import cache_dir
  return os.path.join(cache_dir(), 'bench-data', name)


def camera_jpeg(big: Image.Image, index: int) -> bytes:
  """A camera-like JPEG of an image already at camera size: sensor-like
  noise (seeded by index), EXIF, quality 90."""
  rng = np.random.default_rng(index)
  arr = np.asarray(big, dtype=np.int16)
  # Per-pixel noise so each file is distinct and compresses like a photo.
  noise = rng.integers(-6, 7, size=arr.shape, dtype=np.int16)
  im = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
  exif = Image.Exif()
  exif[0x010F] = 'stylize-bench'  # Make
  exif[0x0110] = 'synthetic camera'  # Model
  exif[0x0112] = 1  # Orientation
  exif[0x0132] = '2026:11:29 12:00:00'  # DateTime
  buf = io.BytesIO()
  im.save(buf, 'JPEG', quality=90, exif=exif.tobytes())
  return buf.getvalue()


def _camera_jpeg(src: Image.Image, index: int, size=CAMERA_SIZE) -> bytes:
  """A camera-like JPEG (12 MP by default) with sensor-like noise and EXIF,
  from a small photo."""
  return camera_jpeg(src.resize(size, Image.Resampling.BICUBIC), index)


def make_dataset(shared_content: str, folder: str, n: int,
                 size=CAMERA_SIZE) -> List[str]:
  """Writes n camera-like JPEGs of `size` (width, height) to folder (reusing
  files already there).

  File i depends only on i, the size and the source photos, so the first 100
  files of a 400-file set are the 100-file set. A size other than
  CAMERA_SIZE (a quick look, the harness's test) names its files after it.
  """
  os.makedirs(folder, exist_ok=True)
  sources = sorted(os.path.join(shared_content, f)
                   for f in os.listdir(shared_content)
                   if f.lower().endswith(('.jpg', '.jpeg', '.png')))
  if not sources:
    raise FileNotFoundError(f'no photos in {shared_content}')
  images = [Image.open(s).convert('RGB') for s in sources]
  size = tuple(size)
  suffix = '' if size == CAMERA_SIZE else f'_{size[0]}x{size[1]}'
  paths = []
  for i in range(n):
    path = os.path.join(folder, f'cam_{i:04d}{suffix}.jpg')
    if not os.path.exists(path):
      data = _camera_jpeg(images[i % len(images)], i, size)
      tmp = path + '.tmp'
      with open(tmp, 'wb') as f:
        f.write(data)
      os.replace(tmp, path)
    paths.append(path)
  return paths


def dataset_key(shared_content: str) -> str:
  names = sorted(os.listdir(shared_content))
  return hashlib.sha1(repr(names).encode()).hexdigest()[:8]
