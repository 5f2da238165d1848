"""A loaded Magenta-convention model, frozen, and split at its style vector.

`model(content, style)[0]` from tensorflow_hub.load / tf.saved_model.load
(TF Hub handle, local or gs:// SavedModel, the builtin model) is frozen
once into a GraphDef with its weights as constants
(convert_variables_to_constants_v2, which also inlines the nested
function calls), and that one GraphDef serves both engines:

- TensorFlow: tf.compat.v1.wrap_function imports it and .prune() makes a
  predictor (style -> vector) and a transfer function (content, vector ->
  image), pure graph pruning (the same kernels as the full call: the split
  reproduces it bit for bit on this CPU).
- OpenVINO: ov_split converts the same GraphDef, so tensor names match.

Where the graph has no style vector (bottleneck.find_bottleneck), the model
cannot be split; split() raises NotSplittable and callers keep the full
call.
"""

import dataclasses
import logging
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from transforms.models.engine import bottleneck

logger = logging.getLogger(__name__)


class NotSplittable(ValueError):
  """The model has no style vector to split at (e.g. builtin)."""


def concrete_function(model: Any):
  """The (content, style) -> [image] ConcreteFunction of a loaded model.

  Tries, in order: the restored __call__'s traced functions (the TF Hub
  Magenta convention; the most general input shapes first), the
  serving_default signature, and tracing __call__ for two
  [None, None, None, 3] float32 images.

  Raises:
    NotSplittable: nothing callable as model(content, style) was found.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  call = getattr(model, '__call__', None)
  functions = list(getattr(call, 'concrete_functions', None) or [])

  def images(fn) -> Optional[List[Any]]:
    args = fn.structured_input_signature[0]
    specs = [a for a in args if isinstance(a, tf.TensorSpec)]
    if len(specs) >= 2 and all(s.shape.rank == 4 and s.dtype == tf.float32
                               for s in specs[:2]):
      return specs[:2]
    return None

  usable = [f for f in functions if images(f)]
  if usable:
    def unknown_dims(f):
      return sum(d is None for s in images(f) for d in s.shape.as_list())
    return max(usable, key=unknown_dims)
  signatures = getattr(model, 'signatures', None) or {}
  if 'serving_default' in signatures:
    return signatures['serving_default']
  if callable(call):
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    try:
      return tf.function(call).get_concrete_function(spec, spec)
    except Exception as e:  # pylint: disable=broad-except
      raise NotSplittable(f'model(content, style) cannot be traced: {e}') from e
  raise NotSplittable('the model has no (content, style) function')


@dataclasses.dataclass
class Frozen:
  """The model as one GraphDef with constant weights."""
  graph_def: Any
  content: str  # Tensor names, e.g. 'content_image:0'.
  style: str
  output: str
  wrapped: Any  # tf.compat.v1.wrap_function of the imported GraphDef.

  def abstract_graph(self) -> bottleneck.Graph:
    return graph_from_tf(self.wrapped.graph, self.content, self.style,
                         [self.output])

  def prune(self, feeds, fetch) -> Callable:
    return self.wrapped.prune(feeds, fetch)


def _pick_inputs(fn, frozen_fn) -> Tuple[str, str]:
  """Content and style tensor names in the frozen function.

  Positional functions keep the convention's order (content, style); for a
  keyword signature the names decide ('content'/'style' in them), else the
  sorted order.
  """
  names = [t.name for t in frozen_fn.inputs]
  if len(names) < 2:
    raise NotSplittable(f'expected two image inputs, found {names}')
  if not fn.structured_input_signature[0] and len(names) == 2:
    content = [n for n in names if 'content' in n.lower()]
    style = [n for n in names if 'style' in n.lower()]
    if len(content) == 1 and len(style) == 1:
      return content[0], style[0]
  return names[0], names[1]


def freeze(model: Any) -> Frozen:
  """Freezes model(content, style)[0] into one GraphDef (about 0.5 s here)."""
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=import-outside-toplevel
  fn = concrete_function(model)
  frozen_fn = convert_to_constants.convert_variables_to_constants_v2(fn)
  content, style = _pick_inputs(fn, frozen_fn)
  outputs = [t for t in frozen_fn.outputs
             if t.dtype == tf.float32 and t.shape.rank in (None, 4)]
  if not outputs:
    raise NotSplittable('the model has no float32 image output')
  graph_def = frozen_fn.graph.as_graph_def()

  def import_graph():
    tf.compat.v1.import_graph_def(graph_def, name='')

  wrapped = tf.compat.v1.wrap_function(import_graph, [])
  return Frozen(graph_def, content, style, outputs[0].name, wrapped)


def graph_from_tf(graph, content: str, style: str,
                  outputs: List[str]) -> bottleneck.Graph:
  """bottleneck.Graph of a tf.Graph (data inputs only, not control ones)."""
  ops, tensors = {}, {}
  for op in graph.get_operations():
    ops[op.name] = [t.name for t in op.inputs]
    for t in op.outputs:
      shape = None if t.shape.rank is None else tuple(t.shape.as_list())
      tensors[t.name] = bottleneck.Tensor(t.name, op.name, shape,
                                          t.dtype.is_floating)
  return bottleneck.Graph(ops, tensors, graph.get_tensor_by_name(content).op.name,
                          graph.get_tensor_by_name(style).op.name, outputs)


@dataclasses.dataclass
class TFSplit:
  """The model cut at its style vector, as two TF functions."""
  frozen: Frozen
  vector: bottleneck.Tensor
  predictor: Callable  # tf: style [1, h, w, 3] -> [1, 1, 1, N]
  transfer: Callable  # tf: (content [B, H, W, 3], vector [1|B, 1, 1, N])

  @property
  def vector_shape(self) -> Tuple[Optional[int], ...]:
    return self.vector.shape


def find_vector(frozen: Frozen) -> bottleneck.Tensor:
  """The style vector tensor.

  Raises:
    NotSplittable: the graph has none.
  """
  found = bottleneck.find_bottleneck(frozen.abstract_graph())
  if found is None:
    raise NotSplittable(
        'no style-vector tensor ([B, 1, 1, N] or [B, N], depending only on '
        'the style image, through which all of the style reaches the output)')
  return found


def split(frozen: Frozen) -> TFSplit:
  """Prunes the frozen graph into predictor and transfer functions.

  Raises:
    NotSplittable: the graph has no style vector.
  """
  vector = find_vector(frozen)
  predictor = frozen.prune(frozen.style, vector.name)
  transfer = frozen.prune([frozen.content, vector.name], frozen.output)
  logger.info('Split the model at its style vector %s %s.', vector.name,
              vector.shape)
  return TFSplit(frozen, vector, predictor, transfer)


def as_numpy(x) -> np.ndarray:
  return x.numpy() if hasattr(x, 'numpy') else np.asarray(x)
