"""A DoFn that works on a few elements at once in a bounded thread pool.

Local runs use Beam's in-process runner with one bundle at a time (its
multi_threading mode loses elements; see README "Local runs"), so reading and
decoding the next images would wait for the model. An OverlappedDoFn hands
each element to a small pool and keeps at most `max_in_flight` of them
pending, so Pillow decodes (and file reads wait on I/O) while TensorFlow
infers on the main thread: both release the GIL. Memory stays bounded by
max_in_flight elements and by max_bytes_in_flight bytes (each element's
weight(): a file's size, a decoded image's pixels), whichever comes first;
one element heavier than the budget runs alone.

Written by hand: Beam has no bounded-concurrency DoFn (RunInference and
BatchElements batch, they do not overlap stages within a bundle).
"""

import collections
import concurrent.futures
import contextlib
import os
import threading
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

#: What work() returns: the element's outputs (values or TaggedOutputs), and
#: counter increments to record on the bundle's thread (Beam's metrics
#: context is per thread, so pool threads cannot record them themselves).
Result = Tuple[List[object], Dict[str, int]]


#: Bytes a stage holds in flight (pending elements' weights) by default: a
#: dozen 12 MP photos, or one file at the default --max_input_bytes.
BYTES_IN_FLIGHT = 256 << 20


def default_threads() -> int:
  return max(1, min(8, os.cpu_count() or 1))


class ByteBudget:
  """At most `limit` bytes reserved at once by threads of a plain pool (the
  report's thumbnails): reserve(n) waits while others hold the budget; a
  reservation larger than the whole budget waits until nothing else is
  reserved and then runs alone, as in OverlappedDoFn. Written by hand:
  concurrent.futures and threading have no weighted semaphore."""

  def __init__(self, limit: int = BYTES_IN_FLIGHT):
    self._limit = limit
    self._used = 0
    self._changed = threading.Condition()

  @contextlib.contextmanager
  def reserve(self, n: int):
    with self._changed:
      while self._used and self._used + n > self._limit:
        self._changed.wait()
      self._used += n
    try:
      yield
    finally:
      with self._changed:
        self._used -= n
        self._changed.notify_all()


class OverlappedDoFn(beam.DoFn):
  """Subclasses implement work(element) -> Result; order is kept.

  threads: pool size (None: the cores, at most 8); 0 runs work() in line,
  one element at a time (what the benchmark compares against).
  """

  def __init__(self, threads: Optional[int] = None,
               max_in_flight: Optional[int] = None, namespace='stylize',
               max_bytes_in_flight: int = BYTES_IN_FLIGHT):
    self._threads = threads
    self._max_in_flight = max_in_flight
    self._max_bytes = max_bytes_in_flight
    self._namespace = namespace
    self._pool = None
    self._pending = collections.deque()
    self._bytes = 0
    self._counters = {}

  def work(self, element) -> Result:
    raise NotImplementedError

  def weight(self, element) -> int:
    """Bytes the element holds while in flight (its input and result)."""
    del element
    return 0

  def setup(self):
    threads = default_threads() if self._threads is None else self._threads
    self._max = self._max_in_flight or 2 * threads
    self._pool = concurrent.futures.ThreadPoolExecutor(
        threads, thread_name_prefix=type(self).__name__) if threads else None

  def start_bundle(self):
    self._pending = collections.deque()
    self._bytes = 0

  def process(self, element, timestamp=beam.DoFn.TimestampParam,
              window=beam.DoFn.WindowParam) -> Iterable:
    weight = self.weight(element)
    # Room for this element's bytes first (waiting on the oldest); an
    # element over the whole budget runs alone.
    while self._pending and self._bytes + weight > self._max_bytes:
      yield from self._emit_oldest()
    if self._pool is None:
      future = concurrent.futures.Future()
      future.set_result(self.work(element))
    else:
      future = self._pool.submit(self.work, element)
    self._pending.append((future, timestamp, window, weight))
    self._bytes += weight
    yield from self._drain(keep=self._max)

  def finish_bundle(self) -> Iterable:
    yield from self._drain(keep=0)

  def teardown(self):
    if self._pool is not None:
      self._pool.shutdown(wait=True)

  def _drain(self, keep: int) -> Iterable:
    """Emits finished work in order; waits while more than keep are pending."""
    while self._pending and (len(self._pending) > keep or
                             self._pending[0][0].done()):
      yield from self._emit_oldest()

  def _emit_oldest(self) -> Iterable:
    """Waits for the oldest pending element and emits its outputs."""
    future, timestamp, window, weight = self._pending.popleft()
    self._bytes -= weight
    outputs, counts = future.result()  # Re-raises a bug in work().
    for name, n in counts.items():
      if name not in self._counters:
        self._counters[name] = Metrics.counter(self._namespace, name)
      self._counters[name].inc(n)
    for out in outputs:
      if isinstance(out, beam.pvalue.TaggedOutput):
        yield beam.pvalue.TaggedOutput(
            out.tag, WindowedValue(out.value, timestamp, (window,)))
      else:
        yield WindowedValue(out, timestamp, (window,))
