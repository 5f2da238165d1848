"""The TF Lite pair, with every tile of an image in one batched call.

LiteStylizer runs the 384x384 transfer network one tile at a time under a
lock. BatchedLiteStylizer cuts the same tiles (engine.tiles) and runs them
together, on one of two runtimes:

- OpenVINO, reading the transfer .tflite file directly, the tiles spread
  over its parallel infer requests (THROUGHPUT hint). Used for float
  transfer files (style_transfer_f16_384: 44 dB PSNR from LiteRT in bf16,
  exact in f32, ~10x faster). int8 files run on OpenVINO only when
  asked for explicitly (--engine openvino): OpenVINO's int8 arithmetic is
  as close to the float network as LiteRT's (22-28 dB from f16 for both)
  but not LiteRT's rounding (30-33 dB from LiteRT), so 'auto' keeps them on
  LiteRT, as today. The dynamic-size int8 file never runs on OpenVINO (its
  bf16 output is wrong: 10 dB).
- LiteRT, the batch dimension resized to the number of tiles: one invoke
  per image instead of one per tile (LiteRT gains little from it: its
  threads already span the cores).

The style predictor stays on LiteRT (one call per style, 5 ms).
"""

import logging
import os
from typing import Any

import numpy as np

from transforms.models.base import StyleParams, _pick
from transforms.models.engine import tiles
from transforms.models.lite import LiteStylizer, _interpreter_class

logger = logging.getLogger(__name__)


def is_quantized(path: str) -> bool:
  """Whether a .tflite file computes in integers (int8/uint8 tensors)."""
  it = _interpreter_class()(model_path=path)
  return any(np.dtype(d['dtype']) in (np.int8, np.uint8)
             for d in it.get_tensor_details())


class BatchedLiteStylizer(LiteStylizer):
  """LiteStylizer with batched tiles; see the module doc."""

  def __init__(self, handle: str, threads: int = 0, engine: str = 'tf',
               precision: str = 'f32', int8_on_openvino: bool = False):
    super().__init__(handle, threads)
    self.engine = 'tf'  # LiteRT: the reference runtime of TF Lite files.
    self.precision = 'f32'
    self._ov = None
    transfer = self.files[1]
    if engine != 'openvino':
      return
    if self.dynamic:
      logger.warning('%s: the dynamic-size transfer file runs on LiteRT '
                     '(OpenVINO computes it wrongly in bf16).', handle)
      return
    if is_quantized(transfer) and not int8_on_openvino:
      logger.info('%s: int8 transfer file %s stays on LiteRT (OpenVINO '
                  'rounds int8 differently); --engine openvino moves it.',
                  handle, os.path.basename(transfer))
      return
    from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
    ov = import_openvino()
    from transforms.models.engine.openvino_runtime import OpenVINORunner  # pylint: disable=import-outside-toplevel
    model = ov.convert_model(transfer)
    # Inputs told apart by their last dimension (3: image, 100: vector).
    self._ov_order = [int(p.get_partial_shape()[3].get_length() != 3)
                      for p in model.get_parameters()]
    self._ov = OpenVINORunner(model, precision, threads=threads,
                              name='lite-transfer')
    self.engine = 'openvino'
    self.precision = precision

  def describe(self) -> dict:
    info = super().describe()
    info.update({'engine': self.engine, 'precision': self.precision})
    return info

  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    count = content.shape[0]
    vectors = np.asarray(style_state, np.float32)
    if vectors.shape[0] == 1 and count > 1:
      vectors = np.repeat(vectors, count, axis=0)
    if self._ov is not None:
      inputs = [(content, vectors)[k] for k in self._ov_order]
      return self._ov.infer([np.asarray(a, np.float32) for a in inputs])
    return self._transfer.run(content, vectors)

  def _run(self, x: np.ndarray, state: Any, params: StyleParams) -> np.ndarray:
    # As Stylizer._run for fixed-size networks, with each image's tiles (or,
    # for images of one tile, the whole batch) in one call.
    if not self.fixed_size:
      return super()._run(x, state, params)
    tile = min(params.tile_size or min(self.fixed_size), min(self.fixed_size))
    v = np.asarray(state)
    if v.ndim == 4 and v.shape[0] > 1:
      return np.concatenate([
          tiles.run_tiled_batch(x[i:i + 1],
                                lambda t, i=i: self._call(t, _pick(state, i)),
                                tile, params.tile_overlap)
          for i in range(x.shape[0])])
    return tiles.run_tiled_batch(x, lambda t: self._call(t, state), tile,
                                 params.tile_overlap)
