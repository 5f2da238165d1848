"""Per-file bounds: bytes read, decode memory, untiled pixels (issue 9, item 4)."""

import io
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from beam_jobs.stylize import run
from tests.conftest import gradient, image_bytes
from transforms.decode import ReadAndDecode, decode_photo, read_bounded
from transforms.models import tiling
from transforms.models.base import StyleParams, Stylizer, auto_tile_side
from transforms.records import InputFile
from transforms.stylize import BatchByBucket


def manifest_rows(out):
  """The manifest's rows by input file name."""
  from tests.test_end_to_end import manifest_rows as rows  # pylint: disable=import-outside-toplevel
  return {os.path.basename(r['input']): r for r in rows(out)}


# ------------------------------------------------------- --max_input_bytes --

def test_file_over_max_input_bytes_is_a_failed_row_with_the_reason(
    tmp_path, samples):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  big = inputs / 'big.jpg'
  big.write_bytes(image_bytes(gradient(200, 150), 'JPEG', quality=95))
  Image.new('RGB', (8, 8), (1, 2, 3)).save(inputs / 'small.png')
  assert os.path.getsize(big) > 4000 > os.path.getsize(inputs / 'small.png')
  # Style images are held to the same limit: a small one.
  style = tmp_path / 'style.png'
  gradient(32, 32, seed=3).save(style)
  assert os.path.getsize(style) < 4000
  out = tmp_path / 'out'
  run(['--input', str(inputs), '--style', str(style),
       '--output', str(out), '--model', 'builtin', '--max_input_bytes', '4000'])
  rows = manifest_rows(out)
  assert rows['small.png']['status'] == 'ok'
  failed = rows['big.jpg']
  assert failed['status'] == 'failed' and failed['output'] is None
  assert failed['error'] == (
      f'read: file is over the --max_input_bytes limit '
      f'({os.path.getsize(big)} bytes; not read, limit 4000 bytes)')
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['top_failure_reasons'] == [
      {'reason': 'read: file is over the --max_input_bytes limit', 'count': 1}]


def test_file_of_unknown_or_grown_size_is_bounded_while_read(tmp_path):
  big = tmp_path / 'grown.png'
  big.write_bytes(image_bytes(gradient(300, 200), 'PNG'))
  small = tmp_path / 'small.png'
  Image.new('RGB', (8, 8)).save(small)
  # Listed before it grew (size 10), or listed with no size at all (-1).
  files = [InputFile(uri=str(big), key='grown.png', size_bytes=10, todo=('s',)),
           InputFile(uri=str(big), key='x.png', size_bytes=-1, todo=('s',)),
           InputFile(uri=str(small), key='small.png', size_bytes=-1,
                     todo=('s',))]
  with TestPipeline() as p:
    decoded, failed = (p | beam.Create(files)
                       | ReadAndDecode(None, 10**8, max_bytes=5000))
    assert_that(decoded | beam.Map(lambda d: d.input.key),
                equal_to(['small.png']), label='decoded')
    assert_that(failed | beam.Map(lambda f: (f.input.key, f.error)), equal_to([
        ('grown.png', 'read: file is over the --max_input_bytes limit (more '
         'than 5000 bytes read, listed as 10, limit 5000 bytes)'),
        ('x.png', 'read: file is over the --max_input_bytes limit (more than '
         '5000 bytes read, listed as -1, limit 5000 bytes)')]), label='failed')


class CountingReader(io.BytesIO):
  """A real file object that returns at most `step` bytes a read and counts."""

  def __init__(self, data, step):
    super().__init__(data)
    self.step = step
    self.total = 0

  def read(self, size=-1):
    size = self.step if size is None or size < 0 else min(size, self.step)
    chunk = super().read(size)
    self.total += len(chunk)
    return chunk


def test_bounded_read_never_reads_past_the_limit():
  data = os.urandom(1 << 20)
  reader = CountingReader(data, step=4096)
  got = read_bounded(reader, 10_000)
  assert len(got) == 10_001 and reader.total == 10_001
  # Short reads are continued to the end of a file within the limit.
  reader = CountingReader(data[:9000], step=1000)
  assert read_bounded(reader, 10_000) == data[:9000]
  assert read_bounded(io.BytesIO(b''), 10) == b''


# ---------------------------------------------------- decode memory paths --

def test_sixteen_bit_big_endian_tiff_is_reduced_correctly():
  # Pillow resamples 'I;16B' wrongly; it must go to 8 bits first.
  values = (np.arange(96 * 64).reshape(64, 96) * 10).astype('>u2')
  im = Image.frombuffer('I;16B', (96, 64), values.tobytes(), 'raw', 'I;16B',
                        0, 1)
  data = image_bytes(im, 'TIFF')
  assert Image.open(io.BytesIO(data)).mode == 'I;16B'
  arr = decode_photo(data, max_size=48).pixels
  ref = np.asarray(Image.fromarray(values.astype(np.float32)).resize(
      (48, 32), Image.Resampling.LANCZOS)) / 65535 * 255
  assert arr.shape == (32, 48, 3)
  assert np.abs(arr[..., 0] - ref).max() <= 2


def test_sixteen_bit_png_reduced_before_conversion_matches_reference():
  values = (np.random.default_rng(3).random((300, 400)) * 65535).astype(
      np.uint16)
  data = image_bytes(Image.fromarray(values), 'PNG')
  arr = decode_photo(data, max_size=100).pixels
  ref = np.asarray(Image.fromarray(values.astype(np.float32)).resize(
      (100, 75), Image.Resampling.LANCZOS)) / 65535 * 255
  assert arr.shape == (75, 100, 3)
  assert np.abs(arr[..., 0].astype(float) - np.clip(ref, 0, 255)).max() <= 1.5


@pytest.mark.parametrize('mode', ['P', 'RGBA', 'LA', '1', 'CMYK'])
def test_reduce_first_gives_the_same_picture_as_convert_first(mode):
  im = gradient(240, 160).convert(mode)
  fmt = 'TIFF' if mode == 'CMYK' else 'PNG'
  arr = decode_photo(image_bytes(im, fmt), max_size=60).pixels
  if mode in ('RGBA', 'LA'):
    ref_im = Image.alpha_composite(
        Image.new('RGBA', im.size, 'white'), im.convert('RGBA')).convert('RGB')
  else:
    ref_im = im.convert('RGB')
  ref = np.asarray(ref_im.resize((60, 40), Image.Resampling.LANCZOS), int)
  assert arr.shape == (40, 60, 3)
  assert np.abs(arr.astype(int) - ref).mean() < 2


# --------------------------------------------------- --max_untiled_pixels --

class Pointwise(Stylizer):
  """A real adapter whose network is a pixel-wise function (1 - x), so
  tiled and untiled results must agree exactly; records the largest call."""

  kind = 'pointwise'

  def __init__(self, fixed_size=None):
    self.fixed_size = fixed_size
    self.largest = 0

  def prepare_style(self, style):
    return None

  def run_batch(self, content, style_state):
    self.largest = max(self.largest, content.shape[1] * content.shape[2])
    return 1.0 - content


@pytest.mark.parametrize('params', [
    StyleParams(),
    StyleParams(strength=0.4, preserve_colors=True),
    StyleParams(tile_size=96, tile_overlap=16)])
def test_images_over_the_budget_are_tiled_with_the_same_result(params):
  image = np.asarray(gradient(333, 250, seed=4))[np.newaxis]
  whole = Pointwise().stylize(image, None, params)
  model = Pointwise()
  budget = dict(vars(params), max_untiled_pixels=128 * 128)
  tiled = model.stylize(image, None, StyleParams(**budget))
  assert tiled.shape == image.shape
  assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
  side = params.tile_size or auto_tile_side(128 * 128)
  assert model.largest <= side * side


def test_fixed_size_network_over_the_budget():
  image = np.asarray(gradient(500, 300, seed=5))[np.newaxis]
  model = Pointwise(fixed_size=(64, 64))
  out = model.stylize(image, None, StyleParams(max_untiled_pixels=100 * 100))
  assert out.shape == image.shape and model.largest == 64 * 64
  assert np.abs(out.astype(int) - (255 - image.astype(int))).max() <= 1


def test_run_tiled_uint8_matches_run_tiled():
  image = np.asarray(gradient(300, 410, seed=6))

  def fn(t):
    x = t.astype(np.float32) / 255.0 if t.dtype == np.uint8 else t
    # Not pointwise: depends on the tile's mean, so tiles differ and the
    # feathered blending is what is being compared.
    return x * 0.5 + x.mean() * 0.5

  ref = tiling.run_tiled(image.astype(np.float32) / 255.0, fn, 128, 32)
  got = tiling.run_tiled_uint8(image, fn, 128, 32)
  assert np.abs(got.astype(int) - tiling.to_uint8(ref).astype(int)).max() <= 1


def _decoded(height, width, todo=('s',)):
  from transforms.records import DecodedImage, InputFile
  return DecodedImage(input=InputFile(uri=f'/{height}x{width}', todo=todo),
                      pixels=np.zeros((height, width, 3), np.uint8),
                      source_width=width, source_height=height)


def test_batches_form_by_bucket_and_large_images_go_alone():
  """A mixed archive: batches of one bucket shape (and one set of styles
  to do), full ones first; an image over the untiled budget alone; every
  image exactly once."""
  from transforms.models.engine.buckets import exact_shape as bucket_shape
  sizes = [(768, 1024), (1024, 768), (683, 1024), (768, 1024), (680, 1024),
           (1024, 683), (768, 1024), (576, 1024), (2000, 2000),
           (768, 1024), (1024, 768)]
  items = [_decoded(h, w) for h, w in sizes] + [_decoded(768, 1024, ('t',))]
  with TestPipeline() as p:
    batches = (p | beam.Create(items)
               | beam.ParDo(BatchByBucket(batch_size=3,
                                          max_untiled_pixels=2048 * 1024))
               | beam.Map(lambda b: [(i.pixels.shape[:2], i.input.todo)
                                     for i in b]))
    assert_that(batches | beam.Filter(lambda b: len({
        (bucket_shape(*s), t) for s, t in b}) > 1), equal_to([]),
                label='one bucket and one todo per batch')
    assert_that(batches | beam.Filter(lambda b: any(
        s == (2000, 2000) for s, _ in b) and len(b) > 1), equal_to([]),
                label='a large image alone')
    assert_that(batches | beam.Filter(lambda b: len(b) > 3), equal_to([]),
                label='at most batch_size')
    assert_that(batches | beam.FlatMap(lambda b: [s for s, _ in b]),
                equal_to([i.pixels.shape[:2] for i in items]),
                label='every image once')
    # The 768x1024 landscapes (4) form a full batch of 3.
    assert_that(batches | beam.Filter(lambda b: b == [((768, 1024), ('s',))] *
                                      3) | beam.combiners.Count.Globally(),
                equal_to([1]), label='a full batch')


def _export_small_input_model(path, max_pixels):
  """A real SavedModel that refuses inputs over max_pixels, like a network
  that runs out of memory on a whole large photo."""
  import tensorflow as tf

  class SmallInputs(tf.Module):

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, content, style):
      pixels = tf.shape(content)[1] * tf.shape(content)[2]
      check = tf.debugging.assert_less_equal(
          pixels, max_pixels, message='input too large for this network')
      with tf.control_dependencies([check]):
        return [1.0 - content]

  tf.saved_model.save(SmallInputs(), str(path))
  return path


def test_max_size_0_tiles_above_the_pixel_budget(tmp_path, samples):
  model = _export_small_input_model(tmp_path / 'small-inputs', 300 * 300)
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(700, 500, seed=7).save(inputs / 'large.png')
  style = str(samples / 'style' / 'waves.jpg')
  # On TensorFlow: OpenVINO drops the model's assertion when it converts.
  base = ['--input', str(inputs), '--style', style, '--model', str(model),
          '--max_size', '0', '--output_format', 'png', '--engine', 'tf']
  # Untiled (a budget above the image), the network refuses the photo...
  run(base + ['--output', str(tmp_path / 'whole'),
              '--max_untiled_pixels', str(1000 * 1000)])
  row = manifest_rows(tmp_path / 'whole')['large.png']
  assert row['status'] == 'failed'
  assert 'input too large for this network' in row['error']
  # ...with a budget, it only ever sees tiles of 256 x 256.
  run(base + ['--output', str(tmp_path / 'tiled'),
              '--max_untiled_pixels', str(256 * 256)])
  row = manifest_rows(tmp_path / 'tiled')['large.png']
  assert row['status'] == 'ok', row
  assert (row['width'], row['height']) == (700, 500)
  with Image.open(row['output']) as im:
    got = np.asarray(im.convert('RGB'), int)
  want = 255 - np.asarray(gradient(700, 500, seed=7), int)
  assert np.abs(got - want).max() <= 1  # Tiles blend without seams.


def test_builtin_model_max_size_0_over_the_budget(tmp_path, samples):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(600, 400, seed=8).save(inputs / 'photo.jpg')
  gradient(60, 40, seed=9).save(inputs / 'small.jpg')
  out = tmp_path / 'out'
  run(['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
       '--output', str(out), '--model', 'builtin', '--max_size', '0',
       '--max_untiled_pixels', str(256 * 256)])
  rows = manifest_rows(out)
  assert {r['status'] for r in rows.values()} == {'ok'}
  assert (rows['photo.jpg']['width'], rows['photo.jpg']['height']) == (600, 400)
  assert (rows['small.jpg']['width'], rows['small.jpg']['height']) == (60, 40)


# ------------------------------------------------------ bytes in flight --

def test_io_stages_bound_the_bytes_they_hold_in_flight():
  """OverlappedDoFn keeps the pending elements' weights under its byte
  budget (a heavier element runs alone), not only their number, and
  keeps the order."""
  import threading
  from transforms.overlap import OverlappedDoFn

  class Held(OverlappedDoFn):
    def __init__(self):
      super().__init__(threads=4, max_bytes_in_flight=250)
      self.lock = threading.Lock()
      self.pending_bytes = []

    def weight(self, element):
      return element[1]

    def work(self, element):
      with self.lock:
        self.pending_bytes.append(self._bytes)
      return [element[0]], {}

  fn = Held()
  fn.setup()
  fn.start_bundle()
  elements = [(i, 100) for i in range(6)] + [(6, 1000), (7, 100)]
  out = []
  from apache_beam.transforms.window import GlobalWindow
  for e in elements:
    out += [w.value for w in fn.process(e, timestamp=0,
                                        window=GlobalWindow())]
  out += [w.value for w in fn.finish_bundle()]
  fn.teardown()
  assert out == list(range(8))
  # At most two 100-byte elements at a time; the 1000-byte one alone.
  assert max(b for b in fn.pending_bytes) <= 1000
  assert all(b <= 250 or b == 1000 for b in fn.pending_bytes)


def test_byte_budget_holds_at_most_its_limit_and_a_huge_item_alone():
  """The report's thumbnails are made by a thread pool within the I/O
  stages' byte budget (transforms/overlap.ByteBudget): whatever the timing,
  the bytes reserved at once never pass the limit, except one reservation
  larger than the limit, which then holds the budget alone."""
  import threading
  from concurrent.futures import ThreadPoolExecutor
  from transforms.overlap import ByteBudget
  budget = ByteBudget(100)
  held, seen, lock = [], [], threading.Lock()

  def work(n):
    with budget.reserve(n):
      with lock:
        held.append(n)
        seen.append(list(held))
      with lock:
        held.remove(n)

  sizes = [30, 40, 30, 250, 10, 60, 60, 100, 5] * 20
  with ThreadPoolExecutor(8) as pool:
    list(pool.map(work, sizes))
  assert len(seen) == len(sizes)
  for together in seen:
    assert sum(together) <= 100 or together == [250], together
