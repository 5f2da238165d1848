"""Routing: classify each decoded image once, keep only its class's styles."""

import dataclasses
import logging
import os
import threading
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms.progress import DELTA, RecordProgress
from transforms.records import (DecodedImage, Failure, StyleRef,
                                describe_error, is_permanent)
from transforms.rows import unrouted_row
from transforms.worker_errors import noted

logger = logging.getLogger(__name__)

SKIPPED = 'skipped'
FAILED = 'failed'
PAIRS_DELTA = 'pairs_delta'


def parse_route(arg: str) -> Tuple[str, str]:
  """'photo=a.jpg' -> ('photo', 'a.jpg'); the style part uses --style syntax
  ('photo=a.jpg=0.7,b.jpg=0.3' is a blend), so only the first '=' splits.

  Raises:
    ValueError: no class or no style.
  """
  name, sep, style = arg.partition('=')
  if not sep or not name.strip() or not style.strip():
    raise ValueError(f'expected CLASS=STYLE, got {arg!r} (e.g. '
                     '--route photo=starry_night.jpg)')
  return name.strip(), style.strip()


def route_styles(routes: Mapping[str, Sequence[str]]
                 ) -> Tuple[List[StyleRef], Dict[str, Tuple[str, ...]]]:
  """Per-class --style values -> (all styles, class -> style labels).

  Each class's values are parsed like --style (so single weighted values of
  one class form one blend); a style routed from several classes is one
  style with one output folder; different styles never share a label.

  Raises:
    ValueError: a bad style weight.
  """
  from transforms import paths
  from transforms.styles import parse_styles
  by_uri: Dict[str, StyleRef] = {}
  labels_taken = set()
  table: Dict[str, Tuple[str, ...]] = {}
  for name, values in routes.items():
    labels = []
    for ref in parse_styles(values):
      known = by_uri.get(ref.uri)
      if known is None:
        if ref.label in labels_taken:
          ref = StyleRef(uri=ref.uri,
                         label=f'{ref.label}-{paths.short_hash(ref.uri)}',
                         parts=ref.parts)
        by_uri[ref.uri] = known = ref
        labels_taken.add(ref.label)
      if known.label not in labels:
        labels.append(known.label)
    table[name] = tuple(labels)
  return list(by_uri.values()), table


class LoadedRouter:
  """A worker's router (weak-referenceable, for shared.Shared)."""

  def __init__(self, router):
    self.router = router
    self.load_reported = False
    self.lock = threading.Lock()


def _load_router(folder: str, tf_threads: int,
                 fingerprint: Optional[str] = None) -> LoadedRouter:
  from transforms.models.router import load_router
  start = time.perf_counter()
  router = load_router(folder, tf_threads, fingerprint)
  logger.info('Loaded router %s in pid %d in %.2fs', folder, os.getpid(),
              time.perf_counter() - start)
  return LoadedRouter(router)


class ClassifyBatches(beam.DoFn):
  """List[DecodedImage] -> routed DecodedImage; 'skipped' rows; 'failed'.

  One model call per batch. Each image gets its class and score, and its
  styles to do narrowed to those routed to its class. An image of a class
  without routes becomes one skipped row; one whose class's styles are all
  done already yields nothing here (SkipDone already wrote their rows). A
  batch whose call fails is retried image by image.
  """

  def __init__(self, route_model: str, router_id: str,
               routes: Mapping[str, Sequence[str]], row_info: Dict,
               tf_threads: int = 0, fingerprint: Optional[str] = None,
               errors_to: Optional[str] = None):
    """fingerprint: the router's content fingerprint taken at launch; a
    router whose files changed since is refused. errors_to: where a worker
    notes why its setup() failed (transforms/worker_errors.py)."""
    self._errors_to = errors_to
    self._fingerprint = fingerprint
    self._route_model = route_model
    self._router_id = router_id
    self._routes = {k: tuple(v) for k, v in routes.items()}
    self._row_info = dict(row_info)
    self._tf_threads = tf_threads
    self._shared = shared.Shared()
    self._router: Optional[LoadedRouter] = None
    self._loads = Metrics.counter('stylize', 'router_loads')
    self._classified = Metrics.counter('stylize', 'classified')
    self._unrouted = Metrics.counter('stylize', 'unrouted')
    self._latency = Metrics.distribution('stylize', 'classify_ms_per_image')

  def setup(self):
    # One load per process; threads share it (as StylizeBatches does).
    with noted(self._errors_to):
      self._router = self._shared.acquire(
          self._load, tag=('router', self._route_model, self._router_id))

  def _load(self) -> LoadedRouter:
    return _load_router(self._route_model, self._tf_threads,
                        self._fingerprint)

  def _report_load(self):
    if not self._router.load_reported:
      with self._router.lock:
        if not self._router.load_reported:
          self._loads.inc()
          self._router.load_reported = True

  def process(self, batch: List[DecodedImage]) -> Iterable:
    self._report_load()
    start = time.perf_counter()
    try:
      results = self._router.router.classify([i.pixels for i in batch])
    except Exception as e:  # pylint: disable=broad-except
      if len(batch) > 1:
        logger.warning('Classifying a batch of %d failed (%s); retrying one '
                       'by one.', len(batch), describe_error(e))
        for item in batch:
          yield from self.process([item])
        return
      item = batch[0]
      yield beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item.input, error=f'route: {describe_error(e)}',
          source_width=item.source_width, source_height=item.source_height,
          timings=dict(item.timings), permanent=is_permanent(e)))
      return
    per_image = (time.perf_counter() - start) / len(batch)
    self._latency.update(int(per_image * 1000))
    for item, (label, score) in zip(batch, results):
      self._classified.inc()
      timings = dict(item.timings)
      timings['classify_s'] = per_image
      styles = self._routes.get(label, ())
      routed = dataclasses.replace(
          item.input, image_class=label, class_score=score,
          todo=tuple(s for s in item.input.todo if s in styles))
      image = dataclasses.replace(item, input=routed, timings=timings)
      # The progress total counted a row per style still to do; the image
      # now gives one per routed style, or one skipped row.
      rows = len(routed.todo) if styles else 1
      yield beam.pvalue.TaggedOutput(PAIRS_DELTA,
                                     rows - len(item.input.todo))
      if not styles:
        self._unrouted.inc()
        yield beam.pvalue.TaggedOutput(
            SKIPPED, unrouted_row(image, self._row_info))
      elif routed.todo:
        yield image


class AdjustPairTotal(RecordProgress):
  """int -> the progress display's pair total corrected by that much."""

  def process(self, element):
    if element:
      self._count(DELTA, element)
    return []


class RouteImages(beam.PTransform):
  """PCollection[DecodedImage] -> (routed DecodedImage, skipped ManifestRow,
  failed Failure, row-count corrections (int)).

  The corrections say how many rows each image gives beyond one per style:
  the manifest's completeness check and the progress total use them.

  Routed images carry image_class and class_score on their InputFile and
  only their class's styles in todo, which Stylize honours. Batches are
  formed within bundles (BatchElements), like Stylize's.
  """

  def __init__(self, route_model: str, router_id: str,
               routes: Mapping[str, Sequence[str]], batch_size: int,
               row_info: Dict, tf_threads: int = 0,
               progress_dir: Optional[str] = None,
               fingerprint: Optional[str] = None,
               errors_to: Optional[str] = None):
    super().__init__()
    self._fn = ClassifyBatches(route_model, router_id, routes, row_info,
                               tf_threads, fingerprint, errors_to)
    self._batch_size = batch_size
    self._progress_dir = progress_dir

  def expand(self, decoded):
    results = (
        decoded
        | 'Batch' >> beam.BatchElements(min_batch_size=self._batch_size,
                                        max_batch_size=self._batch_size)
        | 'Classify' >> beam.ParDo(self._fn).with_outputs(
            SKIPPED, FAILED, PAIRS_DELTA, main='routed'))
    _ = results[PAIRS_DELTA] | 'AdjustProgress' >> beam.ParDo(
        AdjustPairTotal(self._progress_dir))
    return (results.routed, results[SKIPPED], results[FAILED],
            results[PAIRS_DELTA])
