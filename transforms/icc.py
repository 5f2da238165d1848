"""Colour management: which colour space a photo is in, and converting it to sRGB.

The model and every output work in sRGB. A photo that says it is in another
space (an embedded ICC profile, HEIF's nclx colour box, or EXIF's ColorSpace
hint) is converted with LittleCMS through Pillow's ImageCms; a photo that
says nothing is taken as sRGB, as browsers and photo apps do.
"""

import dataclasses
import functools
import hashlib
import io
import threading
import logging
import struct
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageCms

logger = logging.getLogger(__name__)

# CIE xy chromaticities.
D65 = (0.3127, 0.3290)
D50_XYZ = (0.9642, 1.0, 0.8249)  # The ICC profile connection space white.

# EXIF tags used for the colour-space hints.
EXIF_IFD = 0x8769
INTEROP_IFD = 0xA005
COLOR_SPACE = 0xA001
INTEROP_INDEX = 0x0001
COLOR_SPACE_SRGB = 1
COLOR_SPACE_ADOBE = 2  # Not in the EXIF standard, but written by some cameras.
COLOR_SPACE_UNCALIBRATED = 0xFFFF


@dataclasses.dataclass(frozen=True)
class RgbSpace:
  """An RGB colour space given by its primaries, white point and tone curve.

  Attributes:
    name: written into the profile's description.
    primaries: (x, y) of red, green and blue.
    white: (x, y) of the white point.
    gamma: a pure power-law tone curve, or None for the sRGB curve.
  """
  name: str
  primaries: Tuple[Tuple[float, float], ...]
  white: Tuple[float, float] = D65
  gamma: Optional[float] = None


SRGB = RgbSpace('sRGB', ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)))
# Adobe RGB (1998): the published primaries and its 563/256 gamma.
ADOBE_RGB = RgbSpace('Adobe RGB (1998)',
                     ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06)),
                     gamma=563 / 256)
# Display P3 (Apple's wide-gamut space, in every iPhone photo since 2016):
# DCI-P3 primaries, D65 white, the sRGB tone curve.
DISPLAY_P3 = RgbSpace('Display P3', ((0.680, 0.320), (0.265, 0.690),
                                     (0.150, 0.060)))


def _xy_to_xyz(x: float, y: float) -> np.ndarray:
  return np.array([x / y, 1.0, (1.0 - x - y) / y])


def rgb_to_xyz_matrix(space: RgbSpace) -> np.ndarray:
  """3x3 linear RGB -> XYZ (white Y = 1) in the space's own white."""
  prims = np.stack([_xy_to_xyz(*p) for p in space.primaries], axis=1)
  scale = np.linalg.solve(prims, _xy_to_xyz(*space.white))
  return prims * scale


_BRADFORD = np.array([[0.8951, 0.2664, -0.1614],
                      [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def _adapt_to_d50(matrix: np.ndarray, white: Tuple[float, float]) -> np.ndarray:
  """Bradford chromatic adaptation, as ICC matrix-shaper profiles require."""
  src = _BRADFORD @ _xy_to_xyz(*white)
  dst = _BRADFORD @ np.array(D50_XYZ)
  adapt = np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD
  return adapt @ matrix


def _s15f16(value: float) -> bytes:
  return struct.pack('>i', int(round(value * 65536)))


def _xyz_tag(xyz: Sequence[float]) -> bytes:
  return b'XYZ \0\0\0\0' + b''.join(_s15f16(v) for v in xyz)


def _curve_tag(gamma: Optional[float]) -> bytes:
  if gamma is not None:
    # One entry: a power law, as u8Fixed8Number.
    return b'curv\0\0\0\0' + struct.pack('>IH', 1, int(round(gamma * 256)))
  # The sRGB curve as a 1024-entry table (ICC v2 has no parametric curves).
  v = np.linspace(0.0, 1.0, 1024)
  lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
  table = np.round(lin * 65535).astype('>u2').tobytes()
  return b'curv\0\0\0\0' + struct.pack('>I', 1024) + table


def _desc_tag(text: str) -> bytes:
  ascii_text = text.encode('ascii') + b'\0'
  return (b'desc\0\0\0\0' + struct.pack('>I', len(ascii_text)) + ascii_text +
          struct.pack('>II', 0, 0) + struct.pack('>HB', 0, 0) + b'\0' * 67)


def _text_tag(text: str) -> bytes:
  return b'text\0\0\0\0' + text.encode('ascii') + b'\0'


def rgb_profile(space: RgbSpace) -> bytes:
  """An ICC v2 matrix-shaper display profile for an RGB space.

  Written by hand because ImageCms.createProfile only makes sRGB, Lab and
  XYZ profiles, and this project ships no profile files. The layout is the
  minimal one the ICC v2 specification asks of an RGB display profile
  (desc, cprt, wtpt, rXYZ/gXYZ/bXYZ, rTRC/gTRC/bTRC), which LittleCMS and
  every photo viewer read.
  """
  matrix = _adapt_to_d50(rgb_to_xyz_matrix(space), space.white)
  curve = _curve_tag(space.gamma)
  tags = [(b'desc', _desc_tag(space.name)),
          (b'cprt', _text_tag('No copyright, use freely')),
          (b'wtpt', _xyz_tag(D50_XYZ)),
          (b'rXYZ', _xyz_tag(matrix[:, 0])),
          (b'gXYZ', _xyz_tag(matrix[:, 1])),
          (b'bXYZ', _xyz_tag(matrix[:, 2])),
          (b'rTRC', curve), (b'gTRC', curve), (b'bTRC', curve)]
  table_len = 4 + 12 * len(tags)
  offset = 128 + table_len
  entries, blobs, seen = [], [], {}
  for sig, data in tags:
    if data in seen:  # The three tone curves share one copy.
      entries.append(sig + seen[data])
      continue
    pointer = struct.pack('>II', offset, len(data))
    seen[data] = pointer
    entries.append(sig + pointer)
    padded = data + b'\0' * (-len(data) % 4)
    blobs.append(padded)
    offset += len(padded)
  body = struct.pack('>I', len(tags)) + b''.join(entries) + b''.join(blobs)
  size = 128 + len(body)
  header = (struct.pack('>I', size) + b'lcms' + struct.pack('>I', 0x02100000) +
            b'mntrRGB XYZ ' + struct.pack('>6H', 2024, 1, 1, 0, 0, 0) +
            b'acsp' + b'\0' * 4 + struct.pack('>I', 0) + b'\0' * 8 +
            b'\0' * 8 + struct.pack('>I', 0) +
            b''.join(_s15f16(v) for v in D50_XYZ) + b'lcms' + b'\0' * 44)
  assert len(header) == 128
  return header + body


# The ICC header's creation date (bytes 24-35, ICC.1 7.2.1): LittleCMS
# stamps the time the profile is made, which would make every output's bytes
# depend on when (in which process) it was encoded. A fixed date keeps
# outputs reproducible.
_ICC_DATE = slice(24, 36)
_FIXED_ICC_DATE = struct.pack('>6H', 2000, 6, 1, 0, 0, 0)


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
  """The sRGB profile outputs are tagged with (LittleCMS's built-in one),
  with a fixed creation date (2000-06-01) so equal pixels encode to equal
  bytes whenever they are written. The profile carries no ID (bytes 84-99
  are zero), so nothing else depends on the date."""
  data = bytearray(
      ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes())
  data[_ICC_DATE] = _FIXED_ICC_DATE
  return bytes(data)


@functools.lru_cache(maxsize=1)
def shared_converter() -> 'SrgbConverter':
  """One converter per process for callers without their own (thumbnails,
  style images); it is thread-safe and only caches transforms."""
  return SrgbConverter()


# --------------------------------------------------------- source spaces --

# HEIF/AVIF nclx colour primaries (ITU-T H.273) -> RgbSpace, for those that
# are not sRGB's. Transfer functions other than sRGB-like ones (PQ, HLG:
# HDR) are not converted; see nclx_profile.
_NCLX_SRGB_TRANSFER = {1, 2, 6, 13, 14, 15}  # BT.709 family, sRGB, unknown.


def nclx_profile(nclx: Optional[Dict]) -> Optional[Tuple[bytes, str]]:
  """HEIF's nclx colour box (as pillow-heif reports it) -> (ICC bytes, name).

  None when the primaries are sRGB's (1) or unspecified (2), or when the
  transfer function is an HDR one this job does not tone-map.
  """
  if not nclx:
    return None
  primaries = nclx.get('color_primaries')
  if primaries in (None, 1, 2):
    return None
  transfer = nclx.get('transfer_characteristics', 2)
  if transfer == 8:
    gamma = 1.0
  elif transfer == 4:
    gamma = 2.2
  elif transfer == 5:
    gamma = 2.8
  elif transfer in _NCLX_SRGB_TRANSFER:
    gamma = None
  else:
    logger.info('nclx transfer %s (HDR) is not converted', transfer)
    return None
  try:
    xy = tuple((float(nclx[f'color_primary_{c}_x']),
                float(nclx[f'color_primary_{c}_y']))
               for c in ('red', 'green', 'blue'))
    white = (float(nclx['color_primary_white_x']),
             float(nclx['color_primary_white_y']))
  except (KeyError, TypeError, ValueError):
    return None
  name = {9: 'BT.2020', 11: 'DCI-P3', 12: 'Display P3'}.get(
      primaries, f'nclx primaries {primaries}')
  return rgb_profile(RgbSpace(name, xy, white, gamma)), name


def exif_colour_space(exif: Image.Exif) -> Optional[str]:
  """'adobe' when EXIF says Adobe RGB without a profile, else None.

  Cameras set to Adobe RGB write ColorSpace = 0xFFFF (uncalibrated) with the
  interoperability index 'R03' (the DCF rule), or, some of them, ColorSpace
  = 2. ColorSpace = 1 is sRGB, as is no hint at all.
  """
  try:
    ifd = exif.get_ifd(EXIF_IFD)
    space = ifd.get(COLOR_SPACE)
    if space == COLOR_SPACE_ADOBE:
      return 'adobe'
    if space == COLOR_SPACE_UNCALIBRATED and INTEROP_IFD in ifd:
      interop = exif.get_ifd(INTEROP_IFD).get(INTEROP_INDEX)
      if isinstance(interop, bytes):
        interop = interop.decode('ascii', 'replace')
      if str(interop or '').strip('\0 ').upper() == 'R03':
        return 'adobe'
  except Exception as e:  # pylint: disable=broad-except
    logger.debug('Unreadable EXIF colour space: %s', e)
  return None


@dataclasses.dataclass(frozen=True)
class SourceSpace:
  """Where a decoded image's numbers live: a profile, or plain sRGB.

  Attributes:
    icc: ICC profile bytes, or None for sRGB (nothing to convert).
    origin: 'icc', 'nclx', 'exif' or 'srgb' (what said so).
    name: a readable name (the profile's description where known).
  """
  icc: Optional[bytes] = None
  origin: str = 'srgb'
  name: str = 'sRGB'


def source_space(im: Image.Image, exif: Optional[Image.Exif]) -> SourceSpace:
  """The colour space an opened image says it is in.

  An embedded ICC profile wins; then HEIF's nclx box; then EXIF's hints.
  """
  icc = im.info.get('icc_profile')
  if icc:
    return SourceSpace(icc, 'icc', 'embedded ICC profile')
  nclx = nclx_profile(im.info.get('nclx_profile'))
  if nclx:
    return SourceSpace(nclx[0], 'nclx', nclx[1])
  if exif is not None and exif_colour_space(exif) == 'adobe':
    return SourceSpace(rgb_profile(ADOBE_RGB), 'exif', ADOBE_RGB.name)
  return SourceSpace()


class SrgbConverter:
  """Converts images to sRGB with LittleCMS, reusing built transforms.

  Building a transform parses the profile and precomputes tables (a few
  milliseconds); an archive holds few distinct profiles (one per camera
  model), so transforms are kept per profile digest, a bounded number of
  them, per instance (one per DoFn).
  """

  MAX_CACHED = 32

  def __init__(self):
    self._srgb = ImageCms.createProfile('sRGB')
    self._cache: Dict[Tuple[str, str], object] = {}
    # Decoding runs on a few threads at once (transforms/overlap.py).
    self._lock = threading.Lock()

  def _transform(self, icc: bytes, mode: str):
    key = (hashlib.sha1(icc).hexdigest(), mode)
    with self._lock:
      transform = self._cache.get(key)
    if transform is None:
      profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
      transform = ImageCms.buildTransform(
          profile, self._srgb, mode, 'RGB',
          renderingIntent=ImageCms.Intent.PERCEPTUAL)
      with self._lock:
        if len(self._cache) >= self.MAX_CACHED:
          self._cache.pop(next(iter(self._cache)))
        self._cache[key] = transform
    return transform

  @staticmethod
  def profile_mode(icc: bytes) -> Optional[str]:
    """The Pillow mode a profile's data is in: 'RGB', 'L', 'CMYK' or None."""
    if len(icc) < 20:
      return None
    space = icc[16:20]
    return {b'RGB ': 'RGB', b'GRAY': 'L', b'CMYK': 'CMYK'}.get(space)

  def to_srgb(self, im: Image.Image, space: SourceSpace) -> Image.Image:
    """An 'RGB', 'L' or 'CMYK' image in `space` -> an sRGB 'RGB' image.

    A profile that cannot be used (corrupt, or for another kind of data)
    is logged and the numbers are kept as they are: a photo is never lost
    over its colour profile.
    """
    if space.icc is None or (space.icc == srgb_profile() and
                             im.mode == 'RGB'):
      # No profile, or the very profile outputs carry (re-read outputs:
      # report thumbnails): already sRGB.
      return im if im.mode == 'RGB' else im.convert('RGB')
    mode = self.profile_mode(space.icc)
    try:
      if mode is None:
        raise ValueError('unsupported profile colour space '
                         f'{space.icc[16:20]!r}')
      if im.mode != mode:
        if mode == 'CMYK' or im.mode == 'CMYK':
          raise ValueError(f'a {mode} profile on a {im.mode} image')
        im = im.convert(mode)
      return ImageCms.applyTransform(im, self._transform(space.icc, mode))
    except Exception as e:  # pylint: disable=broad-except
      logger.warning('Ignoring unusable colour profile (%s): %s', space.name, e)
      return im if im.mode == 'RGB' else im.convert('RGB')
