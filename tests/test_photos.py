"""Phone archives: HEIC and AVIF in, colour management, capture metadata kept."""

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageCms

from beam_jobs.stylize import run
from tests.conftest import gradient, image_bytes
from transforms import icc
from transforms.decode import DecodeError, decode_photo
from transforms.encode import encode_image
from transforms.formats import register_heif
from transforms.metadata import (output_exif, parse_exif_datetime,
                                 read_metadata)

register_heif()

EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
MAKE, MODEL, ORIENTATION, ARTIST = 0x010F, 0x0110, 0x0112, 0x013B
DATE_ORIGINAL, OFFSET_ORIGINAL, SUBSEC_ORIGINAL = 0x9003, 0x9011, 0x9291
LENS_MODEL, BODY_SERIAL, MAKER_NOTE, COLOR_SPACE = 0xA434, 0xA431, 0x927C, 0xA001

# Published RGB -> XYZ (D65) matrices (Lindbloom), independent of icc.py.
ADOBE_TO_XYZ = np.array([[0.5767309, 0.1855540, 0.1881852],
                         [0.2973769, 0.6273491, 0.0752741],
                         [0.0270343, 0.0706872, 0.9911085]])
P3_TO_XYZ = np.array([[0.4865709, 0.2656677, 0.1982173],
                      [0.2289746, 0.6917385, 0.0792869],
                      [0.0000000, 0.0451134, 1.0439444]])
XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                        [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]])


def _srgb_decode(v):
  return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_encode(v):
  v = np.clip(v, 0.0, 1.0)
  return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def expected_srgb(rgb, to_xyz, gamma=None):
  """8-bit colour in a wide-gamut space -> 8-bit sRGB, by the textbook."""
  v = np.asarray(rgb, float) / 255.0
  lin = v ** gamma if gamma else _srgb_decode(v)
  return _srgb_encode(XYZ_TO_SRGB @ (to_xyz @ lin)) * 255.0


def camera_exif(orientation=1, gps=True) -> bytes:
  """EXIF as a phone writes it: date with offset, camera, lens, GPS, serial."""
  from PIL.TiffImagePlugin import IFDRational as R
  exif = Image.Exif()
  exif[MAKE] = 'Apple'
  exif[MODEL] = 'iPhone 15 Pro'
  exif[ORIENTATION] = orientation
  exif[ARTIST] = 'Jane Doe'
  sub = exif.get_ifd(EXIF_IFD)
  sub[DATE_ORIGINAL] = '2024:07:14 18:03:22'
  sub[OFFSET_ORIGINAL] = '+02:00'
  sub[SUBSEC_ORIGINAL] = '250'
  sub[LENS_MODEL] = 'iPhone 15 Pro back triple camera 6.765mm f/1.78'
  sub[0x829A] = R(1, 120)  # ExposureTime
  sub[0x8827] = 64  # ISO
  sub[BODY_SERIAL] = 'C39XK2ABCDEF'
  sub[MAKER_NOTE] = b'Apple iOS\0secret'
  if gps:
    g = exif.get_ifd(GPS_IFD)
    g[1] = 'N'
    g[2] = (R(48, 1), R(51, 1), R(2394, 100))
    g[3] = 'E'
    g[4] = (R(2, 1), R(17, 1), R(4020, 100))
  return exif.tobytes()


def banded(width=64, height=32) -> Image.Image:
  """Red with a blue band on the left: shows which way is up."""
  im = Image.new('RGB', (width, height), (220, 20, 20))
  im.paste((20, 20, 220), (0, 0, width // 4, height))
  return im


def assert_upright_band_on_top(arr):
  """banded() stored rotated with orientation 6 -> band on top when upright."""
  h, w, _ = arr.shape
  assert (w, h) == (32, 64)
  top, bottom = arr[3, w // 2].astype(int), arr[-3, w // 2].astype(int)
  assert top[2] > 150 and top[0] < 90, top
  assert bottom[0] > 150 and bottom[2] < 90, bottom


def rotated_for_orientation_6(im):
  """What a camera stores for a picture that orientation 6 shows as im."""
  return im.transpose(Image.Transpose.ROTATE_90)


# ------------------------------------------------------------ HEIC, AVIF --

def test_heic_decodes_with_orientation_and_metadata():
  upright = banded().transpose(Image.Transpose.ROTATE_270)  # 32x64, band top
  stored = rotated_for_orientation_6(upright)
  data = image_bytes(stored, 'HEIF', exif=camera_exif(orientation=6),
                     quality=95)
  # pillow-heif writes the orientation as HEIF's own rotation (irot).
  photo = decode_photo(data)
  assert_upright_band_on_top(photo.pixels)
  assert (photo.source_width, photo.source_height) == (32, 64)
  assert photo.metadata.taken_at == '2024-07-14T18:03:22.250000+02:00'


def test_avif_decodes_with_orientation_and_metadata():
  upright = banded().transpose(Image.Transpose.ROTATE_270)
  stored = rotated_for_orientation_6(upright)
  # Pillow's AVIF writer turns EXIF orientation into irot/imir boxes; its
  # reader reports them as EXIF orientation again.
  data = image_bytes(stored, 'AVIF', exif=camera_exif(orientation=6),
                     quality=95)
  photo = decode_photo(data, max_size=48)
  assert photo.pixels.shape == (48, 24, 3)
  assert (photo.source_width, photo.source_height) == (32, 64)
  top, bottom = photo.pixels[2, 12].astype(int), photo.pixels[-2, 12].astype(int)
  assert top[2] > 150 and bottom[0] > 150
  assert photo.metadata.taken_at == '2024-07-14T18:03:22.250000+02:00'


@pytest.mark.parametrize('bits', [10, 12])
def test_high_bit_depth_heic_is_scaled_not_clipped(bits):
  import pillow_heif
  # 16-bit container values; the encoder keeps the top `bits` bits.
  levels = np.array([600, 100, 1000]) * (1 << (16 - 10))
  arr = np.zeros((32, 32, 3), np.uint16)
  arr[...] = levels
  old = pillow_heif.options.SAVE_HDR_TO_12_BIT
  pillow_heif.options.SAVE_HDR_TO_12_BIT = bits == 12
  try:
    heif = pillow_heif.from_bytes(mode='RGB;16', size=(32, 32),
                                  data=arr.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=-1)  # Lossless.
  finally:
    pillow_heif.options.SAVE_HDR_TO_12_BIT = old
  assert pillow_heif.open_heif(io.BytesIO(buf.getvalue())).info[
      'bit_depth'] == bits
  pixel = decode_photo(buf.getvalue()).pixels[16, 16].astype(int)
  expected = levels / 65535 * 255  # About (150, 25, 249).
  assert np.abs(pixel - expected).max() <= 2, pixel


@pytest.mark.parametrize('bits', [10, 12])
def test_high_bit_depth_avif_is_scaled_not_clipped(bits):
  import imagecodecs  # pylint: disable=import-outside-toplevel
  top = (1 << bits) - 1
  levels = np.array([0.59, 0.1, 0.98])
  arr = np.zeros((32, 32, 3), np.uint16)
  arr[...] = np.round(levels * top).astype(np.uint16)
  data = imagecodecs.avif_encode(arr, level=100, bitspersample=bits)
  assert Image.open(io.BytesIO(data)).format == 'AVIF'
  pixel = decode_photo(data).pixels[16, 16].astype(int)
  assert np.abs(pixel - levels * 255).max() <= 2, pixel


def test_truncated_heic_is_a_decode_error():
  data = image_bytes(gradient(64, 64), 'HEIF', quality=80)
  with pytest.raises(DecodeError, match='corrupt or truncated'):
    decode_photo(data[:len(data) // 2])


# ------------------------------------------------------ colour management --

PATCHES = [(180, 60, 60), (60, 160, 80), (90, 90, 200), (128, 128, 128),
           (240, 200, 40)]


def patches_image(size=16):
  im = Image.new('RGB', (size * len(PATCHES), size))
  for i, colour in enumerate(PATCHES):
    im.paste(colour, (i * size, 0, (i + 1) * size, size))
  return im


def patch_values(arr, size=16):
  return [arr[size // 2, i * size + size // 2].astype(float)
          for i in range(len(PATCHES))]


@pytest.mark.parametrize('space,to_xyz,gamma', [
    (icc.ADOBE_RGB, ADOBE_TO_XYZ, 563 / 256),
    (icc.DISPLAY_P3, P3_TO_XYZ, None)])
def test_embedded_wide_gamut_profile_is_converted_to_srgb(space, to_xyz, gamma):
  profile = icc.rgb_profile(space)
  data = image_bytes(patches_image(), 'JPEG', quality=100, subsampling=0,
                     icc_profile=profile)
  got = patch_values(decode_photo(data).pixels)
  for colour, value in zip(PATCHES, got):
    want = expected_srgb(colour, to_xyz, gamma)
    assert np.abs(value - want).max() <= 3, (colour, value, want)
  # Taken as sRGB (the old behaviour), the saturated patches come out duller.
  red_as_is = np.array(PATCHES[0], float)
  red_managed = got[0]
  assert red_managed[0] - red_managed[1] > red_as_is[0] - red_as_is[1] + 10


def test_adobe_rgb_hint_in_exif_without_a_profile():
  exif = Image.Exif()
  sub = exif.get_ifd(EXIF_IFD)
  sub[COLOR_SPACE] = 0xFFFF  # Uncalibrated...
  sub[INTEROP_IFD] = {0x0001: 'R03'}  # ...and DCF's Adobe RGB index.
  data = image_bytes(patches_image(), 'PNG', exif=exif.tobytes())
  photo = decode_photo(data)
  assert photo.colour == 'exif: Adobe RGB (1998)'
  for colour, value in zip(PATCHES, patch_values(photo.pixels)):
    want = expected_srgb(colour, ADOBE_TO_XYZ, 563 / 256)
    assert np.abs(value - want).max() <= 2, (colour, value, want)


def test_srgb_hint_or_no_hint_leaves_numbers_alone():
  exif = Image.Exif()
  exif.get_ifd(EXIF_IFD)[COLOR_SPACE] = 1
  for extra in ({}, {'exif': exif.tobytes()}):
    photo = decode_photo(image_bytes(patches_image(), 'PNG', **extra))
    assert photo.colour == 'srgb: sRGB'
    assert np.array_equal(photo.pixels, np.asarray(patches_image()))


def test_heic_with_nclx_display_p3_is_converted():
  nclx = {'color_primaries': 12, 'transfer_characteristics': 13,
          'matrix_coefficients': 6, 'full_range_flag': 1}
  data = image_bytes(patches_image(), 'HEIF', quality=-1, nclx_profile=nclx)
  photo = decode_photo(data)
  assert photo.colour == 'nclx: Display P3'
  for colour, value in zip(PATCHES, patch_values(photo.pixels)):
    want = expected_srgb(colour, P3_TO_XYZ)
    assert np.abs(value - want).max() <= 4, (colour, value, want)


def test_grey_image_with_an_rgb_profile():
  # The profile's kind differs from the image's: the grey is widened to RGB.
  grey = Image.new('L', (8, 8), 100)
  photo = decode_photo(image_bytes(grey, 'PNG', icc_profile=icc.srgb_profile()))
  assert photo.pixels[4, 4].tolist() == [100, 100, 100]


def test_corrupt_profile_keeps_the_picture():
  data = image_bytes(patches_image(), 'PNG',
                     icc_profile=b'\0\0\0\x80lcms' + b'garbage' * 30)
  photo = decode_photo(data)
  assert np.array_equal(photo.pixels, np.asarray(patches_image()))


def test_built_srgb_profile_round_trips_exactly():
  im = patches_image()
  out = icc.SrgbConverter().to_srgb(
      im, icc.SourceSpace(icc.rgb_profile(icc.SRGB), 'icc', 'sRGB'))
  assert np.abs(np.asarray(out, int) - np.asarray(im, int)).max() <= 1


# --------------------------------------------------------------- metadata --

def test_output_exif_keeps_capture_info_drops_identifying_and_gps():
  exif = Image.Exif()
  exif.load(camera_exif(orientation=6))
  out = Image.Exif()
  out.load(output_exif(exif, keep_gps=False))
  assert out[MAKE] == 'Apple' and out[MODEL] == 'iPhone 15 Pro'
  assert out[ORIENTATION] == 1
  assert ARTIST not in out
  sub = out.get_ifd(EXIF_IFD)
  assert sub[DATE_ORIGINAL] == '2024:07:14 18:03:22'
  assert sub[OFFSET_ORIGINAL] == '+02:00'
  assert sub[LENS_MODEL].startswith('iPhone 15 Pro back')
  assert float(sub[0x829A]) == pytest.approx(1 / 120)
  assert sub[COLOR_SPACE] == 1
  assert BODY_SERIAL not in sub and MAKER_NOTE not in sub
  assert not out.get_ifd(GPS_IFD)
  kept = Image.Exif()
  kept.load(output_exif(exif, keep_gps=True))
  gps = kept.get_ifd(GPS_IFD)
  assert gps[1] == 'N' and [float(v) for v in gps[2]] == [48, 51, 23.94]


def test_a_tag_that_cannot_be_written_back_is_left_out_alone():
  exif = Image.Exif()
  exif[MAKE] = 'Canon'
  sub = exif.get_ifd(EXIF_IFD)
  sub[DATE_ORIGINAL] = '2020:01:01 10:00:00'
  sub[0x829A] = object()  # Stands for a malformed value from some camera.
  out = Image.Exif()
  out.load(output_exif(exif, keep_gps=False))
  assert out[MAKE] == 'Canon'
  assert out.get_ifd(EXIF_IFD)[DATE_ORIGINAL] == '2020:01:01 10:00:00'
  assert 0x829A not in out.get_ifd(EXIF_IFD)


@pytest.mark.parametrize('date,offset,subsec,expected', [
    ('2024:07:14 18:03:22', '+02:00', None, '2024-07-14T18:03:22+02:00'),
    ('2024:07:14 18:03:22', None, None, '2024-07-14T18:03:22'),
    ('2024:07:14 18:03:22', '-05:00', '07', '2024-07-14T18:03:22.070000-05:00'),
    ('2024:07:14 18:03:22\0', 'bogus', None, '2024-07-14T18:03:22'),
    ('0000:00:00 00:00:00', '+02:00', None, None),
    ('    :  :     :  :  ', None, None, None),
    (None, '+02:00', None, None)])
def test_capture_time_parsing(date, offset, subsec, expected):
  assert parse_exif_datetime(date, offset, subsec) == expected


def test_unreadable_exif_loses_metadata_not_the_photo():
  assert read_metadata(None, keep_gps=False).exif == b''
  data = image_bytes(gradient(20, 10), 'JPEG', exif=b'Exif\0\0garbage!')
  photo = decode_photo(data)
  assert photo.pixels.shape == (10, 20, 3)


@pytest.mark.parametrize('fmt,pil', [('jpg', 'JPEG'), ('png', 'PNG'),
                                     ('webp', 'WEBP'), ('avif', 'AVIF')])
def test_every_output_format_carries_exif_and_srgb_profile(fmt, pil):
  exif = Image.Exif()
  exif.load(camera_exif())
  data = encode_image(np.asarray(gradient(40, 30)), fmt, 90,
                      exif=output_exif(exif, keep_gps=False),
                      icc_profile=icc.srgb_profile())
  with Image.open(io.BytesIO(data)) as im:
    assert im.format == pil and im.size == (40, 30)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(im.info['icc_profile']))
    assert 'sRGB' in ImageCms.getProfileDescription(profile)
    out = im.getexif()
    assert out[MODEL] == 'iPhone 15 Pro'
    assert out.get(ORIENTATION, 1) == 1
    assert out.get_ifd(EXIF_IFD)[DATE_ORIGINAL] == '2024:07:14 18:03:22'


# ------------------------------------------------------- through the job --

def export_identity_model(path):
  """A real SavedModel that returns the content unchanged, so outputs show
  exactly what decoding made of the inputs."""
  import tensorflow as tf

  class Identity(tf.Module):

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, content, style):
      return [tf.identity(content)]

  tf.saved_model.save(Identity(), str(path))
  return path


def phone_folder(root):
  """An iPhone-like export: HEIC rotated by irot, an AVIF, a P3 JPEG."""
  root.mkdir(parents=True)
  upright = banded().transpose(Image.Transpose.ROTATE_270)
  stored = rotated_for_orientation_6(upright)
  stored.save(root / 'IMG_0001.HEIC', exif=camera_exif(orientation=6),
              quality=95)
  stored.save(root / 'IMG_0002.avif', exif=camera_exif(orientation=6),
              quality=95)
  patches_image().save(root / 'IMG_0003.jpg', quality=100, subsampling=0,
                       icc_profile=icc.rgb_profile(icc.DISPLAY_P3),
                       exif=camera_exif(gps=False))
  return root


def manifest_rows(out):
  """The manifest's rows by input file name."""
  from tests.test_end_to_end import manifest_rows as rows  # pylint: disable=import-outside-toplevel
  return {os.path.basename(r['input']): r for r in rows(out)}


@pytest.fixture(scope='module')
def identity_model(tmp_path_factory):
  return export_identity_model(tmp_path_factory.mktemp('identity') / 'model')


def test_phone_archive_end_to_end(tmp_path, samples, identity_model):
  inputs = phone_folder(tmp_path / 'in')
  out = tmp_path / 'out'
  run(['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
       '--output', str(out), '--model', str(identity_model)])
  rows = manifest_rows(out)
  assert {r['status'] for r in rows.values()} == {'ok'}, rows
  for name in ('IMG_0001.HEIC', 'IMG_0002.avif'):
    row = rows[name]
    assert row['taken_at'] == '2024-07-14T18:03:22.250000+02:00'
    assert (row['width'], row['height']) == (32, 64)
    with Image.open(row['output']) as im:
      assert im.format == 'JPEG'
      assert_upright_band_on_top(np.asarray(im.convert('RGB')))
      exif = im.getexif()
      assert exif[ORIENTATION] == 1 and exif[MODEL] == 'iPhone 15 Pro'
      sub = exif.get_ifd(EXIF_IFD)
      assert sub[DATE_ORIGINAL] == '2024:07:14 18:03:22'
      assert sub[OFFSET_ORIGINAL] == '+02:00'
      assert sub[LENS_MODEL].startswith('iPhone 15 Pro')
      assert BODY_SERIAL not in sub and ARTIST not in exif
      assert not exif.get_ifd(GPS_IFD)  # Dropped without --keep_gps.
      profile = ImageCms.ImageCmsProfile(io.BytesIO(im.info['icc_profile']))
      assert 'sRGB' in ImageCms.getProfileDescription(profile)
  # The Display P3 JPEG comes out converted, not with its numbers as sRGB.
  with Image.open(rows['IMG_0003.jpg']['output']) as im:
    got = patch_values(np.asarray(im.convert('RGB')))
  for colour, value in zip(PATCHES, got):
    want = expected_srgb(colour, P3_TO_XYZ)
    assert np.abs(value - want).max() <= 6, (colour, value, want)


@pytest.mark.parametrize('fmt', [
    'avif', pytest.param('png', marks=pytest.mark.slow),
    pytest.param('webp', marks=pytest.mark.slow)])
def test_keep_gps_and_other_output_formats(tmp_path, samples, fmt):
  inputs = phone_folder(tmp_path / 'in')
  out = tmp_path / 'out'
  run(['--input', str(inputs / 'IMG_0001.HEIC'), '--style',
       str(samples / 'style' / 'waves.jpg'), '--output', str(out),
       '--model', 'builtin', '--output_format', fmt, '--keep_gps'])
  row = manifest_rows(out)['IMG_0001.HEIC']
  assert row['status'] == 'ok' and row['output'].endswith('.' + fmt)
  assert row['taken_at'] == '2024-07-14T18:03:22.250000+02:00'
  with Image.open(row['output']) as im:
    assert im.size == (32, 64)
    exif = im.getexif()
    assert exif.get(ORIENTATION, 1) == 1
    assert exif.get_ifd(EXIF_IFD)[DATE_ORIGINAL] == '2024:07:14 18:03:22'
    gps = exif.get_ifd(GPS_IFD)
    assert gps[1] == 'N' and float(gps[2][0]) == 48.0
    assert 'icc_profile' in im.info
