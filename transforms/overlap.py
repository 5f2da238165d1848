"""A DoFn that works on a few elements at once in a bounded thread pool.

Local runs use Beam's in-process runner with one bundle at a time (its
multi_threading mode loses elements; see README "Local runs"), so reading and
decoding the next images would wait for the model. An OverlappedDoFn hands
each element to a small pool and keeps at most `max_in_flight` of them
pending, so Pillow decodes (and file reads wait on I/O) while TensorFlow
infers on the main thread: both release the GIL. Memory stays bounded by
max_in_flight elements.

Written by hand: Beam has no bounded-concurrency DoFn (RunInference and
BatchElements batch, they do not overlap stages within a bundle).
"""

import collections
import concurrent.futures
import os
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

#: What work() returns: the element's outputs (values or TaggedOutputs), and
#: counter increments to record on the bundle's thread (Beam's metrics
#: context is per thread, so pool threads cannot record them themselves).
Result = Tuple[List[object], Dict[str, int]]


def default_threads() -> int:
  return max(1, min(8, os.cpu_count() or 1))


class OverlappedDoFn(beam.DoFn):
  """Subclasses implement work(element) -> Result; order is kept.

  threads: pool size (None: the cores, at most 8); 0 runs work() in line,
  one element at a time (what the benchmark compares against).
  """

  def __init__(self, threads: Optional[int] = None,
               max_in_flight: Optional[int] = None, namespace='stylize'):
    self._threads = threads
    self._max_in_flight = max_in_flight
    self._namespace = namespace
    self._pool = None
    self._pending = collections.deque()
    self._counters = {}

  def work(self, element) -> Result:
    raise NotImplementedError

  def setup(self):
    threads = default_threads() if self._threads is None else self._threads
    self._max = self._max_in_flight or 2 * threads
    self._pool = concurrent.futures.ThreadPoolExecutor(
        threads, thread_name_prefix=type(self).__name__) if threads else None

  def start_bundle(self):
    self._pending = collections.deque()

  def process(self, element, timestamp=beam.DoFn.TimestampParam,
              window=beam.DoFn.WindowParam) -> Iterable:
    if self._pool is None:
      future = concurrent.futures.Future()
      future.set_result(self.work(element))
    else:
      future = self._pool.submit(self.work, element)
    self._pending.append((future, timestamp, window))
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
      future, timestamp, window = self._pending.popleft()
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
