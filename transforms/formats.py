"""Image formats beyond Pillow's core: HEIC/HEIF through pillow-heif, AVIF."""

import logging

from PIL import Image, features

logger = logging.getLogger(__name__)


def register_heif() -> bool:
  """Registers pillow-heif's HEIC/HEIF opener with Pillow (idempotent).

  Pillow keeps its openers in a process-wide registry, so every process
  that decodes (the launcher for style images, each worker) calls this.
  Depth maps, auxiliary images and thumbnails are not decoded: only the
  primary image is stylized. Returns False when pillow-heif is missing.
  """
  if 'HEIF' in Image.OPEN:
    return True
  try:
    import pillow_heif
  except ImportError:
    logger.warning('pillow-heif is not installed: HEIC/HEIF inputs will fail')
    return False
  pillow_heif.register_heif_opener(thumbnails=False, depth_images=False,
                                   aux_images=False)
  return True


def avif_supported() -> bool:
  """True when this Pillow reads and writes AVIF (Pillow >= 11.3 wheels)."""
  try:
    return bool(features.check('avif'))
  except Exception:  # pylint: disable=broad-except
    return False
