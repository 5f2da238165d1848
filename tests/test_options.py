"""Launch-time validation: one test per rule, plus YAML config merging."""

import json

import pytest

from beam_jobs.options import ConfigError, StylizeOptions, merge_config, validate
from beam_jobs.stylize import main, parse
from tests.conftest import gradient


@pytest.fixture
def world(tmp_path):
  """A valid job: two inputs, one style, an output folder."""
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(40, 30).save(inputs / 'a.jpg')
  gradient(30, 40, seed=1).save(inputs / 'b.png')
  style = tmp_path / 'style.png'
  gradient(64, 64, seed=2).save(style)
  return {'in': inputs, 'style': style, 'out': tmp_path / 'out',
          'tmp': tmp_path}


def args(world, *extra, drop=()):
  base = {'--input': str(world['in']), '--style': str(world['style']),
          '--output': str(world['out'])}
  out = []
  for k, v in base.items():
    if k not in drop:
      out += [k, v]
  return out + list(extra)


def check(argv, **kwargs):
  return validate(parse(argv), check_model=kwargs.get('check_model', False))


def test_rules_are_pure_functions_of_the_options(world, monkeypatch):
  """validation.check_rules reads nothing: it passes on paths that do not
  exist and fails on a bad value with every file access forbidden."""
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  from beam_jobs import validation

  def forbidden(*_, **__):
    raise AssertionError('a rule did I/O')
  for name in ('exists', 'match', 'open', 'create'):
    monkeypatch.setattr(FileSystems, name, forbidden)
  monkeypatch.setattr('builtins.open', forbidden)
  monkeypatch.setattr('os.listdir', forbidden)
  monkeypatch.setattr('os.scandir', forbidden)
  nowhere = ['--input', '/no/such/in', '--style', '/no/such/s.jpg',
             '--output', '/no/such/out', '--model', '/no/such/model']
  validation.check_rules(PipelineOptions(nowhere))
  with pytest.raises(ConfigError, match='--jpeg_quality'):
    validation.check_rules(PipelineOptions(nowhere + ['--jpeg_quality', '0']))
  with pytest.raises(ConfigError, match='Dataflow workers cannot read'):
    validation.check_rules(PipelineOptions(
        nowhere + ['--runner=DataflowRunner']), image_from_env='img:1')


def test_valid_job_resolves(world):
  job = check(args(world, '--model', 'builtin'))
  assert job.input_specs[0].root == str(world['in'])
  assert job.styles[0].label == 'style'
  assert job.output == str(world['out'])


def test_no_inputs(world):
  with pytest.raises(ConfigError, match='no inputs'):
    check(args(world, drop=('--input',)))


def test_no_output(world):
  with pytest.raises(ConfigError, match='no --output'):
    check(args(world, drop=('--output',)))


def test_no_style(world):
  with pytest.raises(ConfigError, match='no --style'):
    check(args(world, drop=('--style',)))


def test_negative_max_size(world):
  with pytest.raises(ConfigError, match='--max_size'):
    check(args(world, '--max_size', '-5'))


def test_style_size_range(world):
  with pytest.raises(ConfigError, match='--style_size'):
    check(args(world, '--style_size', '4'))


def test_jpeg_quality_range(world):
  with pytest.raises(ConfigError, match='--jpeg_quality'):
    check(args(world, '--jpeg_quality', '101'))


def test_batch_size_range(world):
  with pytest.raises(ConfigError, match='--batch_size'):
    check(args(world, '--batch_size', '0'))


def test_max_input_pixels_positive(world):
  with pytest.raises(ConfigError, match='--max_input_pixels'):
    check(args(world, '--max_input_pixels', '0'))


def test_tf_threads_not_negative(world):
  with pytest.raises(ConfigError, match='--tf_threads'):
    check(args(world, '--tf_threads', '-1'))


def test_output_format_choices(world):
  with pytest.raises(ConfigError, match="--output_format: invalid choice: 'gif'"):
    parse(args(world, '--output_format', 'gif')).view_as(StylizeOptions)


# -- per-file bounds and photo metadata (issues 9 and 13) -------------------

def test_max_input_bytes_positive(world):
  with pytest.raises(ConfigError, match='--max_input_bytes must be at least 1'):
    check(args(world, '--max_input_bytes', '0'))


def test_max_untiled_pixels_at_least_one_small_tile(world):
  with pytest.raises(ConfigError, match='--max_untiled_pixels must be at least'):
    check(args(world, '--max_untiled_pixels', '1000'))


def test_tile_overlap_within_the_automatic_tiles(world):
  with pytest.raises(ConfigError, match='more than half of the 256 px tiles'):
    check(args(world, '--max_untiled_pixels', str(256 * 256),
               '--tile_overlap', '200'))
  # With an explicit --tile_size, that size is the tile and the rule above
  # (half of --tile_size) applies instead.
  check(args(world, '--max_untiled_pixels', str(256 * 256), '--tile_size',
             '512', '--tile_overlap', '200'))


def test_avif_output_needs_a_pillow_with_avif(world, monkeypatch):
  job = check(args(world, '--output_format', 'avif'))
  assert job.settings.output_format == 'avif'
  # A Pillow built without libavif (older than 11.3, or built from source).
  monkeypatch.setattr('transforms.formats.avif_supported', lambda: False)
  with pytest.raises(ConfigError, match='--output_format avif needs Pillow'):
    check(args(world, '--output_format', 'avif'))


def test_new_settings_resolve_and_enter_the_job_key(world):
  default = check(args(world))
  o = default.settings
  assert (o.max_input_bytes, o.max_untiled_pixels, o.keep_gps) == (
      200_000_000, 2048 * 2048, False)
  assert default.style_params.max_untiled_pixels == 2048 * 2048
  gps = check(args(world, '--keep_gps'))
  assert gps.settings.keep_gps
  assert json.loads(gps.job_key)['settings']['keep_gps'] is True
  tiles = check(args(world, '--max_untiled_pixels', '1000000'))
  assert json.loads(tiles.job_key)['settings']['max_untiled_pixels'] == (
      1_000_000)
  avif = check(args(world, '--output_format', 'avif'))
  assert len({default.job_key, gps.job_key, tiles.job_key,
              avif.job_key}) == 4
  # Not a pixel setting: the byte cap does not change outputs, only whether
  # a pair fails (the identity of a remembered failure).
  capped = check(args(world, '--max_input_bytes', '100000'))
  assert capped.job_key == default.job_key
  assert capped.failure_key != default.failure_key


def test_input_that_matches_nothing(world):
  with pytest.raises(ConfigError, match='matched no files'):
    check(args(world, '--input', str(world['tmp'] / 'nope' / '*.jpg')))


def test_input_that_does_not_exist(world):
  with pytest.raises(ConfigError, match='does not exist'):
    check(args(world, '--input', str(world['tmp'] / 'nope.jpg')))


def test_input_inside_output_folder(world):
  inside = world['out'] / 'x.jpg'
  inside.parent.mkdir()
  gradient(8, 8).save(inside)
  with pytest.raises(ConfigError, match='inside --output'):
    check(args(world, '--input', str(inside)))


def test_io_threads_range(world):
  with pytest.raises(ConfigError, match='--io_threads'):
    check(args(world, '--io_threads', '-1'))


def test_wave_pairs_not_negative(world):
  with pytest.raises(ConfigError, match='--wave_pairs'):
    check(args(world, '--wave_pairs', '-1'))


def test_manifest_shards_range(world):
  with pytest.raises(ConfigError, match='--manifest_shards'):
    check(args(world, '--manifest_shards', '-1'))


def test_multi_threading_runner_is_refused(world):
  with pytest.raises(ConfigError, match='loses elements'):
    check(args(world, '--direct_running_mode=multi_threading',
               '--direct_num_workers=2'))


def test_dataflow_refuses_local_paths(world):
  with pytest.raises(ConfigError, match='Dataflow workers cannot read files '
                     'on this machine: --input'):
    check(args(world, '--runner=DataflowRunner',
               '--sdk_container_image=img:1'))


def test_dataflow_needs_the_worker_image(world, monkeypatch):
  monkeypatch.delenv('STYLIZE_SDK_CONTAINER_IMAGE', raising=False)
  gs = ['--input', 'gs://b/in', '--style', 'gs://b/s.jpg', '--output',
        'gs://b/out', '--model', 'gs://b/m', '--runner=DataflowRunner']
  with pytest.raises(ConfigError, match='--sdk_container_image'):
    check(gs)


def test_missing_input_list(world):
  with pytest.raises(ConfigError, match='--input_list'):
    check(args(world, '--input_list', str(world['tmp'] / 'list.txt')))


def test_output_inside_input_folder(world):
  with pytest.raises(ConfigError, match='inside the input folder'):
    check(args(world, drop=('--output',)) + ['--output',
                                             str(world['in'] / 'out')])


def test_missing_style(world):
  with pytest.raises(ConfigError, match='--style .* does not exist'):
    check(args(world, drop=('--style',)) + ['--style', str(world['tmp'] /
                                                           'gone.jpg')])


def test_style_not_an_image(world):
  bad = world['tmp'] / 'style.jpg'
  bad.write_text('not a picture')
  with pytest.raises(ConfigError, match='not a readable image'):
    check(args(world, drop=('--style',)) + ['--style', str(bad)])


def test_output_not_writable(world):
  blocker = world['tmp'] / 'a_file'
  blocker.write_text('x')
  with pytest.raises(ConfigError, match='not writable'):
    check(args(world, drop=('--output',)) + ['--output',
                                             str(blocker / 'out')])


def test_model_path_missing(world):
  with pytest.raises(ConfigError, match='does not exist'):
    check(args(world, '--model', str(world['tmp'] / 'no_model')),
          check_model=True)


def test_model_folder_without_savedmodel(world):
  with pytest.raises(ConfigError, match='saved_model.pb'):
    check(args(world, '--model', str(world['in'])), check_model=True)


def test_unreachable_hub_handle(world):
  with pytest.raises(ConfigError, match='could not load model'):
    check(args(world, '--model', 'https://tfhub.dev/google/magenta/'
               'arbitrary-image-stylization-v1-256/2'), check_model=True)


def test_config_file_supplies_keys_and_command_line_wins(world):
  cfg = world['tmp'] / 'job.yaml'
  cfg.write_text(f'input:\n  - {world["in"]}\nstyle: {world["style"]}\n'
                 f'output: {world["tmp"] / "from_config"}\nbatch_size: 2\n'
                 'runner: DirectRunner\n')
  argv = merge_config(['--config', str(cfg), '--output', str(world['out'])])
  job = check(argv)
  assert job.output == str(world['out'])  # Command line wins.
  assert job.settings.batch_size == 2  # From the file.
  assert job.input_specs[0].root == str(world['in'])


def test_config_unknown_key(world):
  cfg = world['tmp'] / 'job.yaml'
  cfg.write_text('inptu: x\n')
  with pytest.raises(ConfigError, match="unknown key.*inptu"):
    merge_config(['--config', str(cfg)])


def test_config_not_yaml(world):
  cfg = world['tmp'] / 'job.yaml'
  cfg.write_text('input: [unclosed\n')
  with pytest.raises(ConfigError, match='not valid YAML'):
    merge_config(['--config', str(cfg)])


def test_config_missing_file(world):
  with pytest.raises(ConfigError, match='cannot read --config'):
    merge_config(['--config', str(world['tmp'] / 'none.yaml')])


def test_main_reports_config_error_with_exit_code_2(world, capsys):
  code = main(args(world, drop=('--style',)))
  assert code == 2
  assert 'no --style' in capsys.readouterr().err
  assert not world['out'].exists()  # Nothing was written.


def test_dataflow_refuses_local_blend_parts_routes_and_routers(world):
  gs = ['--input', 'gs://b/in', '--output', 'gs://b/out', '--model',
        'gs://b/m', '--runner=dataflow', '--sdk_container_image=img:1']
  with pytest.raises(ConfigError, match='--style /s/local.jpg'):
    check(gs + ['--style', 'gs://b/a.jpg=0.5,/s/local.jpg=0.5'])
  with pytest.raises(ConfigError, match='--route_model /r'):
    check(gs + ['--route_model', '/r', '--route', 'photo=gs://b/a.jpg'])
  with pytest.raises(ConfigError, match='--route /s/b.jpg'):
    check(gs + ['--route_model', 'gs://b/r', '--route',
                'photo=gs://b/a.jpg;doc=/s/b.jpg'])


def test_template_location_needs_dataflow(world):
  with pytest.raises(ConfigError, match='--template_location'):
    check(args(world, '--template_location', str(world['tmp'] / 't.json')))


def test_glob_characters_in_the_output_are_refused(world):
  for name in ('out[1]', 'out*', 'out?'):
    with pytest.raises(ConfigError, match='glob character'):
      check(args(world, drop=('--output',)) + [
          '--output', str(world['tmp'] / name)])


def test_a_listing_error_at_launch_is_a_config_error(world, monkeypatch):
  """A glob whose folder cannot be listed (a bucket without access, an
  unreadable folder) fails before any work, naming the input."""
  from transforms import storage
  def refuse(folder, follow_links=False):
    raise storage.ListingError(f'could not list {folder!r}: Forbidden')
    yield  # pragma: no cover
  monkeypatch.setattr(storage, 'iter_files', refuse)
  with pytest.raises(ConfigError, match=r"--input .*\*\.jpg.*could not list"):
    check(args(world, drop=('--input',)) + [
        '--input', str(world['in'] / '*.jpg')])


def test_route_model_sha256_needs_a_router(world):
  with pytest.raises(ConfigError, match='--route_model_sha256 needs '
                     '--route_model'):
    check(args(world, '--route_model_sha256', 'ab' * 32))
