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
from typing import Callable, Dict, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.records import Failure, ManifestRow

logger = logging.getLogger(__name__)

PAIRS = 'pairs'
# The launcher's count of pairs (before the pipeline lists anything), and
# routing's corrections of the planned count.
EXPECTED = 'expected'
DELTA = 'pairs_delta'


class _EventFile:
  """Appends 'kind count' lines to this process's own file, thread-safely.

  Counts are gathered in memory and appended by a background thread every
  FLUSH_S seconds (and when the bundle ends): one file write per element
  would cost more than the work it reports on small images, and a timer (not
  the next element) keeps the display live while one slow pair holds the
  worker.
  """

  FLUSH_S = 0.5

  def __init__(self, folder: str):
    self._path = os.path.join(folder, f'{os.getpid()}.log')
    self._lock = threading.Lock()
    self._pending = collections.Counter()
    self._closed = threading.Event()
    self._timer = threading.Thread(target=self._flush_every, daemon=True,
                                   name='stylize-progress')
    self._timer.start()

  def _flush_every(self) -> None:
    while not self._closed.wait(self.FLUSH_S):
      self.flush()

  def write(self, kind: str, count: int = 1) -> None:
    with self._lock:
      self._pending[kind] += count

  def flush(self) -> None:
    with self._lock:
      if not self._pending:
        return
      with open(self._path, 'a', encoding='utf-8') as f:
        f.write(''.join(f'{k} {n}\n' for k, n in self._pending.items()))
      self._pending.clear()

  def close(self) -> None:
    self._closed.set()
    self._timer.join()
    self.flush()


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
      name = {PAIRS: 'pairs_total', DELTA: 'pairs_delta'}.get(
          kind, f'rows_{kind}')
      self._counters[kind] = Metrics.counter('stylize', name)
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
      self._events.close()


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


def record_expected(folder: Optional[str], pairs: int) -> None:
  """The launcher's count of the run's (input, style) pairs, written before
  the pipeline starts, so the display has its total from the start."""
  if folder:
    with open(os.path.join(folder, 'launcher.log'), 'a', encoding='utf-8') as f:
      f.write(f'{EXPECTED} {pairs}\n')


def total_of(events: Dict[str, int]) -> int:
  """The pairs the run will give: the launcher's count (it lists before the
  pipeline does), or the pipeline's own planned count once that is larger,
  with routing's corrections; never less than what is done."""
  done = sum(events.get(k, 0) for k in ('ok', 'failed', 'skipped'))
  planned = max(events.get(EXPECTED, 0), events.get(PAIRS, 0))
  return max(planned + events.get(DELTA, 0), done)


class Pace:
  """Rate and ETA of the work itself: measured from the first finished
  pair (start-up, listing and the model's load are not work), over new work
  (ok and failed pairs; skipped ones cost nothing)."""

  def __init__(self):
    self._first = None
    self._last = (0.0, 0)

  def update(self, events: Dict[str, int], now: float) -> Tuple[float, str]:
    """(images/s, ETA text) for the events seen at time now."""
    work = events.get('ok', 0) + events.get('failed', 0)
    if self._first is None:
      if work:
        self._first = self._last = (now, work)
      return 0.0, '?'
    if work != self._last[1]:
      self._last = (now, work)
    since, work0 = self._first
    # Up to the last finished pair: once all are done (the manifest and
    # report are being written), the rate stays what it was.
    elapsed = self._last[0] - since
    if elapsed <= 0 or work - work0 < 2:
      return 0.0, '?'
    pace = (work - work0) / elapsed
    done = work + events.get('skipped', 0)
    remaining = max(0, total_of(events) - done)
    return pace, _eta(remaining / pace)


def progress_line(events: Dict[str, int], rate: float = 0.0,
                  eta: str = '?') -> str:
  """'37/120 pairs  ok 35  failed 2  skipped 0  2.41 img/s  ETA 34s'."""
  ok = events.get('ok', 0)
  failed = events.get('failed', 0)
  skipped = events.get('skipped', 0)
  done = ok + failed + skipped
  total = total_of(events)
  total_text = str(total) if total else '?'
  return (f'{done}/{total_text} pairs  ok {ok}  failed {failed}  skipped '
          f'{skipped}  {rate:.2f} img/s  ETA {eta}')


class ProgressMonitor:
  """Shows progress while the pipeline runs.

  In a terminal: a bar rewritten in place every `interval` s, its total
  known from the start (the launcher's count), its rate and ETA those of
  the work since the first finished pair. Otherwise (scheduled runs, logs)
  or with quiet=True: a 'progress:' line every `log_every` seconds. say()
  prints a phase line ('loading model ... 3.1 s') above the bar, or logs it.
  """

  def __init__(self, folder: str, quiet: bool = False, interval: float = 1.0,
               log_every: float = 30.0, stream=None,
               clock: Callable[[], float] = time.monotonic):
    self._folder = folder
    self._stream = stream or sys.stderr
    self._interactive = (not quiet) and self._stream.isatty()
    self._interval = interval
    self._log_every = log_every
    self._clock = clock
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._pace = Pace()
    self._bar = None
    self._lock = threading.Lock()

  def __enter__(self):
    self._thread.start()
    return self

  def say(self, line: str) -> None:
    """A phase line, above the bar (or logged)."""
    with self._lock:
      if self._interactive:
        if self._bar is not None:
          self._bar.write(line, file=self._stream)
        else:
          print(line, file=self._stream, flush=True)
      else:
        logger.info('%s', line)

  def _open_bar(self, total: int):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    # A terminal that reports no size (a pty without one: 0 x 0) would get
    # no bar at all from tqdm (it hides bars past the last row).
    size = shutil.get_terminal_size(fallback=(100, 24))
    self._bar = tqdm(total=total, file=self._stream,
                     ncols=size.columns or 100, nrows=size.lines or 24,
                     leave=True, desc='stylize',
                     bar_format='{desc}: {percentage:3.0f}%|{bar}| '
                     '{n_fmt}/{total_fmt} [{elapsed}{postfix}]')

  def update(self, finished: bool = False) -> str:
    """Reads the events and shows them; the progress line. finished: the
    run completed, so what is done is the whole run (the launcher's count
    errs upwards where inputs are aliases of one file)."""
    events = read_events(self._folder)
    rate, eta = self._pace.update(events, self._clock())
    line = progress_line(events, rate, eta)
    with self._lock:
      if self._interactive:
        if self._bar is None:
          if not any(events.values()):
            return line  # Nothing planned yet: the phase lines speak.
          self._open_bar(total_of(events))
        done = sum(events.get(k, 0) for k in ('ok', 'failed', 'skipped'))
        self._bar.total = done if finished else total_of(events)
        self._bar.n = done
        self._bar.set_postfix_str(line.split('pairs  ', 1)[1], refresh=False)
        self._bar.refresh()
    return line

  def _run(self):
    wait = self._interval if self._interactive else self._log_every
    while not self._stop.wait(wait):
      line = self.update()
      if not self._interactive:
        logger.info('progress: %s', line)

  def done(self) -> int:
    """Pairs finished so far (ok, failed or skipped)."""
    events = read_events(self._folder)
    return sum(events.get(k, 0) for k in ('ok', 'failed', 'skipped'))

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    if self._bar is not None:
      self.update(finished=exc[0] is None)
      self._bar.close()
