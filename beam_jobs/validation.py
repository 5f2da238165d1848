"""The configuration rules: pure functions of the parsed options, no I/O.

Each raises ConfigError with what to do; check_rules() runs them all, before
any file is looked at (beam_jobs/launch_checks.py does the I/O checks). The
bounds of each flag and the rules between flags are declared with the flags
(beam_jobs/settings.py); the runner rules are here.
"""

from typing import Optional

from apache_beam.options.pipeline_options import (DirectOptions,
                                                  PipelineOptions,
                                                  WorkerOptions)

from beam_jobs import runners
from beam_jobs.errors import ConfigError
from beam_jobs import settings
from beam_jobs.flags import StylizeOptions
from beam_jobs.settings import JobSettings
from transforms import paths
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


def settings_of(options: PipelineOptions) -> JobSettings:
  """The job's flags as validated JobSettings: types, bounds and the rules
  between settings are declared there (beam_jobs/settings.py).

  Raises:
    ConfigError: the first value out of bounds or rule broken.
  """
  view = options.view_as(StylizeOptions)
  return settings.from_values(
      {name: getattr(view, name, None)
       for name in settings.JobSettings.model_fields})


def dataflow_paths_rule(o: JobSettings) -> None:
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
                image_from_env: Optional[str] = None) -> JobSettings:
  """Every rule, in order; the first broken one raises ConfigError.
  Returns the validated settings."""
  runner_rules(options)
  job_settings = settings_of(options)
  if runners.is_dataflow(options):
    dataflow_paths_rule(job_settings)
    dataflow_worker_image(options, image_from_env)
  return job_settings
