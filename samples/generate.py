"""Regenerates the bundled sample images (deterministic, synthetic, no downloads).

Run from the repository root: python samples/generate.py
"""

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))


def _landscape(rng, w=480, h=320):
  y = np.linspace(0, 1, h)[:, None, None]
  sky = (1 - y) * np.array([90, 150, 235]) + y * np.array([250, 200, 160])
  img = np.broadcast_to(sky, (h, w, 3)).copy()
  x = np.arange(w)
  for i, (amp, base, col) in enumerate([(30, 0.55, (70, 120, 60)),
                                        (20, 0.7, (40, 90, 40))]):
    ridge = (base * h + amp * np.sin(x / (40 + 25 * i) + i) +
             8 * rng.standard_normal(w).cumsum() / np.sqrt(w)).astype(int)
    for col_i in range(w):
      img[ridge[col_i]:, col_i] = col
  im = Image.fromarray(img.clip(0, 255).astype(np.uint8))
  ImageDraw.Draw(im).ellipse((330, 40, 390, 100), fill=(255, 240, 180))
  return im


def _city(rng, w=320, h=480):
  im = Image.new('RGB', (w, h), (200, 215, 235))
  d = ImageDraw.Draw(im)
  x = 0
  while x < w:
    bw = int(rng.integers(30, 70))
    bh = int(rng.integers(150, 420))
    shade = int(rng.integers(60, 140))
    d.rectangle((x, h - bh, x + bw, h), fill=(shade, shade - 10, shade + 20))
    for wy in range(h - bh + 10, h - 10, 18):
      for wx in range(x + 6, x + bw - 8, 12):
        if rng.random() < 0.6:
          d.rectangle((wx, wy, wx + 5, wy + 9), fill=(250, 230, 140))
    x += bw + 4
  return im


def _flowers(rng, w=400, h=400):
  im = Image.new('RGB', (w, h), (60, 110, 50))
  d = ImageDraw.Draw(im)
  for _ in range(70):
    cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(8, 26)
    col = tuple(int(c) for c in rng.integers(120, 256, 3))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
    d.ellipse((cx - r // 3, cy - r // 3, cx + r // 3, cy + r // 3),
              fill=(250, 210, 60))
  return im.filter(ImageFilter.GaussianBlur(1))


def _portrait(rng, w=300, h=400):
  y, x = np.mgrid[0:h, 0:w]
  bg = np.stack([120 + 60 * np.sin(x / 30.0), 100 + 40 * np.cos(y / 45.0),
                 160 + 0 * x], axis=-1)
  im = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
  d = ImageDraw.Draw(im)
  d.ellipse((90, 80, 210, 230), fill=(230, 190, 160))
  d.rectangle((70, 230, 230, 400), fill=(150, 40, 50))
  d.ellipse((120, 130, 135, 145), fill=(40, 40, 60))
  d.ellipse((165, 130, 180, 145), fill=(40, 40, 60))
  d.arc((125, 160, 175, 200), 20, 160, fill=(120, 40, 40), width=4)
  return im


def _style_waves(rng, s=256):
  y, x = np.mgrid[0:s, 0:s] / s
  r = 0.5 + 0.5 * np.sin(12 * x + 6 * np.sin(8 * y))
  g = 0.5 + 0.5 * np.sin(9 * y + 4 * np.cos(7 * x))
  b = 0.5 + 0.5 * np.sin(15 * (x + y))
  arr = np.stack([0.9 * r + 0.1, 0.4 * g, 0.8 * b], -1) * 255
  return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _style_mosaic(rng, s=256):
  im = Image.new('RGB', (s, s))
  d = ImageDraw.Draw(im)
  palette = [(230, 180, 40), (30, 60, 140), (200, 60, 40), (240, 240, 220),
             (20, 20, 20)]
  for _ in range(400):
    x, y = rng.integers(0, s, 2)
    r = int(rng.integers(4, 18))
    d.rectangle((x, y, x + r, y + r), fill=palette[int(rng.integers(0, 5))])
  return im


def main():
  rng = np.random.default_rng(20261129)
  content = os.path.join(HERE, 'content')
  style = os.path.join(HERE, 'style')
  os.makedirs(content, exist_ok=True)
  os.makedirs(style, exist_ok=True)
  _landscape(rng).save(os.path.join(content, 'landscape.jpg'), quality=90)
  _city(rng).save(os.path.join(content, 'city.jpg'), quality=90)
  _flowers(rng).save(os.path.join(content, 'flowers.jpg'), quality=90)
  _portrait(rng).save(os.path.join(content, 'portrait.png'))
  _style_waves(rng).save(os.path.join(style, 'waves.jpg'), quality=92)
  _style_mosaic(rng).save(os.path.join(style, 'mosaic.png'))


if __name__ == '__main__':
  main()
