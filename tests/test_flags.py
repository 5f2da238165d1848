"""Flags: --help documents every job flag by group, unknown and misspelt
flags are errors naming the nearest flag in every mode, Beam's flags pass
through, and the job calls itself `stylize` however it is started."""

import os
import re
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import (DirectOptions,
                                                  GoogleCloudOptions,
                                                  PortableOptions,
                                                  StandardOptions,
                                                  WorkerOptions)

from beam_jobs.errors import ConfigError
from beam_jobs.flags import (StylizeOptions, beam_flag_names, help_parser,
                             job_flag_names, nearest_flag)
from beam_jobs.stylize import main, parse
from tests.conftest import ROOT, gradient

GROUPS = ('inputs', 'styles', 'model', 'output', 'large images (tiling)',
          'performance', 'incremental runs', 'routing by kind of image',
          'the run')


def own_flags():
  """Every flag StylizeOptions declares, as '--name'."""
  import argparse
  parser = argparse.ArgumentParser(add_help=False)
  StylizeOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  return sorted(s for a in parser._actions for s in a.option_strings)  # pylint: disable=protected-access


@pytest.fixture
def world(tmp_path):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(40, 30).save(inputs / 'a.jpg')
  style = tmp_path / 'style.png'
  gradient(64, 64, seed=2).save(style)
  return {'in': inputs, 'style': style, 'out': tmp_path / 'out',
          'tmp': tmp_path}


def job_args(world, *extra):
  return ['--input', str(world['in']), '--style', str(world['style']),
          '--output', str(world['out']), '--model', 'builtin', *extra]


# -------------------------------------------------------------------- help --

def test_help_documents_every_flag_in_groups_and_points_to_beam(capsys):
  assert main(['--help']) == 0
  text = capsys.readouterr().out
  assert text.startswith('usage: stylize ')
  sections = {}
  for title in GROUPS:
    assert f'\n{title}:\n' in text, title
  # Each flag is listed under a group, with help text (not just the usage).
  body = text.split('\n\n', 2)[2]
  for flag in own_flags():
    assert re.search(rf'^  {re.escape(flag)}\b.*', body, re.M), flag
  for title in GROUPS:
    start = text.index(f'\n{title}:\n')
    sections[title] = text[start:text.find('\n\n', start + len(title) + 3)]
  assert '--input ' in sections['inputs']
  assert '--model ' in sections['model'] and 'magenta-lite' in text
  assert '--route_model' in text and '--force' in sections['incremental runs']
  # Beam's flags: named, and where all of them are documented.
  for flag in ('--runner', '--dry_run', '--direct_num_workers', '--project',
               '--temp_location', '--sdk_container_image'):
    assert flag in text
  assert ('https://beam.apache.org/releases/pydoc/current/'
          'apache_beam.options.pipeline_options.html') in text


def test_help_page_and_options_share_one_declaration():
  """The help parser and StylizeOptions read the same add_argument calls:
  same flags, same defaults."""
  parser = help_parser()
  helped = {a.dest: a.default for a in parser._actions if a.dest != 'help'}  # pylint: disable=protected-access
  options = StylizeOptions([]).get_all_options(current_only=True)
  assert helped == options


def test_readme_flags_table_lists_every_job_flag():
  readme = (ROOT / 'README.md').read_text()
  table = readme.split('## Flags', 1)[1].split('\n## ', 1)[0]
  for flag in own_flags():
    assert f'`{flag}`' in table, f'{flag} missing from README Flags table'


# ----------------------------------------------------------- unknown flags --

@pytest.mark.parametrize('typo, nearest', [
    (['--max-size', '128'], '--max_size'),
    (['--max_szie', '128'], '--max_size'),
    (['--max_szie=128'], '--max_size'),
    (['--ouput', 'x'], '--output'),
    (['--runer', 'DataflowRunner'], '--runner'),
    (['--direct_num_worker=2'], '--direct_num_workers'),
])
@pytest.mark.parametrize('mode', [[], ['--dry_run'],
                                  ['--runner=PortableRunner',
                                   '--job_endpoint=localhost:1']])
def test_unknown_flag_is_an_error_naming_the_nearest(world, capsys, typo,
                                                     nearest, mode):
  assert main(job_args(world, *mode, *typo)) == 2
  err = capsys.readouterr().err
  assert err.startswith(f'stylize: error: unknown flag {typo[0].split("=")[0]}')
  assert f'did you mean {nearest}?' in err
  assert not world['out'].exists()


def test_stray_value_and_bad_value_are_errors(world, capsys):
  assert main(job_args(world, 'extra')) == 2
  assert "unexpected argument 'extra'" in capsys.readouterr().err
  assert main(job_args(world, '--max_size', 'big')) == 2
  assert ("stylize: error: argument --max_size: invalid int value: 'big'"
          in capsys.readouterr().err)


@pytest.mark.parametrize('key, nearest', [('max-size', 'max_size'),
                                          ('max_szie', 'max_size'),
                                          ('stlye', 'style')])
def test_unknown_config_key_names_the_nearest(world, capsys, key, nearest):
  cfg = world['tmp'] / 'job.yaml'
  cfg.write_text(f'{key}: 128\n')
  for mode in ([], ['--dry_run']):
    assert main(job_args(world, '--config', str(cfg), *mode)) == 2
    err = capsys.readouterr().err
    assert f"unknown key(s) '{key}' (did you mean '{nearest}'?)" in err
  assert not world['out'].exists()


def test_nearest_flag_prefers_the_jobs_own_flags():
  own, beam = job_flag_names(), beam_flag_names()
  assert nearest_flag('--max-size', own, beam) == 'max_size'
  assert nearest_flag('--styles', own, beam) == 'style'
  assert nearest_flag('--temp-location', own, beam) == 'temp_location'
  assert nearest_flag('--zzzzzz', own, beam) is None


def test_beam_flags_pass_through(world):
  options = parse(job_args(
      world, '--runner=PortableRunner', '--project=p', '--region', 'r',
      '--direct_num_workers=2', '--temp_location=gs://b/tmp',
      '--sdk_container_image=img:1', '--job_endpoint=localhost:1',
      '--environment_type=LOOPBACK', '--experiments=a', '--experiments=b'))
  assert options.view_as(StandardOptions).runner == 'PortableRunner'
  assert options.view_as(GoogleCloudOptions).project == 'p'
  assert options.view_as(GoogleCloudOptions).region == 'r'
  assert options.view_as(DirectOptions).direct_num_workers == 2
  assert options.view_as(WorkerOptions).sdk_container_image == 'img:1'
  assert options.view_as(PortableOptions).job_endpoint == 'localhost:1'
  assert options.view_as(PortableOptions).environment_type == 'LOOPBACK'
  assert options.view_as(StylizeOptions).model == 'builtin'


def test_unknown_flag_raises_config_error_from_parse(world):
  with pytest.raises(ConfigError, match='did you mean --max_size'):
    parse(job_args(world, '--max-size', '128'))


# --------------------------------------------------- python -m beam_jobs... --

def _module(*argv, cwd):
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.run([sys.executable, '-m', 'beam_jobs.stylize', *argv],
                        cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


def test_python_dash_m_calls_itself_stylize(world):
  shown = _module('--help', cwd=ROOT)
  assert shown.returncode == 0
  assert shown.stdout.startswith('usage: stylize ')
  for argv in (['--max_szie', '5'], ['--max_size', 'x'], ['--output']):
    failed = _module(*job_args(world), *argv, cwd=world['tmp'])
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.startswith('stylize: error: '), failed.stderr
    assert 'stylize.py' not in failed.stderr + failed.stdout


def test_dry_run_bare_or_with_a_value(world):
  from beam_jobs.flags import is_dry_run
  assert is_dry_run(parse(job_args(world, '--dry_run')))
  assert is_dry_run(parse(job_args(world, '--dry_run', 'true')))
  assert not is_dry_run(parse(job_args(world, '--dry_run', 'false')))
  assert is_dry_run(parse(['--dry_run'] + job_args(world)))
