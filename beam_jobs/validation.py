"""The configuration rules: pure functions of the parsed options, no I/O.

Each raises ConfigError with what to do; check_rules() runs them all, before
any file is looked at (beam_jobs/launch_checks.py does the I/O checks).
"""

import math
from typing import Optional

from apache_beam.options.pipeline_options import (DirectOptions,
                                                  PipelineOptions,
                                                  WorkerOptions)

from beam_jobs import runners
from beam_jobs.errors import ConfigError
from beam_jobs.flags import MIN_UNTILED_PIXELS, StylizeOptions
from transforms import paths
from transforms.formats import avif_supported
from transforms.models import builtin, embedded


def absolute_model(handle: str) -> str:
  """Local model paths made absolute, so manifests and workers agree; names
  (builtin, embedded models) and URIs unchanged."""
  if handle == builtin.BUILTIN_NAME or embedded.is_embedded(handle):
    return handle
  return ','.join(paths.absolute(p.strip()) for p in handle.split(','))


def runner_rules(options: PipelineOptions) -> None:
  if runners.template_location(options) and not runners.is_dataflow(options):
    raise ConfigError(
        '--template_location creates a Dataflow template: give '
        '--runner=DataflowRunner with it (other runners would run the job '
        'instead, or write nothing).')
  if getattr(options.view_as(DirectOptions), 'direct_running_mode',
             None) == 'multi_threading':
    raise ConfigError(
        '--direct_running_mode=multi_threading is refused: Beam\'s '
        'multi-threaded local runner loses elements on large inputs (the '
        'manifest then misses pairs). Use the default (in_memory; decoding '
        'already overlaps inference) or multi_processing.')


def presence_rules(o: StylizeOptions) -> None:
  """Inputs, an output and styles (or routes) are given."""
  if not o.input and not o.input_list:
    raise ConfigError('no inputs: give --input (file, folder or glob) or '
                      '--input_list.')
  if not o.output:
    raise ConfigError('no --output folder given.')
  if not o.style and not o.route_model and not o.route:
    raise ConfigError('no --style given: name at least one style image.')


def output_name_rule(o: StylizeOptions) -> None:
  """Beam's file sinks (the manifest) and listings read an output path as a
  file pattern; '*', '?' and '[' would make it match other files."""
  if o.output and paths.is_glob(o.output):
    raise ConfigError(
        f'--output {o.output!r} holds a glob character (* ? [): Beam reads '
        'the output path as a file pattern when it finishes the manifest. '
        'Choose a folder name without them.')


def range_rules(o: StylizeOptions) -> None:
  """Every number within what the job supports."""
  if o.max_size is not None and o.max_size < 0:
    raise ConfigError(f'--max_size must be positive (or 0 to keep the input '
                      f'size), got {o.max_size}.')
  if not 16 <= o.style_size <= 2048:
    raise ConfigError(f'--style_size must be between 16 and 2048, got '
                      f'{o.style_size}.')
  if not 1 <= o.jpeg_quality <= 100:
    raise ConfigError(f'--jpeg_quality must be between 1 and 100, got '
                      f'{o.jpeg_quality}.')
  if not 1 <= o.batch_size <= 256:
    raise ConfigError(f'--batch_size must be between 1 and 256, got '
                      f'{o.batch_size}.')
  if o.max_input_pixels < 1:
    raise ConfigError('--max_input_pixels must be positive.')
  if o.tf_threads < 0:
    raise ConfigError('--tf_threads must be 0 (automatic) or positive.')
  if o.io_threads is not None and not 0 <= o.io_threads <= 64:
    raise ConfigError(f'--io_threads must be between 0 and 64, got '
                      f'{o.io_threads}.')
  if not 0.0 <= o.max_failure_ratio <= 1.0:
    raise ConfigError(f'--max_failure_ratio must be between 0 and 1, got '
                      f'{o.max_failure_ratio}.')
  if o.wave_pairs < 0:
    raise ConfigError(f'--wave_pairs must be 0 (one wave) or positive, got '
                      f'{o.wave_pairs}.')
  if not 0 <= o.manifest_shards <= 1000:
    raise ConfigError(f'--manifest_shards must be between 0 (the runner '
                      f'decides) and 1000, got {o.manifest_shards}.')
  if not 0.0 <= o.style_strength <= 1.0:
    raise ConfigError(f'--style_strength must be between 0 and 1, got '
                      f'{o.style_strength}.')
  if o.tile_size and o.tile_size < 64:
    raise ConfigError(f'--tile_size must be 0 (automatic) or at least 64, got '
                      f'{o.tile_size}.')
  if o.tile_overlap < 0 or (o.tile_size and
                            o.tile_overlap * 2 > o.tile_size):
    raise ConfigError(f'--tile_overlap must be between 0 and half of '
                      f'--tile_size, got {o.tile_overlap}.')


def photo_rules(o: StylizeOptions) -> None:
  """The rules for --max_input_bytes, --max_untiled_pixels, AVIF output."""
  if o.max_input_bytes < 1:
    raise ConfigError(f'--max_input_bytes must be positive, got '
                      f'{o.max_input_bytes}.')
  if o.max_untiled_pixels < MIN_UNTILED_PIXELS:
    raise ConfigError(f'--max_untiled_pixels must be at least '
                      f'{MIN_UNTILED_PIXELS} (256x256 tiles), got '
                      f'{o.max_untiled_pixels}.')
  if not o.tile_size and o.tile_overlap * 2 > math.isqrt(o.max_untiled_pixels):
    raise ConfigError(
        f'--tile_overlap {o.tile_overlap} is more than half of the '
        f'{math.isqrt(o.max_untiled_pixels)} px tiles that '
        f'--max_untiled_pixels {o.max_untiled_pixels} gives; lower the '
        'overlap or raise the pixel budget.')
  if o.output_format == 'avif' and not avif_supported():
    raise ConfigError('--output_format avif needs Pillow built with AVIF '
                      '(Pillow 11.3 or later from PyPI); upgrade Pillow or '
                      'choose jpg, png or webp.')


def routing_flag_rules(o: StylizeOptions) -> None:
  """--route and --route_model go together, and replace --style."""
  if not o.route_model:
    if o.route:
      raise ConfigError('--route needs --route_model (the router folder '
                        'written by stylize-train).')
    return
  if o.style:
    raise ConfigError('--style and --route_model do not mix: with a router, '
                      'give the styles per class, --route CLASS=STYLE.')
  if not o.route:
    raise ConfigError('--route_model needs at least one --route CLASS=STYLE; '
                      'without one every image would be skipped.')


def dataflow_paths_rule(o: StylizeOptions) -> None:
  """Dataflow workers cannot read the launcher's local files."""
  from transforms.models.checks import is_local_path
  from transforms.routing import parse_route
  from transforms.styles import parse_styles
  named = [('--input', v) for v in o.input or []] + [
      ('--input_list', v) for v in o.input_list or []] + [
          ('--output', o.output)]
  if o.route_model:
    named.append(('--route_model', o.route_model))
  # Every image a style names, blends' parts included.
  style_args = [('--style', v) for v in o.style or []]
  for value in o.route or []:
    for one in value.split(';'):
      if one.strip():
        try:
          style_args.append(('--route', parse_route(one)[1]))
        except ValueError:
          continue  # routing_flag_rules names the malformed value.
  for flag, value in style_args:
    try:
      refs = parse_styles([value])
    except ValueError:
      named.append((flag, value))
      continue
    named += [(flag, uri) for ref in refs for uri, _ in ref.parts]
  local = [f'{flag} {value}' for flag, value in named
           if not paths.has_scheme(value)]
  model = absolute_model(o.model)
  if is_local_path(model):
    local.append(f'--model {model}')
  if local:
    raise ConfigError(
        'Dataflow workers cannot read files on this machine: '
        f'{", ".join(local)}. Copy them to a bucket and give gs:// paths.')


def dataflow_worker_image(options: PipelineOptions,
                          image_from_env: Optional[str]) -> str:
  """The worker image a Dataflow launch uses: --sdk_container_image, else
  the image the launcher runs in (STYLIZE_SDK_CONTAINER_IMAGE, set by the
  Dockerfile, passed in as image_from_env).

  Dataflow workers must start from the image that holds TensorFlow and this
  package; without one they would pip-install TensorFlow at every boot.

  Raises:
    ConfigError: neither is given.
  """
  image = options.view_as(WorkerOptions).sdk_container_image or image_from_env
  if not image:
    raise ConfigError(
        'Dataflow workers need the stylize container (TensorFlow and this '
        'package; see Dockerfile): give --sdk_container_image '
        'REGION-docker.pkg.dev/PROJECT/stylize/stylize:TAG (and '
        '--sdk_location=container).')
  return image


def check_rules(options: PipelineOptions,
                image_from_env: Optional[str] = None) -> None:
  """Every rule above, in order; the first broken one raises ConfigError."""
  o = options.view_as(StylizeOptions)
  runner_rules(options)
  presence_rules(o)
  output_name_rule(o)
  range_rules(o)
  photo_rules(o)
  routing_flag_rules(o)
  if runners.is_dataflow(options):
    dataflow_paths_rule(o)
    dataflow_worker_image(options, image_from_env)
