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
from apache_beam.transforms import window
from apache_beam.utils import shared

from transforms.models.base import StyleParams
from transforms.records import (DecodedImage, Failure, StyleRef, StylizedImage,
                                describe_error, is_permanent)
from transforms.styles import load_style_image
from transforms.worker_errors import noted

logger = logging.getLogger(__name__)

FAILED = 'failed'


def configure_tf_threads(threads: int) -> None:
  """Caps TF's thread pools so parallel workers do not oversubscribe cores.

  0 leaves TF's defaults. Applied when TF is first imported in the process
  (native_logs.cap_tf_threads), or at once if it is; only possible before
  TF runs its first op, later calls are ignored (logged), e.g. in a
  launcher that already validated the model in-process. Nothing imports TF
  for this, so a process that never needs TF (an OpenVINO worker,
  engine.ov_ir; a TF Lite model on LiteRT, with its own thread count)
  never imports it.
  """
  if threads:
    from transforms.native_logs import cap_tf_threads
    cap_tf_threads(threads)


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
                          model_fingerprint: Optional[str] = None,
                          engine: str = 'auto', precision: str = 'auto'
                          ) -> LoadedModel:
  """Loads the model and prepares every style once (per worker process).

  model_fingerprint: the model's content fingerprint taken at launch
  (transforms/identity.py); a model whose files changed since then fails
  the load rather than making outputs the markers would misname.
  """
  from transforms.models.loader import load_stylizer
  configure_tf_threads(tf_threads)
  start = time.perf_counter()
  stylizer = load_stylizer(model_handle, threads=tf_threads,
                           expected_sha256=model_sha256,
                           expected_fingerprint=model_fingerprint,
                           engine=engine, precision=precision)
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
  logger.info('Loaded model %s (%s %s) and %d styles in pid %d in %.2fs',
              model_handle, stylizer.engine, stylizer.precision, len(styles),
              os.getpid(), seconds)
  _append_load_log(model_handle, seconds)
  return LoadedModel(stylizer, states)


class StylizeBatches(beam.DoFn):
  """List[DecodedImage] -> StylizedImage per (image, style); 'failed' Failures.

  The images of a batch that still need the same styles go to the model
  together, once per style (Stylizer.stylize_many: one call per shape, or
  per bucket on OpenVINO); a batch whose call fails is retried image by
  image so that only the image that fails again is reported.
  """

  def __init__(self, model_handle: str, styles: Sequence[StyleRef],
               style_size: int, tf_threads: int,
               params: StyleParams = StyleParams(),
               model_sha256: Optional[str] = None,
               model_fingerprint: Optional[str] = None,
               engine: str = 'auto', precision: str = 'auto',
               errors_to: Optional[str] = None):
    """errors_to: where a worker notes why its setup() failed
    (transforms/worker_errors.py), for the launcher to say."""
    self._errors_to = errors_to
    self._engine = engine
    self._precision = precision
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
    # How full the batches handed to the model are (BatchByBucket's, one
    # per style; the model may still split one: tiles, or exact shapes on
    # TF and LiteRT, which pad less than OpenVINO's buckets).
    self._per_batch = Metrics.distribution('stylize', 'images_per_batch')

  def _load(self) -> LoadedModel:
    return load_model_and_styles(self._model_handle, self._styles,
                                 self._style_size, self._tf_threads,
                                 self._model_sha256, self._model_fingerprint,
                                 self._engine, self._precision)

  def setup(self):
    # One load per process: DoFn instances on other threads share it.
    with noted(self._errors_to):
      self._model = self._shared.acquire(
          self._load,
          tag=(self._model_handle, tuple(self._styles), self._style_size,
               self._engine, self._precision))

  def _report_load(self):
    # Metrics are recorded in process(), where a metrics context exists.
    if not self._model.load_reported:
      with self._model.lock:
        if not self._model.load_reported:
          self._loads.inc()
          self._model.load_reported = True

  def process(self, batch: List[DecodedImage]) -> Iterable:
    self._report_load()
    # Images that still need the same styles go to the model together, and
    # serve every one of those styles (incremental runs may leave different
    # styles to do for different images).
    groups = collections.defaultdict(list)
    for item in batch:
      groups[item.input.todo].append(item)
    for todo, items in groups.items():
      images = [item.pixels for item in items]
      for style in self._styles:
        if style.label in todo:
          yield from self._run(items, style, images)

  def _run(self, items: List[DecodedImage], style: StyleRef,
           images: List[np.ndarray]) -> Iterable:
    model = self._model
    stylizer = model.stylizer
    self._per_batch.update(len(images))
    results, seconds = stylize_images(
        stylizer, images, model.style_states[style.label], self._params)
    made_with = {'engine': stylizer.engine, 'precision': stylizer.precision,
                 'strength_mode': stylizer.strength_mode()}
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
                          taken_at=item.taken_at, **made_with)


def stylize_images(stylizer, images: Sequence[np.ndarray], style_state,
                   params: StyleParams = StyleParams()
                   ) -> Tuple[List[Union[np.ndarray, Exception]], List[float]]:
  """The model on uint8 [H, W, 3] images of any sizes, together
  (Stylizer.stylize_many).

  A call that fails is retried image by image, so only an image that fails
  on its own is reported, as its exception. Returns the outputs (uint8
  arrays or exceptions) and the seconds per image, in order. Shared by the
  job's StylizeBatches and by StylizeModelHandler.
  """
  images = list(images)
  start = time.perf_counter()
  try:
    out = stylizer.stylize_many(images, style_state, params)
  except Exception as e:  # pylint: disable=broad-except
    if len(images) == 1:
      return [e], [time.perf_counter() - start]
    logger.warning('Batch of %d failed (%s); retrying one by one.',
                   len(images), describe_error(e))
    results, seconds = [], []
    for image in images:
      r, t = stylize_images(stylizer, [image], style_state, params)
      results += r
      seconds += t
    return results, seconds
  per_image = (time.perf_counter() - start) / len(images)
  return list(out), [per_image] * len(images)


class BatchByBucket(beam.DoFn):
  """DecodedImage -> List[DecodedImage]: batches of up to batch_size images
  of one bucket shape that need the same styles, formed within each bundle.

  The bucket is the shape the network runs at (engine.buckets.exact_shape:
  the size rounded up to a multiple of 8, as every engine pads): the photo
  formats at a --max_size give a handful of them (1024x768, 1024x688,
  1024x576 and their portraits at 1024), and slightly different crops
  share one.

  Written by hand: Beam's BatchElements batches in arrival order, so the
  batches of a mixed archive (4:3, 3:2 and 16:9, landscape and portrait)
  mostly hold different shapes and the model runs one image per call; and
  GroupIntoBatches forms batches per key by shuffling, which would move
  every decoded image through the runner (and on the in-process runner
  hold all of them in memory at once). Here each (bucket, styles) key keeps
  at most batch_size - 1 images waiting, and at most max_waiting images
  wait in all (the fullest batch goes first beyond that); the rest go at
  the end of the bundle. An image over max_untiled_pixels (stylized in
  tiles) goes alone.
  """

  def __init__(self, batch_size: int, max_untiled_pixels: int = 0,
               max_waiting: Optional[int] = None):
    self._batch_size = batch_size
    self._max_pixels = max_untiled_pixels
    self._max_waiting = max_waiting or 4 * batch_size
    self._waiting = {}
    self._count = 0

  def start_bundle(self):
    self._waiting = {}
    self._count = 0

  def process(self, item: DecodedImage) -> Iterable[List[DecodedImage]]:
    from transforms.models.engine.buckets import exact_shape  # pylint: disable=import-outside-toplevel
    height, width = item.pixels.shape[:2]
    if self._max_pixels and height * width > self._max_pixels:
      yield [item]
      return
    key = (exact_shape(height, width), item.input.todo)
    batch = self._waiting.setdefault(key, [])
    batch.append(item)
    self._count += 1
    if len(batch) >= self._batch_size:
      yield self._take(key)
    elif self._count > self._max_waiting:
      yield self._take(max(self._waiting, key=lambda k: len(
          self._waiting[k])))

  def _take(self, key) -> List[DecodedImage]:
    batch = self._waiting.pop(key)
    self._count -= len(batch)
    return batch

  def finish_bundle(self):
    for key in list(self._waiting):
      yield window.GlobalWindows.windowed_value_at_end_of_window(
          self._take(key))


class Stylize(beam.PTransform):
  """PCollection[DecodedImage] -> (PCollection[StylizedImage], failed Failures).

  Batches by bucket shape inside each bundle (BatchByBucket), so decoded
  pixels are never shuffled between workers to form batches and a mixed
  archive still forms full batches.
  """

  def __init__(self, model_handle: str, styles: Sequence[StyleRef],
               style_size: int, batch_size: int, tf_threads: int,
               params: StyleParams = StyleParams(),
               model_sha256: Optional[str] = None,
               model_fingerprint: Optional[str] = None,
               engine: str = 'auto', precision: str = 'auto',
               errors_to: Optional[str] = None):
    super().__init__()
    self._fn = StylizeBatches(model_handle, styles, style_size, tf_threads,
                              params, model_sha256, model_fingerprint,
                              engine, precision, errors_to)
    self._batcher = BatchByBucket(batch_size, params.max_untiled_pixels)

  def expand(self, decoded):
    results = (
        decoded
        | 'Batch' >> beam.ParDo(self._batcher)
        | 'RunModel' >> beam.ParDo(self._fn).with_outputs(FAILED, main='ok'))
    return results.ok, results[FAILED]
