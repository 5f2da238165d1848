"""The job's command line: StylizeOptions, --help, unknown-flag errors.

Every flag is declared once, as a field of JobSettings
(beam_jobs/settings.py); add_job_flags() turns those fields into argparse
flags, which StylizeOptions (what Beam parses and `options.view_as` reads),
the --help page and the unknown-flag check all use. Beam's own flags
(--runner, --project, --direct_num_workers, ...) are Beam's: they pass
through, and a flag that is neither Beam's nor the job's is an error that
names the nearest real flag.
"""

import argparse
import difflib
import textwrap
import typing
from typing import Iterable, List, Optional, Sequence, Set

from apache_beam.options.pipeline_options import (PipelineOptions,
                                                  TestOptions)

from beam_jobs import settings
from beam_jobs.errors import ConfigError

PROG = 'stylize'

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


def _argparse_kwargs(name: str, info) -> dict:
  """One JobSettings field -> add_argument keyword arguments."""
  extra = info.json_schema_extra
  kwargs = {'help': info.description, 'default': info.default}
  annotation = info.annotation
  args = typing.get_args(annotation)
  if annotation is bool:
    # A switch: bare, or with =true / =false.
    kwargs.update(nargs='?', const=True, type=boolean, metavar='BOOL')
    return kwargs
  if typing.get_origin(annotation) is typing.Literal:
    kwargs['choices'] = list(args)
    return kwargs
  inner = [a for a in args if a is not type(None)]
  base = inner[0] if inner else annotation
  if typing.get_origin(base) in (list, List):
    kwargs['action'] = 'append'
    base = typing.get_args(base)[0]
  if base in (int, float):
    kwargs['type'] = base
  if extra.get('metavar'):
    kwargs['metavar'] = extra['metavar']
  return kwargs


def add_job_flags(parser) -> None:
  """Declares every job flag on parser, in the groups --help shows, from
  JobSettings (beam_jobs/settings.py): the one declaration of each flag."""
  groups = {title: parser.add_argument_group(
      title, settings.GROUP_DESCRIPTIONS.get(title))
            for title in settings.GROUPS}
  for name, info in settings.JobSettings.model_fields.items():
    groups[info.json_schema_extra['group']].add_argument(
        f'--{name}', **_argparse_kwargs(name, info))


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


class _OptionsParser(argparse.ArgumentParser):
  """A parser PipelineOptions classes can declare their flags on.

  Each class declares its flags in _add_argparse_args(parser), the hook
  Beam documents for PipelineOptions subclasses; Beam's own classes also
  call parser.add_value_provider_argument (for template parameters), which
  here is a plain flag: only names and value types are checked.
  """

  def add_value_provider_argument(self, *args, **kwargs):
    return self.add_argument(*args, **kwargs)


def _names(cls_list: Iterable[type]) -> Set[str]:
  """Flag names (without '--') and dests the classes declare."""
  names = set()
  for cls in cls_list:
    parser = _OptionsParser(allow_abbrev=False, add_help=False)
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
  if not near:
    hint = '.'
  elif near == name.lstrip('-').replace('-', '_').lower():
    hint = f'; did you mean --{near}? (flag names use underscores)'
  else:
    hint = f'; did you mean --{near}?'
  return (f'unknown flag {name}{hint} See {prog} --help for the job\'s '
          'flags; Beam\'s own flags (--runner, --project, ...) pass through.')


class _StrictParser(_OptionsParser):
  """Every option class's flags, raising ConfigError instead of exiting."""

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
