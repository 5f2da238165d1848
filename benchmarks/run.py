"""Benchmark harness: the model alone, a naive per-image loop, and the pipeline.

    python -m benchmarks.run                      # N = 100 and 400, 512 and 1024 px
    python -m benchmarks.run --n 20 --sizes 512   # a quick look

Everything is measured in one process run, on the same images, model and
style, so the ratios are comparable even on a noisy machine. Results go to
benchmarks/results/<timestamp>.json and a table is printed.
"""

import argparse
import datetime
import io
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List

import numpy as np
import psutil
from PIL import Image

from benchmarks.data import CAMERA_SIZE, cache_folder, dataset_key, make_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get('STYLIZE_SHARED_DIR', os.path.join(ROOT, '..', 'shared'))

logger = logging.getLogger('benchmarks')


class PeakRss:
  """Samples the RSS of this process and its children (worker processes)."""

  def __init__(self, interval: float = 0.1):
    self._interval = interval
    self.peak = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _sample(self) -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
      try:
        total += child.memory_info().rss
      except psutil.Error:
        pass
    return total

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, self._sample())
      self._stop.wait(self._interval)

  def __enter__(self):
    self.peak = self._sample()
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self._sample())


def _shape_for(size: int, camera=CAMERA_SIZE):
  """(height, width) of a camera frame fitted to `size` on its long side."""
  from transforms.decode import target_size
  w, h = target_size(camera[0], camera[1], size)
  return h, w


def measure_limit(model, style, size: int, batch: int,
                  seconds: float, camera=CAMERA_SIZE) -> float:
  """images/s of model(content, style)[0] alone on ready tensors."""
  import tensorflow as tf
  h, w = _shape_for(size, camera)
  rng = np.random.default_rng(0)
  content = tf.constant(rng.random((batch, h, w, 3), dtype=np.float32))
  model(content, style)  # Trace and warm up.
  images, start = 0, time.perf_counter()
  while True:
    model(content, style)[0].numpy()
    images += batch
    elapsed = time.perf_counter() - start
    if elapsed >= seconds and images >= 3 * batch:
      return images / elapsed


def measure_seed_loop(files: List[str], model, style_path: str,
                      size: int, camera=CAMERA_SIZE) -> Dict[str, float]:
  """Seconds per image of each step of the TF Hub example's loop.

  Full decode (no draft), resize, model(content, style)[0] with the style
  image passed every call, then PNG at Pillow's default settings (as the
  TF Hub example saves) and JPEG (the pipeline's default output).
  """
  import tensorflow as tf
  style_img = Image.open(style_path).convert('RGB').resize((256, 256))
  style = tf.constant(np.asarray(style_img, np.float32)[np.newaxis] / 255.0)
  steps = {'decode_resize': [], 'model': [], 'png': [], 'jpg': []}
  h, w = _shape_for(size, camera)
  model(tf.zeros((1, h, w, 3)), style)  # Warm-up, like the limit.
  for f in files:
    t0 = time.perf_counter()
    im = Image.open(f).convert('RGB').resize((w, h), Image.Resampling.LANCZOS)
    content = tf.constant(np.asarray(im, np.float32)[np.newaxis] / 255.0)
    t1 = time.perf_counter()
    out = model(content, style)[0].numpy()
    t2 = time.perf_counter()
    pixels = Image.fromarray((np.clip(out[0], 0, 1) * 255).astype(np.uint8))
    buf = io.BytesIO()
    pixels.save(buf, 'PNG')
    t3 = time.perf_counter()
    buf = io.BytesIO()
    pixels.save(buf, 'JPEG', quality=90)
    t4 = time.perf_counter()
    for key, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
      steps[key].append(value)
  return {k: statistics.mean(v) for k, v in steps.items()}


def measure_fast_paths(files: List[str], size: int) -> Dict[str, float]:
  """Seconds per image: decode with and without draft mode, PNG levels."""
  from transforms.decode import decode_image
  from transforms.encode import encode_image
  out = {'decode_full_s': [], 'decode_draft_s': [], 'png_level6_s': [],
         'png_level1_s': [], 'jpg_s': []}
  for f in files:
    data = open(f, 'rb').read()
    t0 = time.perf_counter()
    decode_image(data, size, draft=False)
    t1 = time.perf_counter()
    pixels, _, _ = decode_image(data, size)
    t2 = time.perf_counter()
    Image.fromarray(pixels).save(io.BytesIO(), 'PNG')
    t3 = time.perf_counter()
    encode_image(pixels, 'png', 90)
    t4 = time.perf_counter()
    encode_image(pixels, 'jpg', 90)
    t5 = time.perf_counter()
    for key, value in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
      out[key].append(value)
  return {k: statistics.mean(v) for k, v in out.items()}


def heic_copy(jpeg_path: str, folder: str) -> str:
  """The same picture (12 MP at the default --camera_size) as an iPhone-like
  HEIC (quality 90), cached."""
  from transforms.formats import register_heif
  register_heif()
  path = os.path.join(folder, os.path.basename(jpeg_path).rsplit('.', 1)[0] +
                      '.heic')
  if not os.path.exists(path):
    with Image.open(jpeg_path) as im:
      im.save(path + '.tmp', 'HEIF', quality=90, exif=im.info.get('exif', b''))
    os.replace(path + '.tmp', path)
  return path


def measure_heic_vs_jpeg(jpeg_path: str, folder: str, size: int,
                         repeats: int = 5) -> Dict[str, float]:
  """Seconds to decode one camera photo (12 MP at the default --camera_size)
  as JPEG and as HEIC (median).

  Full size (--max_size 0) and at `size`, through the pipeline's own
  decode_photo (orientation, colour management, metadata included). JPEG
  at a smaller size profits from draft mode (DCT scaling); HEVC has no
  such shortcut, so a HEIC is always decoded whole, then reduced.
  """
  from transforms.decode import decode_photo
  from transforms.icc import SrgbConverter
  heic_path = heic_copy(jpeg_path, folder)
  out = {'jpeg_bytes': os.path.getsize(jpeg_path),
         'heic_bytes': os.path.getsize(heic_path)}
  converter = SrgbConverter()
  for label, path in (('jpeg', jpeg_path), ('heic', heic_path)):
    data = open(path, 'rb').read()
    for name, max_size in (('full', None), (str(size), size)):
      times = []
      for _ in range(repeats):
        t0 = time.perf_counter()
        decode_photo(data, max_size, converter=converter)
        times.append(time.perf_counter() - t0)
      out[f'{label}_{name}_s'] = statistics.median(times)
  out['heic_over_jpeg_full'] = out['heic_full_s'] / out['jpeg_full_s']
  out[f'heic_over_jpeg_{size}'] = out[f'heic_{size}_s'] / out[f'jpeg_{size}_s']
  return out


def manifest_rows(out: str) -> List[Dict]:
  """Every row of the manifest shards a run wrote in the local folder out
  (the benchmarks and the tests read them here; shard names: the layout's
  MANIFEST_SHARD)."""
  from transforms.layout import MANIFEST_SHARD
  rows = []
  for name in sorted(os.listdir(out)):
    if MANIFEST_SHARD.match(name):
      with open(os.path.join(out, name), encoding='utf-8') as f:
        rows += [json.loads(line) for line in f if line.strip()]
  return rows


def measure_pipeline(files: List[str], size: int, model: str, style: str,
                     batch: int, workdir: str, multi: bool,
                     extra: List[str]) -> Dict[str, float]:
  """run(argv) over the files; wall time, rate, stage split, peak RSS."""
  from beam_jobs.stylize import run
  listing = os.path.join(workdir, 'inputs.txt')
  with open(listing, 'w', encoding='utf-8') as f:
    f.write('\n'.join(files) + '\n')
  out = tempfile.mkdtemp(prefix='out-', dir=workdir)
  argv = ['--input_list', listing, '--style', style, '--model', model,
          '--output', out, '--max_size', str(size), '--batch_size', str(batch)]
  if multi:
    argv += ['--direct_running_mode=multi_processing',
             '--direct_num_workers=2']
  argv += extra
  with PeakRss() as rss:
    start = time.perf_counter()
    run(argv)
    wall = time.perf_counter() - start
  rows = manifest_rows(out)
  ok = [r for r in rows if r['status'] == 'ok']
  split = {}
  for key in ('read_s', 'decode_s', 'stylize_s', 'encode_s', 'write_s'):
    vals = [r['timings'].get(key, 0.0) for r in ok]
    split[key] = statistics.mean(vals) if vals else 0.0
  shutil.rmtree(out, ignore_errors=True)
  return {'wall_s': wall, 'images_per_s': len(ok) / wall, 'ok': len(ok),
          'rows': len(rows), 'peak_rss_mb': rss.peak / 2**20,
          'per_image_s': wall / max(1, len(ok)), 'stage_split_s': split}


def steady_state(entry: Dict, ns: List[int]) -> Dict[str, Dict[str, float]]:
  """Marginal rate between the smallest and largest N of each mode.

  (N2 - N1) / (wall2 - wall1): the fixed start-up (launch check, model
  load, TF import in workers) cancels out, which leaves the rate a long
  archive runs at. Needs two different N in the same run.
  """
  out = {}
  if len(set(ns)) < 2:
    return out
  lo, hi = min(ns), max(ns)
  modes = {name.rsplit('_n', 1)[0] for name in entry['runs']}
  for mode in sorted(modes):
    a, b = entry['runs'].get(f'{mode}_n{lo}'), entry['runs'].get(
        f'{mode}_n{hi}')
    if not a or not b or b['wall_s'] <= a['wall_s']:
      continue
    rate = (b['ok'] - a['ok']) / (b['wall_s'] - a['wall_s'])
    out[mode] = {'images_per_s': rate,
                 'over_limit': rate / entry['limit_images_per_s'],
                 'over_cpu_bound': rate / entry['cpu_bound_limit_images_per_s']}
  return out


def machine_info() -> Dict[str, object]:
  import tensorflow as tf
  import apache_beam
  import PIL
  return {
      'python': platform.python_version(), 'platform': platform.platform(),
      'cpus': os.cpu_count(),
      'memory_gb': round(psutil.virtual_memory().total / 2**30, 1),
      'tensorflow': tf.__version__, 'apache_beam': apache_beam.__version__,
      'pillow': PIL.__version__,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n', type=int, nargs='+', default=[100, 400])
  parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024])
  parser.add_argument('--model', default=os.path.join(
      SHARED, 'models', 'magenta-arbitrary-v1-256-savedmodel'))
  parser.add_argument('--style', default=os.path.join(
      SHARED, 'images', 'style', 'towers_1916_sq.jpg'))
  parser.add_argument('--content', default=os.path.join(SHARED, 'images',
                                                        'content'))
  parser.add_argument('--batch_size', type=int, default=4)
  parser.add_argument('--batch_sweep', type=int, nargs='*', default=[1, 2, 4, 8])
  parser.add_argument('--camera_size', type=int, nargs=2, default=CAMERA_SIZE,
                      metavar=('WIDTH', 'HEIGHT'),
                      help='size of the camera-like JPEGs (default 4000 3000); '
                      'smaller for a quick look at the harness')
  parser.add_argument('--seed_images', type=int, default=30,
                      help='images for the per-image loops (a rate, not a sum)')
  parser.add_argument('--limit_seconds', type=float, default=10.0)
  parser.add_argument('--data_dir', default=None,
                      help='where the camera JPEGs are kept between runs')
  parser.add_argument('--results', default=os.path.join(HERE, 'results'))
  parser.add_argument('--no_multi', action='store_true',
                      help='skip the multi-process pipeline runs')
  parser.add_argument('--no_overlap_runs', action='store_true',
                      help='skip the in-process runs without I/O threads')
  parser.add_argument('--heic_repeats', type=int, default=5,
                      help='decodes per format for the HEIC vs JPEG numbers')
  parser.add_argument('--decode_only', action='store_true',
                      help='only the decode numbers (fast paths, HEIC vs '
                      'JPEG): no model, no pipeline')
  parser.add_argument('--pipeline_args', nargs=argparse.REMAINDER, default=[],
                      help='extra flags for the pipeline runs (last)')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  from transforms.native_logs import import_tensorflow, quiet_start
  quiet_start()
  tf = import_tensorflow()  # Without TF's start-up noise.
  import tensorflow_hub as hub
  data_dir = args.data_dir or cache_folder(
      f'camera-{dataset_key(args.content)}')
  logger.info('Making %d camera-like JPEGs in %s', max(args.n), data_dir)
  camera = tuple(args.camera_size)
  all_files = make_dataset(args.content, data_dir, max(args.n), camera)
  if args.decode_only:
    return decode_only(args, all_files, data_dir)
  model = hub.load(args.model)
  style_img = Image.open(args.style).convert('RGB').resize((256, 256))
  style = tf.constant(np.asarray(style_img, np.float32)[np.newaxis] / 255.0)

  results = {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
             'machine': machine_info(), 'model': args.model,
             'style': args.style, 'batch_size': args.batch_size,
             'input': f'{len(all_files)} x {camera[0]}x{camera[1]} JPEG (q90, '
                      'EXIF)',
             'sizes': {}}
  workdir = tempfile.mkdtemp(prefix='stylize-bench-')
  try:
    for size in args.sizes:
      entry = {'batch_sweep': {}, 'runs': {}}
      for b in sorted(set(args.batch_sweep + [args.batch_size])):
        entry['batch_sweep'][str(b)] = measure_limit(
            model, style, size, b, args.limit_seconds / 2, camera)
        logger.info('limit %dpx batch %d: %.2f img/s', size, b,
                    entry['batch_sweep'][str(b)])
      limit = measure_limit(model, style, size, args.batch_size,
                            args.limit_seconds, camera)
      entry['limit_images_per_s'] = limit
      seed_files = all_files[:args.seed_images]
      seed = measure_seed_loop(seed_files, model, args.style, size, camera)
      entry['seed_loop_s'] = seed
      entry['seed_png_images_per_s'] = 1 / (seed['decode_resize'] +
                                            seed['model'] + seed['png'])
      entry['seed_jpg_images_per_s'] = 1 / (seed['decode_resize'] +
                                            seed['model'] + seed['jpg'])
      entry['fast_paths_s'] = measure_fast_paths(seed_files[:10], size)
      # What no pipeline can beat on this machine: every core busy with the
      # model, plus the CPU time of the decode and encode it cannot skip,
      # spread over the cores.
      cores = os.cpu_count() or 1
      entry['cpu_bound_limit_images_per_s'] = 1 / (
          1 / limit + (entry['fast_paths_s']['decode_draft_s'] +
                       entry['fast_paths_s']['jpg_s']) / cores)
      entry['heic_vs_jpeg_decode_s'] = measure_heic_vs_jpeg(
          all_files[0], data_dir, size, args.heic_repeats)
      for n in args.n:
        files = all_files[:n]
        modes = ['in_process'] + (
            [] if args.no_overlap_runs else ['in_process_no_overlap']) + (
                [] if args.no_multi else ['multi_process'])
        for mode in modes:
          logger.info('pipeline %dpx N=%d %s', size, n, mode)
          extra = list(args.pipeline_args)
          if mode == 'in_process_no_overlap':
            extra += ['--io_threads', '0']  # One image at a time.
          r = measure_pipeline(files, size, args.model, args.style,
                               args.batch_size, workdir,
                               mode == 'multi_process', extra)
          r['pipeline_over_limit'] = r['images_per_s'] / limit
          r['pipeline_over_cpu_bound'] = (
              r['images_per_s'] / entry['cpu_bound_limit_images_per_s'])
          r['pipeline_over_seed_jpg'] = (r['images_per_s'] /
                                         entry['seed_jpg_images_per_s'])
          r['pipeline_over_seed_png'] = (r['images_per_s'] /
                                         entry['seed_png_images_per_s'])
          entry['runs'][f'{mode}_n{n}'] = r
          logger.info('  %.2f img/s (%.2f of the limit), peak RSS %.0f MB',
                      r['images_per_s'], r['pipeline_over_limit'],
                      r['peak_rss_mb'])
      entry['steady_state'] = steady_state(entry, args.n)
      results['sizes'][str(size)] = entry
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(args.results, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%dT%H%M%S')
  path = os.path.join(args.results, f'bench-{stamp}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(format_table(results))
  print(f'\nwritten: {path}')
  return 0


def decode_only(args, all_files: List[str], data_dir: str) -> int:
  """--decode_only: the decode measurements alone, in their own JSON."""
  results = {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
             'machine': machine_info(), 'decode_only': True,
             'input': f'{args.camera_size[0]}x{args.camera_size[1]} JPEG (q90, '
                      'EXIF) and the same as HEIC (q90)',
             'sizes': {}}
  for size in args.sizes:
    results['sizes'][str(size)] = {
        'fast_paths_s': measure_fast_paths(all_files[:10], size),
        'heic_vs_jpeg_decode_s': measure_heic_vs_jpeg(
            all_files[0], data_dir, size, args.heic_repeats)}
  os.makedirs(args.results, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%dT%H%M%S')
  path = os.path.join(args.results, f'decode-{stamp}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(format_decode_table(results))
  print(f'\nwritten: {path}')
  return 0


def format_decode_table(results: Dict) -> str:
  lines = ['size  12 MP decode (s)   JPEG   HEIC  HEIC/JPEG']
  for size, entry in results['sizes'].items():
    d = entry['heic_vs_jpeg_decode_s']
    lines.append(f'{size:>4}  full size         {d["jpeg_full_s"]:6.3f} '
                 f'{d["heic_full_s"]:6.3f}  {d["heic_over_jpeg_full"]:9.2f}')
    lines.append(f'{size:>4}  at {size:<4} px        {d[f"jpeg_{size}_s"]:6.3f} '
                 f'{d[f"heic_{size}_s"]:6.3f}  '
                 f'{d[f"heic_over_jpeg_{size}"]:9.2f}')
  return '\n'.join(lines)


def format_table(results: Dict) -> str:
  lines = ['size  run                        img/s  /limit  /cpu-bound  '
           '/seed-jpg  /seed-png  s/img  peak RSS MB']
  for size, entry in results['sizes'].items():
    lines.append(f'{size:>4}  limit (model alone)        '
                 f'{entry["limit_images_per_s"]:6.2f}')
    if 'cpu_bound_limit_images_per_s' in entry:
      lines.append(f'{size:>4}  CPU-bound limit            '
                   f'{entry["cpu_bound_limit_images_per_s"]:6.2f}')
    lines.append(f'{size:>4}  seed loop, jpg             '
                 f'{entry["seed_jpg_images_per_s"]:6.2f}')
    lines.append(f'{size:>4}  seed loop, png             '
                 f'{entry["seed_png_images_per_s"]:6.2f}')
    for name, r in entry['runs'].items():
      lines.append(
          f'{size:>4}  {name:<26} {r["images_per_s"]:6.2f}  '
          f'{r["pipeline_over_limit"]:6.2f}  '
          f'{r.get("pipeline_over_cpu_bound", float("nan")):10.2f}  '
          f'{r["pipeline_over_seed_jpg"]:9.2f}'
          f'  {r["pipeline_over_seed_png"]:9.2f}  {r["per_image_s"]:5.3f}  '
          f'{r["peak_rss_mb"]:11.0f}')
    for mode, r in entry.get('steady_state', {}).items():
      lines.append(f'{size:>4}  steady state, {mode:<12} '
                   f'{r["images_per_s"]:6.2f}  {r["over_limit"]:6.2f}  '
                   f'{r["over_cpu_bound"]:10.2f}')
  if all('heic_vs_jpeg_decode_s' in e for e in results['sizes'].values()):
    lines += ['', format_decode_table(results)]
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
