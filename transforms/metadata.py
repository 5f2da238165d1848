"""Capture metadata: the EXIF an output keeps, and when a photo was taken.

Outputs keep what lets a photo app sort and describe the stylized archive
(capture date and time with its offset, camera, lens, exposure settings)
and nothing that identifies a person or a device (owner and artist names,
serial numbers, maker notes, comments, unique IDs) or a place (GPS, unless
--keep_gps). The list is an allow-list: a tag not named here is dropped.
"""

import dataclasses
import datetime
import logging
from typing import Optional

from PIL import Image

logger = logging.getLogger(__name__)

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
ORIENTATION = 0x0112
COLOR_SPACE = 0xA001

# IFD0 (the main image's directory).
KEEP_IFD0 = {
    0x010F: 'Make',
    0x0110: 'Model',
    0x0131: 'Software',
    0x0132: 'DateTime',
}
# The Exif sub-directory.
KEEP_EXIF = {
    0x829A: 'ExposureTime',
    0x829D: 'FNumber',
    0x8822: 'ExposureProgram',
    0x8827: 'ISOSpeedRatings',
    0x8830: 'SensitivityType',
    0x9000: 'ExifVersion',
    0x9003: 'DateTimeOriginal',
    0x9004: 'DateTimeDigitized',
    0x9010: 'OffsetTime',
    0x9011: 'OffsetTimeOriginal',
    0x9012: 'OffsetTimeDigitized',
    0x9201: 'ShutterSpeedValue',
    0x9202: 'ApertureValue',
    0x9203: 'BrightnessValue',
    0x9204: 'ExposureBiasValue',
    0x9205: 'MaxApertureValue',
    0x9207: 'MeteringMode',
    0x9208: 'LightSource',
    0x9209: 'Flash',
    0x920A: 'FocalLength',
    0x9290: 'SubsecTime',
    0x9291: 'SubsecTimeOriginal',
    0x9292: 'SubsecTimeDigitized',
    0xA402: 'ExposureMode',
    0xA403: 'WhiteBalance',
    0xA404: 'DigitalZoomRatio',
    0xA405: 'FocalLengthIn35mmFilm',
    0xA406: 'SceneCaptureType',
    0xA408: 'Contrast',
    0xA409: 'Saturation',
    0xA40A: 'Sharpness',
    0xA432: 'LensSpecification',
    0xA433: 'LensMake',
    0xA434: 'LensModel',
}
_DATE_ORIGINAL, _DATE_DIGITIZED = 0x9003, 0x9004
_OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9011, 0x9012
_SUBSEC_ORIGINAL, _SUBSEC_DIGITIZED = 0x9291, 0x9292


@dataclasses.dataclass(frozen=True)
class PhotoMetadata:
  """What travels from a decoded photo to its outputs.

  Attributes:
    exif: EXIF bytes for the outputs (allow-listed tags, Orientation 1,
      ColorSpace sRGB), or b'' when the photo had none.
    taken_at: capture time as ISO 8601 ('2024-07-14T18:03:22+02:00'; no
      offset when the photo does not give one), or None.
  """
  exif: bytes = b''
  taken_at: Optional[str] = None


def _text(value) -> str:
  if isinstance(value, bytes):
    value = value.decode('ascii', 'replace')
  return str(value).strip('\0 ')


def parse_exif_datetime(date: object, offset: object = None,
                        subsec: object = None) -> Optional[str]:
  """EXIF 'YYYY:MM:DD HH:MM:SS' (+ '+02:00', + '123') -> ISO 8601 or None.

  Blank and placeholder dates ('0000:00:00 00:00:00', '    :  :  ') are
  None, as are offsets that are not '+HH:MM'.
  """
  if date is None:
    return None
  try:
    when = datetime.datetime.strptime(_text(date)[:19], '%Y:%m:%d %H:%M:%S')
  except ValueError:
    return None
  digits = _text(subsec) if subsec is not None else ''
  if digits.isdigit():
    when = when.replace(microsecond=int((digits + '000000')[:6]))
  text = when.isoformat()
  if offset is not None:
    off = _text(offset)
    try:
      tz = datetime.datetime.strptime(off, '%z').tzinfo if off else None
    except ValueError:
      tz = None
    if tz is not None:
      text = when.replace(tzinfo=tz).isoformat()
  return text


def taken_at(exif: Image.Exif) -> Optional[str]:
  """The capture time: DateTimeOriginal, else DateTimeDigitized."""
  ifd = exif.get_ifd(EXIF_IFD)
  for date, offset, subsec in ((_DATE_ORIGINAL, _OFFSET_ORIGINAL,
                                _SUBSEC_ORIGINAL),
                               (_DATE_DIGITIZED, _OFFSET_DIGITIZED,
                                _SUBSEC_DIGITIZED)):
    value = parse_exif_datetime(ifd.get(date), ifd.get(offset),
                                ifd.get(subsec))
    if value:
      return value
  return None


def _entries(exif: Image.Exif, keep_gps: bool):
  """(directory, tag, value) for everything the outputs keep."""
  for tag, value in exif.items():
    if tag in KEEP_IFD0 and value is not None:
      yield None, tag, value
  yield None, ORIENTATION, 1
  for tag, value in exif.get_ifd(EXIF_IFD).items():
    if tag in KEEP_EXIF and value is not None:
      yield EXIF_IFD, tag, value
  yield EXIF_IFD, COLOR_SPACE, 1
  if keep_gps:
    for tag, value in exif.get_ifd(GPS_IFD).items():
      yield GPS_IFD, tag, value


def _build(entries) -> Image.Exif:
  out = Image.Exif()
  for ifd, tag, value in entries:
    (out if ifd is None else out.get_ifd(ifd))[tag] = value
  return out


def output_exif(exif: Image.Exif, keep_gps: bool) -> bytes:
  """The EXIF block for outputs: allow-listed tags, upright, sRGB.

  Orientation is 1 because output pixels are upright; ColorSpace is 1
  (sRGB) because outputs are converted to sRGB. GPS is copied whole only
  with keep_gps. A value Pillow cannot write back (a malformed tag from
  some camera) is left out alone, not the whole block.
  """
  entries = list(_entries(exif, keep_gps))
  try:
    return _build(entries).tobytes()
  except Exception:  # pylint: disable=broad-except
    pass
  kept = []
  for entry in entries:
    try:
      _build(kept + [entry]).tobytes()
    except Exception as e:  # pylint: disable=broad-except
      logger.warning('EXIF tag 0x%04x not carried to the outputs: %s',
                     entry[1], e)
      continue
    kept.append(entry)
  return _build(kept).tobytes()


def read_metadata(exif: Optional[Image.Exif], keep_gps: bool) -> PhotoMetadata:
  """A photo's EXIF (None: unreadable) -> metadata for outputs; never raises.

  A photo whose EXIF cannot be read (or written back) loses its metadata,
  not its pixels: the problem is logged.
  """
  if exif is None:
    return PhotoMetadata()
  try:
    when = taken_at(exif)
  except Exception as e:  # pylint: disable=broad-except
    logger.warning('Ignoring unreadable EXIF capture time: %s', e)
    when = None
  try:
    data = output_exif(exif, keep_gps)
  except Exception as e:  # pylint: disable=broad-except
    logger.warning('EXIF not carried to the outputs (%s)', e)
    data = b''
  return PhotoMetadata(exif=data, taken_at=when)
