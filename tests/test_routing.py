"""Routing images to styles by class: --route_model and --route.

The router is really trained once per session (tests/conftest.py
trained_router) on made-up documents, photos and screenshots.
"""

import dataclasses
import json
import pathlib
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from beam_jobs.options import ConfigError, JobConfig, validate
from beam_jobs.stylize import main, parse, run
from tests.conftest import gradient
from tests.test_end_to_end import manifest_rows
from tests.labelled import CLASSES, write_labelled_set
from transforms.models.router import (ROUTER_FILE, RouterError, RouterInfo,
                                      parse_router_info)
from transforms.progress import read_events, total_of
from transforms.records import DecodedImage, InputFile, ManifestRow, Status
from transforms.routing import RouteImages, parse_route, route_styles


# ----------------------------------------------------------- pure parts --

def test_parse_route_splits_at_the_first_equals_sign():
  assert parse_route('photo=a.jpg') == ('photo', 'a.jpg')
  assert parse_route('photo=a.jpg=0.7,b.jpg=0.3') == ('photo',
                                                       'a.jpg=0.7,b.jpg=0.3')
  for bad in ('photo', '=a.jpg', 'photo=', ''):
    with pytest.raises(ValueError, match='CLASS=STYLE'):
      parse_route(bad)


def test_route_styles_blends_shared_styles_and_distinct_labels(tmp_path):
  a, b = str(tmp_path / 'x' / 'a.jpg'), str(tmp_path / 'y' / 'a.jpg')
  c = str(tmp_path / 'c.png')
  styles, table = route_styles({
      'photo': [a, f'{a}=0.7,{c}=0.3'],
      'drawing': [a, b],             # a again: the same style, one folder
      'receipt': [f'{c}=1', f'{a}=3'],  # single weighted values: one blend
  })
  labels = [s.label for s in styles]
  assert len(labels) == len(set(labels)) == 4
  by_label = {s.label: s for s in styles}
  assert table['photo'][0] == table['drawing'][0] == 'a'
  assert by_label['a'].uri == a
  assert table['photo'][1] == 'a-70+c-30'
  assert by_label[table['drawing'][1]].uri == b  # Another a.jpg: hashed.
  assert table['drawing'][1].startswith('a-')
  assert table['receipt'] == ('c-25+a-75',)
  assert dict(by_label['c-25+a-75'].parts) == {c: 0.25, a: 0.75}


def test_rows_carry_class_only_when_classified():
  row = ManifestRow(input='/x.jpg', style='/s.jpg', status=Status.OK,
                    model='builtin')
  assert 'class' not in row.to_json_dict()
  routed = dataclasses.replace(row, image_class='photo', class_score=0.87654)
  d = routed.to_json_dict()
  assert (d['class'], d['class_score']) == ('photo', 0.8765)
  assert 'image_class' not in d


def test_job_key_covers_the_router_content_and_the_routes():
  from beam_jobs.settings import JobSettings
  from transforms.layout import OutputLayout
  settings = JobSettings(input=['/i'], output='/o', style=['/s.jpg'])

  def job(**routing):
    return JobConfig(settings=settings, input_specs=[], input_lists=[],
                     layout=OutputLayout('/o', 'jpg', '/'), styles=[],
                     model='builtin', model_source='builtin',
                     model_fingerprint='builtin:v1', tf_threads=0,
                     run_id='r', **routing)

  plain = job()
  assert json.loads(plain.job_key)['router'] is None
  routed = job(route_model='/r', router_id='id1', router_fingerprint='sha:1',
               routes={'photo': ('a',)})
  more = job(route_model='/r', router_id='id1', router_fingerprint='sha:1',
             routes={'photo': ('a',), 'drawing': ('a',)})
  retrained = job(route_model='/r', router_id='id2',
                  router_fingerprint='sha:2', routes={'photo': ('a',)})
  # A retrained router changes every pair; routes are per style (below).
  assert len({plain.job_key, routed.job_key, retrained.job_key}) == 3
  assert more.job_key == routed.job_key


def test_a_routed_styles_identity_covers_the_classes_routed_to_it():
  from transforms.identity import with_routes
  from transforms.records import StyleRef
  a = StyleRef(uri='/a.jpg', label='a', fingerprint='f' * 64)
  photo_only = with_routes(a, {'photo': ('a',), 'doc': ('b',)})
  assert with_routes(a, {'doc': ('b', 'c'), 'photo': ('a',)}) == photo_only
  assert with_routes(a, {'photo': ('a',), 'doc': ('a',)}) != photo_only


def _info_json(**changes) -> bytes:
  d = RouterInfo(labels=('a', 'b'), image_size=64, feature_model='f',
                 router_id='x').to_json_dict()
  d.update(changes)
  return json.dumps(d).encode()


@pytest.mark.parametrize('data,match', [
    (b'{not json', 'not JSON'),
    (json.dumps({'format': 'keras'}).encode(), 'format'),
    (_info_json(version=99), 'version 99'),
    (_info_json(labels=['a']), 'two or more'),
    (_info_json(labels=['a', 'a']), 'distinct'),
    (_info_json(image_size=0), 'image_size'),
    (_info_json(router_id=''), 'router_id'),
])
def test_router_json_problems(data, match):
  with pytest.raises(RouterError, match=match):
    parse_router_info(data, '/r')


# ------------------------------------------------------------ validation --

@pytest.fixture
def world(tmp_path):
  """Inputs, two style images, and a folder holding only a router.json (for
  the rules that read nothing else; the model load has its own test)."""
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(40, 30).save(inputs / 'a.jpg')
  styles = []
  for i in range(2):
    styles.append(tmp_path / f's{i}.png')
    gradient(64, 64, seed=i).save(styles[-1])
  router = tmp_path / 'router'
  (router / 'saved_model').mkdir(parents=True)
  (router / ROUTER_FILE).write_bytes(_info_json(labels=['document', 'photo']))
  # Not a SavedModel: these rules read router.json (and fingerprint files).
  (router / 'saved_model' / 'saved_model.pb').write_bytes(b'not a model')
  return {'in': inputs, 'styles': styles, 'out': tmp_path / 'out',
          'router': router, 'tmp': tmp_path}


def _args(world, *extra):
  return ['--input', str(world['in']), '--output', str(world['out']),
          '--model', 'builtin', *extra]


def check(argv, check_model=False):
  return validate(parse(argv), check_model=check_model)


def test_routes_resolve(world):
  s0, s1 = world['styles']
  job = check(_args(world, '--route_model', str(world['router']),
                    '--route', f'photo={s0}', '--route',
                    f'photo={s0}=0.5,{s1}=0.5'))
  assert job.routes == {'photo': ('s0', 's0-50+s1-50')}
  assert [s.label for s in job.styles] == ['s0', 's0-50+s1-50']
  assert job.route_model == str(world['router'])
  assert job.router_id == 'x'


def test_several_routes_in_one_value(world):
  s0, s1 = world['styles']
  job = check(_args(world, '--route_model', str(world['router']),
                    '--route', f'photo={s0}; document={s1};'))
  assert job.routes == {'photo': ('s0',), 'document': ('s1',)}


def test_route_without_route_model(world):
  with pytest.raises(ConfigError, match='--route needs --route_model'):
    check(_args(world, '--route', f'photo={world["styles"][0]}'))


def test_route_model_without_route(world):
  with pytest.raises(ConfigError, match='needs at least one --route'):
    check(_args(world, '--route_model', str(world['router'])))


def test_style_and_route_model_do_not_mix(world):
  with pytest.raises(ConfigError, match='do not mix'):
    check(_args(world, '--style', str(world['styles'][0]), '--route_model',
                str(world['router']), '--route',
                f'photo={world["styles"][0]}'))


def test_route_without_class(world):
  with pytest.raises(ConfigError, match='--route: expected CLASS=STYLE'):
    check(_args(world, '--route_model', str(world['router']), '--route',
                str(world['styles'][0])))


def test_route_unknown_class(world):
  with pytest.raises(ConfigError,
                     match=r"no class 'receipt'.*\['document', 'photo'\]"):
    check(_args(world, '--route_model', str(world['router']), '--route',
                f'receipt={world["styles"][0]}'))


def test_route_style_weight_not_positive(world):
  with pytest.raises(ConfigError, match='--route: style weight'):
    check(_args(world, '--route_model', str(world['router']), '--route',
                f'photo={world["styles"][0]}=0,{world["styles"][1]}=1'))


def test_route_style_missing(world):
  with pytest.raises(ConfigError, match='--route style .* does not exist'):
    check(_args(world, '--route_model', str(world['router']), '--route',
                f'photo={world["tmp"] / "nope.jpg"}'))


def test_route_model_that_is_not_a_router(world):
  with pytest.raises(ConfigError, match='is not a router.*no router.json'):
    check(_args(world, '--route_model', str(world['in']), '--route',
                f'photo={world["styles"][0]}'))


def test_route_model_missing(world):
  with pytest.raises(ConfigError, match='does not exist'):
    check(_args(world, '--route_model', str(world['tmp'] / 'nope'), '--route',
                f'photo={world["styles"][0]}'))


def test_route_model_whose_saved_model_does_not_load(world):
  with pytest.raises(ConfigError, match='saved_model/ does not load'):
    check(_args(world, '--route_model', str(world['router']), '--route',
                f'photo={world["styles"][0]}'), check_model=True)


def test_dry_run_with_routes_says_counts_are_an_upper_bound(world, capsys):
  s0 = world['styles'][0]
  assert main(_args(world, '--route_model', str(world['router']), '--route',
                    f'photo={s0}', '--dry_run')) == 0
  out = capsys.readouterr().out
  assert 'dry run: 1 (input, style) pairs to do' in out
  assert 'an upper bound); routes: photo -> s0' in out


def test_bad_tfhub_mirror(world):
  with pytest.raises(ConfigError, match='--tfhub_mirror'):
    check(_args(world, '--style', str(world['styles'][0]), '--tfhub_mirror',
                'not a url'))


def test_main_exit_code_2_for_route_errors(world, capsys):
  code = main(_args(world, '--route_model', str(world['router']), '--route',
                    f'receipt={world["styles"][0]}'))
  assert code == 2
  assert "no class 'receipt'" in capsys.readouterr().err


# ------------------------------------------------------ the stage alone --

def _decoded(path, todo):
  pixels = np.asarray(Image.open(path).convert('RGB'))
  return DecodedImage(
      input=InputFile(uri=str(path), key=path.name, todo=tuple(todo)),
      pixels=pixels, source_width=pixels.shape[1],
      source_height=pixels.shape[0], timings={'read_s': 0.0})


@pytest.mark.slow
def test_route_images_under_test_pipeline(trained_router, tmp_path):
  made = write_labelled_set(tmp_path, trained_router['photos'], 2, seed=42)
  todo = ('a', 'b', 'c')
  images = [_decoded(p, todo) for name in CLASSES for p in made[name]]
  # A photo whose styles are all done already (todo of the other class).
  images.append(_decoded(made['photo'][0], ('c',)))
  # Pixels the model cannot take (one channel): its batch is retried one
  # by one and only this image fails.
  bad = _decoded(made['photo'][1], todo)
  images.append(dataclasses.replace(bad, pixels=np.zeros((20, 20),
                                                         np.uint8)))
  routes = {'photo': ('a', 'b'), 'screenshot': ('c',)}
  with TestPipeline() as p:
    routed, skipped, failed, _ = (
        p | beam.Create(images)
        | RouteImages(str(trained_router['path']),
                      trained_router['report']['router_id'], routes,
                      batch_size=4,
                      row_info={'model': 'builtin', 'params': {},
                                'run_id': 'r'}))
    assert_that(
        routed | 'RoutedKey' >> beam.Map(
            lambda d: (os.path.basename(d.input.uri), d.input.image_class,
                       d.input.todo, d.timings['classify_s'] >= 0)),
        equal_to([(f'photo_42_00{i}.jpg', 'photo', ('a', 'b'), True)
                  for i in range(2)] +
                 [(f'screenshot_42_00{i}.png', 'screenshot', ('c',), True)
                  for i in range(2)]),
        label='routed')
    assert_that(
        skipped | 'SkippedKey' >> beam.Map(
            lambda r: (os.path.basename(r.input), r.style, r.status,
                       r.image_class, 0 < r.class_score <= 1,
                       r.error.startswith("route: class 'document' has no"))),
        equal_to([(os.path.basename(str(p)), None, Status.SKIPPED,
                   'document', True, True) for p in made['document']]),
        label='skipped')
    assert_that(
        failed | 'FailedKey' >> beam.Map(
            lambda f: (os.path.basename(f.input.uri), f.style,
                       f.error.startswith('route: '))),
        equal_to([('photo_42_001.jpg', None, True)]), label='failed')


# ----------------------------------------------------------- end to end --

@pytest.mark.slow
def test_routed_run_end_to_end_and_rerun(trained_router, tmp_path,
                                         shared_styles, calls_to):
  inputs = tmp_path / 'in'
  made = write_labelled_set(inputs, trained_router['photos'], 3, seed=77)
  (inputs / 'photo' / 'broken.jpg').write_bytes(b'not a jpeg')
  truth = {str(p): name for name, ps in made.items() for p in ps}
  towers = shared_styles / 'towers_1916_sq.jpg'
  bricks = shared_styles / 'bricks_sq.jpg'
  forma = shared_styles / 'La_forma.jpg'
  out = tmp_path / 'out'
  argv = ['--input', str(inputs), '--output', str(out), '--model', 'builtin',
          '--max_size', '160', '--batch_size', '3',
          '--route_model', str(trained_router['path']),
          '--route', f'photo={towers}',
          '--route', f'photo={bricks}=0.5,{forma}=0.5',
          '--route', f'screenshot={bricks}']
  progress = tmp_path / 'progress'
  progress.mkdir()
  from transforms.models import loader
  from transforms.models.router import Router
  model_loads = calls_to(loader, '_load')
  router_loads = calls_to(Router, '__init__')
  first = run(argv, progress_dir=str(progress))
  from apache_beam.metrics.metric import MetricsFilter
  loads = first.metrics().query(
      MetricsFilter().with_name('router_loads'))['counters']
  assert sum(c.committed for c in loads) == 1  # Once per worker process.
  # The workers are this process: they use what the launch loaded to check.
  assert (len(model_loads), len(router_loads)) == (1, 1)
  # Every stylized image went to the model in a batch of at most
  # --batch_size (per style).
  calls = [d.committed for d in first.metrics().query(
      MetricsFilter().with_name('images_per_batch'))['distributions']]
  stylized = first.metrics().query(
      MetricsFilter().with_name('stylized'))['counters']
  assert sum(d.sum for d in calls) == sum(c.committed for c in stylized) > 0
  assert max(d.max for d in calls) <= 3
  rows = manifest_rows(out)
  blend = 'bricks_sq-50+La_forma-50'
  expected_styles = {'photo': {'towers_1916_sq', blend},
                     'screenshot': {'bricks_sq'}, 'document': {None}}
  by_input = {}
  for row in rows:
    by_input.setdefault(row['input'], []).append(row)
  right = sum(1 for uri, name in truth.items()
              if by_input[uri][0].get('class') == name)
  assert right >= 8, f'{right}/9 classified as made'
  for uri in truth:
    image_rows = by_input[uri]
    name = image_rows[0]['class']
    assert {r['class'] for r in image_rows} == {name}
    assert 0 < image_rows[0]['class_score'] <= 1
    labels = {os.path.relpath(r['output'], out).split(os.sep)[0]
              if r['output'] else None for r in image_rows}
    assert labels == expected_styles[name], (uri, image_rows)
    if name == 'document':
      assert image_rows[0]['status'] == 'skipped'
      assert image_rows[0]['style'] is None
      assert "class 'document' has no --route" in image_rows[0]['error']
    else:
      assert {r['status'] for r in image_rows} == {'ok'}
      for row in image_rows:
        assert os.path.exists(row['output'])
  broken = by_input[str(inputs / 'photo' / 'broken.jpg')]
  # Failed before it could be classified: a failed row for every style.
  assert len(broken) == 3 and {r['status'] for r in broken} == {'failed'}
  assert 'class' not in broken[0]
  summary = json.loads((out / 'summary.json').read_text())
  classes = summary['classes']
  assert sum(c['ok'] for c in classes.values()) == summary['counts']['ok']
  assert summary['routing']['routes']['photo'] == ['towers_1916_sq', blend]
  assert summary['top_failure_reasons'][0]['reason'].startswith('decode:')
  assert all(not r['reason'].startswith('route:')
             for r in summary['top_failure_reasons'])
  # The progress total was corrected to the rows the run really gave.
  events = read_events(str(progress))
  assert events['pairs_delta'] < 0 and total_of(events) == len(rows)
  report = (out / 'report.html').read_text()
  assert '<h2>Classes</h2>' in report
  for name in ('photo', 'screenshot'):
    assert f'class {name} (' in report

  # A rerun: everything classified and stylized before is skipped; nothing is
  # stylized again, documents are skipped rows again.
  before = {r['output']: os.path.getmtime(r['output']) for r in rows
            if r['output']}
  result = run(argv)
  # A new run loads anew (what a run shares ends with it), once again.
  assert (len(model_loads), len(router_loads)) == (2, 2)
  again = manifest_rows(out)
  assert len(again) == len(rows)
  stylized = result.metrics().query(
      MetricsFilter().with_name('stylized'))['counters']
  assert sum(c.committed for c in stylized) == 0
  assert {r['status'] for r in again if r['style'] is not None and
          r['output']} == {'skipped'}
  assert all(os.path.getmtime(o) == t for o, t in before.items())

  # Routes given in another order and spelling, and a route added for
  # another class (documents): the photos' and screenshots' pairs are the
  # same pairs, still skipped; only the documents are stylized now.
  import shutil as _shutil
  copy = tmp_path / 'styles'
  copy.mkdir()
  moved_towers = pathlib.Path(_shutil.copy(towers, copy / towers.name))
  reordered = argv[:argv.index('--route')] + [
      '--route', f'screenshot={bricks}',
      '--route', f'photo={moved_towers}',
      '--route', f'photo={bricks}=0.5,{forma}=0.5',
      '--route', f'document={forma}']
  run(reordered)
  third = manifest_rows(out)
  for row in third:
    name = row.get('class')
    if name in ('photo', 'screenshot') and row['style'] is not None:
      assert row['status'] == 'skipped', row
    elif name == 'document':
      assert row['status'] == 'ok' and 'La_forma' in row['output'], row
  # A style now routed from one more class is another pair of routes: its
  # earlier pairs are redone (their class set changed).
  run(argv[:argv.index('--route')] + [
      '--route', f'photo={towers}', '--route', f'screenshot={towers}'])
  fourth = manifest_rows(out)
  assert {r['status'] for r in fourth
          if r.get('class') == 'photo' and r['style']} == {'ok'}


@pytest.mark.slow
def test_route_model_in_a_bucket(trained_router, gcs_emulator, tmp_path,
                                 shared_styles):
  from tests.conftest import upload
  bucket = gcs_emulator()
  router = upload(trained_router['path'], f'{bucket}/routers/r')
  inputs = tmp_path / 'in'
  made = write_labelled_set(inputs, trained_router['photos'], 1, seed=5,
                            classes=('photo',))
  out = tmp_path / 'out'
  run(['--input', str(inputs), '--output', str(out), '--model', 'builtin',
       '--route_model', router, '--route',
       f'photo={shared_styles / "towers_1916_sq.jpg"}'])
  rows = manifest_rows(out)
  assert len(rows) == 1 and rows[0]['input'] == str(made['photo'][0])
  assert rows[0]['class'] == 'photo' and rows[0]['status'] == 'ok'


def test_without_route_model_rows_and_summary_keep_their_shape(tmp_path,
                                                              samples):
  out = tmp_path / 'out'
  run(['--input', str(samples / 'content' / 'city.jpg'), '--style',
       str(samples / 'style' / 'waves.jpg'), '--output', str(out),
       '--model', 'builtin'])
  rows = manifest_rows(out)
  assert len(rows) == 1 and rows[0]['status'] == 'ok'
  assert 'class' not in rows[0] and 'class_score' not in rows[0]
  summary = json.loads((out / 'summary.json').read_text())
  assert 'classes' not in summary and 'routing' not in summary
  assert '<h2>Classes</h2>' not in (out / 'report.html').read_text()
