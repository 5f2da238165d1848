"""Beam's construction-time type check, on every shape of the job's pipeline.

Local runs launch with --no_pipeline_type_check (beam_jobs/stylize.py,
with_local_defaults): the hints it checks are this package's own, the same
in every run, so they are checked here instead, once, for each branch
build_pipeline can take: a plain local run, inputs from list files only, a
forced run (no output listing), a wave of a run in waves, a routed run, and
a remote run (which releases its lease and enforces its verdict in the
job; remote runs keep the check themselves); and for stylize-train's
extraction pipeline. Only construction: nothing runs, nothing is read.
"""

import dataclasses

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, TypeOptions
from apache_beam.typehints.decorators import TypeCheckError

from beam_jobs.options import validate
from beam_jobs.stylize import build_pipeline, parse
from tests.conftest import gradient
from transforms.waves import Wave


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('types')
  (tmp / 'in').mkdir()
  gradient(32, 24).save(tmp / 'in' / 'a.jpg')
  gradient(16, 16, seed=2).save(tmp / 'style.png')
  (tmp / 'list.txt').write_text(str(tmp / 'in' / 'a.jpg') + '\n')
  return tmp


def _config(tmp, *flags):
  options = parse(['--style', str(tmp / 'style.png'), '--output',
                   str(tmp / 'out'), '--model', 'builtin', *flags])
  # What a local job itself runs with: the check off.
  assert options.view_as(TypeOptions).pipeline_type_check is False
  return validate(options, check_model=False, probe_output=False)


class _Labels(beam.pipeline.PipelineVisitor):

  def __init__(self):
    self.labels = set()

  def enter_composite_transform(self, node):
    self.labels.add(node.full_label)

  def visit_transform(self, node):
    self.labels.add(node.full_label)


def _labels(p: beam.Pipeline) -> set:
  visitor = _Labels()
  p.visit(visitor)
  return visitor.labels


def _checked_pipeline() -> beam.Pipeline:
  p = beam.Pipeline(options=PipelineOptions([]))
  assert p.options.view_as(TypeOptions).pipeline_type_check is True
  return p


def test_the_check_is_on_here_and_catches_a_wrong_hint():
  """The pipelines below really are checked: a Map declared to take str
  fed ints is refused at construction."""
  p = _checked_pipeline()
  with pytest.raises(TypeCheckError):
    _ = (p | beam.Create([1, 2])
         | beam.Map(str.upper).with_input_types(str))


@pytest.mark.parametrize(
    'shape', ['plain', 'lists', 'force', 'wave', 'routed', 'remote'])
def test_every_shape_of_the_jobs_pipeline_passes_beams_type_check(
    folder, shape):
  inputs = {'lists': ['--input_list', str(folder / 'list.txt')],
            'force': ['--input', str(folder / 'in'), '--force']}.get(
                shape, ['--input', str(folder / 'in')])
  config = _config(folder, *inputs)
  changes = {
      'wave': {'wave': Wave(1, 3, str(folder / 'waves')), 'wave_pairs': 1},
      'routed': {'route_model': str(folder / 'router'), 'router_id': 'r1',
                 'router_fingerprint': 'sha256:0', 'routes': {
                     'photo': (config.styles[0].label,), 'document': ()}},
      'remote': {'fail_job_on_verdict': True, 'workers_take_lease': True},
  }.get(shape, {})
  p = _checked_pipeline()
  build_pipeline(p, dataclasses.replace(config, **changes))
  labels = _labels(p)
  assert {'ListInputs', 'SkipDone', 'Stylize', 'WriteManifest'} <= labels
  assert ('Route' in labels) == (shape == 'routed')
  assert ('Verdict' in labels) == (shape == 'remote')
  assert ('IgnoredOfWave' in labels) == (shape == 'wave')
  assert ('ListInputs/InputSpecs' in labels) == (shape != 'lists')
  assert any(l.startswith('ListInputs/ReadList') for l in labels) == (
      shape == 'lists'), sorted(l for l in labels if 'ListInputs' in l)


def test_the_training_extraction_pipeline_passes_beams_type_check(tmp_path):
  from training.data import LabelledImage
  from training.extract import ExtractFeatures
  p = _checked_pipeline()
  _ = (p
       | 'Images' >> beam.Create([LabelledImage(str(tmp_path / 'a.jpg'), 0)])
       | 'ExtractFeatures' >> ExtractFeatures(
           str(tmp_path / 'features-model'), 64, str(tmp_path / 'f'), 4))
  assert {'ExtractFeatures/Load', 'ExtractFeatures/Extract'} <= _labels(p)
