"""Labelled images made in the tests: photos, rendered documents, screenshots.

Photos are random crops, flips and colour changes of the real photos in
../shared/images/content; documents and screenshots are drawn with Pillow's
ImageDraw (text with Pillow's own FreeType font), so no data is downloaded.
"""

import pathlib
import random
from typing import Dict, List

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

CLASSES = ('document', 'photo', 'screenshot')

_WORDS = ('total invoice amount date customer order quantity price tax paid '
          'receipt number account balance payment item description service '
          'report summary meeting notes project status review the of and to '
          'for with from page section figure table result').split()


def _font(size: int):
  return ImageFont.load_default(size=size)


def _sentence(rng: random.Random, words: int) -> str:
  return ' '.join(rng.choice(_WORDS) for _ in range(words))


def make_photo(sources: List[pathlib.Path], rng: random.Random) -> Image.Image:
  """A random crop of a real photo, maybe flipped, with colour changes."""
  with Image.open(rng.choice(sources)) as src:
    im = src.convert('RGB')
  w, h = im.size
  scale = rng.uniform(0.5, 1.0)
  cw, ch = int(w * scale), int(h * scale * rng.uniform(0.75, 1.0))
  x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
  im = im.crop((x, y, x + cw, y + ch))
  if rng.random() < 0.5:
    im = ImageOps.mirror(im)
  im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
  im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
  im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))
  side = rng.randint(160, 320)
  im.thumbnail((side, side), Image.Resampling.LANCZOS)
  return im


def make_document(rng: random.Random) -> Image.Image:
  """A scanned-looking page: paper, a title, paragraphs, maybe a table."""
  w = rng.randint(170, 260)
  h = int(w * rng.uniform(1.2, 1.5))
  paper = tuple(rng.randint(236, 255) for _ in range(3))
  im = Image.new('RGB', (w, h), paper)
  draw = ImageDraw.Draw(im)
  ink = (rng.randint(0, 60),) * 3
  margin = rng.randint(10, 24)
  y = margin
  draw.text((margin, y), _sentence(rng, 3).title(), fill=ink,
            font=_font(rng.randint(13, 17)))
  y += 26
  size = rng.randint(7, 10)
  font = _font(size)
  while y < h - margin - size:
    if rng.random() < 0.15:
      # A small table: ruled lines with figures.
      for _ in range(rng.randint(2, 4)):
        if y > h - margin - size:
          break
        draw.line((margin, y, w - margin, y), fill=ink, width=1)
        draw.text((margin + 2, y + 2), _sentence(rng, 2), fill=ink, font=font)
        amount = f'{rng.randint(1, 999)}.{rng.randint(0, 99):02d}'
        draw.text((w - margin - 30, y + 2), amount, fill=ink, font=font)
        y += size + 6
      y += 4
    else:
      for _ in range(rng.randint(2, 5)):
        if y > h - margin - size:
          break
        words = rng.randint(4, 9)
        draw.text((margin, y), _sentence(rng, words), fill=ink, font=font)
        y += size + 3
      y += size
  if rng.random() < 0.5:
    im = im.rotate(rng.uniform(-2, 2), resample=Image.Resampling.BICUBIC,
                   fillcolor=paper, expand=False)
  if rng.random() < 0.5:
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.6)))
  return im


def make_screenshot(rng: random.Random) -> Image.Image:
  """An application window: title bar, sidebar, toolbar, buttons, text."""
  w = rng.randint(240, 340)
  h = int(w * rng.uniform(0.56, 0.7))
  dark = rng.random() < 0.4
  bg = (rng.randint(25, 45),) * 3 if dark else (rng.randint(235, 250),) * 3
  fg = (220, 220, 220) if dark else (30, 30, 30)
  accent = tuple(rng.randint(30, 220) for _ in range(3))
  im = Image.new('RGB', (w, h), bg)
  draw = ImageDraw.Draw(im)
  bar = rng.randint(14, 22)
  draw.rectangle((0, 0, w, bar), fill=accent)
  for i in range(3):
    draw.ellipse((6 + 12 * i, 4, 14 + 12 * i, 12),
                 fill=((230, 80, 70), (240, 190, 60), (90, 200, 90))[i])
  draw.text((50, 3), _sentence(rng, 2).title(), fill=(255, 255, 255),
            font=_font(10))
  side = rng.randint(50, 90)
  side_bg = tuple(max(0, c - 15) for c in bg) if not dark else tuple(
      c + 15 for c in bg)
  draw.rectangle((0, bar, side, h), fill=side_bg)
  font = _font(8)
  for i in range(rng.randint(4, 8)):
    y = bar + 8 + i * 14
    if y > h - 12:
      break
    draw.rectangle((6, y, 14, y + 8), fill=accent)
    draw.text((18, y - 1), rng.choice(_WORDS), fill=fg, font=font)
  x0 = side + 8
  y = bar + 8
  for _ in range(rng.randint(1, 3)):
    bw = rng.randint(30, 60)
    draw.rounded_rectangle((x0, y, x0 + bw, y + 14), radius=4, fill=accent)
    draw.text((x0 + 4, y + 2), rng.choice(_WORDS), fill=(255, 255, 255),
              font=font)
    x0 += bw + 6
  y += 22
  while y < h - 12:
    if rng.random() < 0.3:
      draw.rectangle((side + 8, y, w - 8, y + 24), outline=fg, width=1)
      draw.text((side + 12, y + 8), _sentence(rng, 4), fill=fg, font=font)
      y += 30
    else:
      draw.text((side + 8, y), _sentence(rng, rng.randint(3, 7)), fill=fg,
                font=font)
      y += 12
  return im


def write_labelled_set(root: pathlib.Path, photos: List[pathlib.Path],
                       per_class: int, seed: int = 0,
                       classes=CLASSES) -> Dict[str, List[pathlib.Path]]:
  """root/<class>/<class>_NNN.(jpg|png): per_class images of each class."""
  rng = random.Random(seed)
  made = {}
  for name in classes:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    made[name] = []
    for i in range(per_class):
      if name == 'photo':
        im, ext = make_photo(photos, rng), 'jpg'
      elif name == 'document':
        im, ext = make_document(rng), rng.choice(('jpg', 'png'))
      else:
        im, ext = make_screenshot(rng), 'png'
      path = folder / f'{name}_{seed}_{i:03d}.{ext}'
      im.save(path, quality=90) if ext == 'jpg' else im.save(path)
      made[name].append(path)
  return made
