"""Engine core without models: capabilities, 'auto', buckets, padding, the
bottleneck search on small synthetic graphs, the request pool."""

import threading

import numpy as np
import pytest

from transforms.models.base import pad_to
from transforms.models.engine import bottleneck, buckets, capabilities, tiles
from transforms.models.engine.bottleneck import Graph, Tensor
from transforms.models import tiling

# -- capabilities and 'auto' -------------------------------------------------

SAPPHIRE_RAPIDS = {'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile'}
COOPER_LAKE = {'avx512f', 'avx512_bf16'}
SKYLAKE = {'avx2', 'avx512f', 'avx512bw'}


def test_bf16_from_cpu_flags():
  assert capabilities.has_bf16(SAPPHIRE_RAPIDS)
  assert capabilities.has_bf16(COOPER_LAKE)
  assert capabilities.has_bf16({'amx_bf16'})
  assert not capabilities.has_bf16(SKYLAKE)


def test_bf16_from_openvino_capabilities_without_flags():
  assert capabilities.has_bf16(set(), ['FP32', 'BF16', 'INT8'])
  assert not capabilities.has_bf16(set(), ['FP32', 'FP16', 'INT8'])


def test_cpu_without_bf16_resolves_auto_to_f32():
  bf16 = capabilities.has_bf16(SKYLAKE)
  assert capabilities.resolve('auto', 'auto', ov_available=True,
                              bf16=bf16) == ('openvino', 'f32')
  assert capabilities.resolve_precision(
      'auto', 'openvino', bf16=capabilities.has_bf16(SAPPHIRE_RAPIDS)) == 'bf16'


def test_explicit_bf16_without_hardware_runs_f32(caplog):
  assert capabilities.resolve_precision('bf16', 'openvino', bf16=False) == 'f32'
  assert 'runs in f32' in caplog.text


def test_explicit_f32_on_bf16_hardware_stays_f32():
  assert capabilities.resolve_precision('f32', 'openvino', bf16=True) == 'f32'
  assert capabilities.resolve('openvino', 'f32', True, True) == (
      'openvino', 'f32')


def test_engine_resolution():
  assert capabilities.resolve_engine('auto', ov_available=False) == 'tf'
  assert capabilities.resolve_engine('auto', ov_available=True) == 'openvino'
  assert capabilities.resolve('tf', 'auto', True, True) == ('tf', 'f32')
  with pytest.raises(ValueError, match='needs --engine openvino'):
    capabilities.resolve('tf', 'bf16', True, True)
  with pytest.raises(ValueError, match='openvino package'):
    capabilities.resolve_engine('openvino', ov_available=False)
  with pytest.raises(ValueError):
    capabilities.resolve_engine('onnx')
  with pytest.raises(ValueError):
    capabilities.resolve_precision('fp16')


def test_this_machine():
  # This machine has AMX (the numbers come from it); elsewhere the
  # flags decide.
  flags = capabilities.cpu_flags()
  assert capabilities.has_bf16() == bool(flags & capabilities.BF16_CPU_FLAGS)


# -- buckets -----------------------------------------------------------------

FORMATS = {  # (height, width) at --max_size 1024 and 512 -> bucket.
    (768, 1024): (768, 1024), (683, 1024): (688, 1024),
    (576, 1024): (576, 1024), (1024, 1024): (1024, 1024),
    (384, 512): (384, 512), (341, 512): (344, 512), (288, 512): (288, 512),
}


def test_photo_formats_need_no_padding_beyond_the_tf_engine():
  for (h, w), bucket in FORMATS.items():
    assert buckets.bucket_shape(h, w) == bucket
    assert buckets.bucket_shape(w, h) == bucket[::-1]  # Portrait.
    assert bucket == buckets.reference_shape(h, w)


def test_few_buckets_per_long_side():
  shapes = {buckets.bucket_shape(h, 1024) for h in range(576, 1025)}
  assert shapes == {(576, 1024), (688, 1024), (768, 1024), (1024, 1024)}
  portrait = {buckets.bucket_shape(1024, w) for w in range(576, 1025)}
  assert portrait == {(b, a) for a, b in shapes}
  assert {buckets.bucket_shape(h, 512) for h in range(288, 513)} == {
      (288, 512), (344, 512), (384, 512), (512, 512)}


def test_bucket_covers_image_and_reference():
  rng = np.random.default_rng(0)
  for h, w in rng.integers(1, 2100, size=(500, 2)):
    bh, bw = buckets.bucket_shape(int(h), int(w))
    rh, rw = buckets.reference_shape(int(h), int(w))
    assert bh >= rh >= h and bw >= rw >= w
    assert bh % 8 == 0 and bw % 8 == 0
    assert max(bh, bw) % buckets.LONG_MULTIPLE == 0


def test_panoramas_are_not_padded_to_16_9():
  assert buckets.bucket_shape(300, 1024) == (320, 1024)
  assert buckets.padding_waste(300, 1024) < 0.07


@pytest.mark.parametrize('shape,bucket', [((683, 1024), (704, 1024)),
                                          ((5, 7), (64, 64)),
                                          ((1, 1), (40, 64)),
                                          ((30, 200), (96, 256))])
def test_pad_into_equals_numpy_padding(shape, bucket):
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
  buf = np.zeros(bucket + (3,), np.uint8)
  buckets.pad_into(buf, image)
  rh, rw = buckets.reference_shape(*shape)
  rh, rw = min(rh, bucket[0]), min(rw, bucket[1])
  expected = pad_to(image[np.newaxis], rh, rw)[0]  # What the TF engine does.
  expected = np.pad(expected, ((0, bucket[0] - rh), (0, bucket[1] - rw),
                               (0, 0)), mode='reflect')
  np.testing.assert_array_equal(buf, expected)
  out = np.empty_like(image)
  buckets.crop_into(out, buf)
  np.testing.assert_array_equal(out, image)


def test_pad_into_converts_once():
  image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  buf = np.zeros((8, 8, 3), np.float32)
  buckets.pad_into(buf, image, scale=1 / 255)
  expected = image.astype(np.float32)
  expected *= 1.0 / 255.0
  np.testing.assert_array_equal(buf[:2, :3], expected)


# -- tiles in one batch --------------------------------------------------------


def test_batched_tiles_equal_one_by_one():
  rng = np.random.default_rng(2)
  images = rng.random((2, 500, 700, 3), dtype=np.float32)
  fn = lambda t: np.sqrt(t) * 0.5 + t[..., ::-1] * 0.25  # Per pixel.
  calls = []

  def batched(t):
    calls.append(len(t))
    return fn(t)

  out = tiles.run_tiled_batch(images, batched, 384, 64)
  for img, o in zip(images, out):
    np.testing.assert_array_equal(
        o, tiling.run_tiled(img, lambda t: fn(t), 384, 64))
  assert calls == [4, 4]  # 2x2 tiles per image, one call each.
  small = tiles.run_tiled_batch(images[:, :300, :300], batched, 384, 64)
  assert calls[-1] == 2 and small.shape == (2, 300, 300, 3)


# -- the bottleneck search on synthetic graphs ----------------------------------


def _graph(edges, shapes, content='content', style='style', out='out'):
  """edges: op -> inputs (op names; one output each, named op:0)."""
  ops = {op: [f'{i}:0' for i in inputs] for op, inputs in edges.items()}
  for op in (content, style):
    ops.setdefault(op, [])
  tensors = {f'{op}:0': Tensor(f'{op}:0', op, shapes.get(op, (None,) * 4),
                               True) for op in ops}
  return Graph(ops, tensors, content, style, [f'{out}:0'])


def test_finds_the_last_vector_cut():
  g = _graph({
      'feat': ['style'], 'pool': ['feat'], 'conv': ['pool'], 'bias': ['conv'],
      'clip': ['bias'], 'shape': ['content'], 'bcast': ['clip', 'shape'],
      'gamma': ['bcast'], 'beta': ['bcast'], 'norm': ['content', 'gamma',
                                                      'beta'],
      'out': ['norm']},
      {'pool': (None, 1, 1, 1280), 'conv': (None, 1, 1, 100),
       'bias': (None, 1, 1, 100), 'clip': (None, 1, 1, 100),
       'bcast': (None, 1, 1, 100), 'gamma': (None, 32), 'beta': (None, 32)})
  found = bottleneck.find_bottleneck(g)
  # Not bcast (it depends on the content's shape), not gamma/beta (neither
  # alone carries all of the style), not pool/conv/bias (earlier).
  assert found.name == 'clip:0'


def test_no_cut_when_style_bypasses_the_vector():
  g = _graph({
      'vec': ['style'], 'mean': ['style'], 'mix': ['content', 'vec', 'mean'],
      'out': ['mix']},
      {'vec': (None, 1, 1, 100), 'mean': (None, 1, 3)})
  assert bottleneck.find_bottleneck(g) is None


def test_colour_statistics_are_no_vector():
  # The builtin model's shape: a [B, 1, 3] mean and a [B, 3, 3] covariance.
  g = _graph({'mean': ['style'], 'cov': ['style', 'mean'],
              'out': ['content', 'mean', 'cov']},
             {'mean': (None, 1, 3), 'cov': (None, 3, 3)})
  assert bottleneck.find_bottleneck(g) is None


def test_rank_two_vector_and_ignored_style():
  g = _graph({'vec': ['style'], 'out': ['content', 'vec']},
             {'vec': (None, 64)})
  assert bottleneck.find_bottleneck(g).name == 'vec:0'
  g = _graph({'out': ['content']}, {})
  assert bottleneck.find_bottleneck(g) is None


# -- the request pool ----------------------------------------------------------


class _FakeTensor:

  def __init__(self, shape):
    self.data = np.zeros(shape, np.float32)


class _FakeRequest:
  """An infer request that doubles its input, finishing on a timer."""

  def __init__(self, log):
    self.input_tensors = [_FakeTensor((1, 4))]
    self.output_tensors = [_FakeTensor((1, 4))]
    self._thread = None
    self._log = log

  def start_async(self):
    def work():
      self._log.append(1)
      assert len(self._log) <= 2  # Never more in flight than the pool.
      self.output_tensors[0].data[...] = self.input_tensors[0].data * 2
      threading.Event().wait(0.002)
      self._log.pop()
    self._thread = threading.Thread(target=work)
    self._thread.start()

  def wait(self):
    self._thread.join()


class _FakeCompiled:

  def __init__(self):
    self.log = []
    self.releases = 0

  def get_property(self, name):
    assert name == 'OPTIMAL_NUMBER_OF_INFER_REQUESTS'
    return 2

  def create_infer_request(self):
    return _FakeRequest(self.log)

  def release_memory(self):
    self.releases += 1


def test_pool_serves_many_threads_without_deadlock(monkeypatch):
  from transforms.models.engine import openvino_runtime as rt
  runner = rt.OpenVINORunner.__new__(rt.OpenVINORunner)
  runner.__init__(model=None, core=object())
  monkeypatch.setattr(runner, '_compile',
                      lambda key: rt.CompiledShape(_FakeCompiled(), key, 0.0))
  results, errors = {}, []

  def caller(k):
    try:
      x = np.arange(8 * 4, dtype=np.float32).reshape(8, 4) + k
      results[k] = (x, runner.infer([x]))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  assert not errors and len(results) == 6
  for x, y in results.values():
    np.testing.assert_array_equal(y, 2 * x)
  assert runner.compiles == 0 and len(runner.compiled_shapes) == 1


def test_shapes_keep_their_buffers_within_the_pixel_budget(monkeypatch):
  """A mixed archive's buckets run in turns: each keeps its buffers while
  the recently used shapes fit the budget (no free and re-fault on every
  switch); past it the least recently used idle one is released, and the
  most recent shape stays whatever its size."""
  from transforms.models.engine import openvino_runtime as rt
  runner = rt.OpenVINORunner(model=None, core=object(), precision='bf16',
                             resident_pixels=3 * 100 * 100)
  compiled = {}

  def compile_(key):
    compiled[key] = _FakeCompiled()
    return rt.CompiledShape(compiled[key], key, 0.0)

  monkeypatch.setattr(runner, '_compile', compile_)

  def run(h, w):
    runner.run([(1, h, w, 4)], 2, fill=lambda i, inputs: None,
               take=lambda i, outputs: None)

  def releases():
    return {k[0][1:3]: c.releases for k, c in compiled.items()}

  for _ in range(3):  # Three shapes in turns, within the budget.
    for h, w in ((100, 100), (100, 90), (90, 100)):
      run(h, w)
  assert set(releases().values()) == {0}
  run(100, 110)  # Over the budget: the least recently used goes.
  assert releases() == {(100, 100): 1, (100, 90): 0, (90, 100): 0,
                        (100, 110): 0}
  run(400, 400)  # Alone over the budget: runs, stays; all others go.
  assert releases() == {(100, 100): 1, (100, 90): 1, (90, 100): 1,
                        (100, 110): 1, (400, 400): 0}
  run(100, 100)  # Back in budget: the big one is released in its turn.
  assert releases()[(400, 400)] == 1 and len(compiled) == 5
  f32 = rt.OpenVINORunner(model=None, core=object(), precision='f32')
  assert f32.resident_pixels * 2 == rt.OpenVINORunner(
      model=None, core=object(), precision='bf16').resident_pixels
