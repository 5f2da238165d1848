"""Style controls: parsing, tiling, colour preservation (no shared data needed)."""

import numpy as np
import pytest

from transforms.color import preserve_colors, rgb_to_ycc
from transforms.models import tiling
from transforms.models.base import StyleParams
from transforms.models.loader import load_stylizer
from transforms.styles import parse_styles


def test_plain_styles_stay_separate(tmp_path):
  refs = parse_styles(['/s/a.jpg', '/s/b.png'])
  assert [r.label for r in refs] == ['a', 'b']
  assert refs[0].parts == (('/s/a.jpg', 1.0),)


def test_weighted_flags_pool_into_one_blend():
  refs = parse_styles(['/s/a.jpg=0.7', '/s/c.jpg', '/s/b.jpg=0.3'])
  assert [r.label for r in refs] == ['a-70+b-30', 'c']
  assert refs[0].parts == (('/s/a.jpg', 0.7), ('/s/b.jpg', 0.3))
  assert refs[0].uri == '/s/a.jpg=0.7,/s/b.jpg=0.3'


def test_comma_blend_is_its_own_style_and_weights_normalise():
  refs = parse_styles(['/s/a.jpg=1,/s/b.jpg=3', '/s/a.jpg'])
  assert refs[0].parts == (('/s/a.jpg', 0.25), ('/s/b.jpg', 0.75))
  assert refs[1].label == 'a'


def test_comma_in_a_file_name_is_not_a_blend():
  refs = parse_styles(['/s/still life, 1890.jpg'])
  assert refs[0].parts == (('/s/still life, 1890.jpg', 1.0),)


def test_non_positive_weight_refused():
  with pytest.raises(ValueError, match='positive'):
    parse_styles(['/s/a.jpg=0', '/s/b.jpg=1'])


def test_tile_starts_cover_and_overlap():
  assert tiling.tile_starts(300, 384, 64) == [0]
  starts = tiling.tile_starts(1000, 384, 64)
  assert starts[0] == 0 and starts[-1] == 1000 - 384
  assert all(b - a <= 384 - 64 for a, b in zip(starts, starts[1:]))


def test_run_tiled_identity_is_exact():
  img = np.random.default_rng(0).random((500, 700, 3), dtype=np.float32)
  out = tiling.run_tiled(img, lambda t: t, 128, 32)
  np.testing.assert_allclose(out, img, atol=1e-6)


def test_preserve_colors_keeps_chroma_takes_luminance():
  rng = np.random.default_rng(1)
  # Values near mid-grey, so the swapped colours stay inside the RGB cube.
  content = rng.random((20, 30, 3), dtype=np.float32) * 0.2 + 0.4
  stylized = rng.random((20, 30, 3), dtype=np.float32) * 0.2 + 0.4
  out = preserve_colors(content, stylized)
  np.testing.assert_allclose(rgb_to_ycc(out)[..., 1:],
                             rgb_to_ycc(content)[..., 1:], atol=1e-4)
  np.testing.assert_allclose(rgb_to_ycc(out)[..., 0],
                             rgb_to_ycc(stylized)[..., 0], atol=1e-4)


def test_pixel_strength_fallback_for_models_hiding_the_vector(tmp_path):
  model = load_stylizer('builtin')
  assert not model.has_style_vector
  style = model.prepare_style(np.full((64, 64, 3), [0.9, 0.1, 0.1], np.float32))
  content = (np.random.default_rng(2).random((1, 40, 40, 3)) * 255).astype(
      np.uint8)
  full = model.stylize(content, style, StyleParams(strength=1.0)).astype(float)
  none = model.stylize(content, style, StyleParams(strength=0.0)).astype(float)
  half = model.stylize(content, style, StyleParams(strength=0.5)).astype(float)
  np.testing.assert_allclose(none, content, atol=1)
  np.testing.assert_allclose(half, (full + content) / 2, atol=1.01)


def test_pixel_blend_of_styles_for_models_hiding_the_vector():
  model = load_stylizer('builtin')
  red = np.full((64, 64, 3), [0.9, 0.1, 0.1], np.float32)
  blue = np.full((64, 64, 3), [0.1, 0.1, 0.9], np.float32)
  content = (np.random.default_rng(3).random((1, 32, 32, 3)) * 255).astype(
      np.uint8)
  blend = model.prepare_blend([(0.5, red), (0.5, blue)])
  out = model.stylize(content, blend).astype(float)
  r = model.stylize(content, model.prepare_style(red)).astype(float)
  b = model.stylize(content, model.prepare_style(blue)).astype(float)
  np.testing.assert_allclose(out, (r + b) / 2, atol=1.01)
