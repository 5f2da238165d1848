"""Decoding: every Pillow mode, orientation, animation, bombs, broken files."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import gradient, image_bytes
from transforms.decode import DecodeError, decode_image, target_size


def test_rgb_jpeg_keeps_size_when_small():
  arr, w, h = decode_image(image_bytes(gradient(40, 30), 'JPEG'), max_size=64)
  assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
  assert (w, h) == (40, 30)


def test_resize_fits_long_side_and_keeps_aspect():
  arr, w, h = decode_image(image_bytes(gradient(400, 100), 'PNG'), max_size=100)
  assert arr.shape == (25, 100, 3)
  assert (w, h) == (400, 100)


def test_never_upscales():
  assert target_size(50, 20, 1000) == (50, 20)
  assert target_size(50, 20, None) == (50, 20)


def test_jpeg_draft_decoding_still_gives_exact_target_size():
  data = image_bytes(gradient(3000, 2000), 'JPEG', quality=90)
  arr, w, h = decode_image(data, max_size=512)
  assert arr.shape == (341, 512, 3)
  assert (w, h) == (3000, 2000)
  # Same picture as a full decode and resize, to within resampling noise.
  full, _, _ = decode_image(data, max_size=None)
  ref = np.asarray(Image.fromarray(full).resize((512, 341), Image.LANCZOS))
  assert np.abs(arr.astype(int) - ref.astype(int)).mean() < 3


def _with_orientation(im, orientation):
  exif = Image.Exif()
  exif[0x0112] = orientation
  return image_bytes(im, 'JPEG', exif=exif.tobytes())


def test_exif_orientation_applied():
  im = Image.new('RGB', (60, 20), (255, 0, 0))
  im.paste((0, 0, 255), (0, 0, 10, 20))  # Blue band on the left.
  arr, w, h = decode_image(_with_orientation(im, 6))  # Rotate 90 CW to show.
  assert arr.shape == (60, 20, 3)
  assert (w, h) == (20, 60)
  # After a 90 degree clockwise turn the left band is at the top.
  assert arr[2, 10, 2] > 200 and arr[2, 10, 0] < 60
  assert arr[-2, 10, 0] > 200


def test_exif_orientation_with_draft_and_resize():
  data = _with_orientation(gradient(1200, 400), 8)
  arr, w, h = decode_image(data, max_size=300)
  assert arr.shape == (300, 100, 3)
  assert (w, h) == (400, 1200)


@pytest.mark.parametrize('mode,fmt,max_mean_error', [
    ('L', 'PNG', 0), ('1', 'PNG', 0), ('P', 'PNG', 0), ('CMYK', 'TIFF', 0),
    ('YCbCr', 'JPEG', 10), ('I;16', 'TIFF', 0)])
def test_modes_convert_to_rgb(mode, fmt, max_mean_error):
  im = gradient(32, 24).convert('L' if mode == 'I;16' else mode)
  expected = np.asarray(im.convert('RGB')).astype(int)
  if mode == 'I;16':
    im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
  arr, _, _ = decode_image(image_bytes(im, fmt))
  assert arr.shape == (24, 32, 3)
  assert np.abs(arr.astype(int) - expected).mean() <= max_mean_error


def test_cmyk_jpeg_colours_come_out_right():
  im = Image.new('CMYK', (16, 16), (0, 255, 255, 0))  # Pure red in CMYK.
  arr, _, _ = decode_image(image_bytes(im, 'JPEG', quality=95))
  r, g, b = arr[8, 8].astype(int)
  assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize('mode', ['RGBA', 'LA'])
def test_alpha_is_composited_on_white(mode):
  im = Image.new('RGBA', (10, 10), (0, 0, 0, 0))
  im.paste((0, 0, 0, 255), (0, 0, 5, 10))
  arr, _, _ = decode_image(image_bytes(im.convert(mode), 'PNG'))
  assert arr[5, 8].tolist() == [255, 255, 255]  # Transparent -> white.
  assert arr[5, 2].tolist() == [0, 0, 0]  # Opaque black stays black.


def test_palette_with_transparency_composited_on_white():
  im = Image.new('P', (8, 8), 0)
  im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
  im.paste(1, (0, 0, 4, 8))
  arr, _, _ = decode_image(image_bytes(im, 'PNG', transparency=0))
  assert arr[4, 6].tolist() == [255, 255, 255]
  assert arr[4, 1].tolist() == [255, 0, 0]


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
  values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
  im = Image.fromarray(values)  # Mode I;16
  arr, _, _ = decode_image(image_bytes(im, 'PNG'))
  grey = arr[0, :, 0].tolist()
  assert grey == [0, 4, 128, 255]  # Clipping would give [0, 255, 255, 255].


def _png_rgb16(width, height, value):
  """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
  raw = b''.join(b'\x00' + struct.pack('>' + 'H' * 3 * width,
                                       *([value] * 3 * width))
                 for _ in range(height))

  def chunk(tag, data):
    return (struct.pack('>I', len(data)) + tag + data +
            struct.pack('>I', zlib.crc32(tag + data) & 0xffffffff))
  return (b'\x89PNG\r\n\x1a\n' +
          chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0))
          + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_sixteen_bit_rgb_is_scaled():
  arr, _, _ = decode_image(_png_rgb16(4, 3, 32768))
  assert arr.shape == (3, 4, 3)
  assert abs(int(arr[0, 0, 0]) - 128) <= 1


def test_float_greyscale_in_unit_range():
  im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode='F')
  arr, _, _ = decode_image(image_bytes(im, 'TIFF'))
  assert arr[0, :, 0].tolist() == [0, 128, 255]


def test_lab_goes_through_colour_management():
  im = Image.new('LAB', (4, 4), (128, 128, 128))  # L=50, a=b=0: mid grey.
  arr, _, _ = decode_image(image_bytes(im, 'TIFF'))
  r, g, b = arr[0, 0].astype(int)
  assert abs(r - g) <= 3 and abs(g - b) <= 3 and 100 < r < 140


def test_animation_first_frame():
  frames = [Image.new('RGB', (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
  buf = io.BytesIO()
  frames[0].save(buf, 'GIF', save_all=True, append_images=frames[1:])
  arr, _, _ = decode_image(buf.getvalue())
  assert arr[4, 4, 0] > 200 and arr[4, 4, 1] < 60


def test_decompression_bomb_refused_with_reason():
  data = image_bytes(Image.new('L', (2000, 2000)), 'PNG')
  with pytest.raises(DecodeError, match='decompression bomb'):
    decode_image(data, max_pixels=1_000_000)


def test_empty_file():
  with pytest.raises(DecodeError, match='empty file'):
    decode_image(b'')


def test_not_an_image():
  with pytest.raises(DecodeError, match='not an image'):
    decode_image(b'hello, this is a text file\n' * 10)


def test_truncated_jpeg():
  data = image_bytes(gradient(200, 200), 'JPEG')
  with pytest.raises(DecodeError, match='corrupt or truncated'):
    decode_image(data[:len(data) // 2])


def test_garbage_after_a_valid_header():
  data = image_bytes(gradient(64, 64), 'PNG')
  garbage = np.random.default_rng(1).integers(0, 256, 400, np.uint8).tobytes()
  with pytest.raises(DecodeError):
    decode_image(data[:60] + garbage)


def test_one_pixel_image():
  arr, w, h = decode_image(image_bytes(Image.new('RGB', (1, 1), (9, 9, 9)),
                                       'PNG'))
  assert arr.shape == (1, 1, 3) and (w, h) == (1, 1)
