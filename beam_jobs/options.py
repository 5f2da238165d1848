"""Options -> JobConfig: the validated, resolved settings a job is built from.

The concerns live in their own modules, re-exported here for callers:
every flag's declaration (beam_jobs/settings.py: JobSettings), the command
line (flags.py: StylizeOptions, --help, unknown flags), --config files
(config.py), pure rules (validation.py), checks that look at files
(launch_checks.py, routing_checks.py). validate() runs them in that order.
"""

import dataclasses
import os
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

from apache_beam.options.pipeline_options import (PipelineOptions,
                                                  WorkerOptions)

from beam_jobs import launch_checks, routing_checks, runners, validation
from beam_jobs.config import merge_config
from beam_jobs.errors import ConfigError
from beam_jobs.flags import (StylizeOptions, boolean, is_dry_run,
                             known_option_names)
from beam_jobs.settings import (DEFAULT_MAX_UNTILED_PIXELS, MIN_UNTILED_PIXELS,
                                JobSettings)
from beam_jobs.validation import absolute_model
from transforms import identity, paths
from transforms.layout import OutputLayout, canonical_uri
from transforms.models.base import STRENGTH_PIXEL, STRENGTH_VECTOR, StyleParams
from transforms.records import StyleRef
from transforms.waves import Wave

__all__ = ['ConfigError', 'DEFAULT_MAX_UNTILED_PIXELS', 'JobConfig',
           'JobSettings', 'MIN_UNTILED_PIXELS', 'StylizeOptions',
           'absolute_model', 'boolean', 'is_dry_run', 'known_option_names',
           'merge_config', 'new_run_id', 'validate']

# The image the Dockerfile's image names itself with (see validation.py).
IMAGE_ENV = 'STYLIZE_SDK_CONTAINER_IMAGE'


@dataclasses.dataclass
class JobConfig:
  """What the pipeline is built from: the validated flags (settings) and
  what launch resolved from them (paths, styles with their digests, the
  model's and router's fingerprints, threads for this runner)."""
  settings: JobSettings
  input_specs: List[paths.InputSpec]
  input_lists: List[str]
  layout: OutputLayout
  styles: List[StyleRef]
  #: --model with local paths made absolute (what the manifest records).
  model: str
  #: What workers load: --model with --tfhub_mirror applied.
  model_source: str
  #: The model's content fingerprint (transforms/identity.py), at launch.
  model_fingerprint: str
  tf_threads: int
  run_id: str
  style_params: StyleParams = dataclasses.field(default_factory=StyleParams)
  row_params: dict = dataclasses.field(default_factory=dict)
  #: Local runs over more pairs run in waves of this many (0: one wave);
  #: the wave a pipeline runs (beam_jobs/waves.py, transforms/waves.py).
  wave_pairs: int = 0
  wave: Optional[Wave] = None
  progress_dir: Optional[str] = None
  started_at: float = dataclasses.field(default_factory=time.time)
  #: Fail the job itself on a bad verdict, and keep its lease alive from
  #: the workers (remote runners; locally the launcher does both).
  fail_job_on_verdict: bool = False
  #: A classic template's job: its workers take the lease (no launcher).
  workers_take_lease: bool = False
  io_threads: Optional[int] = None
  # Routing (--route_model; transforms/routing.py): the router folder, its
  # id and content fingerprint, and class -> labels of the styles routed.
  route_model: Optional[str] = None
  router_id: Optional[str] = None
  router_fingerprint: Optional[str] = None
  routes: Dict[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
  #: Said once, on the first run under a new naming rule (launch_checks).
  naming_note: str = ''

  @property
  def output(self) -> str:
    return self.layout.output

  @property
  def max_size(self) -> Optional[int]:
    """The long side of outputs; None keeps the input size."""
    return self.settings.max_size or None

  def _key(self, values: Dict) -> str:
    return identity.job_key({
        'settings': values, 'model': self.model_fingerprint,
        'router': self.router_fingerprint})

  @property
  def job_key(self) -> str:
    """Everything besides input and style that decides an output: every
    pixel-affecting setting (JobSettings.output_identity), the model's and
    router's content. (The classes routed to a style are part of that
    style's fingerprint.)"""
    return self._key(self.settings.output_identity())

  @property
  def failure_key(self) -> str:
    """job_key and the limits: what decides whether a pair fails."""
    return self._key(self.settings.outcome_identity())


def new_run_id() -> str:
  return f'{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}-{uuid.uuid4().hex[:6]}'


def validate(options: PipelineOptions, check_model: bool = True,
             probe_output: bool = True,
             status: Optional[Callable[[str], None]] = None) -> JobConfig:
  """Checks every setting before any work; returns the resolved JobConfig.

  Order: the pure rules (no I/O), then inputs, styles, the output folder and
  the model. The model: a local run loads it and tries it (check_model);
  a remote launch or a dry run only checks, without TensorFlow, that it
  exists and has the --model_sha256 digest. The content fingerprints of the
  model, the styles and the router are taken here, once per run. Nothing
  is created on the way.

  status: prints a phase line (the model's load can take seconds).

  Raises:
    ConfigError: the first problem found, with what to do about it.
  """
  o = validation.check_rules(options, os.environ.get(IMAGE_ENV))
  if runners.is_dataflow(options):
    worker = options.view_as(WorkerOptions)
    worker.sdk_container_image = validation.dataflow_worker_image(
        options, os.environ.get(IMAGE_ENV))
  output = canonical_uri(paths.absolute(o.output))
  specs = [launch_checks.input_spec(arg, output) for arg in o.input or []]
  # Absolute, so relative entries are relative to the list's folder on any
  # worker, whatever its working folder; read literally (paths.glob_escape).
  lists = [paths.absolute(l) for l in o.input_list or []]
  for list_file in lists:
    launch_checks.check_readable_file(list_file, '--input_list')

  from transforms.styles import parse_styles
  routing = routing_checks.validate_routing(o)
  if routing:
    styles = routing['styles']
  else:
    try:
      styles = parse_styles(o.style)
    except ValueError as e:
      raise ConfigError(f'--style: {e}') from None
  styles, style_pixels = launch_checks.load_styles(
      styles, o.style_size, '--route style' if routing else '--style',
      o.max_input_bytes, o.max_input_pixels)
  if routing:
    styles = [identity.with_routes(s, routing['routes']) for s in styles]

  if probe_output:
    launch_checks.probe_output_writable(output)
  launch_checks.check_state_folder(output)

  tf_threads = o.tf_threads or runners.default_tf_threads(options)
  model = absolute_model(o.model)
  from transforms.models import tfhub
  try:
    source = tfhub.apply_mirror(model, tfhub.mirror_from(o.tfhub_mirror))
  except ValueError as e:
    raise ConfigError(f'--tfhub_mirror: {e}') from None
  local = runners.is_local(options)
  dry = is_dry_run(options)
  with launch_checks.no_new_empty_folders(launch_checks.model_cache_dirs()):
    # The content fingerprint first: for local files it is the SHA-256 that
    # --model_sha256 names, so the files are read once at launch.
    fingerprint = launch_checks.model_fingerprint(model, o.model_sha256)
    sha256 = None if fingerprint.startswith('sha256:') else o.model_sha256
    kind = launch_checks.model_kind(source, sha256, light=dry or not local)
    # What the model does with --style_strength, as far as the launch can
    # tell without loading it (each row records what was done).
    strength_mode = (STRENGTH_PIXEL if kind == 'builtin' else STRENGTH_VECTOR)
    if local:
      launch_checks.engine_check(o.engine, o.precision)
    if check_model and local and not dry:
      if status:
        status(f'loading model {model} ...')
      start = time.perf_counter()
      strength_mode, made_with = launch_checks.try_model(
          source, style_pixels[0], tf_threads, sha256, o.engine, o.precision,
          fingerprint)
      if status:
        status(f'loading model {model} ... {time.perf_counter() - start:.1f} '
               f's ({made_with})')
      if routing:
        routing_checks.check_router(routing['route_model'], tf_threads,
                                    routing['fingerprint'])

  style_params = StyleParams(strength=o.style_strength,
                             preserve_colors=bool(o.preserve_colors),
                             tile_size=o.tile_size,
                             tile_overlap=o.tile_overlap,
                             max_untiled_pixels=o.max_untiled_pixels)
  row_params = {
      'style_strength': o.style_strength,
      'strength_mode': strength_mode,
      'preserve_colors': bool(o.preserve_colors),
      'tile_size': o.tile_size,
      'tile_overlap': o.tile_overlap,
  }
  run_id = new_run_id()
  layout = OutputLayout.create(
      output, o.output_format, paths.common_base([s.root for s in specs]),
      run_id)
  return JobConfig(
      settings=o, input_specs=specs, input_lists=lists, layout=layout,
      styles=styles, model=model, model_source=source,
      model_fingerprint=fingerprint, tf_threads=tf_threads, run_id=run_id,
      style_params=style_params, row_params=row_params,
      wave_pairs=o.wave_pairs if local else 0,
      io_threads=runners.default_io_threads(options, o.io_threads),
      fail_job_on_verdict=not local,
      route_model=routing['route_model'] if routing else None,
      router_id=routing['router_id'] if routing else None,
      router_fingerprint=routing['fingerprint'] if routing else None,
      routes=routing['routes'] if routing else {},
      naming_note=launch_checks.naming_rule_note(
          output, [] if routing else (o.style or []),
          [] if routing else styles))
