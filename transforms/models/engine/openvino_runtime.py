"""An OpenVINO model compiled per input shape, with a shared request pool.

    runner = OpenVINORunner(ov_model, precision='bf16')
    out = runner.infer([content_batch, vectors])     # [B, ...] arrays

or, writing inputs straight into the requests' own buffers and reading the
outputs from theirs (no host copies beyond what the caller writes):

    runner.run(shapes, count, fill=..., take=...)

Each distinct set of input shapes is compiled once (PERFORMANCE_HINT
THROUGHPUT, INFERENCE_PRECISION_HINT bf16 or f32; 0.14-0.18 s for the
Magenta transfer network here) and kept, least recently used first out past
`max_shapes`. A compiled shape owns OPTIMAL_NUMBER_OF_INFER_REQUESTS infer
requests (2 on a 2-core CPU: its 2 streams), each running one image (batch
1); a batch of B images keeps all of them busy.

Memory: a compiled 1024 px shape allocates about 110 MB of intermediate
buffers in bf16 (210 MB in f32) when it first runs (two streams'
activations; benchmarks/engine.py, `buckets`). The most recently used
shapes keep them up to a budget of RESIDENT_PIXELS input pixels (half as
many in f32): older ones that no call is using get
CompiledModel.release_memory(), and get their buffers back on their next
run. The budget holds the four buckets of a mixed 1024 px archive (4:3
both ways, 3:2, 16:9) in bf16: when only the last shape stayed, each switch
of bucket freed and re-faulted ~100 MB, a mixed 1024 px run's page faults
were 4.35 M for 300 photos, with 10.4 s of system time, and took 3% longer
(peak RSS 1357 MB against 1521 MB with the four kept). One shape larger
than the budget (a 2048 px photo) still runs and stays until the next.

Thread safety: any number of threads may call infer()/run() at once. The
requests of a shape are a pool (queue.Queue) shared by all callers; each
caller keeps at most that many of its own in flight and waits only for
its own (InferRequest.wait releases the GIL), so calls from several Beam
threads interleave on the same streams. A thread that holds requests
never blocks waiting for another (it finishes its own oldest first), so
callers cannot deadlock over the pool.

Why not one shared AsyncInferQueue: its wait_all() waits for every job in
the queue, other threads' too, and a request that fails never runs the
queue's callback, so a per-caller completion signal set in the callback
could wait forever. The pool gives the same number of requests in flight
(the compiled model's OPTIMAL_NUMBER_OF_INFER_REQUESTS) with per-caller
waits and errors raised in the caller.
"""

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

Shapes = Tuple[Tuple[int, ...], ...]

THROUGHPUT = 'THROUGHPUT'
LATENCY = 'LATENCY'

#: Input pixels (per request) whose compiled shapes keep their buffers
#: between runs, in bf16; f32 buffers are twice the size, so half as many.
RESIDENT_PIXELS = 4 * 1024 * 768


def shape_pixels(shapes: Shapes) -> int:
  """The first input's pixels per request ([N, H, W, C] -> N*H*W)."""
  return int(np.prod(shapes[0][:-1])) if shapes and shapes[0] else 0


def _core():
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  ov = import_openvino()
  return ov.Core()


def compile_config(precision: str, hint: str = THROUGHPUT,
                   threads: int = 0) -> Dict[str, str]:
  """The CPU plugin's properties for one compile."""
  if precision not in ('bf16', 'f32'):
    raise ValueError(f'precision must be bf16 or f32, not {precision!r}')
  config = {'PERFORMANCE_HINT': hint, 'INFERENCE_PRECISION_HINT': precision}
  if threads:
    # Remote runners start one SDK process per core (--tf_threads 1 there):
    # OpenVINO must not spread each of them over every core.
    config['INFERENCE_NUM_THREADS'] = str(threads)
  return config


class CompiledShape:
  """One compiled model (fixed input shapes) and its pool of requests."""

  def __init__(self, compiled, shapes: Shapes, seconds: float):
    self.compiled = compiled
    self.shapes = shapes
    self.compile_seconds = seconds
    self.users = 0  # Calls running on it (guarded by the runner's lock).
    self.resident = False  # Holds intermediate buffers (has run since
    # its last release_memory).
    self.size = int(compiled.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS'))
    self._idle: 'queue.Queue[Any]' = queue.Queue()
    for _ in range(self.size):
      self._idle.put(compiled.create_infer_request())

  def try_acquire(self):
    try:
      return self._idle.get_nowait()
    except queue.Empty:
      return None

  def acquire(self):
    return self._idle.get()

  def release(self, request) -> None:
    self._idle.put(request)


class OpenVINORunner:
  """An ov.Model compiled for the CPU per input shape; see the module doc."""

  def __init__(self, model, precision: str = 'f32', hint: str = THROUGHPUT,
               threads: int = 0, max_shapes: int = 16, core=None,
               name: str = 'model', resident_pixels: Optional[int] = None):
    self.model = model
    self.precision = precision
    self.hint = hint
    self.config = compile_config(precision, hint, threads)
    self.max_shapes = max_shapes
    self.resident_pixels = (
        resident_pixels if resident_pixels is not None else
        RESIDENT_PIXELS // (1 if precision == 'bf16' else 2))
    self.name = name
    self.core = core or _core()
    self._lock = threading.Lock()
    self._compiled: 'collections.OrderedDict[Shapes, CompiledShape]' = (
        collections.OrderedDict())
    self._compiling: Dict[Shapes, threading.Event] = {}
    self.compiles = 0  # Counted so tests can check shapes are reused.

  @property
  def compiled_shapes(self) -> List[Shapes]:
    with self._lock:
      return list(self._compiled)

  def compiled_for(self, shapes: Sequence[Sequence[int]],
                   use: bool = False) -> CompiledShape:
    """The model compiled for these input shapes (compiled on first use).

    Concurrent first calls for one shape compile it once; other shapes'
    callers are not held up by a compile. use=True counts the caller as a
    user (see _done), so its memory is not released while it runs.
    """
    key: Shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    while True:
      with self._lock:
        entry = self._compiled.get(key)
        if entry is not None:
          self._compiled.move_to_end(key)
          if use:
            entry.users += 1
            entry.resident = True
          return entry
        event = self._compiling.get(key)
        if event is None:
          event = self._compiling[key] = threading.Event()
          break
      event.wait()  # Another thread compiles this shape.
    try:
      entry = self._compile(key)
      with self._lock:
        self._compiled[key] = entry
        if use:
          entry.users += 1
          entry.resident = True
        while len(self._compiled) > self.max_shapes:
          old, _ = self._compiled.popitem(last=False)
          logger.info('%s: dropped the model compiled for %s (over %d '
                      'shapes).', self.name, old, self.max_shapes)
      return entry
    finally:
      with self._lock:
        del self._compiling[key]
      event.set()

  def _compile(self, key: Shapes) -> CompiledShape:
    start = time.perf_counter()
    model = self.model.clone()
    model.reshape({i: list(s) for i, s in enumerate(key)})
    compiled = self.core.compile_model(model, 'CPU', self.config)
    seconds = time.perf_counter() - start
    self.compiles += 1
    logger.info('%s: compiled for %s (%s, %s) in %.2fs', self.name, key,
                self.precision, self.hint, seconds)
    return CompiledShape(compiled, key, seconds)

  def run(self, shapes: Sequence[Sequence[int]], count: int,
          fill: Callable[[int, List[np.ndarray]], None],
          take: Callable[[int, List[np.ndarray]], None]) -> None:
    """Runs `count` requests of the given per-request input shapes.

    fill(i, inputs) writes request i's inputs into the numpy views of the
    request's own input tensors; take(i, outputs) reads its outputs from
    the request's output tensors (views, valid only during the call: copy
    what you keep). take() runs in the calling thread, in order of i.
    """
    entry = self.compiled_for(shapes, use=True)
    try:
      self._run(entry, count, fill, take)
    finally:
      self._done(entry)

  def _done(self, entry: CompiledShape) -> None:
    """One caller less; frees the buffers of idle shapes used less
    recently than those that fill resident_pixels (the most recent one
    always stays)."""
    with self._lock:
      entry.users -= 1
      resident = [e for e in reversed(self._compiled.values()) if e.resident]
      kept = 0
      for i, old in enumerate(resident):
        pixels = shape_pixels(old.shapes)
        if i and old.users == 0 and kept + pixels > self.resident_pixels:
          old.compiled.release_memory()
          old.resident = False
          logger.debug('%s: released the buffers of %s', self.name,
                        old.shapes)
        else:
          kept += pixels

  def _run(self, entry: CompiledShape, count: int, fill, take) -> None:
    pending: 'collections.deque' = collections.deque()

    def finish_oldest():
      i, request = pending.popleft()
      try:
        request.wait()
        take(i, [t.data for t in request.output_tensors])
      finally:
        entry.release(request)

    try:
      for i in range(count):
        request = entry.try_acquire()
        while request is None and pending:
          finish_oldest()
          request = entry.try_acquire()
        if request is None:
          request = entry.acquire()  # Holding none: cannot deadlock.
        try:
          fill(i, [t.data for t in request.input_tensors])
          request.start_async()
        except BaseException:
          entry.release(request)
          raise
        pending.append((i, request))
      while pending:
        finish_oldest()
    finally:
      # After an error: wait for what is still running, then free it.
      while pending:
        _, request = pending.popleft()
        try:
          request.wait()
        except Exception:  # pylint: disable=broad-except
          pass
        entry.release(request)

  def infer(self, inputs: Sequence[np.ndarray], per_request: int = 1,
            output: int = 0) -> np.ndarray:
    """[B, ...] inputs -> output `output` for all B, per_request per request.

    Inputs with a leading dimension of 1 are shared by every request (e.g.
    one style vector for a batch); B must be a multiple of per_request.
    """
    batch = max(int(a.shape[0]) for a in inputs)
    if batch % per_request:
      raise ValueError(f'batch {batch} is no multiple of {per_request}')
    shapes = [(per_request,) + tuple(a.shape[1:]) if a.shape[0] == batch
              else tuple(a.shape) for a in inputs]
    results: List[Optional[np.ndarray]] = [None] * (batch // per_request)

    def fill(i, buffers):
      for a, buf in zip(inputs, buffers):
        if a.shape[0] == batch:
          buf[...] = a[i * per_request:(i + 1) * per_request]
        else:
          buf[...] = a

    def take(i, outputs):
      results[i] = np.array(outputs[output])

    self.run(shapes, len(results), fill, take)
    return results[0] if len(results) == 1 else np.concatenate(results)
