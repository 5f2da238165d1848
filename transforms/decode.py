"""Decoding image bytes into oriented, RGB, resized uint8 arrays with Pillow."""

import io
import logging
import math
import time
from typing import Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from transforms.overlap import OverlappedDoFn
from transforms.records import DecodedImage, Failure, InputFile, describe_error
from transforms.storage import use_anonymous_gcs_for_emulator

logger = logging.getLogger(__name__)

# 100 megapixels: beyond a 12-24 MP camera's output by a wide margin, and far
# below what a crafted "decompression bomb" asks Pillow to allocate.
DEFAULT_MAX_PIXELS = 100_000_000

_ALPHA_MODES = frozenset({'RGBA', 'LA', 'PA', 'RGBa', 'La'})
_SIXTEEN_BIT_MODES = frozenset({'I;16', 'I;16L', 'I;16B', 'I;16N', 'I'})


class DecodeError(ValueError):
  """An input that is not a usable image; the message is the manifest reason."""


def _convert_to_rgb(im: Image.Image) -> Image.Image:
  """Any Pillow mode to 8-bit sRGB-ish RGB.

  Alpha is composited on white; 16-bit and 32-bit integer greyscale is
  scaled to 8 bits by its range rather than clipped; float greyscale is
  taken as [0, 1] (or [0, 255] when larger); Lab goes through LittleCMS.
  """
  mode = im.mode
  if mode == 'RGB':
    return im
  if mode == 'P' and 'transparency' in im.info:
    im = im.convert('RGBA')
    mode = 'RGBA'
  if mode in _ALPHA_MODES:
    rgba = im.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  if mode in _SIXTEEN_BIT_MODES or mode == 'F':
    arr = np.asarray(im, dtype=np.float64)
    if mode == 'F':
      scale = 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 255.0
    elif mode == 'I' and float(arr.max(initial=0.0)) > 65535:
      scale = float(2**32 - 1)
    else:
      scale = 65535.0
    arr8 = np.clip(np.rint(arr / scale * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr8, mode='L').convert('RGB')
  if mode == 'LAB':
    lab = ImageCms.createProfile('LAB')
    srgb = ImageCms.createProfile('sRGB')
    return ImageCms.applyTransform(
        im, ImageCms.buildTransform(lab, srgb, 'LAB', 'RGB'))
  # '1', 'L', 'P', 'CMYK', 'YCbCr', 'HSV' and friends: Pillow knows how.
  return im.convert('RGB')


def _orientation(im: Image.Image) -> int:
  try:
    return int(im.getexif().get(0x0112, 1) or 1)
  except Exception:  # pylint: disable=broad-except
    return 1  # Unreadable EXIF: treated as upright, as exif_transpose does.


def target_size(width: int, height: int,
                max_size: Optional[int]) -> Tuple[int, int]:
  """Size after fitting the long side into max_size; never upscales."""
  long_side = max(width, height)
  if not max_size or long_side <= max_size:
    return width, height
  scale = max_size / long_side
  return (max(1, round(width * scale)), max(1, round(height * scale)))


def decode_image(data: bytes,
                 max_size: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 draft: bool = True) -> Tuple[np.ndarray, int, int]:
  """Decodes one image file.

  Args:
    data: the file's bytes.
    max_size: long side of the result in pixels (None keeps the size).
    max_pixels: images with more pixels are refused as possible
      decompression bombs.
    draft: use JPEG draft mode (DCT scaling) when shrinking; False only to
      measure what it saves.

  Returns:
    (uint8 array HxWx3, source width, source height), the source size being
    that of the oriented image before resizing.

  Raises:
    DecodeError: with a reason a person can read.
  """
  if not data:
    raise DecodeError('empty file (0 bytes)')
  try:
    im = Image.open(io.BytesIO(data))
  except UnidentifiedImageError:
    raise DecodeError('not an image Pillow can read (unknown or unsupported '
                      'format)') from None
  except Image.DecompressionBombError as e:
    raise DecodeError(f'refused as a possible decompression bomb: {e}') from None
  width, height = im.size
  if width * height > max_pixels:
    raise DecodeError(
        f'image is {width}x{height} = {width * height} pixels, over the limit '
        f'of {max_pixels} (--max_input_pixels); refused as a possible '
        'decompression bomb')
  if width < 1 or height < 1:
    raise DecodeError(f'image has no pixels ({width}x{height})')
  try:
    if getattr(im, 'n_frames', 1) > 1:
      im.seek(0)  # Animations: the first frame.
    if draft and im.format == 'JPEG' and max_size:
      # DCT-domain downscaling (1/2, 1/4, 1/8) to the smallest scale that
      # still covers the target; the exact resize below finishes the job.
      # The long side does not change under EXIF rotation.
      scale = max_size / max(width, height)
      if scale < 1:
        im.draft('RGB', (math.ceil(width * scale), math.ceil(height * scale)))
    im.load()
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise DecodeError(f'corrupt or truncated image data ({e})') from None
  # The source size is that of the full oriented image: the header's size,
  # not the draft's. EXIF is read after load(): for PNG, getexif() loads the
  # pixels itself and would hide a decode error.
  src_w, src_h = (height, width) if _orientation(im) in (5, 6, 7, 8) else (
      width, height)
  try:
    im = ImageOps.exif_transpose(im)
  except Exception as e:  # pylint: disable=broad-except
    # A broken EXIF block must not lose the picture: keep it unrotated.
    logger.warning('Ignoring unreadable EXIF orientation: %s', e)
  im = _convert_to_rgb(im)
  new_size = target_size(src_w, src_h, max_size)
  if im.size != new_size:
    im = im.resize(new_size, Image.Resampling.LANCZOS)
  arr = np.asarray(im, dtype=np.uint8)
  if arr.ndim != 3 or arr.shape[2] != 3:
    raise DecodeError(f'unexpected decoded shape {arr.shape}')
  return arr, src_w, src_h


FAILED = 'failed'


class ReadFiles(OverlappedDoFn):
  """InputFile -> (InputFile, bytes, seconds); 'failed' Failure if unreadable.

  Reads a few files at once (OverlappedDoFn), so object-store latency and
  disk waits overlap with the rest of the pipeline.
  """

  def setup(self):
    super().setup()
    use_anonymous_gcs_for_emulator()

  def work(self, item: InputFile):
    start = time.perf_counter()
    try:
      with FileSystems.open(item.uri, compression_type='uncompressed') as f:
        data = f.read()
    except Exception as e:  # pylint: disable=broad-except
      # A vanished or unreadable file is one failed row, not a failed job.
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item, error=f'read: {describe_error(e)}'))], {}
    return [(item, data, time.perf_counter() - start)], {
        'bytes_read': len(data)}


class DecodeImages(OverlappedDoFn):
  """(InputFile, bytes, read seconds) -> DecodedImage; 'failed' Failure.

  Decodes a few images at once on a bounded pool (OverlappedDoFn): Pillow
  releases the GIL, so decoding overlaps with inference downstream.
  """

  def __init__(self, max_size: Optional[int], max_pixels: int,
               threads: Optional[int] = None):
    super().__init__(threads)
    self._max_size = max_size
    self._max_pixels = max_pixels

  def work(self, element):
    item, data, read_s = element
    start = time.perf_counter()
    try:
      pixels, src_w, src_h = decode_image(data, self._max_size,
                                          self._max_pixels)
    except DecodeError as e:
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item, error=f'decode: {e}', timings={'read_s': read_s}))], {
              'decode_failed': 1}
    except Exception as e:  # pylint: disable=broad-except
      # Pillow raises many types on hostile input; each is this image's
      # failure, recorded with its type, never the job's.
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item, error=f'decode: {describe_error(e)}',
          timings={'read_s': read_s}))], {'decode_failed': 1}
    return [DecodedImage(
        input=item, pixels=pixels, source_width=src_w, source_height=src_h,
        timings={'read_s': read_s, 'decode_s': time.perf_counter() - start})], {}


class ReadAndDecode(beam.PTransform):
  """PCollection[InputFile] -> (PCollection[DecodedImage], failed Failures)."""

  def __init__(self, max_size: Optional[int], max_pixels: int,
               threads: Optional[int] = None):
    super().__init__()
    self._max_size = max_size
    self._max_pixels = max_pixels
    self._threads = threads

  def expand(self, files):
    read = files | 'Read' >> beam.ParDo(ReadFiles(self._threads)).with_outputs(
        FAILED, main='ok')
    decoded = read.ok | 'Decode' >> beam.ParDo(
        DecodeImages(self._max_size, self._max_pixels, self._threads)).with_outputs(
            FAILED, main='ok')
    failed = (read[FAILED], decoded[FAILED]) | 'Failures' >> beam.Flatten()
    return decoded.ok, failed
