"""Progress of local runs: workers append events, the launcher shows them.

Beam's DirectRunner gives no metrics while a pipeline runs, so for local runs
every worker process appends one short line per event to its own file in a
progress folder on this machine, and a thread in the launcher sums them every
second or two. On Dataflow the same events are Beam counters (see
RecordProgress), which the Dataflow UI shows live.
"""

import collections
import logging
import os
import shutil
import sys
import threading
import time
from typing import Dict, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.records import Failure, ManifestRow

logger = logging.getLogger(__name__)

PAIRS = 'pairs'


class _EventFile:
  """Appends 'kind count' lines to this process's own file, thread-safely.

  Counts are gathered in memory and appended at most every FLUSH_S seconds
  (and when the bundle ends): one file write per element would cost more
  than the work it reports on small images.
  """

  FLUSH_S = 0.5

  def __init__(self, folder: str):
    self._path = os.path.join(folder, f'{os.getpid()}.log')
    self._lock = threading.Lock()
    self._pending = collections.Counter()
    self._last = time.monotonic()

  def write(self, kind: str, count: int = 1) -> None:
    with self._lock:
      self._pending[kind] += count
      if time.monotonic() - self._last >= self.FLUSH_S:
        self._flush_locked()

  def flush(self) -> None:
    with self._lock:
      self._flush_locked()

  def _flush_locked(self) -> None:
    self._last = time.monotonic()
    if not self._pending:
      return
    with open(self._path, 'a', encoding='utf-8') as f:
      f.write(''.join(f'{k} {n}\n' for k, n in self._pending.items()))
    self._pending.clear()


class RecordProgress(beam.DoFn):
  """Counts manifest rows (by status) and planned pairs, passing nothing on.

  Always a Beam counter ('stylize', 'rows_ok' ...); with a progress folder
  (local runs) also an event line for the launcher's progress display.
  """

  def __init__(self, folder: Optional[str], styles_per_input: int = 0):
    self._folder = folder
    self._styles = styles_per_input
    self._events = None
    self._counters = {}

  def setup(self):
    if self._folder:
      self._events = _EventFile(self._folder)

  def _count(self, kind: str, n: int = 1) -> None:
    if kind not in self._counters:
      self._counters[kind] = Metrics.counter('stylize', f'rows_{kind}' if
                                             kind != PAIRS else 'pairs_total')
    self._counters[kind].inc(n)
    if self._events:
      self._events.write(kind, n)

  def process(self, element):
    if isinstance(element, ManifestRow):
      self._count(element.status.value)
    elif isinstance(element, Failure):  # One failed row per affected style.
      self._count('failed', 1 if element.style is not None else
                  len(element.input.todo))
    elif isinstance(element, int):  # Rows an input will give.
      self._count(PAIRS, element)
    else:  # An input: it will give one row per style.
      self._count(PAIRS, self._styles)
    return []

  def finish_bundle(self):
    if self._events:
      self._events.flush()

  def teardown(self):
    if self._events:
      self._events.flush()


def read_events(folder: str) -> Dict[str, int]:
  totals = collections.Counter()
  try:
    names = os.listdir(folder)
  except OSError:
    return {}
  for name in names:
    try:
      with open(os.path.join(folder, name), encoding='utf-8') as f:
        for line in f:
          kind, _, count = line.partition(' ')
          # Negative: routing corrects the planned pair total.
          if count.strip().lstrip('-').isdigit():
            totals[kind] += int(count)
    except OSError:
      continue
  return dict(totals)


def _eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}h{m:02d}m' if h else (f'{m}m{s:02d}s' if m else f'{s}s')


def progress_line(events: Dict[str, int], elapsed: float) -> str:
  """'37/120 pairs  ok 35  failed 2  skipped 0  2.41 img/s  ETA 34s'."""
  total = events.get(PAIRS, 0)
  ok = events.get('ok', 0)
  failed = events.get('failed', 0)
  skipped = events.get('skipped', 0)
  done = ok + failed + skipped
  rate = ok / elapsed if elapsed > 0 else 0.0
  pace = (ok + failed) / elapsed if elapsed > 0 else 0.0
  remaining = max(0, total - done)
  eta = _eta(remaining / pace) if pace > 0 and total else '?'
  total_text = str(total) if total else '?'
  return (f'{done}/{total_text} pairs  ok {ok}  failed {failed}  skipped '
          f'{skipped}  {rate:.2f} img/s  ETA {eta}')


class ProgressMonitor:
  """Shows progress while the pipeline runs.

  In a terminal: one line rewritten in place (tqdm) every `interval` s.
  Otherwise (scheduled runs, logs) or with quiet=True: a log line every
  `log_every` seconds.
  """

  def __init__(self, folder: str, quiet: bool = False, interval: float = 1.0,
               log_every: float = 30.0, stream=None):
    self._folder = folder
    self._stream = stream or sys.stderr
    self._interactive = (not quiet) and self._stream.isatty()
    self._interval = interval
    self._log_every = log_every
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._start = 0.0
    self._bar = None

  def __enter__(self):
    self._start = time.time()
    if self._interactive:
      from tqdm import tqdm
      # A terminal that reports no size (0 columns) would get an empty bar.
      columns = shutil.get_terminal_size(fallback=(100, 24)).columns or 100
      self._bar = tqdm(total=0, unit='pair', file=self._stream,
                       ncols=columns, leave=True, desc='stylize')
    self._thread.start()
    return self

  def _update(self):
    events = read_events(self._folder)
    elapsed = time.time() - self._start
    if self._bar is not None:
      done = sum(events.get(k, 0) for k in ('ok', 'failed', 'skipped'))
      self._bar.total = max(events.get(PAIRS, 0), done)
      self._bar.n = done
      self._bar.set_postfix_str(progress_line(events, elapsed).split(
          'pairs  ', 1)[1], refresh=False)
      self._bar.refresh()
    else:
      logger.info('progress: %s', progress_line(events, elapsed))

  def _run(self):
    wait = self._interval if self._interactive else self._log_every
    while not self._stop.wait(wait):
      self._update()

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    if self._bar is not None:
      self._update()
      self._bar.close()
