"""Engines side by side: seconds per image of the model alone, accuracy, memory.

    python -m benchmarks.engine                 # everything (~5 min, 2 cores)
    python -m benchmarks.engine --quick         # fewer repeats and sizes

Model alone: a uint8 batch already in memory through the adapter's plain
path (Stylizer.stylize with a prepared style, no strength/colours/tiles),
as StylizeBatches calls it; no decoding, encoding or Beam. Candidates:

- tf_today: HubStylizer, today's adapter (full model(content, style) call,
  the style predictor included in every call);
- tf_f32: the model split at its style vector, TF f32 (the reference);
- ov_f32, ov_bf16: the same split on OpenVINO, THROUGHPUT hint, bucket
  shapes, uint8 in and out.

All candidates run in one process, interleaved (every repeat runs each
candidate once per size and batch, in turn), so a load from other
processes hits them alike; medians, minimums and ratios to tf_f32 and
tf_today are reported. Also measured:

- accuracy of each candidate against tf_f32 on the shared photos (PSNR,
  MSE, low-pass MSE, the 32 px edge bands);
- the style predictor per call (what caching style vectors saves);
- compile time and memory per bucket shape, padding of common sizes;
- the TF Lite pair: today's one-tile-at-a-time LiteRT, batched LiteRT,
  OpenVINO on the .tflite files (f16 and int8 transfer nets);
- peak RSS (VmHWM) of a fresh process per engine running the same batches
  (today's adapter included), since a process's peak never goes down.

Results: benchmarks/results/engine-<time>.json.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get('STYLIZE_SHARED_DIR', os.path.join(ROOT, '..',
                                                           'shared'))
MODEL = os.path.join(SHARED, 'models', 'magenta-arbitrary-v1-256-savedmodel')
LITE = os.path.join(SHARED, 'models', 'magenta-arbitrary-v1-256-lite')
PHOTOS = ('golden_gate_sq.jpg', 'eiffel_tower.jpg', 'colva_beach_sq.jpg',
          'statue_of_liberty_sq.jpg')
STYLE = 'bricks_sq.jpg'
# (height, width): 4:3 and 3:2 at 1024, a portrait, 4:3 at 512.
SIZES = [(768, 1024), (683, 1024), (1024, 768), (384, 512)]
BATCHES = (1, 4)


def peak_rss_mib() -> float:
  with open('/proc/self/status', encoding='utf-8') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def rss_mib() -> float:
  with open('/proc/self/status', encoding='utf-8') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def photos(height: int, width: int, count: int) -> np.ndarray:
  from PIL import Image
  names = [PHOTOS[i % len(PHOTOS)] for i in range(count)]
  return np.stack([
      np.asarray(Image.open(os.path.join(SHARED, 'images', 'content', n))
                 .convert('RGB').resize((width, height),
                                        Image.Resampling.BICUBIC))
      for n in names])


def style_image(name: str = STYLE) -> np.ndarray:
  from transforms.styles import load_style_image
  return load_style_image(os.path.join(SHARED, 'images', 'style', name))


def interleaved(candidates: Dict[str, Callable[[], object]], repeats: int,
                per_call: int) -> Dict[str, dict]:
  """Seconds per image of each candidate, run in turn `repeats` times."""
  times: Dict[str, List[float]] = {k: [] for k in candidates}
  for _ in range(repeats):
    for name, fn in candidates.items():
      start = time.perf_counter()
      fn()
      times[name].append((time.perf_counter() - start) / per_call)
  return {k: {'median_s': round(statistics.median(v), 5),
              'min_s': round(min(v), 5), 'runs': len(v)}
          for k, v in times.items()}


def finite(x):
  """JSON has no Infinity: identical images (PSNR inf) become null."""
  if isinstance(x, dict):
    return {k: finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [finite(v) for v in x]
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def ratios(result: Dict[str, dict], base: str) -> Dict[str, float]:
  b = result[base]['median_s']
  return {k: round(b / v['median_s'], 2) for k, v in result.items()}


def two_threads(fn: Callable[[], object]) -> None:
  threads = [threading.Thread(target=fn) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()


# -- the SavedModel on both engines ------------------------------------------


def build_engines(threads: int = 0):
  """tf_today, tf_f32, ov_f32, ov_bf16 adapters from one load."""
  from transforms.models import split_model
  from transforms.models.engine import ov_split, tf_split
  from transforms.models.loader import load_full_call
  today = load_full_call(MODEL)
  start = time.perf_counter()
  model = today.model
  split = tf_split.split(model)
  split_s = time.perf_counter() - start
  start = time.perf_counter()
  fn = tf_split.concrete_function(model)
  predictor, transfer = ov_split.cut(
      ov_split.convert(fn), None,
      *[t.name for t in tf_split.image_inputs(fn)])
  convert_s = time.perf_counter() - start
  engines = {'tf_today': today,
             'tf_f32': split_model.TFSplitStylizer(MODEL, 'savedmodel', split)}
  for precision in ('f32', 'bf16'):
    engines[f'ov_{precision}'] = split_model.OpenVINOSplitStylizer(
        MODEL, 'savedmodel', predictor, transfer, split.vector.name,
        split.vector.shape, precision, threads)
  info = {'vector': f'{split.vector.name} {list(split.vector.shape)}',
          'tf_split_s': round(split_s, 3),
          'convert_and_cut_s': round(convert_s, 3)}
  return engines, info


def bench_engines(engines, repeats: int, sizes) -> dict:
  style = style_image()
  states = {k: s.prepare_style(style) for k, s in engines.items()}
  out = {}
  for height, width in sizes:
    for batch in BATCHES:
      x = photos(height, width, batch)
      calls = {k: (lambda s=s, st=states[k]: s.stylize(x, st))
               for k, s in engines.items()}
      if batch == 1:
        # Beam runs several DoFn threads per process: two threads, one
        # image each, at once (counted as 2 images per call below).
        calls['ov_bf16_2threads'] = lambda: two_threads(
            lambda: engines['ov_bf16'].stylize(x, states['ov_bf16']))
      for fn in calls.values():
        fn()  # Warm up: compiles the bucket, TF's first-call set up.
      result = interleaved(calls, repeats, batch)
      if batch == 1:
        for v in ('median_s', 'min_s'):
          result['ov_bf16_2threads'][v] = round(
              result['ov_bf16_2threads'][v] / 2, 5)
      out[f'{height}x{width}_b{batch}'] = {
          'seconds_per_image': result,
          'speedup_vs_tf_f32': ratios(result, 'tf_f32'),
          'speedup_vs_tf_today': ratios(result, 'tf_today')}
      print(f'{height}x{width} b{batch}', json.dumps(result), flush=True)
  return out


def accuracy(engines, sizes) -> dict:
  from transforms.models.engine import buckets, quality
  style = style_image()
  states = {k: s.prepare_style(style) for k, s in engines.items()}
  out = {}
  for height, width in sizes:
    x = photos(height, width, len(PHOTOS))
    ref = engines['tf_f32'].stylize(x, states['tf_f32'])
    entry = {'bucket': list(buckets.bucket_shape(height, width))}
    for k in ('tf_today', 'ov_f32', 'ov_bf16'):
      per = [quality.compare(engines[k].stylize(x[i:i + 1], states[k]),
                             ref[i:i + 1]) for i in range(len(x))]
      entry[k] = {'psnr_min': min(p['psnr'] for p in per),
                  'psnr_mean': round(statistics.mean(p['psnr'] for p in per),
                                     2),
                  'mse_max': max(p['mse'] for p in per),
                  'lowpass_mse_max': max(p['lowpass_mse'] for p in per),
                  'edge_psnr_min': min(p['edge_psnr'] for p in per),
                  'edge_lowpass_mse_max': max(p['edge_lowpass_mse']
                                              for p in per)}
    out[f'{height}x{width}'] = entry
    print(f'accuracy {height}x{width}', json.dumps(finite(entry)),
          flush=True)
  return out


def controls_accuracy(engines) -> dict:
  """Strength, blends, colour preservation and tiling: ov_bf16 and ov_f32
  against tf_f32, four photos at 512x384 (tiles: 1024x768)."""
  from transforms.models.base import StyleParams
  from transforms.models.engine import quality
  blend = [(0.6, style_image()), (0.4, style_image('La_forma.jpg'))]
  cases = {
      'strength_0.5': (StyleParams(strength=0.5), False, (384, 512)),
      'blend_60_40': (StyleParams(), True, (384, 512)),
      'preserve_colors': (StyleParams(preserve_colors=True), False,
                          (384, 512)),
      'blend_strength_0.7_colors': (
          StyleParams(strength=0.7, preserve_colors=True), True, (384, 512)),
      'tiles_384': (StyleParams(tile_size=384), False, (768, 1024)),
      'large_image_tiles': (StyleParams(max_untiled_pixels=400 * 400), False,
                            (768, 1024)),
  }
  out = {}
  for name, (params, is_blend, (height, width)) in cases.items():
    x = photos(height, width, len(PHOTOS))
    outs = {}
    for k in ('tf_f32', 'ov_bf16', 'ov_f32'):
      s = engines[k]
      state = s.prepare_blend(blend) if is_blend else s.prepare_style(
          style_image())
      outs[k] = s.stylize(x, state, params)
    out[name] = {k: {key: q[key] for key in ('psnr', 'lowpass_mse',
                                             'edge_psnr')}
                 for k in ('ov_bf16', 'ov_f32')
                 for q in [quality.compare(outs[k], outs['tf_f32'])]}
    print('controls', name, json.dumps(out[name]), flush=True)
  return out


def predictor_cost(engines, repeats: int) -> dict:
  """One style image through each engine's predictor, and what the full
  call pays for it per batch."""
  style = style_image()[np.newaxis]
  # The OpenVINO predictor runs f32 whatever the transfer net's precision.
  calls = {'tf_f32': lambda: engines['tf_f32']._predict(style),  # pylint: disable=protected-access
           'ov_f32': lambda: engines['ov_bf16']._predict(style)}  # pylint: disable=protected-access
  for fn in calls.values():
    fn()
  out = {'per_call': interleaved(calls, repeats * 4, 1)}
  # Today's adapter runs the predictor inside every batch's call: its cost
  # per batch is the full call minus the split transfer net alone.
  x = photos(384, 512, 1)
  today, split = engines['tf_today'], engines['tf_f32']
  st_today, st_split = today.prepare_style(style[0]), split.prepare_style(
      style[0])
  res = interleaved({'full_call': lambda: today.stylize(x, st_today),
                     'transfer_only': lambda: split.stylize(x, st_split)},
                    repeats * 2, 1)
  out['tf_512x384_b1'] = res
  out['tf_saved_per_batch_s'] = round(
      res['full_call']['median_s'] - res['transfer_only']['median_s'], 5)
  return out


BUCKET_SHAPES = [(576, 1024), (688, 1024), (768, 1024), (1024, 1024),
                 (1024, 688), (1024, 768), (288, 512), (344, 512), (384, 512)]


def buckets_child(precision: str) -> dict:
  """Runs in a fresh process: compile time and memory of each bucket shape
  (the uint8 network), each shape compiled and run for the first time."""
  from transforms.models.loader import load_stylizer
  s = load_stylizer(MODEL, engine='openvino', precision=precision)
  net = s.network
  net.uint8_runner.resident_pixels = 1 << 40  # Each shape's own buffers.
  vector = s.prepare_style(style_image())
  out = {}
  for height, width in BUCKET_SHAPES:
    before = rss_mib()
    start = time.perf_counter()
    entry = net.uint8_runner.compiled_for([(1, height, width, 3),
                                           (1, 1, 1, 100)])
    compile_s = time.perf_counter() - start
    after_compile = rss_mib()
    net.run_uint8(np.zeros((2, height, width, 3), np.uint8), vector)
    after_run = rss_mib()
    entry.compiled.release_memory()
    after_release = rss_mib()
    out[f'{height}x{width}'] = {
        'compile_s': round(compile_s, 3),
        'rss_compile_mib': round(after_compile - before, 1),
        'rss_first_run_mib': round(after_run - after_compile, 1),
        'rss_kept_after_release_memory_mib': round(after_release - before, 1)}
  return out


def buckets_table() -> dict:
  """Compile time and memory per bucket (fresh processes), and the padding
  of common sizes."""
  from transforms.models.engine import buckets
  out = {'per_shape': {p: child('--buckets_child', p)
                       for p in ('bf16', 'f32')}}
  sizes = [(768, 1024), (683, 1024), (682, 1024), (576, 1024), (640, 1024),
           (600, 1024), (720, 1024), (819, 1024), (1024, 1024), (384, 512),
           (341, 512), (288, 512), (600, 800), (300, 1024)]
  out['padding'] = {
      f'{h}x{w}': {'bucket': list(buckets.bucket_shape(h, w)),
                   'extra_pixels': round(buckets.padding_waste(h, w), 3),
                   'beyond_tf_padding': buckets.bucket_shape(h, w) !=
                                        buckets.reference_shape(h, w)}
      for h, w in sizes}
  print('buckets', json.dumps(out['per_shape']), flush=True)
  return out


def child(flag: str, arg: str) -> dict:
  """Runs this script with flag arg in a fresh Python process."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
             os.environ.get('PYTHONPATH', ''), TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.engine', flag, arg],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def dynamic_shape(engines, repeats: int) -> dict:
  """One compile for every shape (dynamic H, W) against per-shape compiles."""
  from transforms.models.engine.openvino_import import import_openvino
  ov = import_openvino()
  from transforms.models.engine.openvino_runtime import compile_config
  s = engines['ov_bf16']
  model = s.network.uint8_runner.model
  start = time.perf_counter()
  compiled = ov.Core().compile_model(model, 'CPU', compile_config('bf16'))
  compile_s = time.perf_counter() - start
  queue = ov.AsyncInferQueue(
      compiled, compiled.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS'))
  vector = s.prepare_style(style_image())
  x = photos(768, 1024, 4)

  def dynamic():
    for i in range(len(x)):
      queue.start_async({0: x[i:i + 1], 1: vector})
    queue.wait_all()

  res = interleaved({'dynamic': dynamic,
                     'per_shape': lambda: s.network.run_uint8(x, vector)},
                    repeats, len(x))
  return {'compile_s': round(compile_s, 3), '768x1024_b4': res}


def bench_lite(repeats: int) -> dict:
  """The TF Lite pair at 1024x768 (3x3 tiles of 384) and 384x384."""
  from transforms.models.engine import quality
  from transforms.models.lite import LiteStylizer
  from transforms.models.lite_batched import BatchedLiteStylizer
  predict = os.path.join(LITE, 'style_predict_quantized_256.tflite')
  f16 = f'{predict},{os.path.join(LITE, "style_transfer_f16_384.tflite")}'
  int8 = f'{predict},{os.path.join(LITE, "style_transfer_quantized_384.tflite")}'
  adapters = {
      'litert_today_f16': LiteStylizer(f16),
      'litert_batched_f16': BatchedLiteStylizer(f16, engine='tf'),
      'ov_bf16_f16': BatchedLiteStylizer(f16, engine='openvino',
                                         precision='bf16'),
      'ov_f32_f16': BatchedLiteStylizer(f16, engine='openvino',
                                        precision='f32'),
      'litert_today_int8': LiteStylizer(int8),
      'ov_int8': BatchedLiteStylizer(int8, engine='openvino', precision='bf16',
                                     int8_on_openvino=True),
  }
  style = style_image()
  states = {k: a.prepare_style(style) for k, a in adapters.items()}
  out = {}
  for height, width, batch in [(768, 1024, 4), (384, 384, 4)]:
    x = photos(height, width, batch)
    calls = {k: (lambda a=a, st=states[k]: a.stylize(x, st))
             for k, a in adapters.items()}
    outputs = {k: fn() for k, fn in calls.items()}
    res = interleaved(calls, repeats, batch)
    acc = {}
    for k, ref in (('litert_batched_f16', 'litert_today_f16'),
                   ('ov_bf16_f16', 'litert_today_f16'),
                   ('ov_f32_f16', 'litert_today_f16'),
                   ('ov_int8', 'litert_today_int8'),
                   ('litert_today_int8', 'litert_today_f16'),
                   ('ov_int8', 'litert_today_f16')):
      q = quality.compare(outputs[k], outputs[ref])
      acc[f'{k}_vs_{ref}'] = {'psnr': q['psnr'], 'mse': q['mse'],
                              'lowpass_mse': q['lowpass_mse'],
                              'max_abs_levels': int(np.abs(
                                  outputs[k].astype(int) -
                                  outputs[ref].astype(int)).max())}
    out[f'{height}x{width}_b{batch}'] = {
        'seconds_per_image': res,
        'speedup_vs_litert_today_f16': ratios(res, 'litert_today_f16'),
        'accuracy': acc}
    print('lite', height, width, json.dumps(res), flush=True)
  return out


# -- peak RSS, one fresh process per engine ----------------------------------

_RSS_SIZES = [(768, 1024), (683, 1024), (1024, 768), (384, 512)]


def rss_child(engine: str) -> dict:
  """Runs in a fresh process: load, prepare a style, the batches."""
  from transforms.models.loader import load_full_call, load_stylizer
  start = time.perf_counter()
  if engine == 'tf_today':
    s = load_full_call(MODEL)
  else:
    name, precision = {'tf_f32': ('tf', 'f32'), 'ov_f32': ('openvino', 'f32'),
                       'ov_bf16': ('openvino', 'bf16')}[engine]
    s = load_stylizer(MODEL, engine=name, precision=precision)
  state = s.prepare_style(style_image())
  load_s = time.perf_counter() - start
  after_load = peak_rss_mib()
  for _ in range(2):
    for height, width in _RSS_SIZES:
      s.stylize(photos(height, width, 4), state)
  return {'load_s': round(load_s, 2), 'peak_after_load_mib': round(after_load),
          'peak_mib': round(peak_rss_mib()), 'rss_end_mib': round(rss_mib())}


def peak_rss() -> dict:
  out = {}
  for engine in ('tf_today', 'tf_f32', 'ov_f32', 'ov_bf16'):
    out[engine] = child('--rss_child', engine)
    print('rss', engine, out[engine], flush=True)
  base = out['tf_today']['peak_mib']
  out['peak_vs_tf_today'] = {k: round(v['peak_mib'] / base, 3)
                             for k, v in out.items() if k != 'tf_today'}
  return out


def machine() -> dict:
  from transforms.models.engine import capabilities
  from transforms.models.engine.openvino_import import import_openvino
  openvino = import_openvino()
  import tensorflow as tf
  info = {'cpus': os.cpu_count(), 'python': platform.python_version(),
          'openvino': openvino.__version__, 'tensorflow': tf.__version__,
          'bf16': capabilities.has_bf16(),
          'bf16_flags': sorted(capabilities.cpu_flags() &
                               capabilities.BF16_CPU_FLAGS),
          'ov_capabilities': sorted(capabilities.openvino_capabilities())}
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      info['cpu'] = next(l.split(':', 1)[1].strip() for l in f
                         if l.startswith('model name'))
    info['loadavg_start'] = os.getloadavg()
  except (OSError, StopIteration):
    pass
  return info


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--quick', action='store_true',
                      help='3 repeats, 1024x768 and 512x384 only')
  parser.add_argument('--results', default=os.path.join(HERE, 'results'))
  parser.add_argument('--rss_child', help=argparse.SUPPRESS)
  parser.add_argument('--buckets_child', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.rss_child:
    print(json.dumps(rss_child(args.rss_child)))
    return 0
  if args.buckets_child:
    print(json.dumps(buckets_child(args.buckets_child)))
    return 0
  repeats = 3 if args.quick else args.repeats
  sizes = [SIZES[0], SIZES[3]] if args.quick else SIZES
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  results = {'started': datetime.datetime.now().isoformat(timespec='seconds'),
             'machine': machine(), 'repeats': repeats,
             'note': 'seconds per image of the model alone (uint8 batch in '
                     'memory -> uint8 out, prepared style); candidates '
                     'interleaved in one process; speedups are ratios of '
                     'medians'}
  engines, results['split'] = build_engines()
  results['model_alone'] = bench_engines(engines, repeats, sizes)
  results['predictor'] = predictor_cost(engines, repeats)
  results['accuracy_vs_tf_f32'] = accuracy(
      engines, sizes + [(1024, 683), (512, 341), (341, 512), (600, 1024)])
  results['style_controls_vs_tf_f32'] = controls_accuracy(engines)
  results['buckets'] = buckets_table()
  results['dynamic_shape'] = dynamic_shape(engines, repeats)
  results['lite_pair'] = bench_lite(repeats)
  del engines
  results['peak_rss'] = peak_rss()
  results['machine']['loadavg_end'] = os.getloadavg()
  os.makedirs(args.results, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%dT%H%M%S')
  path = os.path.join(args.results, f'engine-{stamp}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(finite(results), f, indent=2)
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
