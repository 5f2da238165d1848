"""Adapter for Magenta's TF Lite pair: style prediction + style transfer."""

import glob
import logging
import os
import threading
from typing import Any, List, Optional, Tuple

import numpy as np

from transforms.models.base import ModelLoadError, Stylizer

logger = logging.getLogger(__name__)

# In a folder, the transfer network picked when several are present: float16
# weights first (closest to the float model), then int8 fixed-size, then the
# slow dynamic-size one.
_TRANSFER_PREFERENCE = ('f16', 'quantized_384', 'int8', 'dynamic')


def _interpreter_class():
  """LiteRT's interpreter (what current TensorFlow recommends); tf.lite else."""
  try:
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter
  except ImportError:  # pragma: no cover - depends on the install
    import tensorflow as tf
    return tf.lite.Interpreter


def find_pair(handle: str) -> Tuple[str, str]:
  """(prediction file, transfer file) from a folder or 'a.tflite,b.tflite'.

  Files are told apart by their inputs, never by name or position: the
  prediction network has one image input, the transfer network an image and
  a 100-d style vector.
  """
  if ',' in handle:
    files = [f.strip() for f in handle.split(',') if f.strip()]
  elif os.path.isdir(handle):
    files = sorted(glob.glob(os.path.join(handle, '*.tflite')))
  else:
    files = [handle]
  predict, transfers = [], []
  for f in files:
    if not os.path.exists(f):
      raise ModelLoadError(f'TF Lite file {f!r} does not exist.')
    try:
      it = _interpreter_class()(model_path=f)
    except Exception as e:  # pylint: disable=broad-except
      raise ModelLoadError(f'{f!r} is not a loadable TF Lite model: {e}') from e
    dims = sorted(int(d['shape'][-1]) for d in it.get_input_details())
    if dims == [3]:
      predict.append(f)
    elif dims == [3, 100]:
      transfers.append(f)
  if len(predict) != 1 or not transfers:
    raise ModelLoadError(
        f'{handle!r} must hold one style-prediction .tflite (image -> style '
        'vector) and a style-transfer .tflite (image + style vector -> image); '
        f'found prediction {predict or "none"}, transfer {transfers or "none"}.')

  def rank(path):
    name = os.path.basename(path)
    for i, key in enumerate(_TRANSFER_PREFERENCE):
      if key in name:
        return i
    return len(_TRANSFER_PREFERENCE)
  return predict[0], sorted(transfers, key=rank)[0]


class _Net:
  """One interpreter with its tensors found by last dimension, and a lock.

  TF Lite interpreters are not thread-safe; Beam may run several DoFn
  threads per process, so each call holds the lock.
  """

  def __init__(self, path: str, threads: int):
    self.path = path
    self.interpreter = _interpreter_class()(model_path=path,
                                            num_threads=threads)
    self.lock = threading.Lock()
    inputs = self.interpreter.get_input_details()
    self.image = next(d for d in inputs if d['shape'][-1] == 3)
    self.vector = next((d for d in inputs if d['shape'][-1] == 100), None)
    self.output = self.interpreter.get_output_details()[0]
    self.shape = tuple(int(d) for d in self.image['shape'])
    self.interpreter.allocate_tensors()

  def run(self, image: np.ndarray, vector: Optional[np.ndarray] = None):
    with self.lock:
      it = self.interpreter
      if tuple(image.shape) != self.shape:
        it.resize_tensor_input(self.image['index'], list(image.shape))
        if self.vector is not None:
          it.resize_tensor_input(self.vector['index'],
                                 [image.shape[0], 1, 1, 100])
        it.allocate_tensors()
        self.shape = tuple(image.shape)
      it.set_tensor(self.image['index'], image.astype(np.float32))
      if vector is not None:
        it.set_tensor(self.vector['index'], vector.astype(np.float32))
      it.invoke()
      return it.get_tensor(self.output['index']).copy()


class LiteStylizer(Stylizer):
  """Magenta's two-stage TF Lite model; the style vector is exposed."""

  has_style_vector = True
  kind = 'tflite'

  def __init__(self, handle: str, threads: int = 0):
    from transforms.native_logs import filtered_stderr
    # LiteRT logs an INFO line per interpreter it builds.
    filtered_stderr(lambda: self._load(handle, threads))

  def _load(self, handle: str, threads: int) -> None:
    self.handle = handle
    predict, transfer = find_pair(handle)
    threads = threads or os.cpu_count() or 1
    self._predict = _Net(predict, threads)
    self._transfer = _Net(transfer, threads)
    self.predict_calls = 0  # Counted so tests can check styles are cached.
    _, h, w, _ = self._predict.shape
    self._style_hw = (h, w)
    # Fixed-size transfer files ignore a resized spatial input, so they are
    # fed exactly their size (tiling covers larger images); the dynamic one
    # takes any size that is a multiple of its strides.
    self.dynamic = 'dynamic' in os.path.basename(transfer)
    _, th, tw, _ = self._transfer.shape
    self.fixed_size = None if self.dynamic else (th, tw)
    self.files = (predict, transfer)
    logger.info('TF Lite pair: %s + %s', predict, transfer)

  def describe(self) -> dict:
    """Both networks' tensors, as the TF Lite files declare them."""
    def tensors(details):
      return {d['name']: f'{d["dtype"].__name__} {[int(x) for x in d["shape"]]}'
              for d in details}
    return {
        'convention': 'prediction(style) -> 100-d vector; transfer(content, '
                      'vector) -> image',
        'style_vector': 'exposed (strength and blends mix vectors)',
        'prediction': self.files[0], 'transfer': self.files[1],
        'inputs': {
            'prediction': tensors(
                self._predict.interpreter.get_input_details()),
            'transfer': tensors(self._transfer.interpreter.get_input_details()),
        },
        'outputs': {
            'prediction': tensors(
                self._predict.interpreter.get_output_details()),
            'transfer': tensors(
                self._transfer.interpreter.get_output_details()),
        },
        'fixed_size': self.fixed_size,
    }

  def _style_vector(self, image: np.ndarray) -> np.ndarray:
    """float [h, w, 3] -> [1, 1, 1, 100] (resized to the predictor's input)."""
    from PIL import Image
    h, w = self._style_hw
    if image.shape[:2] != (h, w):
      im = Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(
          np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
      image = np.asarray(im, np.float32) / 255.0
    self.predict_calls += 1
    return self._predict.run(image[np.newaxis])

  def prepare_style(self, style: np.ndarray) -> Any:
    return self._style_vector(style)

  def content_vector(self, content: np.ndarray) -> Any:
    return self._style_vector(content)

  def run_batch(self, content: np.ndarray, style_state: Any) -> np.ndarray:
    vectors = np.asarray(style_state, np.float32)
    outs: List[np.ndarray] = []
    for i in range(content.shape[0]):
      vec = vectors[i:i + 1] if vectors.shape[0] > 1 else vectors
      outs.append(self._transfer.run(content[i:i + 1], vec))
    return np.concatenate(outs)
