"""Archive-scale benchmark: many small photos through the real job.

    python -m benchmarks.scale                         # 5,000 and 50,000 photos
    python -m benchmarks.scale --sizes 2000 --repeats 1  # a quick look

For each archive size it makes a folder tree of small JPEGs (once, cached in
the temp folder), then runs the job as a user would (`python -m
beam_jobs.stylize`, builtin model, --max_size 160) in a fresh output folder:
a first run, then a rerun in which everything is skipped, `--repeats` times.
It measures wall time, time per pair and the peak RSS of the whole process
tree, and checks every run: exit code, manifest rows (each listed pair
exactly once) and summary.json. Results go to
benchmarks/results/scale-<time>.json and a table is printed.
"""

import argparse
import datetime
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import psutil
from PIL import Image

from benchmarks.data import cache_folder
from benchmarks.run import PeakRss, manifest_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'benchmarks', 'results')
STYLE = os.path.join(ROOT, 'samples', 'style', 'waves.jpg')
PER_FOLDER = 250

logger = logging.getLogger('benchmarks.scale')


def make_archive(n: int, root: str) -> str:
  """n small, distinct JPEGs in nested folders (cached by n)."""
  folder = os.path.join(root, f'scale-{n}')
  done = os.path.join(folder, '.complete')
  if os.path.exists(done):
    return folder
  shutil.rmtree(folder, ignore_errors=True)
  rng = np.random.default_rng(0)
  base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
  for i in range(n):
    sub = os.path.join(folder, f'{i // 10000:02d}', f'{(i // PER_FOLDER):04d}')
    os.makedirs(sub, exist_ok=True)
    arr = np.roll(base, i % 64, axis=1) ^ np.uint8(i % 251)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, 'JPEG', quality=85)
    with open(os.path.join(sub, f'IMG_{i:06d}.jpg'), 'wb') as f:
      f.write(buf.getvalue())
  open(done, 'w').close()
  return folder


def run_job(archive: str, out: str, n: int, extra: List[str]) -> Dict:
  """One run of the job as a subprocess; what it cost and whether it held."""
  argv = [sys.executable, '-m', 'beam_jobs.stylize', '--input', archive,
          '--style', STYLE, '--model', 'builtin', '--max_size', '160',
          '--output', out, '--quiet'] + extra
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  with PeakRss(interval=0.2) as rss:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - start
  result = {'exit_code': proc.returncode, 'wall_s': round(wall, 2),
            'peak_rss_mb': round(rss.peak / 2**20, 1)}
  try:
    rows = manifest_rows(out)
    with open(os.path.join(out, 'summary.json'), encoding='utf-8') as f:
      summary = json.load(f)
  except (OSError, ValueError) as e:
    result.update({'crashed': True, 'error': f'{type(e).__name__}: {e}',
                   'stderr_tail': proc.stderr[-2000:]})
    return result
  pairs = {(r['input'], r['style']) for r in rows}
  statuses = {}
  for r in rows:
    statuses[r['status']] = statuses.get(r['status'], 0) + 1
  result.update({
      'crashed': proc.returncode not in (0, 1),
      'rows': len(rows), 'distinct_pairs': len(pairs),
      'lost_pairs': n - len(pairs), 'duplicate_rows': len(rows) - len(pairs),
      'statuses': statuses, 'verdict': summary.get('verdict'),
      'runs_on_summary': summary.get('run_id'),
      's_per_pair': round(wall / n, 5),
  })
  if proc.returncode != 0:
    result['stderr_tail'] = proc.stderr[-2000:]
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[5000, 50000])
  parser.add_argument('--repeats', type=int, default=1,
                      help='first-run + rerun pairs per size')
  parser.add_argument('--data_dir', default=cache_folder('scale'))
  parser.add_argument('--extra', nargs=argparse.REMAINDER, default=[],
                      help='more job flags, e.g. --extra --io_threads 0')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  os.makedirs(args.data_dir, exist_ok=True)
  report = {
      'when': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(),
                  'ram_gb': round(psutil.virtual_memory().total / 2**30, 1)},
      'job_flags': ['--model', 'builtin', '--max_size', '160'] + args.extra,
      'runs': [],
  }
  for n in args.sizes:
    logger.info('making %d photos...', n)
    archive = make_archive(n, args.data_dir)
    for rep in range(args.repeats):
      out = tempfile.mkdtemp(prefix=f'scale-out-{n}-', dir=args.data_dir)
      try:
        for kind in ('first', 'rerun'):
          logger.info('n=%d repeat %d: %s run...', n, rep + 1, kind)
          res = run_job(archive, out, n, args.extra)
          res.update({'n': n, 'repeat': rep + 1, 'kind': kind})
          logger.info('  %s', json.dumps(res)[:400])
          report['runs'].append(res)
      finally:
        shutil.rmtree(out, ignore_errors=True)
  _ratios(report)
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, 'scale-' + time.strftime('%Y%m%dT%H%M%S') +
                      '.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)
  print(format_table(report))
  print(f'wrote {path}')
  return 0


def _ratios(report: Dict) -> None:
  """Largest vs smallest archive: peak RSS and time per pair, per kind."""
  sizes = sorted({r['n'] for r in report['runs']})
  if len(sizes) < 2:
    return
  small, large = sizes[0], sizes[-1]
  out = {}
  for kind in ('first', 'rerun'):
    def best(n, key):
      vals = [r[key] for r in report['runs']
              if r['n'] == n and r['kind'] == kind and key in r]
      return min(vals) if vals else None
    rss_s, rss_l = best(small, 'peak_rss_mb'), best(large, 'peak_rss_mb')
    t_s, t_l = best(small, 's_per_pair'), best(large, 's_per_pair')
    if None not in (rss_s, rss_l, t_s, t_l):
      out[kind] = {'peak_rss_ratio': round(rss_l / rss_s, 3),
                   's_per_pair_ratio': round(t_l / t_s, 3)}
  report['ratios'] = {'small': small, 'large': large, **out}


def format_table(report: Dict) -> str:
  lines = ['    n  kind   rep  exit  wall_s  ms/pair  peak_MB  rows  lost  dup'
           '  verdict']
  for r in report['runs']:
    lines.append(
        f"{r['n']:>6} {r['kind']:<6} {r['repeat']:>3} {r['exit_code']:>5} "
        f"{r['wall_s']:>7} {1000 * r.get('s_per_pair', 0):>8.2f} "
        f"{r['peak_rss_mb']:>8} {r.get('rows', '-'):>5} "
        f"{r.get('lost_pairs', '-'):>5} {r.get('duplicate_rows', '-'):>4}  "
        f"{r.get('verdict', 'CRASH')}")
  if report.get('ratios'):
    lines.append(f"ratios {json.dumps(report['ratios'])}")
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
