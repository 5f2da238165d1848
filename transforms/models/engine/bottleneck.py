"""Finding the style vector in a stylization graph, by structure alone.

A Magenta arbitrary-stylization model is `model(content, style)`: a style
predictor maps the style image to a small vector ([B, 1, 1, 100], the
"bottleneck"), and the transfer network is conditioned on that vector
only. So the vector is a tensor that

- depends on the style image and not on the content image (not even on
  its shape),
- is vector-shaped: [B, 1, 1, N] or [B, N], N >= MIN_VECTOR_DIM,
- cuts the graph: every path from the style image to the output passes
  through it (the transfer network sees nothing else of the style),

and of all such tensors it is the last one (the pooled [B, 1, 1, 1280]
features before the predictor's final 1x1 convolution are a cut too, and
so is the bias add before a clip; the vector the transfer network reads is
the latest). The builtin colour-transfer model has no such tensor: its
style statistics are a [B, 1, 3] mean and a [B, 3, 3] covariance, two
tensors, neither vector-shaped.

The search runs on `Graph`, an engine-neutral view that tf_split and
ov_split build from a TensorFlow graph and an OpenVINO model, so no node
name of any particular model is assumed.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

MIN_VECTOR_DIM = 8

Shape = Optional[Tuple[Optional[int], ...]]  # None: unknown rank.


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str
  producer: str  # The op's id.
  shape: Shape
  is_float: bool


@dataclasses.dataclass
class Graph:
  """ops: op id -> its data-input tensor names; tensors by name."""
  ops: Dict[str, List[str]]
  tensors: Dict[str, Tensor]
  content_op: str
  style_op: str
  outputs: List[str]

  def consumers(self) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {op: [] for op in self.ops}
    for op, inputs in self.ops.items():
      for t in inputs:
        out.setdefault(self.tensors[t].producer, []).append(op)
    return out

  def order(self) -> Dict[str, int]:
    """Topological index of every op (Kahn's algorithm, stable)."""
    consumers = self.consumers()
    indegree = {op: len({self.tensors[t].producer for t in inputs})
                for op, inputs in self.ops.items()}
    ready = [op for op, n in indegree.items() if n == 0]
    order: Dict[str, int] = {}
    while ready:
      op = ready.pop()
      order[op] = len(order)
      for c in set(consumers.get(op, ())):
        indegree[c] -= 1
        if indegree[c] == 0:
          ready.append(c)
    return order


def is_vector_shape(shape: Shape, min_dim: int = MIN_VECTOR_DIM) -> bool:
  """[B, 1, 1, N] or [B, N] with a known N >= min_dim."""
  if shape is None:
    return False
  if len(shape) == 4:
    return (shape[1] == 1 and shape[2] == 1 and shape[3] is not None and
            shape[3] >= min_dim)
  if len(shape) == 2:
    return shape[1] is not None and shape[1] >= min_dim
  return False


def _forward(graph: Graph, start: str,
             consumers: Dict[str, List[str]]) -> set:
  seen, stack = {start}, [start]
  while stack:
    for c in consumers.get(stack.pop(), ()):
      if c not in seen:
        seen.add(c)
        stack.append(c)
  return seen


def _backward(graph: Graph, outputs: Sequence[str],
              skip: Optional[str] = None) -> set:
  """Ops the outputs depend on, not looking through tensor `skip`."""
  seen: set = set()
  stack = [graph.tensors[t].producer for t in outputs if t != skip]
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    for t in graph.ops.get(op, ()):
      if t != skip:
        stack.append(graph.tensors[t].producer)
  return seen


def find_bottleneck(graph: Graph,
                    min_dim: int = MIN_VECTOR_DIM) -> Optional[Tensor]:
  """The style-vector tensor (see the module doc), or None if there is none."""
  consumers = graph.consumers()
  from_style = _forward(graph, graph.style_op, consumers)
  from_content = _forward(graph, graph.content_op, consumers)
  needed = _backward(graph, graph.outputs)
  if graph.style_op not in needed:
    return None  # The output ignores the style: nothing to split.
  order = graph.order()
  candidates = [t for t in graph.tensors.values()
                if t.producer in from_style and t.producer not in from_content
                and t.producer in needed and t.is_float
                and is_vector_shape(t.shape, min_dim)]
  candidates.sort(key=lambda t: order.get(t.producer, -1), reverse=True)
  for t in candidates:
    if graph.style_op not in _backward(graph, graph.outputs, skip=t.name):
      return t
  return None
