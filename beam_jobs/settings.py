"""The job's settings, declared once: one typed, validated field per flag.

Each field of JobSettings is one flag (or --config key): its type, default,
bounds, help text, --help group, and its part in the identity of the work
(`Identity`). Everything else is derived from these declarations:

- the command line (beam_jobs/flags.py builds argparse from them, for Beam's
  options, the --help page and unknown-flag errors),
- --config YAML keys (the same names),
- validation (pydantic checks types and bounds; the cross-field rules are
  the validators below),
- JobConfig (beam_jobs/options.py holds the validated JobSettings),
- the work identity (output_identity(): every field declared
  Identity.VALUE; a field cannot be declared without saying which it is).

Bounds are pydantic constraints; their error messages are phrased for the
command line by config_error().
"""

import enum
import math
import typing
from typing import Any, Dict, List, Literal, Optional

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from beam_jobs.errors import ConfigError
from transforms.decode import DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS
from transforms.models.engine.capabilities import ENGINES, PRECISIONS
from transforms.models.loader import DEFAULT_MODEL
from transforms.styles import DEFAULT_STYLE_SIZE

# 2048 x 2048: the Magenta network on 4 MP needs about 2 GB; a 12 MP phone
# photo untiled would need three times that, a 100 MP one 25 times.
DEFAULT_MAX_UNTILED_PIXELS = 2048 * 2048
# Local runs hold about 2 KB per (input, style) pair in Beam's grouping steps
# (README "Archive scale"): waves of 200,000 pairs bound that near 0.4 GB.
DEFAULT_WAVE_PAIRS = 200_000
MIN_UNTILED_PIXELS = 256 * 256
OUTPUT_FORMATS = ('avif', 'jpg', 'png', 'webp')


class Identity(str, enum.Enum):
  """A setting's part in the identity of a piece of work (done markers).

  VALUE: changes an output's pixels or bytes; its value is part of every
    pair's identity, so changing it redoes the work.
  CONTENT: names files whose content is part of the identity (the model,
    the router; styles and inputs per pair, and with --route the classes
    routed to each style): replacing them in place redoes the work,
    renaming them (or reordering flags) does not.
  OUTCOME: decides only whether a pair fails (size limits): part of the
    identity of a remembered failure, so raising a limit retries it.
  NONE: how the job runs (threads, batching, reporting, where things go).
  """
  VALUE = 'value'
  CONTENT = 'content'
  OUTCOME = 'outcome'
  NONE = 'none'


# The --help groups, in the order the page shows them.
INPUTS = 'inputs'
STYLES = 'styles'
MODEL = 'model'
OUTPUT = 'output'
TILING = 'large images (tiling)'
PERFORMANCE = 'performance'
INCREMENTAL = 'incremental runs'
ROUTING = 'routing by kind of image'
RUN = 'the run'
GROUPS = (INPUTS, STYLES, MODEL, OUTPUT, TILING, PERFORMANCE, INCREMENTAL,
          ROUTING, RUN)
GROUP_DESCRIPTIONS = {
    ROUTING: 'A router made by stylize-train sends each image to its '
             'class\'s styles (instead of --style).',
    RUN: 'Beam\'s --dry_run lists the inputs and plans the work without '
         'loading the model or writing anything (it checks that the model '
         'exists, and its digest with --model_sha256).',
}


def setting(default: Any, *, help: str, group: str, identity: Identity,
            metavar: Optional[str] = None, **bounds) -> Any:
  """One flag's declaration (a pydantic Field carrying the flag's extras)."""
  # pylint: disable=redefined-builtin
  return Field(default, description=help, **bounds, json_schema_extra={
      'group': group, 'identity': identity.value, 'metavar': metavar})


class JobSettings(BaseModel):
  """Every flag of the job, typed and validated (see the module docstring)."""

  model_config = ConfigDict(extra='forbid', frozen=True)

  # -- inputs --
  input: Optional[List[str]] = setting(
      None, group=INPUTS, identity=Identity.CONTENT, metavar='PATH',
      help='Image file, folder (every image below it, recursively) or glob; '
      'local or gs://. Repeatable.')
  input_list: Optional[List[str]] = setting(
      None, group=INPUTS, identity=Identity.CONTENT, metavar='FILE',
      help='Text file with one image path or URI per line ("#" comments and '
      'blank lines ignored; relative entries are relative to the file). '
      'Repeatable.')
  max_input_bytes: int = setting(
      DEFAULT_MAX_INPUT_BYTES, ge=1, group=INPUTS, identity=Identity.OUTCOME,
      metavar='N', help='Larger input files (and style images) fail without '
      'being read (a read never goes past this).')
  max_input_pixels: int = setting(
      DEFAULT_MAX_PIXELS, ge=1, group=INPUTS, identity=Identity.OUTCOME,
      metavar='N', help='Inputs (and style images) with more pixels fail as '
      'possible decompression bombs.')

  # -- styles --
  style: Optional[List[str]] = setting(
      None, group=STYLES, identity=Identity.CONTENT, metavar='IMAGE',
      help='Style image; repeatable: each input is stylized with each style. '
      'IMAGE=W values form a blend (a.jpg=0.7 --style b.jpg=0.3), as does '
      'a.jpg=0.7,b.jpg=0.3 in one value.')
  style_size: int = setting(
      DEFAULT_STYLE_SIZE, ge=16, le=2048, group=STYLES,
      identity=Identity.VALUE, metavar='PX',
      help='Side of the square the style image is centre-cropped and resized '
      'to.')
  style_strength: float = setting(
      1.0, ge=0.0, le=1.0, group=STYLES, identity=Identity.VALUE, metavar='W',
      help='0-1: how much of the style to apply. TF Lite models mix style '
      'vectors (Magenta); SavedModels/TF Hub mix output and photo pixels.')
  preserve_colors: bool = setting(
      False, group=STYLES, identity=Identity.VALUE,
      help='Keep the photo\'s colours: stylized luminance, original chroma.')

  # -- model --
  model: str = setting(
      DEFAULT_MODEL, group=MODEL, identity=Identity.CONTENT, metavar='HANDLE',
      help='"magenta-lite" (the embedded TF Lite network), "builtin" (a '
      'colour transfer, not a network), a SavedModel folder or .tar.gz, a '
      'TF Lite folder or pair "a.tflite,b.tflite" (local or gs://), or a TF '
      'Hub handle.')
  model_sha256: Optional[str] = setting(
      None, group=MODEL, identity=Identity.NONE, metavar='HEX',
      help='Expected SHA-256 of the model (a file, or a folder\'s digest as '
      'printed in a mismatch error; for a TF Hub handle, of the downloaded '
      'folder); checked before use.')
  engine: Literal[ENGINES] = setting(
      'auto', group=MODEL, identity=Identity.VALUE,
      help='Where the network runs: "auto" (OpenVINO where it is installed, '
      'as it is with this package), "openvino", or "tf" (TensorFlow / '
      'LiteRT: the reference). The manifest records what ran.')
  precision: Literal[PRECISIONS] = setting(
      'auto', group=MODEL, identity=Identity.VALUE,
      help='"auto": bf16 on OpenVINO where the CPU has AMX or AVX-512 BF16 '
      '(about 4x faster than f32, 41 dB from it), else f32; "bf16" or '
      '"f32". TensorFlow runs f32.')
  tfhub_mirror: Optional[str] = setting(
      None, group=MODEL, identity=Identity.NONE, metavar='URL',
      help='Fetch tfhub.dev handles from this mirror instead, e.g. '
      'https://hub.tensorflow.google.cn (default: $TFHUB_MIRROR).')

  # -- output --
  output: Optional[str] = setting(
      None, group=OUTPUT, identity=Identity.NONE, metavar='FOLDER',
      help='Output folder, local or gs:// (created when the first file is '
      'written); not inside an input folder.')
  output_format: Literal[OUTPUT_FORMATS] = setting(
      'jpg', group=OUTPUT, identity=Identity.VALUE, help='Output format.')
  jpeg_quality: int = setting(
      90, ge=1, le=100, group=OUTPUT, identity=Identity.VALUE, metavar='Q',
      help='Quality of jpg, webp and avif outputs, 1-100.')
  max_size: int = setting(
      1024, ge=0, group=OUTPUT, identity=Identity.VALUE, metavar='PX',
      help='Long side of the output in pixels; never upscales. 0 keeps the '
      'input size.')
  keep_gps: bool = setting(
      False, group=OUTPUT, identity=Identity.VALUE,
      help='Copy the GPS location into the outputs\' EXIF (dropped by '
      'default).')
  manifest_shards: int = setting(
      0, ge=0, le=1000, group=OUTPUT, identity=Identity.NONE, metavar='N',
      help='Number of manifest-*.jsonl files; 0 lets the runner decide.')

  # -- large images (tiling) --
  tile_size: int = setting(
      0, ge=0, group=TILING, identity=Identity.VALUE, metavar='PX',
      help='Stylize images larger than this in overlapping tiles (bounds '
      'memory). 0: only where the model needs it (fixed-size TF Lite nets).')
  tile_overlap: int = setting(
      64, ge=0, group=TILING, identity=Identity.VALUE, metavar='PX',
      help='Overlap between tiles, blended with feathering.')
  max_untiled_pixels: int = setting(
      DEFAULT_MAX_UNTILED_PIXELS, ge=MIN_UNTILED_PIXELS, group=TILING,
      identity=Identity.VALUE, metavar='N',
      help='Images with more pixels (after --max_size) are stylized one at a '
      'time in tiles of sqrt(N) px, so memory stays bounded.')

  # -- performance --
  batch_size: int = setting(
      4, ge=1, le=256, group=PERFORMANCE, identity=Identity.NONE, metavar='N',
      help='Content images per model call (same-shape images).')
  tf_threads: int = setting(
      0, ge=0, group=PERFORMANCE, identity=Identity.NONE, metavar='N',
      help='TF intra-op threads per worker process; 0: the cores divided by '
      'the local worker processes (TF default in-process, 1 on remote '
      'runners).')
  io_threads: Optional[int] = setting(
      None, ge=0, le=64, group=PERFORMANCE, identity=Identity.NONE,
      metavar='N',
      help='Threads per worker process that read, decode, encode and write '
      'images while the model runs (default: the cores, at most 8, on local '
      'runs; 2 on remote runners, which start one process per core; 0: one '
      'image at a time).')
  wave_pairs: int = setting(
      DEFAULT_WAVE_PAIRS, ge=0, group=PERFORMANCE, identity=Identity.NONE,
      metavar='N',
      help='Local runs over more (input, style) pairs than this run in '
      'waves of about N pairs, one after another, so memory stays bounded '
      '(Beam\'s local runner holds every pair of a grouping step in memory). '
      '0: one wave. Distributed runners ignore it.')

  # -- incremental runs --
  force: bool = setting(
      False, group=INCREMENTAL, identity=Identity.NONE,
      help='Redo every (input, style) pair, even those an earlier run did '
      '(and those that failed before).')
  retry_failed: bool = setting(
      False, group=INCREMENTAL, identity=Identity.NONE,
      help='Retry pairs that failed in an earlier run with the same input '
      'and settings (by default they are listed as known failures and not '
      'retried).')
  break_lease: bool = setting(
      False, group=INCREMENTAL, identity=Identity.NONE,
      help='Take over --output even though another run\'s lease on it has '
      'not expired (only when you know that run is gone).')

  # -- routing by kind of image --
  route_model: Optional[str] = setting(
      None, group=ROUTING, identity=Identity.CONTENT, metavar='FOLDER',
      help='Router folder written by stylize-train (local or gs://).')
  route: Optional[List[str]] = setting(
      None, group=ROUTING, identity=Identity.CONTENT, metavar='CLASS=STYLE',
      help='STYLE as in --style (blends included). Repeatable, several per '
      'class; classes without one are skipped. One value may hold several, '
      'separated by ";".')
  route_model_sha256: Optional[str] = setting(
      None, group=ROUTING, identity=Identity.NONE, metavar='HEX',
      help='Expected SHA-256 of the router folder (as printed in a mismatch '
      'error); checked before use.')

  # -- the run --
  config: Optional[str] = setting(
      None, group=RUN, identity=Identity.NONE, metavar='YAML',
      help='YAML file with any of these keys (and Beam\'s); the command line '
      'wins.')
  max_failure_ratio: float = setting(
      0.05, ge=0.0, le=1.0, group=RUN, identity=Identity.NONE, metavar='R',
      help='Exit with code 1 (remote runners: fail the job) when more than '
      'this share of the manifest rows are new failures (0-1); failures '
      'already known from an earlier run do not count.')
  wait: bool = setting(
      False, group=RUN, identity=Identity.NONE,
      help='Remote runners: wait for the job and report like a local run '
      '(exit code included). Local runs always wait.')
  quiet: bool = setting(
      False, group=RUN, identity=Identity.NONE,
      help='No live progress bar; a progress line every --progress_every '
      'seconds instead (also when stderr is not a terminal).')
  progress_every: float = setting(
      30.0, gt=0, group=RUN, identity=Identity.NONE, metavar='S',
      help='Seconds between progress lines when there is no live bar.')

  # -- rules between settings (bounds of one setting are declared above) --

  @model_validator(mode='after')
  def _presence(self) -> 'JobSettings':
    if not self.input and not self.input_list:
      raise ValueError('no inputs: give --input (file, folder or glob) or '
                       '--input_list.')
    if not self.output:
      raise ValueError('no --output folder given.')
    if not self.style and not self.route_model and not self.route:
      raise ValueError('no --style given: name at least one style image.')
    return self

  @model_validator(mode='after')
  def _output_name(self) -> 'JobSettings':
    from transforms import paths
    # Beam's file sinks (the manifest) and listings read an output path as a
    # file pattern; '*', '?' and '[' would make it match other files.
    if paths.is_glob(self.output):
      raise ValueError(
          f'--output {self.output!r} holds a glob character (* ? [): Beam '
          'reads the output path as a file pattern when it finishes the '
          'manifest. Choose a folder name without them.')
    return self

  @model_validator(mode='after')
  def _tiles(self) -> 'JobSettings':
    if self.tile_size and self.tile_size < 64:
      raise ValueError(f'--tile_size must be 0 (automatic) or at least 64, '
                       f'got {self.tile_size}.')
    if self.tile_size and self.tile_overlap * 2 > self.tile_size:
      raise ValueError(f'--tile_overlap must be between 0 and half of '
                       f'--tile_size, got {self.tile_overlap}.')
    side = math.isqrt(self.max_untiled_pixels)
    if not self.tile_size and self.tile_overlap * 2 > side:
      raise ValueError(
          f'--tile_overlap {self.tile_overlap} is more than half of the '
          f'{side} px tiles that --max_untiled_pixels '
          f'{self.max_untiled_pixels} gives; lower the overlap or raise the '
          'pixel budget.')
    return self

  @model_validator(mode='after')
  def _engine(self) -> 'JobSettings':
    if self.engine == 'tf' and self.precision == 'bf16':
      raise ValueError('--precision bf16 needs --engine openvino (or auto); '
                       'the TensorFlow engine runs f32.')
    return self

  @model_validator(mode='after')
  def _format(self) -> 'JobSettings':
    from transforms.formats import avif_supported
    if self.output_format == 'avif' and not avif_supported():
      raise ValueError('--output_format avif needs Pillow built with AVIF '
                       '(Pillow 11.3 or later from PyPI); upgrade Pillow or '
                       'choose jpg, png or webp.')
    return self

  @model_validator(mode='after')
  def _routing(self) -> 'JobSettings':
    if not self.route_model:
      if self.route:
        raise ValueError('--route needs --route_model (the router folder '
                         'written by stylize-train).')
      if self.route_model_sha256:
        raise ValueError('--route_model_sha256 needs --route_model (the '
                         'router whose digest it is).')
      return self
    if self.style:
      raise ValueError('--style and --route_model do not mix: with a '
                       'router, give the styles per class, --route '
                       'CLASS=STYLE.')
    if not self.route:
      raise ValueError('--route_model needs at least one --route '
                       'CLASS=STYLE; without one every image would be '
                       'skipped.')
    return self

  # -- derived --

  def output_identity(self) -> Dict[str, Any]:
    """The values of every Identity.VALUE setting: what, besides the files
    themselves, decides an output's bytes."""
    return {name: getattr(self, name) for name in fields_with(Identity.VALUE)}

  def outcome_identity(self) -> Dict[str, Any]:
    """output_identity() and the Identity.OUTCOME settings: what decides
    whether a pair fails (a remembered failure's identity)."""
    out = self.output_identity()
    out.update({name: getattr(self, name)
                for name in fields_with(Identity.OUTCOME)})
    return out


def field_extra(name: str) -> Dict[str, Any]:
  """A field's flag extras: group, identity, metavar."""
  return JobSettings.model_fields[name].json_schema_extra


def fields_with(identity: Identity) -> List[str]:
  return [name for name in JobSettings.model_fields
          if field_extra(name)['identity'] == identity.value]


def check_declarations(model: type = JobSettings) -> None:
  """Every field says its help, group and part in the identity (checked at
  import: a flag added without them cannot ship).

  Raises:
    TypeError: naming the field declared without setting().
  """
  for name, info in model.model_fields.items():
    extra = info.json_schema_extra or {}
    if extra.get('group') not in GROUPS or extra.get('identity') not in {
        i.value for i in Identity} or not info.description:
      raise TypeError(f'JobSettings.{name} must be declared with setting() '
                      '(help, group, identity)')


check_declarations()


# ------------------------------------------------------------- messages --

def _bounds(name: str) -> Dict[str, Any]:
  bounds = {}
  for meta in JobSettings.model_fields[name].metadata:
    for key in ('ge', 'le', 'gt', 'lt'):
      if getattr(meta, key, None) is not None:
        bounds[key] = getattr(meta, key)
  return bounds


def _bound_message(flag: str, name: str, value: Any) -> str:
  bounds = _bounds(name)
  low, high = bounds.get('ge'), bounds.get('le')
  if low is not None and high is not None:
    return f'{flag} must be between {low} and {high}, got {value}.'
  if low is not None:
    return f'{flag} must be at least {low}, got {value}.'
  if bounds.get('gt') is not None:
    return f'{flag} must be more than {bounds["gt"]}, got {value}.'
  return f'{flag} must be at most {high}, got {value}.'


def config_error(error: pydantic.ValidationError) -> ConfigError:
  """The first problem pydantic found, phrased for the command line."""
  first = error.errors()[0]
  loc = first.get('loc') or ()
  message = first.get('msg', '')
  if loc:
    name = str(loc[0])
    flag = f'--{name}'
    if first['type'] in ('greater_than_equal', 'less_than_equal',
                         'greater_than', 'less_than'):
      return ConfigError(_bound_message(flag, name, first.get('input')))
    if first['type'] == 'literal_error':
      choices = typing.get_args(JobSettings.model_fields[name].annotation)
      return ConfigError(f'{flag}: invalid choice: {first.get("input")!r} '
                         f'(choose from {", ".join(choices)})')
    return ConfigError(f'{flag}: {message}')
  # A rule between settings: its own message.
  return ConfigError(message.removeprefix('Value error, '))


def from_values(values: Dict[str, Any]) -> JobSettings:
  """JobSettings from flag values (None for a flag not given).

  Raises:
    ConfigError: a value out of its bounds or a broken rule, phrased for
      the command line.
  """
  given = {k: v for k, v in values.items()
           if k in JobSettings.model_fields and v is not None}
  try:
    return JobSettings(**given)
  except pydantic.ValidationError as e:
    raise config_error(e) from None
