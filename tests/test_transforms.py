"""Each stage alone under TestPipeline + assert_that."""

import numpy as np
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests.conftest import gradient
from transforms.decode import ReadAndDecode
from transforms.incremental import SkipDone
from transforms.inputs import ListInputs, make_input_spec
from transforms.layout import OutputLayout
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
  # What a Mac leaves beside a photo it copies (AppleDouble metadata).
  (root / 'a' / '._IMG_0001.JPG').write_bytes(b'\0\5\26\7')
  (root / 'b' / 'IMG_0001.xmp').write_text('<xmp/>')


def test_list_inputs_recursive_unique_and_counted(tmp_path):
  root = tmp_path / 'in'
  root.mkdir()
  _tree(root)
  listing = tmp_path / 'list.txt'
  # The list names a file the folder also reaches (once through '..'): it
  # must appear once.
  listing.write_text(f'# my list\n\n{root / "b" / "IMG_0001.jpg"}\n'
                     f'{root / "a" / ".." / "b" / "IMG_0001.jpg"}\n')
  specs = [make_input_spec(str(root))]
  lay = OutputLayout.create(str(tmp_path / 'out'), 'jpg', str(root))
  style = StyleRef(uri='/s/waves.jpg', label='waves')
  with TestPipeline() as p:
    listed, ignored = p | ListInputs(specs, [str(listing)], lay)
    # The planning join makes the three spellings of one file one input.
    files, _, _, pairs, _ = listed | SkipDone(
        lay, [style], 'job', 'job+limits',
        {'model': 'm', 'params': {}, 'run_id': 'r'}, force=False)
    assert_that(pairs | beam.combiners.Count.Globally(), equal_to([5]),
                label='pairs')
    assert_that(
        files | beam.Map(lambda f: (f.uri[len(str(root)) + 1:], f.key)),
        equal_to([
            ('a/IMG_0001.JPG', 'a/IMG_0001.JPG'),
            ('b/IMG_0001.jpg', 'b/IMG_0001.jpg'),
            ('a/deep/x.png', 'a/deep/x.png'),
            ('a/deep/x.jpeg', 'a/deep/x.jpeg'),
            ('b/Ölgemälde.webp', 'b/Ölgemälde.webp'),
        ]), label='files')
    assert_that(ignored | beam.Map(lambda u: u.rsplit('/', 1)[1]),
                equal_to(['.DS_Store', '._IMG_0001.JPG', 'IMG_0001.xmp']),
                label='ignored')


def test_explicit_file_kept_whatever_its_extension(tmp_path):
  f = tmp_path / 'scan.dat'
  gradient(8, 8).save(f, 'PNG')
  lay = OutputLayout.create(str(tmp_path / 'out'), 'jpg', str(tmp_path))
  with TestPipeline() as p:
    files, _ = p | ListInputs([make_input_spec(str(f))], [], lay)
    assert_that(files | beam.Map(lambda i: i.key), equal_to(['scan.dat']))


def test_read_and_decode_turns_bad_files_into_failures(tmp_path):
  good = tmp_path / 'good.png'
  gradient(300, 200).save(good)
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'\xff\xd8\xff garbage')
  empty = tmp_path / 'empty.png'
  empty.write_bytes(b'')
  items = [InputFile(uri=str(f), key=f.name) for f in (good, bad, empty)]
  items.append(InputFile(uri=str(tmp_path / 'vanished.jpg'), key='v.jpg'))
  with TestPipeline() as p:
    decoded, failed = (p | beam.Create(items) | ReadAndDecode(100, 10**8))
    assert_that(decoded | beam.Map(lambda d: (d.input.key, d.pixels.shape,
                                              d.source_width)),
                equal_to([('good.png', (67, 100, 3), 300)]), label='ok')
    assert_that(
        failed | beam.Map(lambda f: (f.input.key, f.error.split(':')[0])),
        equal_to([('bad.jpg', 'decode'), ('empty.png', 'decode'),
                  ('v.jpg', 'read')]), label='failed')


def test_decode_workers_reuse_pillow_memory_and_decode_the_same(
    tmp_path, monkeypatch):
  """Workers pool Pillow's image blocks (transforms/image_memory.py): the
  pixels are those of a process without the pool; a user's own
  PILLOW_BLOCK_SIZE / PILLOW_BLOCKS_MAX is left alone."""
  from transforms import image_memory
  from transforms.decode import decode_image
  for name in ('PILLOW_BLOCK_SIZE', 'PILLOW_BLOCKS_MAX'):
    monkeypatch.delenv(name, raising=False)
  defaults = Image.core.get_block_size(), Image.core.get_blocks_max()
  monkeypatch.setattr(image_memory, '_done', False)
  Image.core.set_block_size(16 << 20)
  Image.core.set_blocks_max(0)
  try:
    items, expected = [], []
    for i, (w, h) in enumerate(((900, 600), (600, 900), (1200, 500)) * 2):
      f = tmp_path / f'{i}.jpg'
      gradient(w, h, seed=i).save(f, quality=90)
      items.append(InputFile(uri=str(f), key=f.name))
      expected.append((f.name, decode_image(f.read_bytes(), 256)[0]))
    with TestPipeline() as p:
      decoded, _ = p | beam.Create(items) | ReadAndDecode(256, 10**8)
      assert_that(decoded | beam.Map(lambda d: (d.input.key, d.pixels)),
                  equal_to(expected, equals_fn=lambda a, b: a[0] == b[0] and
                           np.array_equal(a[1], b[1])))
    assert Image.core.get_block_size() == image_memory.BLOCK_BYTES
    assert Image.core.get_blocks_max() == (image_memory.POOL_BYTES //
                                           image_memory.BLOCK_BYTES)
    monkeypatch.setattr(image_memory, '_done', False)
    monkeypatch.setenv('PILLOW_BLOCKS_MAX', '3')
    Image.core.set_blocks_max(3)
    assert image_memory.reuse_image_memory() is False
    assert Image.core.get_blocks_max() == 3
  finally:
    Image.core.set_block_size(defaults[0])
    Image.core.set_blocks_max(defaults[1])


def test_stylize_batches_mixed_shapes_keep_their_sizes(tmp_path):
  style = tmp_path / 'style.png'
  Image.new('RGB', (64, 64), (200, 30, 30)).save(style)
  shapes = [(30, 40), (30, 40), (40, 30), (1, 1), (7, 300)]
  decoded = []
  from transforms.records import DecodedImage
  for i, (h, w) in enumerate(shapes):
    pixels = np.asarray(gradient(w, h, seed=i))
    decoded.append(DecodedImage(input=InputFile(uri=f'/x/{i}.png',
                                                key=f'{i}.png', todo=('red',)),
                                pixels=pixels, source_width=w,
                                source_height=h))
  styles = [StyleRef(uri=str(style), label='red')]
  with TestPipeline() as p:
    ok, failed = (p | beam.Create(decoded) |
                  Stylize('builtin', styles, 64, batch_size=4, tf_threads=0))
    assert_that(ok | beam.Map(lambda s: (s.input.key, s.pixels.shape[:2])),
                equal_to([(f'{i}.png', s) for i, s in enumerate(shapes)]),
                label='ok')
    # The builtin model moves colours to the style's: red dominates.
    assert_that(ok | beam.Map(lambda s: bool(
        s.pixels[..., 0].mean() > s.pixels[..., 1].mean() + 40)),
                equal_to([True] * len(shapes)), label='red')
    assert_that(failed, equal_to([]), label='failed')
