"""The job's flags, declared once: StylizeOptions, --help, unknown-flag errors.

Every flag is declared in one add_argument call below (in its help group);
StylizeOptions (what Beam parses and `options.view_as` reads), the --help
page and the unknown-flag check all use those declarations. Beam's own flags
(--runner, --project, --direct_num_workers, ...) are Beam's: they pass
through, and a flag that is neither Beam's nor the job's is an error that
names the nearest real flag.
"""

import argparse
import difflib
import textwrap
from typing import Iterable, List, Optional, Sequence, Set

from apache_beam.options.pipeline_options import (PipelineOptions,
                                                  TestOptions,
                                                  _BeamArgumentParser)

from beam_jobs.errors import ConfigError
from transforms.decode import DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS
from transforms.encode import FORMATS
from transforms.models.loader import DEFAULT_MODEL
from transforms.styles import DEFAULT_STYLE_SIZE

PROG = 'stylize'

# 2048 x 2048: the Magenta network on 4 MP needs about 2 GB; a 12 MP phone
# photo untiled would need three times that, a 100 MP one 25 times.
DEFAULT_MAX_UNTILED_PIXELS = 2048 * 2048
# Local runs hold about 2 KB per (input, style) pair in Beam's grouping steps
# (README "Archive scale"): waves of 200,000 pairs bound that near 0.4 GB.
DEFAULT_WAVE_PAIRS = 200_000
MIN_UNTILED_PIXELS = 256 * 256

BEAM_FLAGS_URL = ('https://beam.apache.org/releases/pydoc/current/'
                  'apache_beam.options.pipeline_options.html')


def boolean(text) -> bool:
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


def _switch(group, flag: str, help_text: str) -> None:
  """A boolean flag: bare, or with =true / =false."""
  group.add_argument(flag, nargs='?', const=True, default=False,
                     type=boolean, metavar='BOOL', help=help_text)


def add_job_flags(parser) -> None:
  """Declares every job flag on parser, in the groups --help shows."""
  g = parser.add_argument_group('inputs')
  g.add_argument(
      '--input', action='append', default=None, metavar='PATH',
      help='Image file, folder (every image below it, recursively) or glob; '
      'local or gs://. Repeatable.')
  g.add_argument(
      '--input_list', action='append', default=None, metavar='FILE',
      help='Text file with one image path or URI per line ("#" comments and '
      'blank lines ignored; relative entries are relative to the file). '
      'Repeatable.')
  g.add_argument(
      '--max_input_bytes', type=int, default=DEFAULT_MAX_INPUT_BYTES,
      metavar='N', help='Larger input files fail without being read (a read '
      'never goes past this).')
  g.add_argument(
      '--max_input_pixels', type=int, default=DEFAULT_MAX_PIXELS, metavar='N',
      help='Inputs with more pixels fail as possible decompression bombs.')

  g = parser.add_argument_group('styles')
  g.add_argument(
      '--style', action='append', default=None, metavar='IMAGE',
      help='Style image; repeatable: each input is stylized with each style. '
      'IMAGE=W values form a blend (a.jpg=0.7 --style b.jpg=0.3), as does '
      'a.jpg=0.7,b.jpg=0.3 in one value.')
  g.add_argument(
      '--style_size', type=int, default=DEFAULT_STYLE_SIZE, metavar='PX',
      help='Side of the square the style image is centre-cropped and resized '
      'to.')
  g.add_argument(
      '--style_strength', type=float, default=1.0, metavar='W',
      help='0-1: how much of the style to apply. TF Lite models mix style '
      'vectors (Magenta); SavedModels/TF Hub mix output and photo pixels.')
  _switch(g, '--preserve_colors',
          'Keep the photo\'s colours: stylized luminance, original chroma.')

  g = parser.add_argument_group('model')
  g.add_argument(
      '--model', default=DEFAULT_MODEL, metavar='HANDLE',
      help='"magenta-lite" (the embedded TF Lite network), "builtin" (a '
      'colour transfer, not a network), a SavedModel folder or .tar.gz, a '
      'TF Lite folder or pair "a.tflite,b.tflite" (local or gs://), or a TF '
      'Hub handle.')
  g.add_argument(
      '--model_sha256', default=None, metavar='HEX',
      help='Expected SHA-256 of the model (a file, or a folder\'s digest as '
      'printed in a mismatch error); checked before use.')
  g.add_argument(
      '--tfhub_mirror', default=None, metavar='URL',
      help='Fetch tfhub.dev handles from this mirror instead, e.g. '
      'https://hub.tensorflow.google.cn (default: $TFHUB_MIRROR).')

  g = parser.add_argument_group('output')
  g.add_argument('--output', default=None, metavar='FOLDER',
                 help='Output folder, local or gs:// (created when the first '
                 'file is written); not inside an input folder.')
  g.add_argument('--output_format', default='jpg', choices=sorted(FORMATS),
                 help='Output format.')
  g.add_argument('--jpeg_quality', type=int, default=90, metavar='Q',
                 help='Quality of jpg, webp and avif outputs, 1-100.')
  g.add_argument(
      '--max_size', type=int, default=1024, metavar='PX',
      help='Long side of the output in pixels; never upscales. 0 keeps the '
      'input size.')
  _switch(g, '--keep_gps',
          'Copy the GPS location into the outputs\' EXIF (dropped by '
          'default).')
  g.add_argument('--manifest_shards', type=int, default=0, metavar='N',
                 help='Number of manifest-*.jsonl files; 0 lets the runner '
                 'decide.')

  g = parser.add_argument_group('large images (tiling)')
  g.add_argument(
      '--tile_size', type=int, default=0, metavar='PX',
      help='Stylize images larger than this in overlapping tiles (bounds '
      'memory). 0: only where the model needs it (fixed-size TF Lite nets).')
  g.add_argument('--tile_overlap', type=int, default=64, metavar='PX',
                 help='Overlap between tiles, blended with feathering.')
  g.add_argument(
      '--max_untiled_pixels', type=int, default=DEFAULT_MAX_UNTILED_PIXELS,
      metavar='N', help='Images with more pixels (after --max_size) are '
      'stylized one at a time in tiles of sqrt(N) px, so memory stays '
      'bounded.')

  g = parser.add_argument_group('performance')
  g.add_argument('--batch_size', type=int, default=4, metavar='N',
                 help='Content images per model call (same-shape images).')
  g.add_argument(
      '--tf_threads', type=int, default=0, metavar='N',
      help='TF intra-op threads per worker process; 0: the cores divided by '
      'the local worker processes (TF default in-process, 1 on remote '
      'runners).')
  g.add_argument(
      '--io_threads', type=int, default=None, metavar='N',
      help='Threads per worker process that read, decode, encode and write '
      'images while the model runs (default: the cores, at most 8, on local '
      'runs; 2 on remote runners, which start one process per core; 0: one '
      'image at a time).')
  g.add_argument(
      '--wave_pairs', type=int, default=DEFAULT_WAVE_PAIRS, metavar='N',
      help='Local runs over more (input, style) pairs than this run in '
      'waves of about N pairs, one after another, so memory stays bounded '
      '(Beam\'s local runner holds every pair of a grouping step in memory). '
      '0: one wave. Distributed runners ignore it.')

  g = parser.add_argument_group('incremental runs')
  _switch(g, '--force',
          'Redo every (input, style) pair, even those an earlier run did.')

  g = parser.add_argument_group(
      'routing by kind of image',
      'A router made by stylize-train sends each image to its class\'s '
      'styles (instead of --style).')
  g.add_argument(
      '--route_model', default=None, metavar='FOLDER',
      help='Router folder written by stylize-train (local or gs://).')
  g.add_argument(
      '--route', action='append', default=None, metavar='CLASS=STYLE',
      help='STYLE as in --style (blends included). Repeatable, several per '
      'class; classes without one are skipped. One value may hold several, '
      'separated by ";".')

  g = parser.add_argument_group(
      'the run',
      'Beam\'s --dry_run lists the inputs and plans the work without loading '
      'the model or writing anything (it checks that the model exists, and '
      'its digest with --model_sha256).')
  g.add_argument('--config', default=None, metavar='YAML',
                 help='YAML file with any of these keys (and Beam\'s); the '
                 'command line wins.')
  g.add_argument(
      '--max_failure_ratio', type=float, default=0.05, metavar='R',
      help='Exit with code 1 (remote runners: fail the job) when more than '
      'this share of the manifest rows failed (0-1).')
  _switch(g, '--wait',
          'Remote runners: wait for the job and report like a local run '
          '(exit code included). Local runs always wait.')
  _switch(g, '--quiet',
          'No live progress line; periodic log lines instead (also when '
          'stderr is not a terminal).')


class StylizeOptions(PipelineOptions):
  """The job's own flags; Beam's flags (--runner, ...) pass through."""

  @classmethod
  def _add_argparse_args(cls, parser):
    add_job_flags(parser)


def is_dry_run(options: PipelineOptions) -> bool:
  """--dry_run is Beam's own flag (TestOptions); parse() lets it stand bare."""
  return boolean(options.view_as(TestOptions).dry_run or False)


# ------------------------------------------------------------------- help --

class _HelpFormatter(argparse.HelpFormatter):
  """Wraps each line of a description on its own (argparse would join them)
  and shows a flag's default where it has a meaningful one."""

  def _fill_text(self, text, width, indent):
    return '\n'.join(
        textwrap.fill(line, width, initial_indent=indent,
                      subsequent_indent=indent, break_long_words=False,
                      break_on_hyphens=False) if line else ''
        for line in text.splitlines())

  def _get_help_string(self, action):
    text = action.help or ''
    if (action.default not in (None, False, argparse.SUPPRESS) and
        action.option_strings and '%(default)' not in text):
      text += ' (default: %(default)s)'
    return text


def help_parser(prog: str = PROG) -> argparse.ArgumentParser:
  """The --help page: the job's flags by group, and where Beam's are."""
  parser = argparse.ArgumentParser(
      prog=prog, formatter_class=_HelpFormatter, allow_abbrev=False,
      description='Restyle photo archives with style-transfer models, as an '
      'Apache Beam batch job: every input is stylized with every style into '
      '--output, with a manifest, summary.json and report.html. Incremental: '
      'a rerun only does what is new or changed.',
      epilog='Beam\'s own flags pass through unchanged, e.g. --runner '
      '(DirectRunner, DataflowRunner, PortableRunner), --dry_run, '
      '--direct_running_mode, --direct_num_workers, --project, --region, '
      '--temp_location, --sdk_container_image, --job_endpoint, '
      '--environment_type. All of them:\n' + BEAM_FLAGS_URL + '\n\n'
      'Exit codes: 0 done (at most --max_failure_ratio of the pairs '
      'failed); 1 more failed, or the job failed; 2 a configuration error, '
      'found before any work.\n'
      'Example: stylize --input photos --style starry.jpg --output styled '
      '--model magenta-lite')
  add_job_flags(parser)
  return parser


def wants_help(argv: Sequence[str]) -> bool:
  return any(a in ('-h', '--help') for a in argv)


# ---------------------------------------------------------- unknown flags --

def _option_classes() -> List[type]:
  """Every PipelineOptions class Beam (and this job) declares, depth first."""
  found, stack = [], list(PipelineOptions.__subclasses__())
  while stack:
    cls = stack.pop(0)
    if cls not in found:
      found.append(cls)
      stack.extend(cls.__subclasses__())
  return found


def _names(cls_list: Iterable[type]) -> Set[str]:
  """Flag names (without '--') and dests the classes declare."""
  names = set()
  for cls in cls_list:
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
    for action in parser._actions:  # pylint: disable=protected-access
      names.add(action.dest)
      names.update(s.lstrip('-') for s in action.option_strings)
  return names


def job_flag_names() -> Set[str]:
  return _names([StylizeOptions])


def beam_flag_names() -> Set[str]:
  """Flags of Beam's own option classes (those of modules imported so far)."""
  return _names(c for c in _option_classes()
                if c.__module__.startswith('apache_beam'))


def known_option_names() -> Set[str]:
  """Everything a --config key or a flag may be called."""
  return job_flag_names() | beam_flag_names()


def nearest_flag(name: str, own: Iterable[str], beam: Iterable[str]
                 ) -> Optional[str]:
  """The flag a misspelt or dashed name most likely meant, or None.

  'max-size' -> 'max_size' (flags use underscores), 'max_szie' ->
  'max_size'; the job's own flags are preferred over Beam's.
  """
  own, beam = sorted(set(own)), sorted(set(beam))
  key = name.lstrip('-').replace('-', '_').lower()
  if key in own or key in beam:
    return key
  for pool, cutoff in ((own, 0.75), (own + beam, 0.6)):
    match = difflib.get_close_matches(key, pool, n=1, cutoff=cutoff)
    if match:
      return match[0]
  return None


def unknown_flag_message(token: str, own: Iterable[str], beam: Iterable[str],
                         prog: str = PROG) -> str:
  """The error for one unrecognised argument."""
  if not token.startswith('-'):
    return (f'unexpected argument {token!r}: every value belongs to a flag '
            f'(--name value or --name=value); see {prog} --help.')
  name = token.split('=', 1)[0]
  near = nearest_flag(name, own, beam)
  hint = f'; did you mean --{near}?' if near else ''
  if near and near == name.lstrip('-').replace('-', '_').lower():
    hint += ' (flag names use underscores)'
  return (f'unknown flag {name}{hint}. See {prog} --help for the job\'s '
          'flags; Beam\'s own flags (--runner, --project, ...) pass through.')


class _StrictParser(_BeamArgumentParser):
  """Beam's parser, raising ConfigError instead of exiting."""

  def error(self, message):
    if message.startswith('ambiguous option: '):  # As Beam's parser does.
      return
    raise ConfigError(message)


def check_flags(argv: Sequence[str], prog: str = PROG) -> None:
  """Every argument is one of the job's or Beam's flags, with a valid value.

  Beam itself drops unknown flags with at most a warning, so a misspelt
  flag (--max-size, --max_szie) would run the job with its default.

  Raises:
    ConfigError: the first unknown flag (naming the nearest real one), a
      stray value, or a value of the wrong type or out of its choices.
  """
  parser = _StrictParser(prog=prog, allow_abbrev=False, add_help=False)
  classes = _option_classes()
  for cls in classes:
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  _, unknown = parser.parse_known_args(list(argv))
  if unknown:
    flags = [u for u in unknown if u.startswith('-')]
    raise ConfigError(unknown_flag_message(
        (flags or unknown)[0], job_flag_names(), beam_flag_names(), prog))
