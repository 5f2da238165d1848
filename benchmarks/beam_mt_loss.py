"""Beam's multi_threading DirectRunner corrupts data: a pure-Beam reproduction.

    python -m benchmarks.beam_mt_loss                 # stock Beam, 3 runs
    python -m benchmarks.beam_mt_loss --no_time_flush # the cause switched off

No stylize code runs here: N + N dicts go through a Flatten and a GroupByKey
on `--direct_running_mode=multi_threading --direct_num_workers=2`, and the
count that comes out is compared with 2N.

The cause (Beam 2.77): in multi_threading mode the SDK workers are embedded
gRPC workers whose data streams also flush on a 1 s timer
(fn_api_runner.worker_handlers.DATA_BUFFER_TIME_LIMIT_MS), from a background
thread that is not synchronised with element encoding. A bundle that runs
longer than a second can therefore send half an encoded element in one data
chunk and the rest in the next. The runner decodes every chunk on its own
(GroupingBuffer.append) and hands chunks, not elements, to the worker
threads (ListBuffer.partition), so a split element is decoded from its
middle: the run dies with `Invalid PaneInfoEncoding`, a MemoryError or an
out-of-memory kill, or elements are silently dropped. With the timer off
(--no_time_flush, which sets that constant out of reach), every run counts
exactly 2N. in_memory (in-process data channel) and multi_processing (no
time-based flush) do not have the timer. This is why stylize refuses
multi_threading and overlaps decoding with bounded pools instead.
"""

import argparse
import json
import resource
import subprocess
import sys


def _one_run(n: int, no_time_flush: bool) -> None:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.runners.portability.fn_api_runner import worker_handlers
  if no_time_flush:
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 10**9
  # A garbage length decoded from a split element can ask for many GB.
  resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
  opts = PipelineOptions(['--direct_running_mode=multi_threading',
                          '--direct_num_workers=2'])
  with beam.Pipeline(options=opts) as p:
    x = p | beam.Create(range(n)) | beam.Map(lambda i: {'i': i,
                                                         'pad': 'x' * 200})
    y = p | 'C2' >> beam.Create(range(n, 2 * n)) | 'M2' >> beam.Map(
        lambda i: {'i': i})
    grouped = ((x, y) | beam.Flatten()
               | beam.Map(lambda d: (d['i'] % 5000, d)) | beam.GroupByKey()
               | beam.FlatMap(lambda kv: kv[1]))
    _ = (grouped | beam.combiners.Count.Globally()
         | beam.Map(lambda c: print(json.dumps({'count': c}), flush=True)))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n', type=int, default=60000)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--no_time_flush', action='store_true')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    _one_run(args.n, args.no_time_flush)
    return 0
  results = []
  for _ in range(args.runs):
    cmd = [sys.executable, '-m', 'benchmarks.beam_mt_loss', '--child',
           '--n', str(args.n)] + (['--no_time_flush'] if args.no_time_flush
                                  else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    count = None
    for line in proc.stdout.splitlines():
      if line.startswith('{'):
        count = json.loads(line)['count']
    error = proc.stderr.strip().splitlines()[-1][:200] if (
        proc.returncode and proc.stderr.strip()) else ''
    results.append({'expected': 2 * args.n, 'count': count,
                    'exit_code': proc.returncode, 'error': error})
    print(json.dumps(results[-1]), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
