"""A two-input image network on OpenVINO, run in bucket shapes.

`BucketedNetwork(model)` takes an ov.Model `(image [B, H, W, 3] float32 in
[0, 1], aux) -> image` (aux: the style vector of a split model, or the
style image of a full one) and runs batches of any image size by padding
each image to its bucket (buckets.bucket_shape) and cropping the output:

- run_uint8: uint8 images in, uint8 out. The network's input and output
  are uint8 (ov_split.uint8_io), each image is written (and mirror-padded)
  straight into its infer request's input buffer and read back from its
  output buffer: no float copy of an image is ever made on the host.
- run_float: float32 in [0, 1] in and out, for the paths that need floats
  on the host anyway (strength by pixels, colour preservation, tiles);
  written into the request's float input buffer the same way.

The uint8 and float variants are compiled separately, each per bucket on
first use (a job normally uses one of them).
"""

from typing import Any, List, Sequence

import numpy as np

from transforms.models.engine import buckets
from transforms.models.engine.openvino_runtime import (LATENCY, THROUGHPUT,
                                                       OpenVINORunner)


def _per_image(aux: np.ndarray, count: int):
  """aux [1 | B, ...] -> a function i -> image i's aux [1, ...]."""
  aux = np.asarray(aux, np.float32)
  if aux.shape[0] == 1:
    return lambda i: aux
  if aux.shape[0] != count:
    raise ValueError(f'{aux.shape[0]} style states for {count} images')
  return lambda i: aux[i:i + 1]


class BucketedNetwork:
  """See the module doc. Thread-safe (OpenVINORunner is)."""

  def __init__(self, model, precision: str, threads: int = 0,
               max_shapes: int = 8, bucket=buckets.bucket_shape,
               name: str = 'transfer'):
    from transforms.models.engine import ov_split  # pylint: disable=import-outside-toplevel
    self.precision = precision
    self.bucket = bucket
    self.float_runner = OpenVINORunner(model, precision, THROUGHPUT, threads,
                                       max_shapes, name=name)
    self.uint8_runner = OpenVINORunner(ov_split.uint8_io(model), precision,
                                       THROUGHPUT, threads, max_shapes,
                                       core=self.float_runner.core,
                                       name=name + '-u8')

  @property
  def compiles(self) -> int:
    return self.float_runner.compiles + self.uint8_runner.compiles

  def _run(self, runner: OpenVINORunner, images: Sequence[np.ndarray],
           aux: np.ndarray, out: Sequence[np.ndarray],
           exact: bool) -> Sequence[np.ndarray]:
    """images: [H, W, 3] arrays, any sizes of one bucket (a [B, H, W, 3]
    stack is a sequence of them too); out: arrays of the same sizes."""
    count = len(images)
    bucket = buckets.exact_shape if exact else self.bucket
    shape = {bucket(*image.shape[:2]) for image in images}
    if len(shape) != 1:
      raise ValueError(f'images of several buckets in one call: {shape}')
    (bh, bw), = shape
    aux_of = _per_image(aux, count)
    shapes = [(1, bh, bw, images[0].shape[-1]),
              (1,) + tuple(np.shape(aux)[1:])]

    def fill(i, inputs):
      buckets.pad_into(inputs[0][0], images[i])
      inputs[1][...] = aux_of(i)

    def take(i, outputs):
      buckets.crop_into(out[i], outputs[0][0])

    runner.run(shapes, count, fill, take)
    return out

  def run_uint8(self, images: np.ndarray, aux: np.ndarray,
                exact: bool = False) -> np.ndarray:
    """uint8 [B, H, W, 3] -> uint8 [B, H, W, 3].

    exact: pad only as the TF engine does (buckets.exact_shape), for
    tiles: their size is fixed per job, so they need no buckets, and
    padding beyond the TF engine's would move every tile's edges.
    """
    out = np.empty(images.shape, np.uint8)
    return self._run(self.uint8_runner, images, aux, out, exact)

  def run_uint8_list(self, images: Sequence[np.ndarray],
                     aux: np.ndarray) -> List[np.ndarray]:
    """uint8 [H, W, 3] images of any sizes within one bucket -> uint8
    outputs of their sizes, in one batch of requests (a mixed archive's
    photos of one bucket share a call without being resized)."""
    out = [np.empty(image.shape, np.uint8) for image in images]
    return list(self._run(self.uint8_runner, images, aux, out, False))

  def run_float(self, images: np.ndarray, aux: np.ndarray,
                exact: bool = False) -> np.ndarray:
    """float32 [B, H, W, 3] in [0, 1] -> float32 [B, H, W, 3]."""
    out = np.empty(images.shape, np.float32)
    return self._run(self.float_runner, images, aux, out, exact)


class Predictor:
  """A one-input network (style image -> vector), f32, LATENCY hint.

  Runs once per style (and per image for strength < 1), so accuracy
  matters more than speed: always f32.
  """

  def __init__(self, model, threads: int = 0, core=None,
               name: str = 'predictor'):
    self.runner = OpenVINORunner(model, 'f32', LATENCY, threads, 4, core=core,
                                 name=name)

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """float32 [1, h, w, 3] -> [1, ...] vector."""
    return self.runner.infer([np.asarray(image, np.float32)])


def describe(net: Any) -> dict:
  runners = [net.float_runner, net.uint8_runner]
  return {'precision': net.precision,
          'compiled_shapes': sorted({s[0] for r in runners
                                     for s in r.compiled_shapes})}
