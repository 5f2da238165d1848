"""Peak memory of one large photo: decode + stylize at full size, 16-bit decode.

    python -m benchmarks.memory                        # this checkout
    python -m benchmarks.memory --baseline /tmp/old    # and an older tree

Each case runs in a fresh Python process and reports that process's peak
RSS (VmHWM from /proc: exact, not sampled; Linux only); a 'baseline' case that
imports the same modules and runs the job on a small image gives the fixed
cost (TensorFlow, Beam) to subtract. With --baseline, the same cases run on
another source tree (e.g. `git archive <commit> | tar -x -C /tmp/old`) for
before/after numbers. Results go to benchmarks/results/memory-<time>.json.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import shutil
import tempfile
from typing import Dict

import numpy as np
from PIL import Image

from benchmarks.data import cache_folder

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get('STYLIZE_SHARED_DIR', os.path.join(ROOT, '..', 'shared'))

# The child's own peak RSS: VmHWM, the high-water mark of its memory map.
# Not getrusage's ru_maxrss, which on Linux carries over the parent's peak
# through fork and exec (a parent that made a 100 MP test image would
# inflate every later child).
_PEAK = '''
def peak_kib():
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1])
'''
# Runs in the child: the job on one image, --max_size 0, builtin model.
_STYLIZE = _PEAK + '''
import sys
from beam_jobs.stylize import run
run(['--input', sys.argv[1], '--style', sys.argv[2], '--output', sys.argv[3],
     '--model', 'builtin', '--max_size', '0'] + sys.argv[4:])
print(peak_kib())
'''
# Runs in the child: decode one file at a given --max_size (0: full size).
_DECODE = _PEAK + '''
import sys
from transforms.decode import decode_image
data = open(sys.argv[1], 'rb').read()
size = int(sys.argv[2])
if size >= 0:
  pixels, _, _ = decode_image(data, size or None)
print(peak_kib())
'''


def make_photo(path: str, size=(8000, 6000)) -> str:
  """A large camera-like JPEG (a shared photo, upscaled, with noise)."""
  if os.path.exists(path):
    return path
  content = os.path.join(SHARED, 'images', 'content')
  photos = sorted(f for f in os.listdir(content)
                  if f.lower().endswith(('.jpg', '.jpeg', '.png'))
                  ) if os.path.isdir(content) else []
  src = photos[0] if photos else None
  if src:
    im = Image.open(os.path.join(content, src)).convert('RGB').resize(
        size, Image.Resampling.BICUBIC)
  else:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    im = Image.fromarray(np.stack([x * 255 // size[0], y * 255 // size[1],
                                   128 + 0 * x], -1).astype(np.uint8))
  arr = np.asarray(im, np.int16)
  noise = np.random.default_rng(0).integers(-6, 7, arr.shape, np.int16)
  Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8)).save(
      path, quality=90)
  return path


def make_png16(path: str, size=(6000, 4000)) -> str:
  """A 16-bit greyscale PNG (Pillow mode I;16), e.g. a scan or a raw export."""
  if os.path.exists(path):
    return path
  w, h = size
  y, x = np.mgrid[0:h, 0:w]
  arr = ((x * 40000 // w + y * 25000 // h) % 65536).astype(np.uint16)
  arr += np.random.default_rng(1).integers(0, 200, arr.shape, np.uint16)
  Image.fromarray(arr).save(path, compress_level=1)
  return path


def peak_mb(code: str, args, root: str, env_extra: Dict[str, str]) -> float:
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL='2',
             **env_extra)
  out = subprocess.run([sys.executable, '-c', code] + [str(a) for a in args],
                       cwd=root, env=env, check=False, capture_output=True,
                       text=True)
  if out.returncode:
    raise RuntimeError(f'case failed in {root}:\n{out.stderr[-3000:]}')
  return int(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB


def measure(root: str, data: str, style: str, work: str,
            huge: bool = False) -> Dict[str, float]:
  env = {'STYLIZE_CACHE_DIR': os.path.join(work, 'cache')}
  photo = make_photo(os.path.join(data, 'photo_8000x6000.jpg'))
  small = os.path.join(data, 'photo_800x600.jpg')
  if not os.path.exists(small):
    Image.open(photo).resize((800, 600)).save(small, quality=90)
  png16 = make_png16(os.path.join(data, 'grey16_6000x4000.png'))
  out = {}

  def job(name, image):
    target = tempfile.mkdtemp(prefix=name, dir=work)
    out[name] = peak_mb(_STYLIZE, [image, style, target], root, env)

  job('stylize_800x600_max_size_0_mb', small)
  job('stylize_8000x6000_max_size_0_mb', photo)
  if huge:
    job('stylize_10000x10000_max_size_0_mb', make_photo(
        os.path.join(data, 'photo_10000x10000.jpg'), (10000, 10000)))
  for label, size in (('import_only', -1), ('max_size_1024', 1024),
                      ('max_size_0', 0)):
    out[f'decode_png16_6000x4000_{label}_mb'] = peak_mb(
        _DECODE, [png16, size], root, env)
  return {k: round(v, 1) for k, v in out.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--baseline', default=None,
                      help='another source tree to measure the same way')
  parser.add_argument('--style', default=os.path.join(ROOT, 'samples', 'style',
                                                      'waves.jpg'))
  parser.add_argument('--data_dir', default=cache_folder('memory'))
  parser.add_argument('--results', default=os.path.join(HERE, 'results'))
  parser.add_argument('--huge', action='store_true',
                      help='also a 100 MP photo (the --max_input_pixels limit)')
  args = parser.parse_args(argv)
  os.makedirs(args.data_dir, exist_ok=True)
  work = tempfile.mkdtemp(prefix='stylize-memory-')
  results = {'started': datetime.datetime.now(
      datetime.timezone.utc).isoformat(), 'peak_rss': {}}
  roots = {'this': ROOT}
  if args.baseline:
    roots['baseline'] = os.path.abspath(args.baseline)
  try:
    for label, root in roots.items():
      results['peak_rss'][label] = measure(root, args.data_dir, args.style,
                                           work, args.huge)
      print(label, json.dumps(results['peak_rss'][label], indent=2))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  os.makedirs(args.results, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%dT%H%M%S')
  path = os.path.join(args.results, f'memory-{stamp}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'written: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
