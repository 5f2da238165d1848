"""StylizeModelHandler under RunInference, in a TestPipeline."""

import json

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import gradient
from transforms.model_handler import StylizeModelHandler


def _shape_and_red(result):
  out = result.inference
  return (out.shape, out.dtype.name, result.example.shape == out.shape,
          bool(out[..., 0].mean() > out[..., 1].mean() + 40))


def test_run_inference_stylizes_mixed_shapes_with_one_model_load(
    tmp_path, monkeypatch):
  red = tmp_path / 'red.png'
  from PIL import Image
  Image.new('RGB', (64, 64), (220, 20, 20)).save(red)
  log = tmp_path / 'loads.jsonl'
  monkeypatch.setenv('STYLIZE_MODEL_LOAD_LOG', str(log))
  images = [np.asarray(gradient(w, h, seed=i)) for i, (w, h) in
            enumerate([(40, 30), (40, 30), (30, 40), (1, 1), (300, 7)])]
  handler = StylizeModelHandler('builtin', str(red), max_batch_size=4)
  with TestPipeline() as p:
    results = (p | beam.Create(images)
               | RunInference(handler))
    assert_that(results | beam.Map(_shape_and_red), equal_to([
        ((30, 40, 3), 'uint8', True, True),
        ((30, 40, 3), 'uint8', True, True),
        ((40, 30, 3), 'uint8', True, True),
        ((1, 1, 3), 'uint8', True, True),
        ((7, 300, 3), 'uint8', True, True)]))
  loads = [json.loads(l) for l in log.read_text().splitlines()]
  assert len(loads) == 1  # One load, in the (single) worker.


def test_several_styles_give_a_dict_per_image(tmp_path, samples):
  handler = StylizeModelHandler(
      'builtin', [str(samples / 'style' / 'waves.jpg'),
                  str(samples / 'style' / 'mosaic.png')])
  with TestPipeline() as p:
    results = (p | beam.Create([np.asarray(gradient(20, 10))])
               | RunInference(handler))
    assert_that(results | beam.Map(
        lambda r: sorted((k, v.shape) for k, v in r.inference.items())),
                equal_to([[('mosaic', (10, 20, 3)), ('waves', (10, 20, 3))]]))


def test_bad_examples_go_to_the_failed_output(samples):
  handler = StylizeModelHandler('builtin', str(samples / 'style' / 'waves.jpg'))
  with TestPipeline() as p:
    main, other = (p | beam.Create([np.zeros((4, 4), np.uint8)])
                   | RunInference(handler).with_exception_handling())
    assert_that(main, equal_to([]), label='none')
    assert_that(other.failed_inferences | beam.Map(
        lambda failed: 'expected uint8 HxWx3' in str(failed[1])),
                equal_to([True]), label='failed')
