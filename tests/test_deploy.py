"""The shipped configs and the Flex Template spec match the job's flags."""

import json

from apache_beam.options.pipeline_options import StandardOptions

from beam_jobs.options import StylizeOptions, known_option_names
from beam_jobs.runners import default_tf_threads
from beam_jobs.stylize import parse
from tests.conftest import ROOT


def test_dataflow_config_parses_with_known_keys(monkeypatch):
  monkeypatch.chdir(ROOT)
  options = parse(['--config', 'configs/dataflow.yaml'])
  assert options.view_as(StandardOptions).runner == 'DataflowRunner'
  assert options.view_as(StylizeOptions).tf_threads == 1
  assert default_tf_threads(options) == 1
  assert 'use_runner_v2' in options.get_all_options()['experiments']


def test_flex_template_parameters_are_job_flags():
  spec = json.loads((ROOT / 'deploy' / 'metadata.json').read_text())
  names = {p['name'] for p in spec['parameters']}
  assert names <= known_option_names()
  scheduler = json.loads((ROOT / 'deploy' / 'scheduler-launch.json').read_text())
  assert set(scheduler['launchParameter']['parameters']) <= names


def test_boolean_flags_accept_template_style_values():
  o = parse(['--preserve_colors=true', '--force=false']).view_as(StylizeOptions)
  assert o.preserve_colors is True and o.force is False
  o = parse(['--preserve_colors', '--force']).view_as(StylizeOptions)
  assert o.preserve_colors is True and o.force is True


def test_local_runs_default_to_the_single_threaded_in_memory_runner():
  from beam_jobs.stylize import with_local_defaults
  argv = with_local_defaults(['--input', 'x'])
  assert '--direct_running_mode=in_memory' in argv
  assert '--direct_num_workers=1' in argv
  # Explicit choices and other runners are left alone.
  assert with_local_defaults(['--direct_num_workers=2']) == [
      '--direct_num_workers=2', '--no_pipeline_type_check',
      '--no_save_main_session']
  # Remote runners keep Beam's type check (and its typed coders).
  assert with_local_defaults(['--runner', 'DataflowRunner']) == [
      '--runner', 'DataflowRunner', '--no_save_main_session']
  assert with_local_defaults(['--save_main_session', '--runner=X']) == [
      '--save_main_session', '--runner=X']
  assert '--direct_running_mode=in_memory' in with_local_defaults(
      ['--runner=DirectRunner'])


def test_tf_threads_per_runner_never_oversubscribe():
  from apache_beam.options.pipeline_options import PipelineOptions
  def threads(*flags):
    return default_tf_threads(PipelineOptions(list(flags)))
  assert threads() == 0  # In-process: TF's own default, all cores.
  assert threads('--direct_running_mode=multi_processing',
                 '--direct_num_workers=2') >= 1
  for runner in ('DataflowRunner', 'PortableRunner', 'FlinkRunner',
                 'SparkRunner'):
    assert threads(f'--runner={runner}') == 1


def test_local_runs_use_the_in_process_runner_directly():
  """No DirectRunner detour through Prism (which downloads a binary when
  online): Beam's FnApiRunner, by its public name."""
  import apache_beam as beam
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from beam_jobs.runners import make_runner
  runner = make_runner(parse(['--input', 'x']))
  assert runner == 'FnApiRunner'
  assert isinstance(beam.Pipeline(runner=runner).runner,
                    fn_runner.FnApiRunner)
  assert make_runner(parse(['--runner=DataflowRunner'])) is None


def test_local_runs_return_freed_memory_to_the_system(monkeypatch):
  from beam_jobs import runners
  monkeypatch.delenv('MALLOC_MMAP_THRESHOLD_', raising=False)
  monkeypatch.delenv('MALLOC_TRIM_THRESHOLD_', raising=False)
  assert runners.tune_malloc()  # glibc here: mallopt accepted both.
  # Worker processes started from here get the same settings.
  import os
  assert os.environ['MALLOC_MMAP_THRESHOLD_'] == str(runners.MALLOC_BLOCK)
  assert os.environ['MALLOC_TRIM_THRESHOLD_'] == str(runners.MALLOC_BLOCK)


def test_runner_names_are_read_as_beam_reads_them():
  """'direct', 'DirectRunner' and the class path are one runner for Beam;
  so they are for the job's local/remote and Dataflow rules."""
  from apache_beam.options.pipeline_options import PipelineOptions
  from beam_jobs.runners import is_dataflow, is_local
  from beam_jobs.stylize import with_local_defaults
  for name in ('direct', 'DirectRunner', 'directrunner',
               'apache_beam.runners.direct.direct_runner.DirectRunner'):
    assert is_local(PipelineOptions([f'--runner={name}']))
    assert '--direct_num_workers=1' in with_local_defaults(
        ['--runner', name])
  for name in ('dataflow', 'DataflowRunner', 'dataflowrunner'):
    options = PipelineOptions([f'--runner={name}'])
    assert is_dataflow(options) and not is_local(options)
  for name in ('portable', 'PortableRunner', 'FlinkRunner', 'prism'):
    options = PipelineOptions([f'--runner={name}'])
    assert not is_local(options) and not is_dataflow(options)


def test_remote_workers_keep_small_io_pools():
  from apache_beam.options.pipeline_options import PipelineOptions
  from beam_jobs.runners import REMOTE_IO_THREADS, default_io_threads
  assert default_io_threads(PipelineOptions([]), None) is None
  assert default_io_threads(PipelineOptions(['--runner=DataflowRunner']),
                            None) == REMOTE_IO_THREADS
  assert default_io_threads(PipelineOptions(['--runner=DataflowRunner']),
                            6) == 6
