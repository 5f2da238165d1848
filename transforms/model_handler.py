"""StylizeModelHandler: the stylizers as a Beam ModelHandler, for RunInference.

Other pipelines can stylize with

    from apache_beam.ml.inference.base import RunInference
    from transforms.model_handler import StylizeModelHandler

    stylized = images | RunInference(StylizeModelHandler(
        model='gs://bucket/models/magenta', styles=['gs://bucket/starry.jpg']))

and get what RunInference gives every model: the model loaded once per
worker process and shared between its threads, batching (BatchElements),
inference metrics, and a dead-letter output with with_exception_handling().

Examples are uint8 HxWx3 arrays (any sizes: a batch is split by shape and
each shape group is one model call; a failing call is retried image by
image). Each PredictionResult's inference is the stylized uint8 array of
the same size, or with several styles a {style label: array} dict. An image
that fails on its own raises StylizeError, so RunInference's exception
handling sends that batch to its failed output.

The job itself keeps its StylizeBatches DoFn (transforms/stylize.py), which
shares the model loading and the per-shape call with retry
(load_model_and_styles, stylize_images) but needs two things RunInference has
no place for: a different style list per image (incremental runs) and one
failed manifest row per failing (image, style) instead of a failed batch.
"""

from typing import Any, Dict, Iterable, Optional, Sequence, Union

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.models.base import StyleParams
from transforms.records import describe_error
from transforms.styles import DEFAULT_STYLE_SIZE, parse_styles
from transforms.stylize import LoadedModel, load_model_and_styles, stylize_images


class StylizeError(RuntimeError):
  """An image the model failed on, even alone."""


class StylizeModelHandler(ModelHandler[np.ndarray, PredictionResult,
                                       LoadedModel]):
  """RunInference over a --model handle and one or more styles.

  Args:
    model: any --model value: 'builtin', a SavedModel folder or TF Hub
      handle, TF Lite files, local or gs://.
    styles: style images, with the job's --style syntax (blends included).
    style_size, params, tf_threads, model_sha256, engine, precision: as
      the job's flags.
    min_batch_size, max_batch_size: for RunInference's BatchElements.
  """

  def __init__(self, model: str, styles: Union[str, Sequence[str]],
               style_size: int = DEFAULT_STYLE_SIZE,
               params: StyleParams = StyleParams(), tf_threads: int = 0,
               model_sha256: Optional[str] = None, min_batch_size: int = 1,
               max_batch_size: int = 4, engine: str = 'auto',
               precision: str = 'auto'):
    super().__init__(min_batch_size=min_batch_size,
                     max_batch_size=max_batch_size)
    self._model = model
    self._styles = parse_styles([styles] if isinstance(styles, str)
                                else list(styles))
    self._style_size = style_size
    self._params = params
    self._tf_threads = tf_threads
    self._sha256 = model_sha256
    self._engine = engine
    self._precision = precision

  @property
  def style_labels(self):
    return [s.label for s in self._styles]

  def load_model(self) -> LoadedModel:
    """Once per worker process (RunInference shares it between threads)."""
    return load_model_and_styles(self._model, self._styles, self._style_size,
                                 self._tf_threads, self._sha256,
                                 engine=self._engine,
                                 precision=self._precision)

  def run_inference(self, batch: Sequence[np.ndarray], model: LoadedModel,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    del inference_args
    images = [np.asarray(x, dtype=np.uint8) for x in batch]
    for i, image in enumerate(images):
      if image.ndim != 3 or image.shape[2] != 3:
        raise StylizeError(f'example {i} has shape {image.shape}; expected '
                           'uint8 HxWx3')
    outputs: Dict[str, list] = {}
    for style in self._styles:
      # All sizes at once: the model batches them by shape or bucket.
      results, _ = stylize_images(model.stylizer, images,
                                  model.style_states[style.label],
                                  self._params)
      for i, out in enumerate(results):
        if isinstance(out, Exception):
          raise StylizeError(f'example {i} ({images[i].shape}), style '
                             f'{style.label}: {describe_error(out)}') from out
      outputs[style.label] = results
    for i, example in enumerate(batch):
      if len(self._styles) == 1:
        inference = outputs[self._styles[0].label][i]
      else:
        inference = {label: outs[i] for label, outs in outputs.items()}
      yield PredictionResult(example=example, inference=inference,
                             model_id=self._model)

  def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
    return sum(np.asarray(x).nbytes for x in batch)

  def get_metrics_namespace(self) -> str:
    return 'stylize'
