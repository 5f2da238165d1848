"""Encoding stylized arrays and writing them with Beam FileSystems."""

import io
import logging
import time
from typing import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from PIL import Image

from transforms import paths
from transforms.incremental import marker_uri, work_identity
from transforms.records import (Failure, ManifestRow, Status, StylizedImage,
                                describe_error)
from transforms.storage import use_anonymous_gcs_for_emulator, write_atomically

logger = logging.getLogger(__name__)

FAILED = 'failed'
FORMATS = {'jpg': 'JPEG', 'png': 'PNG', 'webp': 'WEBP'}
MIME_TYPES = {'jpg': 'image/jpeg', 'png': 'image/png', 'webp': 'image/webp'}


def encode_image(pixels: np.ndarray, fmt: str, quality: int) -> bytes:
  """uint8 HxWx3 -> file bytes; fast encoder settings for batch work.

  PNG uses zlib level 1: several times faster than the default level 6 for
  photographic content at a small cost in size.
  """
  im = Image.fromarray(pixels, mode='RGB') if pixels.ndim == 3 else (
      Image.fromarray(pixels))
  buf = io.BytesIO()
  if fmt == 'jpg':
    im.save(buf, 'JPEG', quality=quality, optimize=False)
  elif fmt == 'png':
    im.save(buf, 'PNG', compress_level=1)
  elif fmt == 'webp':
    im.save(buf, 'WEBP', quality=quality, method=4)
  else:
    raise ValueError(f'unknown output format {fmt!r}')
  return buf.getvalue()


class EncodeAndWriteFn(beam.DoFn):
  """StylizedImage -> ok ManifestRow; 'failed' Failure if encode/write fails."""

  def __init__(self, output: str, fmt: str, quality: int, model: str,
               params: dict, job_key: str):
    self._job_key = job_key
    self._params = dict(params)
    self._output = output
    self._fmt = fmt
    self._quality = quality
    self._model = model
    self._bytes = Metrics.counter('stylize', 'bytes_written')

  def setup(self):
    use_anonymous_gcs_for_emulator()

  def process(self, item: StylizedImage) -> Iterable:
    timings = dict(item.timings)
    uri = paths.output_uri(self._output, item.style.label, item.input.out_stem,
                     self._fmt)
    try:
      start = time.perf_counter()
      data = encode_image(item.pixels, self._fmt, self._quality)
      timings['encode_s'] = time.perf_counter() - start
      start = time.perf_counter()
      write_atomically(uri, data, MIME_TYPES[self._fmt])
      # The done marker comes after the output: a marker always means a
      # complete output (see transforms/incremental.py).
      write_atomically(marker_uri(self._output, work_identity(
          item.input, item.style, self._job_key)), b'')
      timings['write_s'] = time.perf_counter() - start
    except Exception as e:  # pylint: disable=broad-except
      yield beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item.input, style=item.style,
          error=f'write: {describe_error(e)}',
          source_width=item.source_width, source_height=item.source_height,
          timings=timings))
      return
    self._bytes.inc(len(data))
    height, width = item.pixels.shape[:2]
    yield ManifestRow(
        input=item.input.uri, style=item.style.uri, status=Status.OK,
        model=self._model, output=uri, width=width, height=height,
        source_width=item.source_width, source_height=item.source_height,
        params=dict(self._params), timings=timings,
        image_class=item.input.image_class,
        class_score=item.input.class_score)


class EncodeAndWrite(beam.PTransform):
  """PCollection[StylizedImage] -> (ok ManifestRows, failed Failures)."""

  def __init__(self, output: str, fmt: str, quality: int, model: str,
               params: dict, job_key: str):
    super().__init__()
    self._fn = EncodeAndWriteFn(output, fmt, quality, model, params, job_key)

  def expand(self, stylized):
    results = stylized | 'EncodeWrite' >> beam.ParDo(self._fn).with_outputs(
        FAILED, main='ok')
    return results.ok, results[FAILED]
