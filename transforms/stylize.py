"""Stylizing decoded images in batches, with the model loaded once per worker."""

import collections
import json
import logging
import os
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms.models.base import StyleParams
from transforms.records import (DecodedImage, Failure, StyleRef, StylizedImage,
                                describe_error, is_permanent)
from transforms.styles import load_style_image

logger = logging.getLogger(__name__)

FAILED = 'failed'


def configure_tf_threads(threads: int, model_handle: Optional[str] = None
                         ) -> None:
  """Caps TF's thread pools so parallel workers do not oversubscribe cores.

  0 leaves TF's defaults. Only possible before TF runs its first op in the
  process; later calls are ignored (logged), e.g. in a launcher that already
  validated the model in-process. A TF Lite model (model_handle) runs on
  LiteRT with its own thread count, so TF is not even imported for it.
  """
  if not threads or (model_handle and uses_litert(model_handle)):
    return
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
  except RuntimeError as e:
    logger.debug('TF threads already fixed in this process: %s', e)


def uses_litert(model_handle: str) -> bool:
  """An embedded TF Lite model or named .tflite files (cheap: no listing of
  remote folders)."""
  from transforms.models import embedded
  if embedded.is_embedded(model_handle):
    return True
  parts = [p.strip() for p in model_handle.split(',')]
  if all(p.endswith('.tflite') for p in parts):
    return True
  return len(parts) == 1 and os.path.isdir(parts[0]) and any(
      f.endswith('.tflite') for f in os.listdir(parts[0]))


LOAD_LOG_ENV = 'STYLIZE_MODEL_LOAD_LOG'


def _append_load_log(model_handle: str, seconds: float) -> None:
  """Diagnostics: with STYLIZE_MODEL_LOAD_LOG set to a local file, every model
  load appends one JSON line {pid, model, seconds}. Beam counters say how
  many loads happened, not in which process; this says where."""
  path = os.environ.get(LOAD_LOG_ENV)
  if path:
    with open(path, 'a', encoding='utf-8') as f:
      f.write(json.dumps({'pid': os.getpid(), 'model': model_handle,
                          'seconds': round(seconds, 3)}) + '\n')


def try_model(stylizer, style_state, model_handle: str) -> None:
  """One tiny call, so a model that loads but cannot stylize fails here, in
  setup(), with a clear error, before any image is read.

  Raises:
    ModelLoadError: the model is no style-transfer model of the convention.
  """
  from transforms.models.base import ModelLoadError
  try:
    stylizer.stylize(np.full((1, 64, 64, 3), 128, np.uint8), style_state)
  except Exception as e:  # pylint: disable=broad-except
    raise ModelLoadError(
        f'--model {model_handle!r} loaded but failed on a 64x64 test image: '
        f'{type(e).__name__}: {e}. Is it a style-transfer model with the TF '
        'Hub Magenta convention model(content, style)[0]?') from e


class LoadedModel:
  """A worker's model and its prepared styles (weak-referenceable for Shared)."""

  def __init__(self, stylizer, style_states: Dict[str, object]):
    self.stylizer = stylizer
    self.style_states = style_states
    self.pid = os.getpid()
    self.load_reported = False
    self.lock = threading.Lock()


def load_model_and_styles(model_handle: str, styles: Sequence[StyleRef],
                          style_size: int, tf_threads: int,
                          model_sha256: Optional[str] = None,
                          model_fingerprint: Optional[str] = None
                          ) -> LoadedModel:
  """Loads the model and prepares every style once (per worker process).

  model_fingerprint: the model's content fingerprint taken at launch
  (transforms/identity.py); a model whose files changed since then fails
  the load rather than making outputs the markers would misname.
  """
  from transforms.models.loader import load_stylizer
  from transforms.storage import use_anonymous_gcs_for_emulator
  use_anonymous_gcs_for_emulator()
  configure_tf_threads(tf_threads, model_handle)
  start = time.perf_counter()
  stylizer = load_stylizer(model_handle, threads=tf_threads,
                           expected_sha256=model_sha256,
                           expected_fingerprint=model_fingerprint)
  # The styles the launch fingerprinted (StyleRef.digests): a style image
  # replaced since then fails the load rather than mixing two styles under
  # one identity.
  states = {
      s.label: stylizer.prepare_blend(
          [(w, load_style_image(uri, style_size, expected_sha256=digest))
           for (uri, w), digest in zip(s.parts, s.digests or ('',) * len(
               s.parts))])
      for s in styles
  }
  if states:
    try_model(stylizer, next(iter(states.values())), model_handle)
  seconds = time.perf_counter() - start
  logger.info('Loaded model %s and %d styles in pid %d in %.2fs', model_handle,
              len(styles), os.getpid(), seconds)
  _append_load_log(model_handle, seconds)
  return LoadedModel(stylizer, states)


class StylizeBatches(beam.DoFn):
  """List[DecodedImage] -> StylizedImage per (image, style); 'failed' Failures.

  Images of one shape are stacked into one model call per style; a batch
  whose call fails is retried image by image so that only the image that
  fails again is reported.
  """

  def __init__(self, model_handle: str, styles: Sequence[StyleRef],
               style_size: int, tf_threads: int,
               params: StyleParams = StyleParams(),
               model_sha256: Optional[str] = None,
               model_fingerprint: Optional[str] = None):
    self._model_sha256 = model_sha256
    self._model_fingerprint = model_fingerprint
    self._params = params
    self._model_handle = model_handle
    self._styles = list(styles)
    self._style_size = style_size
    self._tf_threads = tf_threads
    self._shared = shared.Shared()
    self._model = None
    self._loads = Metrics.counter('stylize', 'model_loads')
    self._latency = Metrics.distribution('stylize', 'inference_ms_per_image')
    self._ok = Metrics.counter('stylize', 'stylized')

  def _load(self) -> LoadedModel:
    return load_model_and_styles(self._model_handle, self._styles,
                                 self._style_size, self._tf_threads,
                                 self._model_sha256, self._model_fingerprint)

  def setup(self):
    # One load per process: DoFn instances on other threads share it.
    self._model = self._shared.acquire(
        self._load,
        tag=(self._model_handle, tuple(self._styles), self._style_size))

  def _report_load(self):
    # Metrics are recorded in process(), where a metrics context exists.
    if not self._model.load_reported:
      with self._model.lock:
        if not self._model.load_reported:
          self._loads.inc()
          self._model.load_reported = True

  def process(self, batch: List[DecodedImage]) -> Iterable:
    self._report_load()
    # Images of one shape that still need the same styles are stacked once
    # and that stack serves every one of those styles (incremental runs may
    # leave different styles to do for different images).
    groups = collections.defaultdict(list)
    for item in batch:
      groups[(item.pixels.shape, item.input.todo)].append(item)
    for (_, todo), items in groups.items():
      stacked = _stack(items)
      for style in self._styles:
        if style.label in todo:
          yield from self._run(items, style, stacked)

  def _run(self, items: List[DecodedImage], style: StyleRef,
           stacked: np.ndarray) -> Iterable:
    model = self._model
    results, seconds = stylize_stack(
        model.stylizer, stacked, model.style_states[style.label], self._params)
    for item, out, took in zip(items, results, seconds):
      if isinstance(out, Exception):
        yield beam.pvalue.TaggedOutput(FAILED, Failure(
            input=item.input, style=style,
            error=f'stylize: {describe_error(out)}',
            source_width=item.source_width, source_height=item.source_height,
            timings=dict(item.timings), permanent=is_permanent(out)))
        continue
      self._latency.update(int(took * 1000))
      self._ok.inc()
      timings = dict(item.timings)
      timings['stylize_s'] = took
      yield StylizedImage(input=item.input, style=style, pixels=out,
                          timings=timings, source_width=item.source_width,
                          source_height=item.source_height, exif=item.exif,
                          taken_at=item.taken_at)


def _stack(items: List[DecodedImage]) -> np.ndarray:
  """[B, H, W, 3] of same-shape images; a view, not a copy, for one image."""
  if len(items) == 1:
    return items[0].pixels[np.newaxis]
  return np.stack([i.pixels for i in items])


class BatchWeight:
  """BatchElements' element size: an image over the untiled-pixel budget
  weighs a whole batch, so it is never batched with another large image
  (a batch of four 100 MP photos would hold 1.2 GB of pixels, stacked
  twice)."""

  def __init__(self, max_untiled_pixels: int, batch_size: int):
    self._max_pixels = max_untiled_pixels
    self._batch_size = batch_size

  def __call__(self, item: DecodedImage) -> int:
    height, width = item.pixels.shape[:2]
    if self._max_pixels and height * width > self._max_pixels:
      return self._batch_size
    return 1


def stylize_stack(stylizer, stacked: np.ndarray, style_state,
                  params: StyleParams = StyleParams()
                  ) -> Tuple[List[Union[np.ndarray, Exception]], List[float]]:
  """One model call for a stack of same-shape uint8 images.

  A call that fails is retried image by image, so only an image that fails
  on its own is reported, as its exception. Returns the outputs (uint8
  arrays or exceptions) and the seconds per image, in order. Shared by the
  job's StylizeBatches and by StylizeModelHandler.
  """
  start = time.perf_counter()
  try:
    out = stylizer.stylize(stacked, style_state, params)
  except Exception as e:  # pylint: disable=broad-except
    if len(stacked) == 1:
      return [e], [time.perf_counter() - start]
    logger.warning('Batch of %d failed (%s); retrying one by one.',
                   len(stacked), describe_error(e))
    results, seconds = [], []
    for image in stacked:
      r, t = stylize_stack(stylizer, image[np.newaxis], style_state, params)
      results += r
      seconds += t
    return results, seconds
  per_image = (time.perf_counter() - start) / len(stacked)
  return list(out), [per_image] * len(stacked)


class Stylize(beam.PTransform):
  """PCollection[DecodedImage] -> (PCollection[StylizedImage], failed Failures).

  Batches with Beam's BatchElements, inside each bundle, so decoded pixels
  are never shuffled between workers to form batches.
  """

  def __init__(self, model_handle: str, styles: Sequence[StyleRef],
               style_size: int, batch_size: int, tf_threads: int,
               params: StyleParams = StyleParams(),
               model_sha256: Optional[str] = None,
               model_fingerprint: Optional[str] = None):
    super().__init__()
    self._fn = StylizeBatches(model_handle, styles, style_size, tf_threads,
                              params, model_sha256, model_fingerprint)
    self._batch_size = batch_size
    self._max_untiled_pixels = params.max_untiled_pixels

  def expand(self, decoded):
    results = (
        decoded
        | 'Batch' >> beam.BatchElements(
            min_batch_size=self._batch_size, max_batch_size=self._batch_size,
            element_size_fn=BatchWeight(self._max_untiled_pixels,
                                        self._batch_size))
        | 'RunModel' >> beam.ParDo(self._fn).with_outputs(FAILED, main='ok'))
    return results.ok, results[FAILED]
