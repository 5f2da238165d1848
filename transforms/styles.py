"""Style arguments (plain and blended) and loading style images."""

import dataclasses
import posixpath
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from transforms import paths
from transforms.layout import NAMING_RULE, style_label
from transforms.decode import (DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS,
                               decode_image, read_file_within)
from transforms.identity import sha256_bytes, style_fingerprint
from transforms.records import StyleRef

DEFAULT_STYLE_SIZE = 256


class StyleChanged(RuntimeError):
  """A style image whose content is not what the launch read."""


def read_style(uri: str, style_size: int = DEFAULT_STYLE_SIZE,
               max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, str]:
  """(float32 [style_size, style_size, 3] in [0, 1], SHA-256 of the file).

  Magenta's network was trained on 256x256 styles; like the TF Hub example,
  the style is centre-cropped to a square so it is not distorted. The file
  is read and decoded within the same limits as the photos
  (--max_input_bytes, --max_input_pixels).

  Raises:
    OSError / transforms.decode.DecodeError: unreadable, over a limit or
      not an image.
  """
  data = read_file_within(uri, max_bytes)
  pixels, _, _ = decode_image(data, max_pixels=max_pixels)
  im = ImageOps.fit(Image.fromarray(pixels), (style_size, style_size),
                    Image.Resampling.LANCZOS)
  return np.asarray(im, dtype=np.float32) / 255.0, sha256_bytes(data)


def load_style_image(uri: str, style_size: int = DEFAULT_STYLE_SIZE,
                     expected_sha256: str = '', **limits) -> np.ndarray:
  """read_style's pixels; with expected_sha256, only if the file still has
  that digest (workers check the style the launch fingerprinted).

  Raises:
    StyleChanged: the file's content is not the expected one.
  """
  pixels, digest = read_style(uri, style_size, **limits)
  if expected_sha256 and digest != expected_sha256:
    raise StyleChanged(
        f'style image {uri!r} changed since the job was launched (SHA-256 '
        f'{digest}, launched with {expected_sha256}); rerun the job.')
  return pixels


def with_digests(style: StyleRef, digests: Sequence[str]) -> StyleRef:
  """The style with its images' digests and its content fingerprint."""
  return dataclasses.replace(
      style, digests=tuple(digests), fingerprint=style_fingerprint(
          zip(digests, (w for _, w in style.parts))))


def _split_weight(item: str) -> Tuple[str, Optional[float]]:
  """'a.jpg=0.7' -> ('a.jpg', 0.7); 'a.jpg' -> ('a.jpg', None)."""
  if '=' in item:
    path, weight = item.rsplit('=', 1)
    try:
      return path, float(weight)
    except ValueError:
      pass
  return item, None


def _blend_ref(items: Sequence[Tuple[str, float]], rule: int) -> StyleRef:
  total = sum(w for _, w in items)
  parts = tuple((paths.absolute(u), w / total) for u, w in items)
  uri = ','.join(f'{u}={w:.4g}' for u, w in parts)
  label = '+'.join(
      _stem(u, rule) + f'-{round(w * 100)}' for u, w in parts)
  return StyleRef(uri=uri, label=label, parts=parts)


def parse_styles(args: Sequence[str],
                 rule: int = NAMING_RULE) -> List[StyleRef]:
  """--style values -> styles; every input is stylized with each of them.

  - 'a.jpg': a plain style.
  - 'a.jpg=0.7,b.jpg=0.3': one blend of the listed images (weights are
    normalised to sum to 1).
  - 'a.jpg=0.7' and 'b.jpg=0.3' given as separate --style values: all such
    single weighted values form one blend together.

  A style's label (its output folder) is its file name without the
  extension, under the naming rule (layout.encode_name; rule 1 only to
  find the folders an earlier version used).

  Raises:
    ValueError: a weight that is not positive.
  """
  entries: List[object] = []  # str for plain, list for a blend
  pooled: List[Tuple[str, float]] = []
  for arg in args:
    items = [_split_weight(x) for x in arg.split(',')]
    if len(items) > 1 and any(w is None for _, w in items):
      items = [(arg, None)]  # A comma in a file name, not a blend.
    for path, weight in items:
      if weight is not None and weight <= 0:
        raise ValueError(f'style weight must be positive in {arg!r}')
    if len(items) > 1:
      entries.append(list(items))
    elif items[0][1] is None:
      entries.append(items[0][0])
    else:
      if not pooled:
        entries.append(pooled)
      pooled.append(items[0])
  refs = []
  for entry in entries:
    if isinstance(entry, str):
      uri = paths.absolute(entry)
      refs.append(StyleRef(uri=uri, label=_stem(uri, rule)))
    else:
      refs.append(_blend_ref(entry, rule))
  # Two styles with one name (a/starry.jpg, b/starry.jpg) get a short hash
  # of their URI appended: labels depend only on the --style values.
  refs = list({r.uri: r for r in refs}.values())  # The same style twice.
  names = [r.label for r in refs]
  unique, seen = [], set()
  for ref in refs:
    label = ref.label
    if names.count(label) > 1:
      label = f'{label}-{paths.short_hash(ref.uri)}'
    label = style_label(label, rule)
    if label in seen:  # Only after renaming a reserved name ('report').
      label = style_label(f'{label}-{paths.short_hash(ref.uri)}', rule)
    seen.add(label)
    unique.append(StyleRef(uri=ref.uri, label=label, parts=ref.parts))
  return unique


def _stem(uri: str, rule: int = NAMING_RULE) -> str:
  """The file name without its extension (rule 1: with every character but
  letters, digits, '-', '_' and '.' made '_')."""
  stem = posixpath.splitext(paths.basename(uri))[0]
  if rule >= 2:
    return stem
  return re.sub(r'[^\w.-]+', '_', stem, flags=re.UNICODE).strip('.') or 'style'
