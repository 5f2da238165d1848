"""TensorFlow imported without its native start-up noise on the terminal.

TF 2.21's C++ code logs through absl before anyone calls
absl::InitializeLog(), and absl then writes every message to stderr whatever
TF_CPP_MIN_LOG_LEVEL says. A CPU run so prints, at import and at device set
up, lines such as

  WARNING: All log messages before absl::InitializeLog() is called are ...
  I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers on your ...
  E0000 00:00:... cuda_platform.cc:52] failed call to cuInit: INTERNAL: ...

No environment variable silences them, and absl cannot be configured from
Python; LiteRT adds 'INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.' for each interpreter it builds. So import_tensorflow() imports TF and
sets up its devices (and the TF Lite adapter builds its interpreters) with
file descriptor 2 pointed at a temporary file, then writes back to stderr
every line but the noise: absl's banner, INFO (and WARNING) lines that
TF_CPP_MIN_LOG_LEVEL (default here: 2) asks to hide, and the cuInit failure
on machines without an NVIDIA device (on a GPU machine it is a real error,
and stays). Anything else, and every Python exception, comes through as
before. Import and device set up happen once per process, so later imports
of tensorflow, tensorflow_hub or tf_keras print nothing.

A temporary file rather than a pipe: C++ writes during `import` happen with
the GIL held, so a reader thread could not drain a pipe, and a full pipe
would block the import.
"""

import glob
import os
import re
import sys
import tempfile
from typing import Callable, TypeVar

T = TypeVar('T')

LEVEL_ENV = 'TF_CPP_MIN_LOG_LEVEL'
DEFAULT_LEVEL = '2'

_BANNER = re.compile(
    r'^WARNING: All log messages before absl::InitializeLog\(\) is called '
    r'are written to STDERR$')
# absl: 'I0000 00:00:1795996993.778898   11365 cudart_stub.cc:31] ...';
# older TF: '2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...'
_ABSL_LINE = re.compile(
    r'^(?:(?P<a>[IWEF])\d{4} [\d:.]+\s+\d+ '
    r'|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<b>[IWEF]) )\S+:\d+\] ')
# TF Lite's (LiteRT's) own minimal logging, e.g. 'INFO: Created TensorFlow
# Lite XNNPACK delegate for CPU.' when an interpreter is built.
_LITE_INFO = re.compile(r'^INFO: ')
_CUINIT = re.compile(r'failed call to cuInit')
_SEVERITY = {'I': 0, 'W': 1, 'E': 2, 'F': 3}


def has_nvidia_device() -> bool:
  """Whether the machine has an NVIDIA GPU device node (driver loaded)."""
  return bool(glob.glob('/dev/nvidia[0-9]*'))


def min_level() -> int:
  """TF_CPP_MIN_LOG_LEVEL as a number (0 shows everything)."""
  try:
    return int(os.environ.get(LEVEL_ENV, DEFAULT_LEVEL))
  except ValueError:
    return int(DEFAULT_LEVEL)


def is_noise(line: str, level: int, gpu_machine: bool) -> bool:
  """Whether a native stderr line is start-up noise to drop."""
  if _BANNER.match(line):
    return True
  if _LITE_INFO.match(line):
    return level >= 1
  match = _ABSL_LINE.match(line)
  if not match:
    return False
  severity = _SEVERITY[match.group('a') or match.group('b')]
  if severity < level:
    return True
  return bool(_CUINIT.search(line)) and not gpu_machine


def filter_lines(text: str, level: int, gpu_machine: bool) -> str:
  """text without its noise lines (see is_noise)."""
  kept = [line for line in text.splitlines(keepends=True)
          if not is_noise(line.rstrip('\r\n'), level, gpu_machine)]
  return ''.join(kept)


def filtered_stderr(fn: Callable[[], T]) -> T:
  """Runs fn with fd 2 captured, then writes the lines that are not noise.

  Other threads' stderr output in the meantime is delayed, not lost. If fn
  raises, the captured lines are written first, then the exception goes on.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with tempfile.TemporaryFile() as capture:
      os.dup2(capture.fileno(), 2)
      try:
        return fn()
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        capture.seek(0)
        text = capture.read().decode('utf-8', 'replace')
        kept = filter_lines(text, min_level(), has_nvidia_device())
        if kept:
          os.write(2, kept.encode('utf-8'))
  finally:
    os.close(saved)


#: TF's thread cap (transforms.stylize.configure_tf_threads), applied when
#: TF is first imported here: a process that never needs TF (an OpenVINO
#: worker) does not import it to set its threads.
_tf_threads = [0]


def apply_tf_threads(tf, threads: int) -> None:
  """Caps TF's pools (before its first op; later, a logged no-op)."""
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
  except RuntimeError as e:
    import logging  # pylint: disable=import-outside-toplevel
    logging.getLogger(__name__).debug(
        'TF threads already fixed in this process: %s', e)


def cap_tf_threads(threads: int) -> None:
  """TF's pools get `threads` at once if TF is imported, else when it is."""
  _tf_threads[0] = threads
  if 'tensorflow' in sys.modules:
    # Through the import (which applies it): waits for a thread that is
    # still importing TF rather than using a half-imported module.
    import_tensorflow()


def _import_and_set_up_devices():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if _tf_threads[0]:
    apply_tf_threads(tf, _tf_threads[0])
  # Device set up (cuInit) happens once, at the first op or device query.
  tf.config.list_physical_devices()
  return tf


def import_tensorflow():
  """The tensorflow module, imported (once) with the native noise dropped."""
  os.environ.setdefault(LEVEL_ENV, DEFAULT_LEVEL)
  # Cheap once done (a device query of devices already set up).
  return filtered_stderr(_import_and_set_up_devices)


def _drop_known_worker_noise(record) -> bool:
  """Local worker processes warn that no main session was saved: by design
  (the package is imported instead; see beam_jobs.stylize.with_local_defaults)."""
  return 'No semi_persistent_directory found' not in record.getMessage()


def quiet_start() -> None:
  """What every command (stylize, stylize-train, stylize-inspect, the
  benchmarks) sets before TensorFlow or Beam start: TF's C++ INFO and
  WARNING lines hidden (TF_CPP_MIN_LOG_LEVEL, also for worker processes,
  which inherit it; import_tensorflow drops absl's start-up lines), gRPC's
  INFO lines (a line in every worker process that forks) hidden, and Beam's
  local job service's warning that no main session was saved dropped.
  Real errors still show."""
  import logging  # pylint: disable=import-outside-toplevel
  os.environ.setdefault(LEVEL_ENV, DEFAULT_LEVEL)
  os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
  job_service = logging.getLogger(
      'apache_beam.runners.portability.local_job_service')
  if _drop_known_worker_noise not in job_service.filters:
    job_service.addFilter(_drop_known_worker_noise)
