"""Encoding stylized arrays and writing them with Beam FileSystems."""

import io
import logging
import time
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared
from PIL import Image

from transforms.icc import srgb_profile
from transforms import markers
from transforms.identity import crc32c
from transforms.image_memory import reuse_image_memory
from transforms.incremental import identity_of
from transforms.markers import Marker
from transforms.layout import OutputLayout
from transforms.lease import WorkerLease, worker_lease
from transforms.overlap import OverlappedDoFn
from transforms.records import (Failure, StylizedImage, describe_error,
                                is_permanent)
from transforms.rows import ok_row
from transforms.storage import Writer
from transforms.worker_errors import noted

logger = logging.getLogger(__name__)

FAILED = 'failed'
FORMATS = {'jpg': 'JPEG', 'png': 'PNG', 'webp': 'WEBP', 'avif': 'AVIF'}
MIME_TYPES = {'jpg': 'image/jpeg', 'png': 'image/png', 'webp': 'image/webp',
              'avif': 'image/avif'}
# libaom's fastest setting: on a 1024x768 photo at quality 90, 0.11 s
# against 0.40 s at speed 8 and 1.07 s at Pillow's default 6, for a file
# 1% larger than at speed 8.
AVIF_SPEED = 10


def encode_image(pixels: np.ndarray, fmt: str, quality: int,
                 exif: bytes = b'', icc_profile: Optional[bytes] = None
                 ) -> bytes:
  """uint8 HxWx3 -> file bytes; fast encoder settings for batch work.

  PNG uses zlib level 1: several times faster than the default level 6 for
  photographic content at a small cost in size. exif and icc_profile are
  embedded in every format (PNG as eXIf and iCCP chunks, WebP and AVIF in
  their containers). AVIF writes the EXIF orientation as its own rotation
  box and drops the tag, so an AVIF output carries no Orientation tag.
  """
  im = Image.fromarray(pixels, mode='RGB') if pixels.ndim == 3 else (
      Image.fromarray(pixels))
  extra = {}
  if exif:
    extra['exif'] = exif
  if icc_profile:
    extra['icc_profile'] = icc_profile
  buf = io.BytesIO()
  if fmt == 'jpg':
    im.save(buf, 'JPEG', quality=quality, optimize=False, **extra)
  elif fmt == 'png':
    im.save(buf, 'PNG', compress_level=1, **extra)
  elif fmt == 'webp':
    im.save(buf, 'WEBP', quality=quality, method=4, **extra)
  elif fmt == 'avif':
    im.save(buf, 'AVIF', quality=quality, speed=AVIF_SPEED, **extra)
  else:
    raise ValueError(f'unknown output format {fmt!r}')
  return buf.getvalue()


class EncodeAndWriteFn(OverlappedDoFn):
  """StylizedImage -> ok ManifestRow; 'failed' Failure if encode/write fails.

  Encodes and writes a few images at once (OverlappedDoFn): uploads to an
  object store wait on the network, not on the model.
  """

  def __init__(self, layout: OutputLayout, quality: int, row_info: dict,
               job_key: str, threads: Optional[int] = None,
               lease: Optional[WorkerLease] = None):
    """lease: when the run holds a lease on the output
    (transforms/lease.py), every worker process checks it still does
    before each write; None for no check."""
    super().__init__(threads)
    self._layout = layout
    self._quality = quality
    self._row_info = dict(row_info)
    self._job_key = job_key
    self._lease_spec = lease
    self._shared = shared.Shared()
    self._lease = None
    self._icc = None
    self._writer = None

  def setup(self):
    super().setup()
    if self._lease_spec:
      with noted(self._layout.errors_dir()):
        self._lease = worker_lease(self._shared, self._layout.output,
                                   self._lease_spec)
    reuse_image_memory()
    # Pixels are sRGB (transforms/icc.py converts every input): say so.
    self._icc = srgb_profile()
    self._writer = Writer(self._layout)

  def weight(self, element: StylizedImage) -> int:
    """The pixels and (at most as large) their encoded file."""
    return 2 * element.pixels.nbytes

  def work(self, item: StylizedImage):
    timings = dict(item.timings)
    fmt = self._layout.fmt
    try:
      label, key = item.style.label, item.input.key
      uri = self._layout.output_uri(label, key)
      marker_uri = self._layout.marker_uri(label, key)
      start = time.perf_counter()
      data = encode_image(item.pixels, fmt, self._quality,
                          exif=item.exif, icc_profile=self._icc)
      timings['encode_s'] = time.perf_counter() - start
      start = time.perf_counter()
      if self._lease is not None:
        # Another run took the output folder over: write nothing more.
        self._lease.check_recent()
      if label in item.input.stale:
        # The marker of an earlier output (another identity) goes first: a
        # crash before the new marker must not leave it vouching for the
        # new file.
        self._writer.delete([marker_uri], missing_ok=True)
      self._writer.write(uri, data, MIME_TYPES[fmt])
      # The done marker comes after the output is durable: a marker always
      # names a complete output (transforms/markers.py).
      marker = Marker(status=markers.OK, identity=identity_of(
          item.input, item.style, self._job_key), size=len(data),
                      crc32c=crc32c(data), run_id=self._row_info['run_id'],
                      engine=item.engine, precision=item.precision)
      try:
        self._writer.write(marker_uri, marker.to_bytes(), 'application/json')
      except Exception:
        # No marker, no output: the failed row must not leave one behind.
        self._writer.delete([uri], missing_ok=True)
        raise
      timings['write_s'] = time.perf_counter() - start
    except Exception as e:  # pylint: disable=broad-except
      # An encoder's refusal (e.g. WebP's 16383 px limit, a name over the
      # length limit) is the image's own and is remembered; I/O is not.
      return [beam.pvalue.TaggedOutput(FAILED, Failure(
          input=item.input, style=item.style,
          error=f'write: {describe_error(e)}',
          source_width=item.source_width, source_height=item.source_height,
          timings=timings, permanent=is_permanent(e)))], {}
    return [ok_row(item, uri, self._row_info, timings)], {
        'bytes_written': len(data)}


class EncodeAndWrite(beam.PTransform):
  """PCollection[StylizedImage] -> (ok ManifestRows, failed Failures)."""

  def __init__(self, layout: OutputLayout, quality: int, row_info: dict,
               job_key: str, threads: Optional[int] = None,
               lease: Optional[WorkerLease] = None):
    super().__init__()
    self._fn = EncodeAndWriteFn(layout, quality, row_info, job_key, threads,
                                lease)

  def expand(self, stylized):
    results = stylized | 'EncodeWrite' >> beam.ParDo(self._fn).with_outputs(
        FAILED, main='ok')
    return results.ok, results[FAILED]
