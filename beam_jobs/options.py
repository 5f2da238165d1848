"""Options -> JobConfig: the validated, resolved settings a job is built from.

The concerns live in their own modules, re-exported here for callers:
flags (beam_jobs/flags.py: StylizeOptions, --help, unknown flags), --config
files (config.py), pure rules (validation.py), checks that look at files
(launch_checks.py, routing_checks.py). validate() runs them in that order.
"""

import dataclasses
import json
import os
import time
import uuid
from typing import Dict, List, Optional, Tuple

from apache_beam.options.pipeline_options import (PipelineOptions,
                                                  WorkerOptions)

from beam_jobs import launch_checks, routing_checks, runners, validation
from beam_jobs.config import merge_config
from beam_jobs.errors import ConfigError
from beam_jobs.flags import (DEFAULT_MAX_UNTILED_PIXELS, MIN_UNTILED_PIXELS,
                             StylizeOptions, boolean, is_dry_run,
                             known_option_names)
from beam_jobs.validation import absolute_model
from transforms import paths
from transforms.decode import DEFAULT_MAX_INPUT_BYTES
from transforms.layout import OutputLayout, canonical_uri
from transforms.models.base import STRENGTH_PIXEL, STRENGTH_VECTOR, StyleParams
from transforms.records import StyleRef
from transforms.waves import Wave

__all__ = ['ConfigError', 'DEFAULT_MAX_UNTILED_PIXELS', 'JobConfig',
           'MIN_UNTILED_PIXELS', 'StylizeOptions', 'absolute_model', 'boolean',
           'is_dry_run', 'known_option_names', 'merge_config', 'new_run_id',
           'validate']

# The image the Dockerfile's image names itself with (see validation.py).
IMAGE_ENV = 'STYLIZE_SDK_CONTAINER_IMAGE'


@dataclasses.dataclass
class JobConfig:
  """Validated, resolved settings the pipeline is built from."""
  input_specs: List[paths.InputSpec]
  input_lists: List[str]
  layout: OutputLayout
  styles: List[StyleRef]
  output: str
  model: str
  max_size: Optional[int]
  style_size: int
  output_format: str
  jpeg_quality: int
  batch_size: int
  max_input_pixels: int
  tf_threads: int
  run_id: str
  style_params: StyleParams = dataclasses.field(default_factory=StyleParams)
  row_params: dict = dataclasses.field(default_factory=dict)
  force: bool = False
  max_failure_ratio: float = 0.05
  manifest_shards: int = 1
  #: Local runs over more pairs run in waves of this many (0: one wave);
  #: the wave a pipeline runs (beam_jobs/waves.py, transforms/waves.py).
  wave_pairs: int = 0
  wave: Optional[Wave] = None
  model_sha256: Optional[str] = None
  progress_dir: Optional[str] = None
  started_at: float = dataclasses.field(default_factory=time.time)
  #: Fail the job itself on a bad verdict (remote runners; locally the
  #: launcher reads summary.json and sets the exit code).
  fail_job_on_verdict: bool = False
  io_threads: Optional[int] = None
  max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
  max_untiled_pixels: int = DEFAULT_MAX_UNTILED_PIXELS
  keep_gps: bool = False

  # What workers load: --model with --tfhub_mirror applied (None: model).
  model_source: Optional[str] = None
  # Routing (--route_model; transforms/routing.py): the router's id and
  # class -> labels of the styles routed to it.
  route_model: Optional[str] = None
  router_id: Optional[str] = None
  routes: Dict[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)


  @property
  def job_key(self) -> str:
    """Everything besides input and style that decides an output: what
    changes its pixels and, with routing, which styles apply to an image
    (the router and the routes; a new router or new routes redo the work)."""
    key = {
        'model': self.model, 'model_sha256': self.model_sha256,
        'max_size': self.max_size, 'style_size': self.style_size,
        'format': self.output_format, 'quality': self.jpeg_quality,
        'params': self.row_params,
    }
    # Added only when not at their defaults, so that outputs made before
    # these flags existed keep their identity (and are not all redone).
    if self.keep_gps:
      key['keep_gps'] = True
    if self.max_untiled_pixels != DEFAULT_MAX_UNTILED_PIXELS:
      key['max_untiled_pixels'] = self.max_untiled_pixels
    if self.route_model:
      key['routing'] = {'router_id': self.router_id,
                        'routes': {c: list(s) for c, s in self.routes.items()}}
    return json.dumps(key, sort_keys=True)


def new_run_id() -> str:
  return f'{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}-{uuid.uuid4().hex[:6]}'


def validate(options: PipelineOptions, check_model: bool = True,
             probe_output: bool = True) -> JobConfig:
  """Checks every setting before any work; returns the resolved JobConfig.

  Order: the pure rules (no I/O), then inputs, styles, the output folder and
  the model. The model: a local run loads it and tries it (check_model);
  a remote launch or a dry run only checks, without TensorFlow, that it
  exists and has the --model_sha256 digest. Nothing is created on the way.

  Raises:
    ConfigError: the first problem found, with what to do about it.
  """
  o = options.view_as(StylizeOptions)
  validation.check_rules(options, os.environ.get(IMAGE_ENV))
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
  style_pixels = launch_checks.load_styles(
      styles, o.style_size, '--route style' if routing else '--style')

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
    kind = launch_checks.model_kind(source, o.model_sha256,
                                    light=dry or not local)
    if check_model and local and not dry:
      launch_checks.try_model(source, style_pixels[0], tf_threads,
                              o.model_sha256)
      if routing:
        routing_checks.check_router(routing['route_model'], tf_threads)

  style_params = StyleParams(strength=o.style_strength,
                             preserve_colors=bool(o.preserve_colors),
                             tile_size=o.tile_size,
                             tile_overlap=o.tile_overlap,
                             max_untiled_pixels=o.max_untiled_pixels)
  row_params = {
      'style_strength': o.style_strength,
      'strength_mode': STRENGTH_VECTOR if kind == 'tflite' else STRENGTH_PIXEL,
      'preserve_colors': bool(o.preserve_colors),
      'tile_size': o.tile_size,
      'tile_overlap': o.tile_overlap,
  }
  run_id = new_run_id()
  layout = OutputLayout.create(
      output, o.output_format, paths.common_base([s.root for s in specs]),
      run_id)
  return JobConfig(
      input_specs=specs, input_lists=lists, layout=layout,
      styles=styles, output=layout.output, model=model,
      max_size=o.max_size or None, style_size=o.style_size,
      output_format=o.output_format, jpeg_quality=o.jpeg_quality,
      batch_size=o.batch_size, max_input_pixels=o.max_input_pixels,
      tf_threads=tf_threads,
      run_id=run_id, style_params=style_params, row_params=row_params,
      force=bool(o.force), max_failure_ratio=o.max_failure_ratio,
      manifest_shards=o.manifest_shards, model_sha256=o.model_sha256,
      wave_pairs=o.wave_pairs if local else 0,
      io_threads=runners.default_io_threads(options, o.io_threads),
      fail_job_on_verdict=not local,
      max_input_bytes=o.max_input_bytes,
      max_untiled_pixels=o.max_untiled_pixels, keep_gps=bool(o.keep_gps),
      model_source=source,
      route_model=routing['route_model'] if routing else None,
      router_id=routing['router_id'] if routing else None,
      routes=routing['routes'] if routing else {})
