"""Each stage alone under TestPipeline + assert_that."""

import numpy as np
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests.conftest import gradient
from transforms import paths
from transforms.decode import ReadAndDecode
from transforms.inputs import ListInputs
from transforms.records import InputFile, StyleRef
from transforms.stylize import Stylize


def _tree(root):
  (root / 'a' / 'deep').mkdir(parents=True)
  (root / 'b').mkdir()
  gradient(20, 10).save(root / 'a' / 'IMG_0001.JPG')
  gradient(20, 10).save(root / 'b' / 'IMG_0001.jpg')
  gradient(20, 10).save(root / 'a' / 'deep' / 'x.png')
  gradient(20, 10).save(root / 'a' / 'deep' / 'x.jpeg')
  gradient(20, 10).save(root / 'b' / 'Ölgemälde.webp')
  (root / 'a' / '.DS_Store').write_bytes(b'\0\0')
  (root / 'b' / 'IMG_0001.xmp').write_text('<xmp/>')


def test_list_inputs_recursive_unique_and_counted(tmp_path):
  root = tmp_path / 'in'
  root.mkdir()
  _tree(root)
  listing = tmp_path / 'list.txt'
  # The list names a file the folder also reaches: it must appear once.
  listing.write_text(f'# my list\n\n{root / "b" / "IMG_0001.jpg"}\n')
  specs = [paths.make_input_spec(str(root))]
  with TestPipeline() as p:
    files, ignored = p | ListInputs(specs, [str(listing)], str(root))
    assert_that(
        files | beam.Map(lambda f: (f.uri[len(str(root)) + 1:], f.out_stem)),
        equal_to([
            ('a/IMG_0001.JPG', 'a/IMG_0001'),
            ('b/IMG_0001.jpg', 'b/IMG_0001'),
            ('a/deep/x.png', 'a/deep/x.png'),
            ('a/deep/x.jpeg', 'a/deep/x.jpeg'),
            ('b/Ölgemälde.webp', 'b/Ölgemälde'),
        ]), label='files')
    assert_that(ignored | beam.Map(lambda u: u.rsplit('/', 1)[1]),
                equal_to(['.DS_Store', 'IMG_0001.xmp']), label='ignored')


def test_explicit_file_kept_whatever_its_extension(tmp_path):
  f = tmp_path / 'scan.dat'
  gradient(8, 8).save(f, 'PNG')
  with TestPipeline() as p:
    files, _ = p | ListInputs([paths.make_input_spec(str(f))], [],
                              str(tmp_path))
    assert_that(files | beam.Map(lambda i: i.out_stem), equal_to(['scan']))


def test_read_and_decode_turns_bad_files_into_failures(tmp_path):
  good = tmp_path / 'good.png'
  gradient(300, 200).save(good)
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'\xff\xd8\xff garbage')
  empty = tmp_path / 'empty.png'
  empty.write_bytes(b'')
  items = [InputFile(uri=str(f), rel=f.name) for f in (good, bad, empty)]
  items.append(InputFile(uri=str(tmp_path / 'vanished.jpg'), rel='v.jpg'))
  with TestPipeline() as p:
    decoded, failed = (p | beam.Create(items) | ReadAndDecode(100, 10**8))
    assert_that(decoded | beam.Map(lambda d: (d.input.rel, d.pixels.shape,
                                              d.source_width)),
                equal_to([('good.png', (67, 100, 3), 300)]), label='ok')
    assert_that(
        failed | beam.Map(lambda f: (f.input.rel, f.error.split(':')[0])),
        equal_to([('bad.jpg', 'decode'), ('empty.png', 'decode'),
                  ('v.jpg', 'read')]), label='failed')


def test_stylize_batches_mixed_shapes_keep_their_sizes(tmp_path):
  style = tmp_path / 'style.png'
  Image.new('RGB', (64, 64), (200, 30, 30)).save(style)
  shapes = [(30, 40), (30, 40), (40, 30), (1, 1), (7, 300)]
  decoded = []
  from transforms.records import DecodedImage
  for i, (h, w) in enumerate(shapes):
    pixels = np.asarray(gradient(w, h, seed=i))
    decoded.append(DecodedImage(input=InputFile(uri=f'/x/{i}.png',
                                                rel=f'{i}.png', todo=('red',)),
                                pixels=pixels, source_width=w,
                                source_height=h))
  styles = [StyleRef(uri=str(style), label='red')]
  with TestPipeline() as p:
    ok, failed = (p | beam.Create(decoded) |
                  Stylize('builtin', styles, 64, batch_size=4, tf_threads=0))
    assert_that(ok | beam.Map(lambda s: (s.input.rel, s.pixels.shape[:2])),
                equal_to([(f'{i}.png', s) for i, s in enumerate(shapes)]),
                label='ok')
    # The builtin model moves colours to the style's: red dominates.
    assert_that(ok | beam.Map(lambda s: bool(
        s.pixels[..., 0].mean() > s.pixels[..., 1].mean() + 40)),
                equal_to([True] * len(shapes)), label='red')
    assert_that(failed, equal_to([]), label='failed')
