"""Reading and decoding image files into upright, sRGB, resized uint8 arrays."""

import dataclasses
import io
import logging
import math
import time
from typing import Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageCms, UnidentifiedImageError

from transforms.formats import register_heif
from transforms.image_memory import reuse_image_memory
from transforms.icc import (SourceSpace, SrgbConverter, shared_converter,
                            source_space)
from transforms.metadata import PhotoMetadata, read_metadata
from transforms.overlap import OverlappedDoFn
from transforms.records import DecodedImage, Failure, InputFile, describe_error

logger = logging.getLogger(__name__)

# 100 megapixels: beyond a 12-24 MP camera's output by a wide margin, and far
# below what a crafted "decompression bomb" asks Pillow to allocate.
DEFAULT_MAX_PIXELS = 100_000_000
# 200 MB: above the largest files cameras write (a 100 MP medium-format JPEG
# is about 60 MB; a 61 MP 16-bit TIFF is larger, but over the pixel limit
# anyway), far below what fits in a worker's memory.
DEFAULT_MAX_INPUT_BYTES = 200_000_000

_ALPHA_MODES = frozenset({'RGBA', 'LA', 'PA', 'RGBa', 'La'})
_SIXTEEN_BIT_MODES = frozenset({'I;16', 'I;16L', 'I;16B', 'I;16N', 'I'})
# Modes Pillow resamples correctly as they are (it premultiplies alpha for
# RGBA and LA itself). Not 'P' and '1' (Pillow falls back to nearest
# neighbour), not Lab and HSV (channels that do not average), not the
# I;16 byte-order variants (Pillow resamples them wrongly).
_RESIZABLE_MODES = frozenset({'L', 'RGB', 'RGBA', 'LA', 'CMYK', 'YCbCr',
                              'I', 'I;16', 'F'})
# EXIF orientation -> the transpose that makes the pixels upright: the table
# of ImageOps.exif_transpose, applied here by hand because it runs on the
# reduced image, which no longer carries the file's tags.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Rows of 16-bit pixels scaled to 8 bits at a time: bounds the float32
# scratch to a few MB whatever the image size.
_SCALE_CHUNK_PIXELS = 1 << 20


class DecodeError(ValueError):
  """An input that is not a usable image; the message is the manifest reason."""


@dataclasses.dataclass
class DecodedPhoto:
  """What decode_photo returns.

  Attributes:
    pixels: uint8 [H, W, 3], upright, sRGB, resized.
    source_width, source_height: the upright source size, before resizing.
    metadata: the EXIF for the outputs and the capture time.
    colour: where the source colour space came from ('srgb', 'icc', 'nclx'
      or 'exif') and its name, e.g. 'exif: Adobe RGB (1998)'.
  """
  pixels: np.ndarray
  source_width: int
  source_height: int
  metadata: PhotoMetadata = dataclasses.field(default_factory=PhotoMetadata)
  colour: str = 'srgb: sRGB'


def _scale_to_l(im: Image.Image) -> Image.Image:
  """16-bit, 32-bit or float greyscale -> 8-bit 'L', scaled by the range.

  16-bit is scaled, not clipped; 32-bit integers above 65535 are taken as
  full 32-bit range; float as [0, 1] (or [0, 255] when larger). Done in row
  chunks in float32, so no full-size float copy is ever made.
  """
  mode = im.mode
  arr = np.asarray(im)
  if arr.ndim != 2:
    raise DecodeError(f'unexpected {mode} image shape {arr.shape}')
  peak = float(arr.max(initial=0))
  if mode == 'F':
    scale = 1.0 if peak <= 1.0 else 255.0
  elif mode == 'I' and peak > 65535:
    scale = float(2**32 - 1)
  else:
    scale = 65535.0
  factor = np.float32(255.0 / scale)
  out = np.empty(arr.shape, np.uint8)
  rows = max(1, _SCALE_CHUNK_PIXELS // max(1, arr.shape[1]))
  for y in range(0, arr.shape[0], rows):
    part = arr[y:y + rows].astype(np.float32)
    part *= factor
    np.rint(part, out=part)
    np.clip(part, 0.0, 255.0, out=part)
    out[y:y + rows] = part
  return Image.fromarray(out)


def _composite_on_white(im: Image.Image) -> Image.Image:
  rgba = im.convert('RGBA')
  white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(white, rgba).convert('RGB')


def _lab_to_srgb(im: Image.Image) -> Image.Image:
  lab = ImageCms.createProfile('LAB')
  srgb = ImageCms.createProfile('sRGB')
  return ImageCms.applyTransform(
      im, ImageCms.buildTransform(lab, srgb, 'LAB', 'RGB'))


def _to_srgb(im: Image.Image, space: SourceSpace,
             converter: SrgbConverter) -> Image.Image:
  """Any Pillow mode -> 8-bit sRGB 'RGB'.

  Alpha is composited on white; 16-bit, 32-bit and float greyscale are
  scaled to 8 bits; Lab goes through LittleCMS; RGB, greyscale and CMYK
  with a colour profile are converted from it to sRGB.
  """
  mode = im.mode
  if mode == 'P':
    im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
    mode = im.mode
  if mode in _ALPHA_MODES:
    im = _composite_on_white(im)
  elif mode in _SIXTEEN_BIT_MODES or mode == 'F':
    im = _scale_to_l(im)
  elif mode == 'LAB':
    return _lab_to_srgb(im)
  elif mode not in ('RGB', 'L', 'CMYK'):
    # '1', 'YCbCr', 'HSV' and friends: Pillow knows how.
    im = im.convert('RGB')
  return converter.to_srgb(im, space)


def _shrink(im: Image.Image, size: Tuple[int, int]) -> Image.Image:
  """Resizes in the image's own mode where that is exact, else converts first.

  Resizing before converting modes means the full-size image is never
  expanded (palette to RGB, 16-bit to float): the conversions run on the
  reduced image.
  """
  if im.size == size:
    return im
  mode = im.mode
  if mode == '1':
    im = im.convert('L')
  elif mode in ('P', 'PA'):
    im = im.convert('RGBA' if mode == 'PA' or 'transparency' in im.info
                    else 'RGB')
  elif mode in _SIXTEEN_BIT_MODES and mode not in _RESIZABLE_MODES:
    im = _scale_to_l(im)
  elif mode not in _RESIZABLE_MODES:
    im = _lab_to_srgb(im) if mode == 'LAB' else im.convert('RGB')
  return im.resize(size, Image.Resampling.LANCZOS)


def _exif(im: Image.Image) -> Optional[Image.Exif]:
  try:
    return im.getexif()
  except Exception as e:  # pylint: disable=broad-except
    # A broken EXIF block must not lose the picture: kept unrotated.
    logger.warning('Ignoring unreadable EXIF: %s', e)
    return None


def _orientation(exif: Optional[Image.Exif]) -> int:
  try:
    value = int(exif.get(0x0112, 1) or 1) if exif is not None else 1
  except Exception:  # pylint: disable=broad-except
    return 1  # Unreadable orientation: treated as upright, as Pillow does.
  return value if value in _TRANSPOSE else 1


def target_size(width: int, height: int,
                max_size: Optional[int]) -> Tuple[int, int]:
  """Size after fitting the long side into max_size; never upscales."""
  long_side = max(width, height)
  if not max_size or long_side <= max_size:
    return width, height
  scale = max_size / long_side
  return (max(1, round(width * scale)), max(1, round(height * scale)))


def decode_photo(data: bytes,
                 max_size: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 draft: bool = True,
                 keep_gps: bool = False,
                 converter: Optional[SrgbConverter] = None) -> DecodedPhoto:
  """Decodes one image file: upright, sRGB, fitted into max_size.

  Args:
    data: the file's bytes (JPEG, PNG, WebP, TIFF, GIF, BMP, HEIC/HEIF,
      AVIF, ...).
    max_size: long side of the result in pixels (None keeps the size).
    max_pixels: images with more pixels are refused as possible
      decompression bombs.
    draft: use JPEG draft mode (DCT scaling) when shrinking; False only to
      measure what it saves.
    keep_gps: carry the GPS block into the outputs' EXIF.
    converter: reused colour transforms (one per worker); a fresh one when
      None.

  Returns:
    The pixels, the upright source size and the metadata for the outputs.

  Raises:
    DecodeError: with a reason a person can read.
  """
  if not data:
    raise DecodeError('empty file (0 bytes)')
  register_heif()
  try:
    im = Image.open(io.BytesIO(data))
  except UnidentifiedImageError:
    raise DecodeError('not an image Pillow can read (unknown or unsupported '
                      'format)') from None
  except Image.DecompressionBombError as e:
    raise DecodeError(f'refused as a possible decompression bomb: {e}') from None
  except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as e:
    raise DecodeError(f'corrupt or truncated image data ({e})') from None
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
  except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as e:
    raise DecodeError(f'corrupt or truncated image data ({e})') from None
  # EXIF is read after load(): for PNG, getexif() loads the pixels itself
  # and would hide a decode error. HEIF's own rotation and mirroring are
  # applied by libheif while decoding (pillow-heif then resets the EXIF
  # orientation to 1); AVIF's are reported by Pillow as EXIF orientation.
  exif = _exif(im)
  orientation = _orientation(exif)
  metadata = read_metadata(exif, keep_gps)
  space = source_space(im, exif)
  # The source size is that of the full upright image: the header's size,
  # not the draft's.
  rotated = orientation in (5, 6, 7, 8)
  src_w, src_h = (height, width) if rotated else (width, height)
  new_w, new_h = target_size(src_w, src_h, max_size)
  im = _shrink(im, (new_h, new_w) if rotated else (new_w, new_h))
  if orientation in _TRANSPOSE:
    im = im.transpose(_TRANSPOSE[orientation])
  im = _to_srgb(im, space, converter or shared_converter())
  arr = np.asarray(im, dtype=np.uint8)
  if arr.ndim != 3 or arr.shape[2] != 3:
    raise DecodeError(f'unexpected decoded shape {arr.shape}')
  return DecodedPhoto(pixels=arr, source_width=src_w, source_height=src_h,
                      metadata=metadata, colour=f'{space.origin}: {space.name}')


def decode_image(data: bytes,
                 max_size: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 draft: bool = True) -> Tuple[np.ndarray, int, int]:
  """decode_photo's pixels and source size: (uint8 HxWx3, width, height)."""
  photo = decode_photo(data, max_size, max_pixels, draft)
  return photo.pixels, photo.source_width, photo.source_height


FAILED = 'failed'


def read_bounded(f, limit: int) -> bytes:
  """Reads a file object to its end, but never more than limit + 1 bytes.

  One more byte than the limit is what it takes to know a file is over it.
  The io protocol allows short reads, so reading goes on until EOF or the
  bound.
  """
  data = f.read(limit + 1)
  parts, total = [data], len(data)
  while data and total <= limit:
    data = f.read(limit + 1 - total)
    parts.append(data)
    total += len(data)
  if len(parts) == 1 or (len(parts) == 2 and not parts[1]):
    return parts[0]  # The usual case: one read, no copy.
  return b''.join(parts)


def read_file_within(uri: str, max_bytes: int) -> bytes:
  """A whole file (local or any FileSystems URI), read within max_bytes
  (style images, report thumbnails; inputs go through ReadFiles).

  Raises:
    DecodeError: the file is larger.
    OSError: it cannot be read.
  """
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    data = read_bounded(f, max_bytes)
  if len(data) > max_bytes:
    raise DecodeError(f'the file is over the --max_input_bytes limit of '
                      f'{max_bytes} bytes')
  return data


class ReadFiles(OverlappedDoFn):
  """InputFile -> (InputFile, bytes, seconds); 'failed' Failure if unreadable.

  Reads a few files at once (OverlappedDoFn), so object-store latency and
  disk waits overlap with the rest of the pipeline. A file over max_bytes
  fails without being read when the listing gave its size, and otherwise
  (unknown size, or a file that grew since the listing) as soon as the
  bounded read passes the limit: at most max_bytes + 1 bytes are ever held.
  """

  def __init__(self, max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
               threads: Optional[int] = None):
    super().__init__(threads)
    self._max_bytes = max_bytes

  def setup(self):
    super().setup()

  def weight(self, element: InputFile) -> int:
    """The bytes the read will hold (the listed size, else the limit)."""
    size = element.size_bytes
    return min(size, self._max_bytes) if size >= 0 else self._max_bytes

  def _over_limit(self, item: InputFile, what: str):
    return [beam.pvalue.TaggedOutput(FAILED, Failure(input=item, error=(
        f'read: file is over the --max_input_bytes limit ({what}, limit '
        f'{self._max_bytes} bytes)'), permanent=True))], {
            'input_too_large': 1}

  def work(self, item: InputFile):
    start = time.perf_counter()
    if item.size_bytes > self._max_bytes:
      return self._over_limit(item, f'{item.size_bytes} bytes; not read')
    try:
      with FileSystems.open(item.uri, compression_type='uncompressed') as f:
        data = read_bounded(f, self._max_bytes)
    except Exception as e:  # pylint: disable=broad-except
      # A vanished or unreadable file is one failed row, not a failed job.
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item, error=f'read: {describe_error(e)}'))], {}
    if len(data) > self._max_bytes:
      return self._over_limit(
          item, f'more than {self._max_bytes} bytes read, listed as '
          f'{item.size_bytes}')
    return [(item, data, time.perf_counter() - start)], {
        'bytes_read': len(data)}


class DecodeImages(OverlappedDoFn):
  """(InputFile, bytes, read seconds) -> DecodedImage; 'failed' Failure.

  Decodes a few images at once on a bounded pool (OverlappedDoFn): Pillow
  releases the GIL, so decoding overlaps with inference downstream.
  """

  def __init__(self, max_size: Optional[int], max_pixels: int,
               keep_gps: bool = False, threads: Optional[int] = None):
    super().__init__(threads)
    self._max_size = max_size
    self._max_pixels = max_pixels
    self._keep_gps = keep_gps
    self._converter = None

  def setup(self):
    super().setup()
    register_heif()
    reuse_image_memory()
    self._converter = SrgbConverter()

  def weight(self, element) -> int:
    """The file's bytes and the decoded pixels: at most --max_size squared
    (RGB), else about ten times the file (a JPEG's usual ratio)."""
    data = element[1]
    pixels = 3 * self._max_size ** 2 if self._max_size else 10 * len(data)
    return len(data) + pixels

  def work(self, element):
    item, data, read_s = element
    start = time.perf_counter()
    try:
      photo = decode_photo(data, self._max_size, self._max_pixels,
                           keep_gps=self._keep_gps, converter=self._converter)
    except DecodeError as e:
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item, error=f'decode: {e}', timings={'read_s': read_s},
          permanent=True))], {'decode_failed': 1}
    except Exception as e:  # pylint: disable=broad-except
      # Pillow raises many types on hostile input; each is this image's
      # failure, recorded with its type, never the job's.
      # OSError here is Pillow's word for bad data (truncated, corrupt).
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item, error=f'decode: {describe_error(e)}',
          timings={'read_s': read_s},
          permanent=not isinstance(e, MemoryError)))], {'decode_failed': 1}
    return [DecodedImage(
        input=item, pixels=photo.pixels, source_width=photo.source_width,
        source_height=photo.source_height, exif=photo.metadata.exif,
        taken_at=photo.metadata.taken_at,
        timings={'read_s': read_s,
                 'decode_s': time.perf_counter() - start})], {}


class ReadAndDecode(beam.PTransform):
  """PCollection[InputFile] -> (PCollection[DecodedImage], failed Failures)."""

  def __init__(self, max_size: Optional[int], max_pixels: int,
               max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
               keep_gps: bool = False, threads: Optional[int] = None):
    super().__init__()
    self._max_size = max_size
    self._max_pixels = max_pixels
    self._max_bytes = max_bytes
    self._keep_gps = keep_gps
    self._threads = threads

  def expand(self, files):
    read = files | 'Read' >> beam.ParDo(
        ReadFiles(self._max_bytes, self._threads)).with_outputs(
            FAILED, main='ok')
    decoded = read.ok | 'Decode' >> beam.ParDo(
        DecodeImages(self._max_size, self._max_pixels, self._keep_gps,
                     self._threads)).with_outputs(FAILED, main='ok')
    failed = (read[FAILED], decoded[FAILED]) | 'Failures' >> beam.Flatten()
    return decoded.ok, failed
