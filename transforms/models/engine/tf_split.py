"""A loaded Magenta-convention model split at its style vector, under TF.

`model(content, style)[0]` from tensorflow_hub.load / tf.saved_model.load
(TF Hub handle, local or gs:// SavedModel, the builtin model) has a
ConcreteFunction whose graph holds the whole network. Its style vector is
found by structure (bottleneck.find_bottleneck), and the graph is pruned
(WrappedFunction.prune) into

- a predictor: style image -> vector, and
- a transfer function: (content image, vector) -> image,

which run the same kernels on the same variables as the full call (the
split reproduces it bit for bit on this CPU) and hold no copy of the
weights: +15 MB RSS here, where freezing the weights into constants first
(convert_variables_to_constants_v2) costs +165 MB.

A graph whose network sits in nested function calls (e.g. a
serving_default signature calling the real function) shows no vector at
the top level; it is then frozen, which inlines the calls, and searched
again. Where neither has a vector, the model cannot be split:
NotSplittable, and callers keep the full call.
"""

import dataclasses
import logging
from typing import Any, Callable, List, Optional, Tuple

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


def image_inputs(fn) -> Tuple[Any, Any]:
  """The content and style input tensors of a (content, style) function.

  Positional functions keep the convention's order (content, style); for a
  keyword signature (and a frozen function, which has no structured
  signature) the names decide ('content'/'style' in them), else the order
  of its inputs.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  inputs = [t for t in fn.inputs if t.dtype != tf.resource]
  signature = getattr(fn, 'structured_input_signature', None)
  positional = list(signature[0]) if signature else []
  if positional:
    inputs = inputs[:len(positional)]
  if len(inputs) < 2:
    raise NotSplittable(f'expected two image inputs, found {inputs}')
  if not positional:
    content = [t for t in inputs if 'content' in t.name.lower()]
    style = [t for t in inputs if 'style' in t.name.lower()]
    if len(content) == 1 and len(style) == 1:
      return content[0], style[0]
  return inputs[0], inputs[1]


@dataclasses.dataclass
class Traced:
  """One graph of the model: its inputs, output, and a pruning handle."""
  graph: Any  # tf.Graph (a FuncGraph).
  content: str  # Tensor names, e.g. 'content_image:0'.
  style: str
  output: str
  wrapped: Any  # A WrappedFunction over `graph`: .prune(feeds, fetches).
  frozen: bool

  def abstract_graph(self) -> bottleneck.Graph:
    return graph_from_tf(self.graph, self.content, self.style, [self.output])

  def prune(self, feeds, fetch) -> Callable:
    graph = self.graph
    if isinstance(feeds, str):
      feeds = graph.get_tensor_by_name(feeds)
    else:
      feeds = [graph.get_tensor_by_name(f) for f in feeds]
    return self.wrapped.prune(feeds, graph.get_tensor_by_name(fetch))


def _output(fn) -> Any:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  outputs = [t for t in fn.outputs
             if t.dtype == tf.float32 and t.shape.rank in (None, 4)]
  if not outputs:
    raise NotSplittable('the model has no float32 image output')
  return outputs[0]


def trace(model: Any) -> Traced:
  """The model's own function graph, as loaded (variables, no copies)."""
  from tensorflow.python.eager import wrap_function  # pylint: disable=import-outside-toplevel
  fn = concrete_function(model)
  content, style = image_inputs(fn)
  wrapped = wrap_function.WrappedFunction(
      fn.graph, variable_holder=wrap_function.VariableHolder(
          share_variables=True))
  return Traced(fn.graph, content.name, style.name, _output(fn).name, wrapped,
                frozen=False)


def freeze(model: Any) -> Traced:
  """The model frozen into one GraphDef, nested calls inlined (+165 MB RSS
  and 0.7 s for the shared Magenta model: only where trace() finds no
  vector)."""
  from transforms.native_logs import import_tensorflow  # pylint: disable=import-outside-toplevel
  tf = import_tensorflow()
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=import-outside-toplevel
  fn = concrete_function(model)
  frozen_fn = convert_to_constants.convert_variables_to_constants_v2(fn)
  content, style = image_inputs(frozen_fn)
  output = _output(frozen_fn).name
  graph_def = frozen_fn.graph.as_graph_def()

  def import_graph():
    tf.compat.v1.import_graph_def(graph_def, name='')

  wrapped = tf.compat.v1.wrap_function(import_graph, [])
  return Traced(wrapped.graph, content.name, style.name, output, wrapped,
                frozen=True)


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
  return bottleneck.Graph(ops, tensors,
                          graph.get_tensor_by_name(content).op.name,
                          graph.get_tensor_by_name(style).op.name, outputs)


@dataclasses.dataclass
class TFSplit:
  """The model cut at its style vector, as two TF functions."""
  traced: Traced
  vector: bottleneck.Tensor
  predictor: Callable  # tf: style [1, h, w, 3] -> [1, 1, 1, N]
  transfer: Callable  # tf: (content [B, H, W, 3], vector [1|B, 1, 1, N])


NO_VECTOR = ('no style-vector tensor ([B, 1, 1, N] or [B, N], depending only '
             'on the style image, through which all of the style reaches the '
             'output)')


def split(model: Any) -> TFSplit:
  """Finds the style vector and prunes predictor and transfer functions.

  Raises:
    NotSplittable: the graph has no style vector, as loaded or frozen.
  """
  traced = model if isinstance(model, Traced) else trace(model)
  vector = bottleneck.find_bottleneck(traced.abstract_graph())
  if vector is None and not traced.frozen and not isinstance(model, Traced):
    traced = freeze(model)
    vector = bottleneck.find_bottleneck(traced.abstract_graph())
  if vector is None:
    raise NotSplittable(NO_VECTOR)
  predictor = traced.prune(traced.style, vector.name)
  transfer = traced.prune([traced.content, vector.name], traced.output)
  logger.info('Split the model at its style vector %s %s%s.', vector.name,
              vector.shape, ' (frozen graph)' if traced.frozen else '')
  return TFSplit(traced, vector, predictor, transfer)
