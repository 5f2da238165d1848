"""OpenVINO models of a Magenta-convention model, cut at the style vector.

ov.convert_model reads the loaded model's ConcreteFunction directly
(+41 MB RSS here; converting a frozen GraphDef would need the +165 MB of
freezing first). The cut is found by the same structural search as under
TF (bottleneck.find_bottleneck), run on the OpenVINO graph itself, which
the conversion has inlined; OpenVINO keeps TF's tensor names, so it lands
on the tensor tf_split finds (tested), and a known TF name can be given.

Cutting replaces the vector's consumers' input with a new Parameter
('style_vector', same shape) for the transfer model, and makes the vector a
Result of the predictor model.
"""

import dataclasses
import logging
from typing import Any, Optional, Tuple

from transforms.models.engine import bottleneck

logger = logging.getLogger(__name__)

VECTOR_INPUT = 'style_vector'


def convert(source: Any):
  """ov.Model of a ConcreteFunction (or anything ov.convert_model reads).

  The converted model owns its weights (share_weights=False: a copy, 11 MB
  for the Magenta network), so the TF model it came from can be freed once
  converted: the workers then do not keep TensorFlow's loaded model beside
  OpenVINO's (-27 MB RSS here; tests/test_engine_split.py converts, drops
  the TF model and compares).

  ov.convert_model sets the root logger to ERROR (and adds a filter) while
  it runs and puts them back only when it succeeds (OpenVINO 2026.4,
  tools/ovc/convert.py): after a failed conversion every later warning of
  the job would be lost. So the root logger is restored here either way.
  """
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  ov = import_openvino()
  root = logging.getLogger()
  state = (root.level, list(root.filters), list(root.handlers))
  try:
    return ov.convert_model(source, share_weights=False)
  finally:
    root.setLevel(state[0])
    root.filters[:] = state[1]
    root.handlers[:] = state[2]


def _param_index(model, name: Optional[str], fallback: int) -> int:
  """The Parameter named like TF's input tensor ('content_image:0' or
  'content_image'), else the convention's position."""
  if name:
    wanted = {name, name.split(':')[0]}
    for i, p in enumerate(model.get_parameters()):
      if wanted & set(p.output(0).get_names()):
        return i
  return fallback


def graph_from_ov(model, content_index: int = 0,
                  style_index: int = 1) -> bottleneck.Graph:
  """bottleneck.Graph of an ov.Model."""
  ops, tensors = {}, {}
  for node in model.get_ordered_ops():
    name = node.get_name()  # Unique per node (friendly names need not be).
    ops[name] = [f'{i.get_source_output().get_node().get_name()}:'
                 f'{i.get_source_output().get_index()}' for i in node.inputs()]
    for out in node.outputs():
      ps = out.get_partial_shape()
      shape = None
      if ps.rank.is_static:
        shape = tuple(d.get_length() if d.is_static else None for d in ps)
      tname = f'{name}:{out.get_index()}'
      tensors[tname] = bottleneck.Tensor(tname, name, shape,
                                         out.get_element_type().is_real())
  params = model.get_parameters()
  outputs = [f'{r.input(0).get_source_output().get_node().get_name()}:'
             f'{r.input(0).get_source_output().get_index()}'
             for r in model.get_results()]
  return bottleneck.Graph(ops, tensors, params[content_index].get_name(),
                          params[style_index].get_name(), outputs)


def _find_output(model, tensor_name: Optional[str], content_index: int,
                 style_index: int):
  """The ov Output of the style vector: by TF name, else by structure."""
  if tensor_name:
    for node in model.get_ordered_ops():
      for out in node.outputs():
        if tensor_name in out.get_names():
          return out
    logger.info('Tensor %s not in the OpenVINO model; searching its graph.',
                tensor_name)
  found = bottleneck.find_bottleneck(
      graph_from_ov(model, content_index, style_index))
  if found is None:
    return None
  node_name, index = found.name.rsplit(':', 1)
  node = next(n for n in model.get_ordered_ops() if n.get_name() == node_name)
  return node.output(int(index))


def uint8_io(model, image_input: int = 0):
  """The model with a uint8 image input and a uint8 image output.

  Input: u8 -> f32 / 255 inside the network. Output: floor(x * 255 + 0.5)
  clamped to [0, 255] (what Stylizer.stylize does on the host) -> u8. The
  conversions run on OpenVINO's threads and only uint8 crosses to the
  host; on this CPU they stay f32 under the bf16 hint (the uint8 output
  equals the host's rounding of the float output, tested), and cost
  nothing measurable next to the network.
  """
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  ov = import_openvino()
  import numpy as np  # pylint: disable=import-outside-toplevel
  from openvino import opset13 as ops  # pylint: disable=import-outside-toplevel
  from openvino.preprocess import PrePostProcessor  # pylint: disable=import-outside-toplevel
  ppp = PrePostProcessor(model.clone())
  ppp.input(image_input).tensor().set_element_type(ov.Type.u8)
  ppp.input(image_input).preprocess().convert_element_type(
      ov.Type.f32).scale(255.0)
  model = ppp.build()
  result = model.get_results()[0]
  x = result.input(0).get_source_output()
  x = ops.multiply(x, ops.constant(np.float32(255.0)))
  x = ops.add(x, ops.constant(np.float32(0.5)))
  x = ops.floor(ops.clamp(x, 0.0, 255.0))
  x = ops.convert(x, 'u8')
  return ov.Model([ops.result(x)], model.get_parameters(),
                  model.get_friendly_name() + '_u8')


@dataclasses.dataclass
class OVSplit:
  predictor: Any  # ov.Model: style image -> vector.
  transfer: Any  # ov.Model: (content image, vector) -> image.
  vector_name: str  # The vector's tensor name(s) in the converted model.
  vector_shape: Tuple[Optional[int], ...]

  def __iter__(self):  # predictor, transfer = cut(...)
    return iter((self.predictor, self.transfer))


def cut(model, vector_name: Optional[str] = None,
        content_name: Optional[str] = None,
        style_name: Optional[str] = None) -> Optional[OVSplit]:
  """The model cut at its style vector, or None where there is none.

  vector_name: the tensor to cut at (e.g. what tf_split found); None
  searches the OpenVINO graph itself. predictor: style image -> vector.
  transfer: (content image, vector) -> image, its inputs in that order, the
  vector named VECTOR_INPUT.
  """
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  ov = import_openvino()
  from openvino import opset13 as ops  # pylint: disable=import-outside-toplevel
  ci = _param_index(model, content_name, 0)
  si = _param_index(model, style_name, 1)

  # The transfer model: the vector's consumers read a new Parameter.
  transfer = model.clone()
  out = _find_output(transfer, vector_name, ci, si)
  if out is None:
    return None
  shape = out.get_partial_shape()
  vec = ops.parameter(shape, out.get_element_type(), name=VECTOR_INPUT)
  vec.output(0).set_names({VECTOR_INPUT})
  for target in list(out.get_target_inputs()):
    target.replace_source_output(vec.output(0))
  content = transfer.get_parameters()[ci]
  transfer = ov.Model(transfer.get_results(), [content, vec], 'transfer')
  names = sorted(out.get_names()) or [out.get_node().get_friendly_name()]
  dims = tuple(d.get_length() if d.is_static else None for d in shape)

  # The predictor: the vector is its result.
  predictor = model.clone()
  out = _find_output(predictor, vector_name, ci, si)
  style = predictor.get_parameters()[si]
  predictor = ov.Model([ops.result(out)], [style], 'style_predictor')
  if len(predictor.get_parameters()) != 1 or len(transfer.get_parameters()) != 2:
    raise ValueError('cutting at the style vector left unexpected inputs')
  return OVSplit(predictor, transfer, names[0], dims)
