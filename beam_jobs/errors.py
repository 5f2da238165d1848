"""The error every launch-time configuration check raises."""


class ConfigError(ValueError):
  """A configuration mistake, found before any work; the message says the fix.

  The launchers print it as `PROG: error: MESSAGE` and exit with code 2.
  """
