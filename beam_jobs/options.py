"""Command-line options, YAML config merging and launch-time validation."""

import argparse
import dataclasses
import json
import logging
import math
import os
import time
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DirectOptions,
                                                  PipelineOptions,
                                                  StandardOptions,
                                                  TestOptions)

from beam_jobs import runners
from transforms import paths
from transforms.decode import DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS
from transforms.encode import FORMATS
from transforms.formats import avif_supported
from transforms.models.base import STRENGTH_PIXEL, STRENGTH_VECTOR, StyleParams
from transforms.models.loader import DEFAULT_MODEL, describe_model
from transforms.records import StyleRef
from transforms.inputs import any_match, make_input_spec
from transforms.layout import OutputLayout, canonical_uri
from transforms.storage import is_object_store
from transforms.styles import DEFAULT_STYLE_SIZE

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
  """A configuration mistake, found before any work; the message says the fix."""


def _boolean(text) -> bool:
  """'--flag', '--flag=true' and '--flag=false' all work (Flex Templates
  pass every parameter as --name=value)."""
  if isinstance(text, bool):
    return text
  value = str(text).strip().lower()
  if value in ('1', 'true', 'yes', 'on'):
    return True
  if value in ('0', 'false', 'no', 'off', ''):
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def _add_switch(parser, flag: str, help_text: str) -> None:
  """A boolean flag: bare, or with =true / =false."""
  parser.add_argument(flag, nargs='?', const=True, default=False,
                      type=_boolean, help=help_text)


def is_dry_run(options: PipelineOptions) -> bool:
  """--dry_run is Beam's own flag (TestOptions); parse() lets it stand bare."""
  return _boolean(options.view_as(TestOptions).dry_run or False)


# 2048 x 2048: the Magenta network on 4 MP needs about 2 GB; a 12 MP phone
# photo untiled would need three times that, a 100 MP one 25 times.
DEFAULT_MAX_UNTILED_PIXELS = 2048 * 2048
MIN_UNTILED_PIXELS = 256 * 256


class StylizeOptions(PipelineOptions):
  """The job's own flags; Beam's flags (--runner, ...) pass through."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        '--input', action='append', default=None,
        help='Image file, folder (all images below it, recursively) or glob. '
        'Repeatable.')
    parser.add_argument(
        '--input_list', action='append', default=None,
        help='Text file with one image URI per line ("#" comments and blank '
        'lines ignored). Repeatable.')
    parser.add_argument(
        '--style', action='append', default=None,
        help='Style image. Repeatable: each input is stylized with each style.')
    parser.add_argument('--output', default=None, help='Output folder.')
    parser.add_argument(
        '--model', default=DEFAULT_MODEL,
        help='"builtin", a local SavedModel folder, or a TF Hub handle.')
    parser.add_argument(
        '--max_size', type=int, default=1024,
        help='Long side of the output in pixels; never upscales. 0 keeps the '
        'input size.')
    parser.add_argument('--style_size', type=int, default=DEFAULT_STYLE_SIZE,
                        help='Side of the square the style image is fitted to.')
    parser.add_argument('--output_format', default='jpg',
                        choices=sorted(FORMATS),
                        help='Output format.')
    parser.add_argument('--jpeg_quality', type=int, default=90,
                        help='Quality for jpg, webp and avif outputs, 1-100.')
    parser.add_argument('--batch_size', type=int, default=4,
                        help='Images per model call (same-shape images).')
    parser.add_argument(
        '--max_input_pixels', type=int, default=DEFAULT_MAX_PIXELS,
        help='Inputs with more pixels fail as possible decompression bombs.')
    parser.add_argument(
        '--tf_threads', type=int, default=0,
        help='TF intra-op threads per worker process; 0: cores divided by '
        'the number of local worker processes (TF default elsewhere).')
    parser.add_argument(
        '--io_threads', type=int, default=None,
        help='Threads per worker process that read, decode, encode and '
        'write images while the model runs (default: the cores, at most '
        '8; 0: none, one image at a time).')
    parser.add_argument(
        '--style_strength', type=float, default=1.0,
        help='0-1: how much of the style to apply. TF Lite models mix style '
        'vectors (Magenta); SavedModels/TF Hub mix output and content pixels.')
    _add_switch(
        parser, '--preserve_colors',
        'Keep the photo\'s colours: stylized luminance, original chroma.')
    parser.add_argument(
        '--tile_size', type=int, default=0,
        help='Stylize images larger than this in overlapping tiles (bounds '
        'memory). 0: only where the model needs it (fixed-size TF Lite nets).')
    parser.add_argument('--tile_overlap', type=int, default=64,
                        help='Overlap between tiles, blended with feathering.')
    _add_switch(
        parser, '--force',
        'Redo every (input, style) pair, even those a previous run did.')
    parser.add_argument(
        '--max_failure_ratio', type=float, default=0.05,
        help='Exit with code 1 when more than this share of the manifest '
        'rows failed (0-1).')
    parser.add_argument('--manifest_shards', type=int, default=0,
                        help='Number of manifest-*.jsonl files; 0 lets the '
                        'runner decide.')
    parser.add_argument(
        '--model_sha256', default=None,
        help='Expected SHA-256 of the model (a file, or a folder\'s digest as '
        'printed in a mismatch error); checked before use.')
    _add_switch(
        parser, '--wait', 'Remote runners: wait for the job and report like '
        'a local run (exit code included). Local runs always wait.')
    _add_switch(
        parser, '--quiet', 'No live progress line; periodic log lines instead '
        '(also when stderr is not a terminal).')
    parser.add_argument('--config', default=None,
                        help='YAML file with the same keys; the command line '
                        'wins.')
    # -- Routing by image class (a router made by stylize-train) and where
    # -- tfhub.dev handles are fetched from.
    parser.add_argument(
        '--route_model', default=None,
        help='Router folder written by stylize-train (local or gs://): each '
        'image is classified, then stylized only with its class\'s --route '
        'styles.')
    parser.add_argument(
        '--route', action='append', default=None,
        help='CLASS=STYLE, with STYLE as in --style (blends included). '
        'Repeatable, several per class; classes without one are skipped. '
        'One value may hold several, separated by ";".')
    parser.add_argument(
        '--tfhub_mirror', default=None,
        help='Fetch tfhub.dev handles from this mirror instead, e.g. '
        'https://hub.tensorflow.google.cn (default: $TFHUB_MIRROR).')
    cls._add_photo_args(parser)

  @staticmethod
  def _add_photo_args(parser):
    """Per-file bounds (issue 9) and phone-photo metadata (issue 13)."""
    parser.add_argument(
        '--max_input_bytes', type=int, default=DEFAULT_MAX_INPUT_BYTES,
        help='Larger input files fail without being read (a read never '
        'goes past this).')
    parser.add_argument(
        '--max_untiled_pixels', type=int, default=DEFAULT_MAX_UNTILED_PIXELS,
        help='Images with more pixels (after --max_size) are stylized one at '
        'a time in tiles of sqrt(this) px, so memory stays bounded.')
    _add_switch(
        parser, '--keep_gps',
        'Copy the GPS location into the outputs\' EXIF (dropped by default).')


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


# ----------------------------------------------------------------- config --

def _flag_present(argv: Sequence[str], key: str) -> bool:
  flag = f'--{key}'
  return any(a == flag or a.startswith(flag + '=') for a in argv)


def _config_path(argv: Sequence[str]) -> Optional[str]:
  for i, arg in enumerate(argv):
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


def known_option_names() -> set:
  names = set()
  for cls in PipelineOptions.__subclasses__() + [StylizeOptions]:
    parser = argparse.ArgumentParser()
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
    for action in parser._actions:  # pylint: disable=protected-access
      names.add(action.dest)
  return names


def merge_config(argv: Sequence[str]) -> List[str]:
  """argv with the --config YAML's keys added where argv does not set them.

  A list value becomes a repeated flag; true becomes a bare flag; false and
  null are left out.

  Raises:
    ConfigError: unreadable file, not a mapping, or an unknown key.
  """
  argv = list(argv)
  path = _config_path(argv)
  if not path:
    return argv
  try:
    with open(path, encoding='utf-8') as f:
      data = yaml.safe_load(f) or {}
  except OSError as e:
    raise ConfigError(f'cannot read --config {path!r}: {e.strerror}') from None
  except yaml.YAMLError as e:
    raise ConfigError(f'--config {path!r} is not valid YAML: {e}') from None
  if not isinstance(data, dict):
    raise ConfigError(f'--config {path!r} must be a mapping of option names '
                      'to values')
  known = known_option_names()
  unknown = sorted(k for k in data if k not in known)
  if unknown:
    raise ConfigError(f'--config {path!r} has unknown key(s) {unknown}; keys '
                      'are the flag names without "--", e.g. input, style, '
                      'output, model.')
  extra = []
  for key, value in data.items():
    if key == 'dry_run' and value is True:
      value = 'true'  # Beam's --dry_run takes a value.
    if key == 'config' or _flag_present(argv, key):
      continue
    values = value if isinstance(value, list) else [value]
    for v in values:
      if v is None or v is False:
        continue
      extra.append(f'--{key}' if v is True else f'--{key}={v}')
  return extra + argv


# ------------------------------------------------------------- validation --

def _check_readable_file(uri: str, what: str) -> None:
  if not FileSystems.exists(uri):
    raise ConfigError(f'{what} {uri!r} does not exist.')


def _probe_output_writable(output: str) -> None:
  """Fails unless the output folder can be written, creating nothing.

  Local: the nearest existing folder must be a writable folder (the output
  folder is only created when the first file is written). Object stores: a
  probe object is written and deleted.
  """
  if not is_object_store(output):
    existing = output
    while not os.path.lexists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing,
                                                    os.W_OK | os.X_OK):
      what = 'not a folder' if not os.path.isdir(existing) else 'read-only'
      raise ConfigError(f'--output {output!r} is not writable: {existing!r} '
                        f'is {what}.')
    return
  probe = paths.join(output, f'.stylize-write-test-{uuid.uuid4().hex[:8]}')
  try:
    with FileSystems.create(probe) as f:
      f.write(b'ok')
    FileSystems.delete([probe])
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f'--output {output!r} is not writable: {type(e).__name__}: '
        f'{str(e).strip().splitlines()[0] if str(e).strip() else ""}') from None


def _check_paths_reach_workers(o: 'StylizeOptions', model: str) -> None:
  """Dataflow workers cannot read the launcher's local files."""
  from transforms.models.checks import is_local_path
  named = [('--input', v) for v in o.input or []] + [
      ('--input_list', v) for v in o.input_list or []] + [
          ('--style', v) for v in o.style or []] + [('--output', o.output)]
  local = [f'{flag} {value}' for flag, value in named
           if not paths.has_scheme(value)]
  if is_local_path(model):
    local.append(f'--model {model}')
  if local:
    raise ConfigError(
        'Dataflow workers cannot read files on this machine: '
        f'{", ".join(local)}. Copy them to a bucket and give gs:// paths.')


def _check_worker_image(options: PipelineOptions) -> None:
  """Dataflow workers must start from the image that holds TensorFlow and
  this package (Dockerfile); without one they would pip-install TensorFlow
  at every boot. The image built by the Dockerfile names itself in
  STYLIZE_SDK_CONTAINER_IMAGE, so a Flex Template launch from it needs no
  flag."""
  from apache_beam.options.pipeline_options import WorkerOptions
  worker = options.view_as(WorkerOptions)
  if worker.sdk_container_image:
    return
  image = os.environ.get('STYLIZE_SDK_CONTAINER_IMAGE')
  if image:
    worker.sdk_container_image = image
    return
  raise ConfigError(
      'Dataflow workers need the stylize container (TensorFlow and this '
      'package; see Dockerfile): give --sdk_container_image '
      'REGION-docker.pkg.dev/PROJECT/stylize/stylize:TAG (and '
      '--sdk_location=container).')


def _input_spec(arg: str, output: str) -> paths.InputSpec:
  """One --input -> InputSpec, refusing inputs and outputs that overlap.

  Paths are compared with symbolic links resolved, so a linked input
  folder cannot hide an output folder inside it.
  """
  try:
    spec = make_input_spec(arg)
  except FileNotFoundError:
    raise ConfigError(f'--input {arg!r} does not exist (and is no glob).') from None
  if spec.kind == paths.GLOB and not any_match(spec):
    raise ConfigError(f'--input {arg!r} matched no files.')
  if spec.kind != paths.FILE and paths.is_within(output, spec.root):
    raise ConfigError(
        f'--output {output!r} is inside the input folder {spec.root!r}: a '
        'rerun would stylize the outputs. Choose an output folder outside '
        'the inputs.')
  if paths.is_within(spec.pattern if spec.kind == paths.FILE else spec.root,
                     output):
    raise ConfigError(
        f'--input {arg!r} is inside --output {output!r}: outputs could '
        'overwrite inputs. Choose an output folder apart from the inputs.')
  return spec


def validate(options: PipelineOptions, check_model: bool = True,
             probe_output: bool = True) -> JobConfig:
  """Checks every setting before any work; returns the resolved JobConfig.

  Raises:
    ConfigError: the first problem found, with what to do about it.
  """
  o = options.view_as(StylizeOptions)
  if getattr(options.view_as(DirectOptions), 'direct_running_mode',
             None) == 'multi_threading':
    raise ConfigError(
        '--direct_running_mode=multi_threading is refused: Beam\'s '
        'multi-threaded local runner loses elements on large inputs (the '
        'manifest then misses pairs). Use the default (in_memory; decoding '
        'already overlaps inference) or multi_processing.')
  inputs = o.input or []
  lists = o.input_list or []
  if not inputs and not lists:
    raise ConfigError('no inputs: give --input (file, folder or glob) or '
                      '--input_list.')
  if not o.output:
    raise ConfigError('no --output folder given.')
  if not o.style and not o.route_model and not o.route:
    raise ConfigError('no --style given: name at least one style image.')
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
  _validate_photo_args(o)

  if runners.is_dataflow(options):
    # Before any I/O: flags that cannot work on Dataflow at all.
    _check_paths_reach_workers(o, absolute_model(o.model))
    _check_worker_image(options)
  output = canonical_uri(paths.absolute(o.output))
  specs = [_input_spec(arg, output) for arg in inputs]
  for list_file in lists:
    _check_readable_file(list_file, '--input_list')

  from transforms.styles import load_style_image, parse_styles
  routing = validate_routing(o)
  if routing:
    styles = routing['styles']
  else:
    try:
      styles = parse_styles(o.style)
    except ValueError as e:
      raise ConfigError(f'--style: {e}') from None
  style_pixels = []
  style_flag = '--route style' if routing else '--style'
  for style in styles:
    for uri, _ in style.parts:
      _check_readable_file(uri, style_flag)
      try:
        style_pixels.append(load_style_image(uri, o.style_size))
      except Exception as e:  # pylint: disable=broad-except
        raise ConfigError(f'{style_flag} {uri!r} is not a readable image: '
                          f'{e}') from None

  if probe_output:
    _probe_output_writable(output)

  tf_threads = o.tf_threads or runners.default_tf_threads(options)
  model = absolute_model(o.model)
  from transforms.models import tfhub
  from transforms.models.base import ModelLoadError
  try:
    source = tfhub.apply_mirror(model, tfhub.mirror_from(o.tfhub_mirror))
  except ValueError as e:
    raise ConfigError(f'--tfhub_mirror: {e}') from None
  local = runners.is_local(options)
  try:
    if local:
      # A remote model is fetched into the local cache here, once.
      kind = describe_model(source)
    else:
      # A light launcher: no TensorFlow, no download; the workers' setup()
      # loads and tries the model and fails fast with a clear error.
      from transforms.models.checks import check_model as light_check
      kind = light_check(source, o.model_sha256)
  except ModelLoadError as e:
    raise ConfigError(f'--model: {e}') from None
  if check_model and local:
    _check_model(source, style_pixels[0], tf_threads, o.model_sha256)
    if routing:
      _check_router(routing['route_model'], tf_threads)

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
      input_specs=specs, input_lists=list(lists), layout=layout,
      styles=styles, output=layout.output, model=model,
      max_size=o.max_size or None, style_size=o.style_size,
      output_format=o.output_format, jpeg_quality=o.jpeg_quality,
      batch_size=o.batch_size, max_input_pixels=o.max_input_pixels,
      tf_threads=tf_threads,
      run_id=run_id, style_params=style_params, row_params=row_params,
      force=bool(o.force), max_failure_ratio=o.max_failure_ratio,
      manifest_shards=o.manifest_shards, model_sha256=o.model_sha256,
      io_threads=o.io_threads, fail_job_on_verdict=not local,
      max_input_bytes=o.max_input_bytes,
      max_untiled_pixels=o.max_untiled_pixels, keep_gps=bool(o.keep_gps),
      model_source=source,
      route_model=routing['route_model'] if routing else None,
      router_id=routing['router_id'] if routing else None,
      routes=routing['routes'] if routing else {})



def _validate_photo_args(o: StylizeOptions) -> None:
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


def absolute_model(handle: str) -> str:
  """Local model paths made absolute, so manifests and workers agree."""
  if handle == 'builtin':
    return handle
  return ','.join(paths.absolute(p.strip()) for p in handle.split(','))


def new_run_id() -> str:
  return f'{time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())}-{uuid.uuid4().hex[:6]}'


def _check_model(handle: str, style, tf_threads: int,
                 sha256: Optional[str] = None) -> None:
  """Loads the model once and runs one tiny call, so a bad handle fails now."""
  from transforms.models.base import ModelLoadError
  from transforms.models.loader import load_stylizer
  from transforms.stylize import configure_tf_threads, try_model
  configure_tf_threads(tf_threads)
  try:
    stylizer = load_stylizer(handle, threads=tf_threads,
                             expected_sha256=sha256)
    try_model(stylizer, stylizer.prepare_style(style), handle)
  except ModelLoadError as e:
    message = str(e)
    raise ConfigError(message if message.startswith('--model') else
                      f'--model: {message}') from None


# ---------------------------------------------------------------- routing --

def validate_routing(o: StylizeOptions) -> Optional[dict]:
  """--route_model and --route -> {route_model, router_id, routes, styles};
  None without --route_model. Reads router.json only (no model load).

  Raises:
    ConfigError: --route without --route_model or the reverse, --style with
      --route_model, a malformed --route, a folder that is not a router, a
      class the router does not know.
  """
  from transforms.models.router import RouterError, read_router_info
  from transforms.routing import parse_route, route_styles
  if not o.route_model:
    if o.route:
      raise ConfigError('--route needs --route_model (the router folder '
                        'written by stylize-train).')
    return None
  if o.style:
    raise ConfigError('--style and --route_model do not mix: with a router, '
                      'give the styles per class, --route CLASS=STYLE.')
  if not o.route:
    raise ConfigError('--route_model needs at least one --route CLASS=STYLE; '
                      'without one every image would be skipped.')
  folder = paths.absolute(paths.join(o.route_model))
  try:
    info = read_router_info(folder)
  except RouterError as e:
    raise ConfigError(f'--route_model: {e}') from None
  per_class: Dict[str, List[str]] = {}
  # ';' separates routes in one value: Flex Template parameters take one.
  for arg in [a.strip() for r in o.route for a in r.split(';') if a.strip()]:
    try:
      name, style = parse_route(arg)
    except ValueError as e:
      raise ConfigError(f'--route: {e}') from None
    if name not in info.labels:
      raise ConfigError(
          f'--route {arg!r}: the router knows no class {name!r}; its classes '
          f'are {list(info.labels)}.')
    per_class.setdefault(name, []).append(style)
  try:
    styles, routes = route_styles(per_class)
  except ValueError as e:
    raise ConfigError(f'--route: {e}') from None
  unrouted = [c for c in info.labels if c not in routes]
  if unrouted:
    logger.info('Images of class(es) %s have no --route: they will be '
                'skipped rows.', unrouted)
  return {'route_model': folder, 'router_id': info.router_id,
          'routes': routes, 'styles': styles}


def _check_router(folder: str, tf_threads: int) -> None:
  """Loads the router once and classifies a test image, so a broken one
  fails now rather than on every worker."""
  import numpy as np
  from transforms.models.base import ModelLoadError
  from transforms.models.router import load_router
  try:
    load_router(folder, tf_threads).classify(
        [np.full((64, 64, 3), 128, np.uint8)])
  except ModelLoadError as e:
    raise ConfigError(f'--route_model: {e}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'--route_model {folder!r} loaded but failed on a test '
                      f'image: {type(e).__name__}: {e}') from None
