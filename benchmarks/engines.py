"""Engines in the job: engine x precision x size x archive, model alone and pipeline.

    python -m benchmarks.engines                            # 512 and 1024 px, N = 200 and 400 (~1.5 h)
    python -m benchmarks.engines --sizes 1024 --n 40 160    # a shorter look
    python -m benchmarks.engines --quick --sizes 128        # tiny images: the harness runs

For each --max_size, archive and engine configuration (`tf`: --engine tf,
TensorFlow f32, the job as it was ("today"); `openvino_f32`: --engine
openvino --precision f32; `auto`: the default, OpenVINO bf16 on a CPU with
AMX / AVX-512 BF16), it measures:

1. decode + encode: seconds per image of the decode the pipeline cannot
   skip (JPEG draft mode, resize to size: transforms.decode.decode_image)
   and the JPEG encode (quality 90), one core, on the archive's files;
2. the model alone: images/s of Stylizer.stylize_many on ready uint8 images
   of the archive's shapes (decoded from its files), in batches of
   --batch_size images of one shape as the pipeline forms them
   (BatchByBucket), from 1 calling thread (as the in-process pipeline
   calls it) and from 2 threads at once; all engines in one fresh process,
   interleaved round by round; the best round counts (other processes only
   slow a round down), the median is kept too;
3. the CPU-bound limit: the model alone on every core plus the decode and
   encode spread over the cores, 1 / (1/model + (decode + encode)/cores);
4. the pipeline, beam_jobs.stylize.run(argv) in-process
   (--direct_running_mode=in_memory, the local default), at each --n, each
   run in a fresh process so its peak RSS is its own, --repeats times
   (the fastest counts): wall time, images/s, the stage split from the
   manifest timings, peak RSS (the worker's own VmHWM: the in-process runner
   is one process; and the process tree sampled by benchmarks.run.PeakRss,
   which counts short-lived forks in full); the steady-state rate between
   the two N, (N2 - N1) / (wall2 - wall1), in which start-up (imports,
   model load and conversion) cancels out, and so do the report's
   thumbnails when both N are at least its samples (report.MAX_SAMPLES,
   200: each a 12 MP input decoded again, ~0.025 s; below that they grow
   with N, and between N=60 and N=300 they added ~0.017 core-seconds to
   every photo's share, a fifth of it at 512 px).

Engines are interleaved within each size and archive (the order rotates
between rounds and N), so a load from other processes hits them alike; the
load average is recorded at the start and end of every measurement, with
the CPU other processes used meanwhile (`other_cores`); before each one
the harness waits (up to --max_wait s) for other processes to go quiet.

Archives (made from ../shared/images/content, cached in the job's cache
folder, benchmarks.data.cache_folder):
`uniform`, the 4000x3000 camera-like JPEGs of benchmarks.data; `mixed`, the
same pictures in equal shares of 4:3 landscape (4000x3000), 4:3 portrait
(3000x4000), 3:2 landscape (4000x2667) and 16:9 landscape (4000x2250),
cropped from the source photo, with the same noise and EXIF, quality 90.

Then: auto vs tf ratios, pipeline / CPU-bound limit, peak RSS against tf,
and the Dataflow cost per million photos re-projected from each engine's
steady-state seconds per image (PRICES: list prices, stated, not measured).
Results: benchmarks/results/engines-<time>.json and a printed table.
"""

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from benchmarks import data
from transforms.report import MAX_SAMPLES
from benchmarks.data import cache_folder, dataset_key, make_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get('STYLIZE_SHARED_DIR', os.path.join(ROOT, '..',
                                                           'shared'))

logger = logging.getLogger('benchmarks.engines')

#: name -> (--engine, --precision, label)
CONFIGS = {
    'tf': ('tf', 'f32', 'tf f32 (today)'),
    'openvino_f32': ('openvino', 'f32', 'openvino f32'),
    'auto': ('auto', 'auto', 'auto (openvino bf16)'),
}
BASELINE = 'tf'
NEW = 'auto'

#: The mixed archive's kinds: name -> (width, height) of the camera JPEG.
KINDS = {
    '4:3 landscape': (4000, 3000),
    '4:3 portrait': (3000, 4000),
    '3:2 landscape': (4000, 2667),
    '16:9 landscape': (4000, 2250),
}
ARCHIVES = ('uniform', 'mixed')

#: Dataflow list prices used for the cost projection: stated, not measured.
PRICES = {
    'vcpu_hour_usd': 0.056,
    'memory_gb_hour_usd': 0.003557,
    'memory_gb_per_vcpu': 4.0,
    'region': 'us-central1',
    'assumptions': (
        'Dataflow batch list prices (us-central1) as stated in the issue, to '
        'be checked against the current price list; not measured. Memory '
        'billed at 4 GB per vCPU. A Dataflow vCPU is taken to run at this '
        "machine's per-core rate, on the same CPU generation (the bf16 rate "
        'needs AMX / AVX-512 BF16 workers, e.g. Sapphire Rapids and later, '
        'else auto runs f32). Left out: Persistent Disk, Dataflow Shuffle, '
        'Cloud Storage operations and egress, worker start-up and idle '
        'time, discounts (FlexRS, committed use).'),
}

#: A measurement during which other processes used more cores than this is
#: taken again (up to --retries times; the pipeline keeps its fastest run,
#: the model alone its quietest).
NOISY_CORES = 0.25

#: Targets of the issue (ratios from one run on one machine).
TARGET_AUTO_VS_TF = 2.5
TARGET_OVER_CPU_BOUND = 0.85


def loadavg() -> List[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def cores() -> int:
  return os.cpu_count() or 1


# -- archives -----------------------------------------------------------------


def _sources(content: str) -> List[Image.Image]:
  paths = sorted(os.path.join(content, f) for f in os.listdir(content)
                 if f.lower().endswith(('.jpg', '.jpeg', '.png')))
  if not paths:
    raise FileNotFoundError(f'no photos in {content}')
  return [Image.open(p).convert('RGB') for p in paths]


def _crop_to(im: Image.Image, width: int, height: int) -> Image.Image:
  """The largest centred crop of im with the aspect ratio width:height."""
  w, h = im.size
  if w * height > h * width:  # Too wide.
    cw, ch = round(h * width / height), h
  else:
    cw, ch = w, round(w * height / width)
  left, top = (w - cw) // 2, (h - ch) // 2
  return im.crop((left, top, left + cw, top + ch))


def camera_jpeg(src: Image.Image, index: int, size) -> bytes:
  """A camera-like JPEG of `size` (width, height) from a small photo: the
  centred crop of that aspect, then benchmarks.data's noise, EXIF and
  quality."""
  return data.camera_jpeg(
      _crop_to(src, *size).resize(size, Image.Resampling.BICUBIC), index)


def mixed_kind(index: int) -> str:
  """File i's kind: every 4 consecutive files hold one of each, and each
  source picture (i % pictures, as in benchmarks.data) gets every kind."""
  return list(KINDS)[(index + index // len(KINDS)) % len(KINDS)]


def make_archive(archive: str, content: str, folder: str, n: int,
                 scale: float = 1.0) -> List[str]:
  """n JPEGs of the archive in folder (cached: existing files are reused).

  uniform at scale 1 is benchmarks.data.make_dataset (shared with
  benchmarks.run); scale < 1 (--quick) makes every kind that much smaller.
  """
  if archive == 'uniform' and scale == 1.0:
    return make_dataset(content, folder, n)
  os.makedirs(folder, exist_ok=True)
  images = None
  paths = []
  for i in range(n):
    kind = '4:3 landscape' if archive == 'uniform' else mixed_kind(i)
    width, height = (max(8, round(d * scale)) for d in KINDS[kind])
    path = os.path.join(folder, f'{archive}_{i:04d}_{width}x{height}.jpg')
    if not os.path.exists(path):
      if images is None:
        images = _sources(content)
      jpeg = camera_jpeg(images[i % len(images)], i, (width, height))
      with open(path + '.tmp', 'wb') as f:
        f.write(jpeg)
      os.replace(path + '.tmp', path)
    paths.append(path)
  return paths


def shape_at(path: str, size: int):
  """(height, width) the pipeline makes of a file at --max_size size."""
  from transforms.decode import target_size
  with Image.open(path) as im:
    w, h = target_size(im.width, im.height, size)
  return h, w


def by_shape(files: Sequence[str], size: int) -> Dict[tuple, List[str]]:
  out: Dict[tuple, List[str]] = {}
  for f in files:
    out.setdefault(shape_at(f, size), []).append(f)
  return out


# -- decode + encode ----------------------------------------------------------


def measure_decode_encode(files: Sequence[str], size: int,
                          repeats: int = 2) -> Dict[str, object]:
  """Seconds per image (one core) of the decode the pipeline cannot skip
  (draft mode, resize to size) and of the JPEG encode at quality 90."""
  from transforms.decode import decode_image
  from transforms.encode import encode_image
  from transforms.image_memory import reuse_image_memory
  reuse_image_memory()  # As the pipeline's workers do.
  start_load = loadavg()
  decode, encode = [], []
  for f in files:
    with open(f, 'rb') as fh:
      data = fh.read()
    d, e = [], []
    for _ in range(repeats):
      t0 = time.perf_counter()
      pixels, _, _ = decode_image(data, size)
      t1 = time.perf_counter()
      encode_image(pixels, 'jpg', 90)
      t2 = time.perf_counter()
      d.append(t1 - t0)
      e.append(t2 - t1)
    decode.append(min(d))
    encode.append(min(e))
  out = {'decode_s': statistics.mean(decode),
         'encode_s': statistics.mean(encode), 'files': len(files),
         'repeats': repeats, 'loadavg_start': start_load,
         'loadavg_end': loadavg()}
  out['total_s'] = out['decode_s'] + out['encode_s']
  return out


# -- the model alone (child process) ------------------------------------------


def _rate(stylizer, state, groups: List[List[np.ndarray]], threads: int,
          seconds: float) -> float:
  """images/s of stylize_many over whole cycles of `groups` (one batch per
  shape), from `threads` calling threads, for at least `seconds`."""
  counts = [0] * threads
  errors: List[BaseException] = []
  start = time.perf_counter()
  deadline = start + seconds

  def work(t: int):
    try:
      while True:
        for j in range(len(groups)):
          batch = groups[(j + t) % len(groups)]
          stylizer.stylize_many(batch, state)
          counts[t] += len(batch)
        if time.perf_counter() >= deadline:
          return
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)

  if threads == 1:
    work(0)
  else:
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in pool:
      t.start()
    for t in pool:
      t.join()
  if errors:
    raise errors[0]
  return sum(counts) / (time.perf_counter() - start)


def model_child(spec: dict) -> dict:
  """Runs in a fresh process: every configuration's model alone on the
  archive's shapes, interleaved."""
  from transforms.decode import decode_image
  from transforms.models.loader import load_stylizer
  from transforms.native_logs import import_tensorflow
  from transforms.styles import load_style_image
  import_tensorflow()
  size, batch = spec['size'], spec['batch_size']
  groups = []
  for files in spec['files_by_shape']:
    images = []
    for i in range(batch):
      with open(files[i % len(files)], 'rb') as f:
        images.append(decode_image(f.read(), size)[0])
    groups.append(images)
  style = load_style_image(spec['style'], spec['style_size'])
  loaded = {}
  for name in spec['configs']:
    engine, precision, _ = CONFIGS[name]
    start = time.perf_counter()
    s = load_stylizer(spec['model'], engine=engine, precision=precision)
    state = s.prepare_style(style)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(2):  # Compiles each bucket, TF's first calls per shape.
      for g in groups:
        s.stylize_many(g, state)
    loaded[name] = (s, state, {'engine': s.engine, 'precision': s.precision,
                               'load_s': load_s,
                               'warmup_s': time.perf_counter() - start})
  rounds = {name: {'threads_1': [], 'threads_2': []} for name in loaded}
  loads = []
  names = list(loaded)
  for r in range(spec['rounds']):
    loads.append(loadavg())
    for name in names[r % len(names):] + names[:r % len(names)]:
      s, state, _ = loaded[name]
      for threads in (1, 2):
        rounds[name][f'threads_{threads}'].append(
            _rate(s, state, groups, threads, spec['seconds']))
  loads.append(loadavg())
  out = {'shapes': [list(g[0].shape[:2]) for g in groups],
         'loadavg_rounds': loads, 'configs': {}}
  for name, (_, _, info) in loaded.items():
    entry = dict(info)
    for key, values in rounds[name].items():
      # Best of the rounds: other processes only ever slow a round down.
      entry[f'{key}_images_per_s'] = max(values)
      entry[f'{key}_median_images_per_s'] = statistics.median(values)
      entry[f'{key}_rounds'] = values
    best = max((1, 2), key=lambda t: entry[f'threads_{t}_images_per_s'])
    entry['best_threads'] = best
    entry['images_per_s'] = entry[f'threads_{best}_images_per_s']
    entry['two_threads_gain'] = (entry['threads_2_images_per_s'] /
                                 entry['threads_1_images_per_s'])
    out['configs'][name] = entry
  return out


# -- the pipeline (child process) ---------------------------------------------


def vm_hwm_mb() -> float:
  with open('/proc/self/status', encoding='utf-8') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  return float('nan')


STAGES = ('read_s', 'decode_s', 'stylize_s', 'encode_s', 'write_s')


def pipeline_child(spec: dict) -> dict:
  """Runs in a fresh process: run(argv) over the files, in-process."""
  from benchmarks.run import PeakRss, manifest_rows
  from beam_jobs.stylize import run
  workdir = spec['workdir']
  listing = os.path.join(workdir, 'inputs.txt')
  with open(listing, 'w', encoding='utf-8') as f:
    f.write('\n'.join(spec['files']) + '\n')
  out = tempfile.mkdtemp(prefix='out-', dir=workdir)
  engine, precision, _ = CONFIGS[spec['config']]
  argv = ['--input_list', listing, '--style', spec['style'],
          '--model', spec['model'], '--output', out,
          '--max_size', str(spec['size']),
          '--batch_size', str(spec['batch_size']),
          '--engine', engine, '--precision', precision, '--quiet',
          '--direct_running_mode=in_memory'] + spec.get('extra', [])
  with PeakRss() as rss:
    start = time.perf_counter()
    result = run(argv)
    wall = time.perf_counter() - start
  rows = manifest_rows(out)
  from apache_beam.metrics.metric import MetricsFilter
  # Committed where the runner has them, else attempted. run() returns the
  # last wave's result: with --wave_pairs, the last wave's batches only.
  batches = [d.committed or d.attempted for d in result.metrics().query(
      MetricsFilter().with_name('images_per_batch'))['distributions']]
  batches = [d for d in batches if d and d.count]
  ok = [r for r in rows if r['status'] == 'ok']
  totals = {k: sum(r['timings'].get(k, 0.0) for r in ok) for k in STAGES}
  made_with: Dict[str, int] = {}
  for r in ok:
    key = f'{r.get("engine")} {r.get("precision")}'
    made_with[key] = made_with.get(key, 0) + 1
  shutil.rmtree(out, ignore_errors=True)
  return {
      'wall_s': wall, 'ok': len(ok), 'rows': len(rows),
      'images_per_s': len(ok) / wall, 'per_image_s': wall / max(1, len(ok)),
      # The worker's own peak (VmHWM: the in-process runner is one
      # process), and the process tree sampled every 0.1 s
      # (benchmarks.run.PeakRss), which also counts short-lived forks of
      # this process in full (their pages are shared copy-on-write).
      'peak_rss_mb': vm_hwm_mb(),
      'peak_rss_tree_mb': rss.peak / 2**20,
      'made_with': made_with,
      'stage_split_s': {k: v / max(1, len(ok)) for k, v in totals.items()},
      'stage_total_s': totals,
      # Seconds the model ran per second of wall time (one calling thread
      # in-process): below 1, the model waited for something.
      'model_busy_fraction': totals['stylize_s'] / wall,
      # How full the batches handed to the model were (--batch_size at
      # most; per style); None where the runner reported no metrics.
      'images_per_batch': (sum(d.sum for d in batches) /
                           sum(d.count for d in batches) if batches else None),
      'batches': sum(d.count for d in batches) if batches else None,
  }


def _busy_seconds() -> float:
  """CPU seconds all processes have used since boot (/proc/stat: every
  state but idle and iowait)."""
  with open('/proc/stat', encoding='utf-8') as f:
    fields = [int(x) for x in f.readline().split()[1:]]
  return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')


def _my_cpu_seconds() -> float:
  """CPU seconds of this process and its finished children."""
  import resource
  own = resource.getrusage(resource.RUSAGE_SELF)
  kids = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def quiet_gate(max_wait: float, threshold: Optional[float] = None) -> dict:
  """Waits (up to max_wait seconds) until other processes use less than
  `threshold` cores (NOISY_CORES), measured over 3 s while this one idles."""
  threshold = NOISY_CORES if threshold is None else threshold
  start = time.perf_counter()
  logged = False
  while True:
    busy, mine = _busy_seconds(), _my_cpu_seconds()
    time.sleep(3.0)
    others = max(0.0, (_busy_seconds() - busy) - (_my_cpu_seconds() - mine))
    cores_used = others / 3.0
    waited = time.perf_counter() - start
    if cores_used < threshold or waited >= max_wait:
      return {'other_cores_before': round(cores_used, 2),
              'waited_s': round(waited, 1)}
    if not logged:
      logger.info('  waiting for other processes (%.2f cores) to go quiet',
                  cores_used)
      logged = True
    time.sleep(5.0)


def child(kind: str, spec: dict, workdir: str, fresh: bool = True,
          max_wait: float = 0.0) -> dict:
  """Runs model_child or pipeline_child in a fresh Python process (fresh:
  False runs it in this one: quicker, but peak RSS is then this process's
  so far, not the run's own).

  Records the load average at the start and end, and the CPU other
  processes used meanwhile (`other_cores`: all CPU time but this process
  tree's, per second of the measurement); with max_wait, first waits up to
  that long for other processes to go quiet.
  """
  gate = quiet_gate(max_wait) if max_wait else {}
  start_load = loadavg()
  busy, mine, start = _busy_seconds(), _my_cpu_seconds(), time.perf_counter()

  def noise(result: dict) -> dict:
    wall = time.perf_counter() - start
    others = (_busy_seconds() - busy) - (_my_cpu_seconds() - mine)
    result.update(gate)
    result['loadavg_start'] = start_load
    result['loadavg_end'] = loadavg()
    result['other_cores'] = round(max(0.0, others) / wall, 3)
    return result

  if not fresh:
    return noise((model_child if kind == 'model' else pipeline_child)(spec))
  stamp = f'{kind}-{time.monotonic_ns()}'
  spec_path = os.path.join(workdir, stamp + '.spec.json')
  out_path = os.path.join(workdir, stamp + '.out.json')
  log_path = os.path.join(workdir, stamp + '.log')
  with open(spec_path, 'w', encoding='utf-8') as f:
    json.dump(spec, f)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep +
             os.environ.get('PYTHONPATH', ''))
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with open(log_path, 'w', encoding='utf-8') as log:
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks.engines', '--child', kind,
         spec_path, out_path], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, check=False)
  if proc.returncode != 0 or not os.path.exists(out_path):
    with open(log_path, encoding='utf-8', errors='replace') as f:
      tail = f.read()[-4000:]
    raise RuntimeError(f'{kind} child failed ({proc.returncode}):\n{tail}')
  with open(out_path, encoding='utf-8') as f:
    return noise(json.load(f))


# -- the benchmark ------------------------------------------------------------


def cpu_bound(model_images_per_s: float, decode_encode_s: float) -> float:
  """What no pipeline beats: the model on every core plus the decode and
  encode it cannot skip, spread over the cores."""
  return 1 / (1 / model_images_per_s + decode_encode_s / cores())


def steady(a: dict, b: dict) -> Optional[float]:
  """The marginal rate between two runs (start-up cancels out)."""
  if b['wall_s'] <= a['wall_s'] or b['ok'] <= a['ok']:
    return None
  return (b['ok'] - a['ok']) / (b['wall_s'] - a['wall_s'])


def cost_per_million(images_per_s: float) -> dict:
  """Dataflow cost of 1e6 photos at this rate per `cores()` vCPUs."""
  vcpu_h = 1e6 * cores() / images_per_s / 3600
  mem_gb_h = vcpu_h * PRICES['memory_gb_per_vcpu']
  vcpu_usd = vcpu_h * PRICES['vcpu_hour_usd']
  mem_usd = mem_gb_h * PRICES['memory_gb_hour_usd']
  return {'seconds_per_image': 1 / images_per_s, 'vcpu_hours': vcpu_h,
          'memory_gb_hours': mem_gb_h, 'vcpu_usd': vcpu_usd,
          'memory_usd': mem_usd, 'usd': vcpu_usd + mem_usd}


def summarize(entry: dict, configs: Sequence[str], ns: Sequence[int]) -> None:
  """Adds cpu_bound, steady_state, ratios and cost to one size/archive."""
  de = entry['decode_encode']['total_s']
  model = entry['model_alone']['configs']
  entry['cpu_bound_limit_images_per_s'] = {
      name: cpu_bound(model[name]['images_per_s'], de) for name in configs}
  entry['model_alone_images_per_s'] = {
      name: model[name]['images_per_s'] for name in configs}
  new_limit = entry['cpu_bound_limit_images_per_s'].get(NEW)
  lo, hi = f'n{min(ns)}', f'n{max(ns)}'
  # Every key is there for every configuration; None where the two runs
  # give no rate (one N, or the larger run was not slower).
  ss, over_own, over_new, rss, tree, cost = {}, {}, {}, {}, {}, {}
  for name in configs:
    runs = entry['pipeline'][name]
    rate = steady(runs[lo], runs[hi]) if lo != hi else None
    ss[name] = rate
    rss[name] = max(r['peak_rss_mb'] for r in runs.values())
    tree[name] = max(r['peak_rss_tree_mb'] for r in runs.values())
    over_own[name] = over_new[name] = cost[name] = None
    if rate:
      over_own[name] = rate / entry['cpu_bound_limit_images_per_s'][name]
      if new_limit:
        over_new[name] = rate / new_limit
      cost[name] = cost_per_million(rate)
  entry['steady_state_images_per_s'] = ss
  entry['peak_rss_mb'] = rss
  entry['peak_rss_tree_mb'] = tree
  entry['cost_per_million'] = cost
  ratios = {'pipeline_over_own_cpu_bound': over_own,
            'pipeline_over_new_cpu_bound': over_new}
  if BASELINE in configs:
    base = ss.get(BASELINE)
    ratios['steady_state_vs_tf'] = {
        name: ss[name] / base if ss[name] and base else None
        for name in configs}
    ratios['largest_n_vs_tf'] = {
        name: (entry['pipeline'][name][hi]['images_per_s'] /
               entry['pipeline'][BASELINE][hi]['images_per_s'])
        for name in configs}
    ratios['model_alone_vs_tf'] = {
        name: model[name]['images_per_s'] / model[BASELINE]['images_per_s']
        for name in configs}
    ratios['peak_rss_vs_tf'] = {name: rss[name] / rss[BASELINE]
                                for name in configs}
    ratios['peak_rss_tree_vs_tf'] = {name: tree[name] / tree[BASELINE]
                                     for name in configs}
  entry['ratios'] = ratios


def targets(results: dict) -> List[dict]:
  """The issue's targets, met or not, per size and archive."""
  out = []
  for size, archives in results['runs'].items():
    for archive, e in archives.items():
      r = e['ratios']
      where = f'{size} px {archive}'
      if r.get('steady_state_vs_tf', {}).get(NEW) is not None:
        v = r['steady_state_vs_tf'][NEW]
        out.append({'target': f'auto vs tf steady state >= '
                              f'{TARGET_AUTO_VS_TF}x', 'where': where,
                    'value': v, 'met': v >= TARGET_AUTO_VS_TF})
      if r['pipeline_over_new_cpu_bound'].get(NEW) is not None:
        v = r['pipeline_over_new_cpu_bound'][NEW]
        out.append({'target': f'auto pipeline >= {TARGET_OVER_CPU_BOUND} of '
                              'the CPU-bound limit', 'where': where,
                    'value': v, 'met': v >= TARGET_OVER_CPU_BOUND})
      if NEW in r.get('peak_rss_vs_tf', {}):
        v = r['peak_rss_vs_tf'][NEW]
        out.append({'target': 'auto peak RSS <= tf', 'where': where,
                    'value': v, 'met': v <= 1.0})
  return out


def machine() -> dict:
  import PIL
  info = {'python': platform.python_version(),
          'platform': platform.platform(), 'cpus': cores()}
  try:
    import psutil
    info['memory_gb'] = round(psutil.virtual_memory().total / 2**30, 1)
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      text = f.read()
    info['cpu'] = next(l.split(':', 1)[1].strip()
                       for l in text.splitlines()
                       if l.startswith('model name'))
    flags = next(l.split(':', 1)[1].split() for l in text.splitlines()
                 if l.startswith('flags'))
    info['bf16_flags'] = sorted(set(flags) & {'amx_bf16', 'avx512_bf16'})
  except (ImportError, OSError, StopIteration):
    pass
  info['pillow'] = PIL.__version__
  commit = os.environ.get('STYLIZE_BENCH_COMMIT')
  if not commit:
    try:
      # '-dirty' when the working tree differs from that commit.
      commit = subprocess.run(['git', '-C', ROOT, 'describe', '--always',
                               '--abbrev=40', '--dirty'],
                              capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      commit = None
  info['commit'] = commit
  for module in ('openvino', 'tensorflow', 'apache_beam'):
    try:
      from importlib.metadata import version
      info[module] = version(module)
    except Exception:  # pylint: disable=broad-except
      pass
  return info


def run_benchmark(args) -> dict:
  configs = args.engines
  ns = sorted(set(args.n))
  scale = 0.1 if args.quick else 1.0
  key = dataset_key(args.content)
  results = {
      'started': datetime.datetime.now().isoformat(timespec='seconds'),
      'machine': machine(), 'loadavg_start': loadavg(),
      'model': args.model, 'style': args.style, 'batch_size': args.batch_size,
      'n': ns, 'quick': args.quick, 'cores': cores(),
      'pipeline_repeats': args.repeats,
      'noisy_cores': NOISY_CORES, 'retries': args.retries,
      'fresh_process_per_measurement': args.fresh,
      'configs': {k: {'engine': CONFIGS[k][0], 'precision': CONFIGS[k][1],
                      'label': CONFIGS[k][2]} for k in configs},
      'archives': {
          'uniform': '4000x3000 JPEG (4:3 landscape), q90, EXIF',
          'mixed': 'equal shares of 4000x3000, 3000x4000, 4000x2667 and '
                   '4000x2250 JPEG (4:3 and 3:2 landscape, portrait, '
                   '16:9), q90, EXIF'},
      'prices': PRICES,
      'formulas': {
          'cpu_bound_limit': '1 / (1/model_alone + (decode_s + encode_s) / '
                             'cores)',
          'steady_state': '(N2 - N1) / (wall_N2 - wall_N1)',
          'vcpu_hours_per_million': '1e6 * cores / steady_state / 3600',
          'usd_per_million': 'vcpu_hours * vcpu_hour_usd + vcpu_hours * '
                             'memory_gb_per_vcpu * memory_gb_hour_usd'},
      'runs': {}}
  if args.quick:
    results['archives'] = {k: v + f' (scaled by {scale}: --quick)'
                           for k, v in results['archives'].items()}
  workdir = tempfile.mkdtemp(prefix='stylize-engines-')
  try:
    files = {}
    for archive in args.archives:
      if args.data_dir:
        folder = os.path.join(args.data_dir, archive)
      elif args.quick:
        folder = cache_folder(f'engines-quick-{key}-{archive}')
      elif archive == 'uniform':  # benchmarks.run's data set, shared.
        folder = cache_folder(f'camera-{key}')
      else:
        folder = cache_folder(f'engines-{archive}-{key}')
      logger.info('archive %s: %d files in %s', archive, max(ns), folder)
      files[archive] = make_archive(archive, args.content, folder, max(ns),
                                    scale)
    for size in args.sizes:
      results['runs'][str(size)] = {}
      for archive in args.archives:
        entry = measure_one(args, size, archive, files[archive], configs, ns,
                            workdir)
        results['runs'][str(size)][archive] = entry
        write(results, args.results, args.stamp)  # A partial result too.
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  results['targets'] = targets(results)
  results['loadavg_end'] = loadavg()
  results['finished'] = datetime.datetime.now().isoformat(timespec='seconds')
  return results


def measure_one(args, size: int, archive: str, files: List[str],
                configs: Sequence[str], ns: Sequence[int],
                workdir: str) -> dict:
  shapes = by_shape(files[:max(ns)], size)
  entry = {'shapes': {f'{h}x{w}': len(v) for (h, w), v in shapes.items()}}
  logger.info('%d px %s: shapes %s', size, archive, entry['shapes'])
  per_shape = max(1, args.decode_files // len(shapes))
  sample = [f for v in shapes.values() for f in v[:per_shape]]
  gate = quiet_gate(args.max_wait) if args.max_wait else {}
  entry['decode_encode'] = measure_decode_encode(sample, size,
                                                 1 if args.quick else 2)
  entry['decode_encode'].update(gate)
  logger.info('  decode %.4f + encode %.4f s/img',
              entry['decode_encode']['decode_s'],
              entry['decode_encode']['encode_s'])
  tries = []
  for _ in range(1 + args.retries):
    tries.append(child('model', {
        'size': size, 'batch_size': args.batch_size, 'model': args.model,
        'style': args.style, 'style_size': 256, 'configs': list(configs),
        'files_by_shape': [v[:args.batch_size] for v in shapes.values()],
        'rounds': args.rounds, 'seconds': args.model_seconds}, workdir,
                       args.fresh, args.max_wait))
    if tries[-1]['other_cores'] <= NOISY_CORES:
      break
    logger.info('  model alone: others used %.2f cores: again',
                tries[-1]['other_cores'])
  entry['model_alone'] = dict(min(tries, key=lambda t: t['other_cores']))
  entry['model_alone']['other_cores_of_tries'] = [t['other_cores']
                                                  for t in tries]
  for name in configs:
    m = entry['model_alone']['configs'][name]
    logger.info('  model alone %-13s %s %s: 1 thread %.2f, 2 threads %.2f '
                'img/s', name, m['engine'], m['precision'],
                m['threads_1_images_per_s'], m['threads_2_images_per_s'])
  # Every repeat runs each N with every engine, the order rotating, so
  # noise hits all alike; each (engine, N) keeps its fastest run (other
  # processes only ever slow a run down) and lists them all.
  runs: Dict[str, Dict[str, List[dict]]] = {
      name: {f'n{n}': [] for n in ns} for name in configs}
  step = 0
  for _ in range(args.repeats):
    for n in ns:
      k = step % len(configs)
      step += 1
      for name in list(configs)[k:] + list(configs)[:k]:
        for attempt in range(1 + args.retries):
          r = child('pipeline', {
              'files': files[:n], 'size': size, 'model': args.model,
              'style': args.style, 'batch_size': args.batch_size,
              'config': name, 'workdir': workdir,
              'extra': list(args.pipeline_args)}, workdir, args.fresh,
                    args.max_wait)
          runs[name][f'n{n}'].append(r)
          logger.info('  pipeline %-13s N=%d: %.1f s, %.2f img/s, peak RSS '
                      '%.0f MB (tree %.0f), others %.2f cores, %s', name, n,
                      r['wall_s'], r['images_per_s'], r['peak_rss_mb'],
                      r['peak_rss_tree_mb'], r['other_cores'],
                      r['made_with'])
          if r['other_cores'] <= NOISY_CORES:
            break
          logger.info('  (others used %.2f cores: again)', r['other_cores'])
  entry['pipeline'] = {}
  for name in configs:
    entry['pipeline'][name] = {}
    for key, tries in runs[name].items():
      best = dict(min(tries, key=lambda r: r['wall_s']))
      best['peak_rss_mb'] = max(r['peak_rss_mb'] for r in tries)
      best['peak_rss_tree_mb'] = max(r['peak_rss_tree_mb'] for r in tries)
      best['repeats'] = [{k: r[k] for k in (
          'wall_s', 'images_per_s', 'peak_rss_mb', 'peak_rss_tree_mb',
          'other_cores', 'loadavg_start', 'loadavg_end')} for r in tries]
      entry['pipeline'][name][key] = best
  summarize(entry, configs, ns)
  return entry


def write(results: dict, folder: str, stamp: str) -> str:
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f'engines-{stamp}.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  os.replace(path + '.tmp', path)
  return path


def _f(x, spec='.2f', width=0) -> str:
  text = 'n/a' if x is None else format(x, spec)
  return text.rjust(width)


def format_table(results: dict) -> str:
  lines = []
  ns = results['n']
  hi = f'n{max(ns)}'
  for size, archives in results['runs'].items():
    for archive, e in archives.items():
      de = e['decode_encode']
      lines.append(f'\n{size} px, {archive} ({", ".join(e["shapes"])}); '
                   f'decode {de["decode_s"]:.4f} + encode '
                   f'{de["encode_s"]:.4f} s/img')
      lines.append(
          f'{"engine":<22}{"model 1t":>9}{"model 2t":>9}{"CPU-bound":>10}'
          f'{"N=" + str(min(ns)):>8}{"N=" + str(max(ns)):>8}{"steady":>8}'
          f'{"/own CB":>8}{"/new CB":>8}{"vs tf":>7}{"RSS MB":>8}'
          f'{"tree MB":>8}{"$/1M":>8}')
      for name, cfg in results['configs'].items():
        m = e['model_alone']['configs'][name]
        p = e['pipeline'][name]
        r = e['ratios']
        cost = (e['cost_per_million'][name] or {}).get('usd')
        lines.append(
            f'{cfg["label"]:<22}'
            f'{_f(m["threads_1_images_per_s"], ".2f", 9)}'
            f'{_f(m["threads_2_images_per_s"], ".2f", 9)}'
            f'{_f(e["cpu_bound_limit_images_per_s"][name], ".2f", 10)}'
            f'{_f(p[f"n{min(ns)}"]["images_per_s"], ".2f", 8)}'
            f'{_f(p[hi]["images_per_s"], ".2f", 8)}'
            f'{_f(e["steady_state_images_per_s"][name], ".2f", 8)}'
            f'{_f(r["pipeline_over_own_cpu_bound"].get(name), ".2f", 8)}'
            f'{_f(r["pipeline_over_new_cpu_bound"].get(name), ".2f", 8)}'
            f'{_f(r.get("steady_state_vs_tf", {}).get(name), ".2f", 7)}'
            f'{_f(e["peak_rss_mb"][name], ".0f", 8)}'
            f'{_f(e["peak_rss_tree_mb"][name], ".0f", 8)}'
            f'{_f(cost, ".2f", 8)}')
      lines.append(f'{"stage split, N=" + str(max(ns)) + " (s/img)":<34}'
                   + ''.join(f'{k[:-2]:>9}' for k in STAGES)
                   + f'{"model busy":>11}{"others":>8}')
      for name, cfg in results['configs'].items():
        p = e['pipeline'][name][hi]
        lines.append(f'  {cfg["label"]:<32}' + ''.join(
            _f(p['stage_split_s'][k], '.4f', 9) for k in STAGES) +
                     _f(p['model_busy_fraction'], '.2f', 11) +
                     _f(max(r['other_cores'] for r in p['repeats']), '.2f',
                        8))
  if results.get('targets'):
    lines.append('\ntargets')
    for t in results['targets']:
      lines.append(f'  {"met    " if t["met"] else "NOT met"}  '
                   f'{t["where"]:<20} {t["target"]:<46} {t["value"]:.2f}')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024])
  parser.add_argument('--n', type=int, nargs='+', default=None,
                      help='two archive sizes for the pipeline runs '
                      '(default 200 400; --quick: 2 3)')
  parser.add_argument('--engines', nargs='+', default=list(CONFIGS),
                      choices=list(CONFIGS))
  parser.add_argument('--archives', nargs='+', default=list(ARCHIVES),
                      choices=list(ARCHIVES))
  parser.add_argument('--quick', action='store_true',
                      help='tiny images (a tenth of the camera size), N 2 3, '
                      'short model-alone rounds: checks the harness runs')
  parser.add_argument('--model', default=os.path.join(
      SHARED, 'models', 'magenta-arbitrary-v1-256-savedmodel'))
  parser.add_argument('--style', default=os.path.join(
      SHARED, 'images', 'style', 'towers_1916_sq.jpg'))
  parser.add_argument('--content', default=os.path.join(SHARED, 'images',
                                                        'content'))
  parser.add_argument('--batch_size', type=int, default=4)
  parser.add_argument('--rounds', type=int, default=None,
                      help='interleaved model-alone rounds (default 3)')
  parser.add_argument('--model_seconds', type=float, default=None,
                      help='seconds per model-alone measurement (default 4)')
  parser.add_argument('--decode_files', type=int, default=None,
                      help='files for the decode + encode cost (default 16)')
  parser.add_argument('--data_dir', default=None,
                      help='where the archives are kept between runs (default: '
                           'the cache folder, benchmarks.data.cache_folder)')
  parser.add_argument('--results', default=os.path.join(HERE, 'results'))
  parser.add_argument('--pipeline_args', nargs=argparse.REMAINDER, default=[],
                      help='extra flags for the pipeline runs (last)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='pipeline runs per engine and N; the fastest '
                      'counts (default 3; --quick: 1)')
  parser.add_argument('--retries', type=int, default=None,
                      help='extra tries of a measurement during which other '
                      f'processes used over {NOISY_CORES} cores (default 2; '
                      '--quick: 0)')
  parser.add_argument('--max_wait', type=float, default=None,
                      help='seconds to wait before each measurement for '
                      'other processes to go quiet (default 600; --quick: '
                      '0, no wait)')
  parser.add_argument('--same_process', action='store_true',
                      help='measure in this process, not a fresh one per '
                      'measurement (quicker; peak RSS is then not each '
                      "run's own); --quick implies it")
  parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    kind, spec_path, out_path = args.child
    logging.basicConfig(level=logging.WARNING)
    with open(spec_path, encoding='utf-8') as f:
      spec = json.load(f)
    out = (model_child if kind == 'model' else pipeline_child)(spec)
    with open(out_path, 'w', encoding='utf-8') as f:
      json.dump(out, f)
    return 0
  quick = args.quick
  if args.n is None:
    args.n = [2, 3] if quick else [MAX_SAMPLES, 2 * MAX_SAMPLES]
  if not quick and min(args.n) < MAX_SAMPLES:
    logger.warning('N=%d is below the report\'s %d samples: their thumbnails '
                   'do not cancel out of the steady state.', min(args.n),
                   MAX_SAMPLES)
  if args.rounds is None:
    args.rounds = 1 if quick else 3
  if args.model_seconds is None:
    args.model_seconds = 0.1 if quick else 4.0
  if args.repeats is None:
    # Runs of one configuration differ by up to ~15% here (the same 400
    # photos: 29.4 to 37.6 s): a steady state from single runs can be off
    # by a third. Three runs per N, the fastest counting, settle it.
    args.repeats = 1 if quick else 3
  if args.max_wait is None:
    args.max_wait = 0.0 if quick else 600.0
  if args.retries is None:
    args.retries = 0 if quick else 2
  if args.decode_files is None:
    args.decode_files = 2 if quick else 16
  args.fresh = not (quick or args.same_process)
  args.stamp = datetime.datetime.now().strftime('%Y%m%dT%H%M%S')
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
  results = run_benchmark(args)
  path = write(results, args.results, args.stamp)
  print(format_table(results))
  print(f'\nwritten: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
