"""stylize-inspect HANDLE: load a model as the pipeline would and describe it."""

import argparse
import json
import logging
import os
import sys
import time
from typing import List, Optional

import numpy as np

from transforms.native_logs import quiet_start


def resolved_path(handle: str) -> str:
  """Where the model's files are on this machine."""
  from transforms.models import builtin, cache, embedded
  from transforms.models.loader import describe_model
  if handle == builtin.BUILTIN_NAME:
    return builtin.builtin_path()
  if embedded.is_embedded(handle):
    return embedded.folder(handle)
  if describe_model(handle) == 'hub':
    from transforms.models import tfhub
    # TF Hub's cache ($TFHUB_CACHE_DIR), fetched from $TFHUB_MIRROR if set.
    return tfhub.resolve(tfhub.mirrored(handle))
  return ','.join(os.path.abspath(p) if '://' not in p else p
                  for p in cache.localize(handle).split(','))


def inspect(handle: str, size: int = 384, threads: int = 0,
            sha256: Optional[str] = None, engine: str = 'auto',
            precision: str = 'auto') -> dict:
  """Loads handle through the pipeline's adapters, on the engine the job
  would run it on; kind, tensors, engine, timings."""
  from transforms.models.base import StyleParams
  from transforms.models.loader import describe_model, load_stylizer
  start = time.perf_counter()
  stylizer = load_stylizer(handle, threads=threads, expected_sha256=sha256,
                           engine=engine, precision=precision)
  load_s = time.perf_counter() - start
  rng = np.random.default_rng(0)
  style = stylizer.prepare_style(rng.random((256, 256, 3), dtype=np.float32))
  content = (rng.random((1, size, size, 3)) * 255).astype(np.uint8)
  start = time.perf_counter()
  stylizer.stylize(content, style, StyleParams())
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  out = stylizer.stylize(content, style, StyleParams())
  call_s = time.perf_counter() - start
  info = {'model': handle, 'kind': describe_model(handle),
          'resolved_path': resolved_path(handle), 'load_s': round(load_s, 3)}
  info.update(stylizer.describe())
  info[f'first_call_{size}px_s'] = round(first_s, 3)
  info[f'call_{size}px_s'] = round(call_s, 3)
  info['output_shape'] = list(out.shape)
  return info


PROG = 'stylize-inspect'


def main(argv: Optional[List[str]] = None) -> int:
  quiet_start()  # transforms/native_logs.py
  parser = argparse.ArgumentParser(
      prog=PROG, allow_abbrev=False,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      description='Load a model the way the pipeline does and describe it.')
  parser.add_argument('handle', metavar='HANDLE',
                      help='magenta-lite, builtin, a SavedModel folder or '
                      '.tar.gz, a TF Lite folder or pair, gs:// paths, or a '
                      'TF Hub handle (what stylize --model takes)')
  parser.add_argument('--size', type=int, default=384,
                      help='side of the test image for the timed call')
  parser.add_argument('--tf_threads', type=int, default=0)
  parser.add_argument('--model_sha256', default=None,
                      help='expected SHA-256 of the model, as stylize takes')
  parser.add_argument('--engine', default='auto',
                      choices=('auto', 'openvino', 'tf'),
                      help='as stylize --engine')
  parser.add_argument('--precision', default='auto',
                      choices=('auto', 'bf16', 'f32'),
                      help='as stylize --precision')
  parser.add_argument('--json', action='store_true', help='print JSON only')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  from transforms.models.base import ModelLoadError
  try:
    info = inspect(args.handle, args.size, args.tf_threads, args.model_sha256,
                   args.engine, args.precision)
  except ModelLoadError as e:
    # The messages are shared with stylize, where the handle is --model.
    message = str(e).replace('--model ', 'HANDLE ').replace('--model:',
                                                            'HANDLE:')
    print(f'{PROG}: error: HANDLE {args.handle!r}: {message}',
          file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(info, indent=2, default=str))
    return 0
  for key, value in info.items():
    if isinstance(value, dict):
      print(f'{key}:')
      for k, v in value.items():
        print(f'  {k}: {v}')
    else:
      print(f'{key}: {value}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
