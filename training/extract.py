"""Feature extraction as a Beam job: each labelled image through the frozen
feature model once, batched, the model loaded once per worker.

With the feature model frozen, training the head on these vectors is the
same as training the guide's Sequential([hub.KerasLayer, Dense]) end to end,
but every image is decoded and run through the big network once instead of
once per epoch, and that part runs on any Beam runner (many workers for a
large labelled set). Vectors are written as .npz shards below a folder the
launcher reads back.
"""

import hashlib
import io
import json
import logging
import os
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms import paths
from transforms.records import describe_error
from transforms.storage import durable_write, iter_top_files
from training.data import LabelledImage, load_for_model

logger = logging.getLogger(__name__)

FAILED = 'failed'
SHARD_PREFIX = 'features-'
FAILURES_NAME = 'failures.json'


class LoadImages(beam.DoFn):
  """LabelledImage -> (LabelledImage, uint8 [S, S, 3]); 'failed'
  (LabelledImage, reason) for a file that is not a readable image."""

  def __init__(self, size: int):
    self._size = size
    self._failed = Metrics.counter('stylize_train', 'unreadable')

  def process(self, item: LabelledImage) -> Iterable:
    try:
      yield item, load_for_model(item.uri, self._size)
    except Exception as e:  # pylint: disable=broad-except
      self._failed.inc()
      yield beam.pvalue.TaggedOutput(FAILED, (item, describe_error(e)))


class _Loaded:
  """A worker's feature model (weak-referenceable, for shared.Shared)."""

  def __init__(self, model):
    self.model = model
    self.reported = False
    self.lock = threading.Lock()


def _load_feature_model(handle: str, tf_threads: int) -> _Loaded:
  from transforms.models.features import load_feature_model
  start = time.perf_counter()
  model = load_feature_model(handle, threads=tf_threads)
  logger.info('Loaded feature model %s in pid %d in %.2fs', handle,
              os.getpid(), time.perf_counter() - start)
  return _Loaded(model)


class ExtractBatches(beam.DoFn):
  """List[(LabelledImage, pixels)] -> one dict of arrays per batch:
  uris, labels, features."""

  def __init__(self, handle: str, tf_threads: int = 0):
    self._handle = handle
    self._tf_threads = tf_threads
    self._shared = shared.Shared()
    self._model: Optional[_Loaded] = None
    self._loads = Metrics.counter('stylize_train', 'feature_model_loads')
    self._done = Metrics.counter('stylize_train', 'images_extracted')
    self._latency = Metrics.distribution('stylize_train',
                                         'extract_ms_per_image')

  def setup(self):
    self._model = self._shared.acquire(self._load,
                                       tag=('features', self._handle))

  def _load(self) -> _Loaded:
    return _load_feature_model(self._handle, self._tf_threads)

  def process(self, batch: List[Tuple[LabelledImage, np.ndarray]]):
    if not self._model.reported:
      with self._model.lock:
        if not self._model.reported:
          self._loads.inc()
          self._model.reported = True
    start = time.perf_counter()
    features = self._model.model.features(np.stack([p for _, p in batch]))
    self._latency.update(int((time.perf_counter() - start) * 1000 /
                             len(batch)))
    self._done.inc(len(batch))
    items = [i for i, _ in batch]
    yield {'uris': np.array([i.uri for i in items]),
           'labels': np.array([i.label for i in items], np.int32),
           'features': features}


def write_shard(arrays: Dict[str, np.ndarray], folder: str) -> str:
  """One batch -> {folder}/features-<hash of its URIs>.npz.

  Named by content, so a retried bundle rewrites the same file; when a retry
  batches differently, read_features drops the duplicates.
  """
  digest = hashlib.sha1('\0'.join(arrays['uris']).encode('utf-8')).hexdigest()
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  uri = paths.join(folder, f'{SHARD_PREFIX}{digest[:20]}.npz')
  durable_write(uri, buf.getvalue())
  return uri


def write_failures(failures: List[Tuple[LabelledImage, str]],
                   folder: str) -> str:
  rows = sorted(({'uri': i.uri, 'reason': r} for i, r in failures),
                key=lambda d: d['uri'])
  uri = paths.join(folder, FAILURES_NAME)
  durable_write(uri, json.dumps(rows).encode('utf-8'), 'application/json')
  return uri


class ExtractFeatures(beam.PTransform):
  """PCollection[LabelledImage] -> written shard URIs; also writes
  {folder}/failures.json (the images that could not be read)."""

  def __init__(self, handle: str, size: int, folder: str, batch_size: int,
               tf_threads: int = 0):
    super().__init__()
    self._handle = handle
    self._size = size
    self._folder = folder
    self._batch_size = batch_size
    self._tf_threads = tf_threads

  def expand(self, images):
    loaded = (images
              | 'Spread' >> beam.Reshuffle()
              | 'Load' >> beam.ParDo(LoadImages(self._size)).with_outputs(
                  FAILED, main='ok'))
    written = (loaded.ok
               | 'Batch' >> beam.BatchElements(
                   min_batch_size=self._batch_size,
                   max_batch_size=self._batch_size)
               | 'Extract' >> beam.ParDo(ExtractBatches(self._handle,
                                                        self._tf_threads))
               | 'Write' >> beam.Map(write_shard, self._folder))
    _ = (loaded[FAILED]
         | 'AllFailed' >> beam.combiners.ToList()
         | 'WriteFailures' >> beam.Map(write_failures, self._folder))
    return written


def read_features(folder: str) -> Dict[str, np.ndarray]:
  """All shards below folder as one dict of arrays, one row per URI, in
  URI order: which image lands in which shard is Beam's choice, and the
  training that reads these must not depend on it (same data and --seed,
  same router)."""
  arrays = {'uris': [], 'labels': [], 'features': []}
  seen = set()
  shards = [e for e in iter_top_files(paths.join(folder, SHARD_PREFIX))
            if e.path.endswith('.npz')]
  for meta in sorted(shards, key=lambda m: m.path):
    with FileSystems.open(meta.path, compression_type='uncompressed') as f:
      shard = np.load(io.BytesIO(f.read()))
      for n, uri in enumerate(shard['uris']):
        if uri in seen:
          continue
        seen.add(uri)
        for key in arrays:
          arrays[key].append(shard[key][n])
  if not arrays['uris']:
    return {'uris': np.array([], str), 'labels': np.array([], np.int32),
            'features': np.zeros((0, 0), np.float32)}
  order = np.argsort(np.array(arrays['uris']), kind='stable')
  return {'uris': np.array(arrays['uris'])[order],
          'labels': np.array(arrays['labels'], np.int32)[order],
          'features': np.stack(arrays['features']).astype(np.float32)[order]}


def read_failures(folder: str) -> List[Dict[str, str]]:
  uri = paths.join(folder, FAILURES_NAME)
  if not FileSystems.exists(uri):
    return []
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    return json.loads(f.read().decode('utf-8'))


def run_extraction(images: Sequence[LabelledImage], handle: str, size: int,
                   folder: str, batch_size: int, options,
                   tf_threads: int = 0) -> None:
  """Runs the extraction pipeline with options (Beam's flags) and waits.

  Local runs use Beam's in-process runner by its name, as the job does
  (beam_jobs/runners.make_runner): DirectRunner would first try Prism,
  which wants to download a binary and leaves a beam-temp folder behind.
  """
  from beam_jobs.runners import make_runner  # pylint: disable=import-outside-toplevel
  with beam.Pipeline(runner=make_runner(options), options=options) as p:
    _ = (p
         | 'Images' >> beam.Create(list(images))
         | 'ExtractFeatures' >> ExtractFeatures(handle, size, folder,
                                                batch_size, tf_threads))
