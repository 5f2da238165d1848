"""The padded shapes a network is compiled for, and pad/crop without copies.

The job runs every image at exact_shape: its size rounded up to a multiple
of 8, the padding of the TF engine, so the engines' outputs agree at every
size (the measurements below). At a --max_size the photo formats give a
handful of such shapes, and crops a few pixels apart share one. bucket_shape
(below) pads sizes between the formats further, up to the next format: fewer
compiled shapes, but the padding then shows along those images' edges, so it
is only used where asked for (loader.load_stylizer(exact_buckets=False)).

An OpenVINO model is compiled per input shape: 0.14-0.27 s per shape for
the Magenta transfer network here, and each compiled 1024 px shape holds
100-200 MB of intermediate buffers once it has run (two streams). A photo
archive has many slightly different sizes (crops, cameras), so images are
padded (bottom/right, then cropped back) to one of a few bucket shapes:

- the long side rounded up to a multiple of LONG_MULTIPLE (64): 1024 and
  512 stay, so --max_size 1024/512 outputs have one long side each;
- the short side rounded up to the first bucket short side of that long
  side: the photo formats 16:9, 3:2, 4:3 and 1:1 (RATIOS), each rounded up
  as the TF engine rounds (a multiple of 8). For a 1024 long side: 576,
  688, 768, 1024; for 512: 288, 344, 384, 512. Shapes narrower than 16:9
  (panoramas) round their short side up to a multiple of 64 instead.

Why multiples of 8 at the formats, not of 32 or 64: padding is not free
for accuracy. The network's output near a padded edge depends on how much
padding it sees (its receptive field is large and it reflect-pads inside):
a 3:2 1024x683 photo run as 1024x704 instead of the TF engine's 1024x688
differs from it by 25-27 dB PSNR in the 32 px band along that edge (36.5-39
dB overall in bf16; at 512x341 run as 352: 31.5-34 dB overall, under the
35 dB target), while at 688 it is within bf16's own error (41-43 dB). And
a multiple of 32 buys no speed: OpenVINO bf16 runs 1024x688 and 1024x704 at
the same time per pixel (0.056 s/Mpx here). So the common formats at
--max_size 1024 and 512 run exactly as the TF engine pads them, and only
sizes between the formats pay extra padding (up to the next format, e.g.
1024x600 -> 1024x688: 15% more pixels, and edge bands that differ from
the TF engine's at that level). exact_shape (one shape per size, as TF)
is the alternative where every size must match the TF engine.

Padding and cropping work in place on the network's own input and output
buffers (pad_into, crop_into): the image is written once into the input
buffer, its padding filled in from that buffer (fill_mirror), and the
output read back from the network's buffer. No float32 copy of a whole
image is made on the way.
"""

import math
from typing import Optional, Sequence, Tuple

import numpy as np

RATIOS: Tuple[float, ...] = (9 / 16, 2 / 3, 3 / 4, 1.0)
LONG_MULTIPLE = 64
# What the TF engine pads to (Stylizer.pad_multiple and min_size).
REFERENCE_MULTIPLE = 8
REFERENCE_MIN_SIZE = 32


def _up(n: float, multiple: int) -> int:
  return max(multiple, int(math.ceil(n / multiple - 1e-9)) * multiple)


def short_sides(long_side: int, ratios: Sequence[float] = RATIOS,
                multiple: int = REFERENCE_MULTIPLE) -> Tuple[int, ...]:
  """The bucket short sides for one (bucketed) long side, ascending."""
  return tuple(sorted({min(long_side, _up(round(long_side * r), multiple))
                       for r in ratios}))


def bucket_shape(height: int, width: int, ratios: Sequence[float] = RATIOS,
                 long_multiple: int = LONG_MULTIPLE,
                 short_multiple: int = REFERENCE_MULTIPLE) -> Tuple[int, int]:
  """(height, width) -> the bucket (padded height, padded width) >= it.

  At least the TF engine's padded shape (reference_shape). Pure: the same
  size always gives the same bucket, in every worker.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f'image size must be positive, not {height}x{width}')
  height, width = reference_shape(height, width)
  portrait = height > width
  long_side, short = (height, width) if portrait else (width, height)
  long_b = _up(long_side, long_multiple)
  sides = short_sides(long_b, ratios, short_multiple)
  if short < sides[0]:
    # Narrower than the narrowest format (panoramas, strips): the short
    # side in steps of LONG_MULTIPLE, not padded up to 16:9.
    short_b = min(sides[0], _up(short, long_multiple))
  else:
    short_b = next((s for s in sides if s >= short), long_b)
  return (long_b, short_b) if portrait else (short_b, long_b)


def padding_waste(height: int, width: int, **kwargs) -> float:
  """Extra pixels the bucket computes, as a fraction of the image's."""
  bh, bw = bucket_shape(height, width, **kwargs)
  return bh * bw / (height * width) - 1.0


def _symmetric_index(size: int, padded: int) -> np.ndarray:
  """Source rows for rows size..padded-1 of numpy's 'symmetric' padding
  (the mirror repeats as often as needed, so any size pads any amount)."""
  k = np.arange(size, padded) % (2 * size)
  return np.where(k < size, k, 2 * size - 1 - k)


def _reflect_index(size: int, padded: int) -> np.ndarray:
  """Source rows for rows size..padded-1 of numpy's 'reflect' padding."""
  if size == 1:
    return np.zeros(padded - size, np.intp)
  k = np.arange(size, padded) % (2 * size - 2)
  return np.where(k < size, k, 2 * size - 2 - k)


def reference_shape(height: int, width: int, multiple: int = REFERENCE_MULTIPLE,
                    min_size: int = REFERENCE_MIN_SIZE) -> Tuple[int, int]:
  """The shape the TF engine pads to (Stylizer's pad_multiple/min_size)."""
  def up(n):
    return -(-max(n, min_size) // multiple) * multiple
  return up(height), up(width)


def exact_shape(height: int, width: int) -> Tuple[int, int]:
  """A 'bucket' per reference shape: no padding beyond the TF engine's."""
  return reference_shape(height, width)


def fill_mirror(buf: np.ndarray, height: int, width: int) -> None:
  """Fills buf [H, W, C] beyond [:height, :width] from that corner, in place.

  First as the TF engine pads (numpy 'symmetric', to the reference shape,
  multiples of 8), then on to the bucket as numpy 'reflect', which is how
  the network pads inside its own convolutions: so the image's last rows
  see much the same context as under the TF engine (measured on a 3:2
  1024x683 photo padded to 704: 39.2 dB from the TF engine's output, where
  'symmetric' all the way gives 36.7 dB). Equal to
  np.pad(np.pad(image, to reference, 'symmetric'), to buf, 'reflect'),
  rows first, then the columns of the padded rows.
  """
  bh, bw = buf.shape[:2]
  rh, rw = reference_shape(height, width)
  rh, rw = min(rh, bh), min(rw, bw)
  if rh > height:
    buf[height:rh, :width] = buf[_symmetric_index(height, rh), :width]
  if bh > rh:
    buf[rh:bh, :width] = buf[_reflect_index(rh, bh), :width]
  if rw > width:
    buf[:, width:rw] = buf[:, _symmetric_index(width, rw)]
  if bw > rw:
    buf[:, rw:bw] = buf[:, _reflect_index(rw, bw)]


def pad_into(buf: np.ndarray, image: np.ndarray,
             scale: Optional[float] = None) -> None:
  """Writes image [h, w, C] into buf [H, W, C] (H >= h, W >= w), mirrored.

  With scale, the values are multiplied on the way (uint8 -> float32 in
  [0, 1] with scale=1/255: one conversion, straight into buf, the same
  values as image.astype(float32) * float32(scale)).
  """
  h, w = image.shape[:2]
  if h > buf.shape[0] or w > buf.shape[1]:
    raise ValueError(f'image {image.shape} larger than buffer {buf.shape}')
  if scale is None:
    buf[:h, :w] = image
  else:
    np.multiply(image, np.float32(scale), out=buf[:h, :w], casting='unsafe')
  fill_mirror(buf, h, w)


def crop_into(out: np.ndarray, buf: np.ndarray) -> None:
  """out [h, w, C] <- the top-left corner of buf (the network's output)."""
  h, w = out.shape[:2]
  out[...] = buf[:h, :w]
