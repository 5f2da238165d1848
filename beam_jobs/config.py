"""--config YAML files merged into the command line (which wins)."""

from typing import List, Optional, Sequence

import yaml

from beam_jobs.errors import ConfigError
from beam_jobs.flags import (PROG, beam_flag_names, job_flag_names,
                             known_option_names, nearest_flag)


def _flag_present(argv: Sequence[str], key: str) -> bool:
  flag = f'--{key}'
  return any(a == flag or a.startswith(flag + '=') for a in argv)


def config_path(argv: Sequence[str]) -> Optional[str]:
  for i, arg in enumerate(argv):
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


def _unknown_keys_message(path: str, unknown: List[str]) -> str:
  own, beam = job_flag_names(), beam_flag_names()
  hints = []
  for key in unknown:
    near = nearest_flag(key, own, beam)
    hints.append(f'{key!r} (did you mean {near!r}?)' if near else repr(key))
  return (f'--config {path!r} has unknown key(s) {", ".join(hints)}; keys are '
          'the flag names without "--" (underscores, not dashes), e.g. input, '
          f'style, output, model; see {PROG} --help.')


def merge_config(argv: Sequence[str]) -> List[str]:
  """argv with the --config YAML's keys added where argv does not set them.

  A list value becomes a repeated flag; true becomes a bare flag; false and
  null are left out.

  Raises:
    ConfigError: unreadable file, not a mapping, or an unknown key (naming
      the nearest real one).
  """
  argv = list(argv)
  path = config_path(argv)
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
  unknown = sorted(str(k) for k in data if k not in known)
  if unknown:
    raise ConfigError(_unknown_keys_message(path, unknown))
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
