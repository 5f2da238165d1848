"""What this CPU can do, and --engine / --precision 'auto' made concrete.

Every function takes what it decides on as arguments (the CPU's flags,
OpenVINO's OPTIMIZATION_CAPABILITIES, whether OpenVINO imports), with the
machine's own values as defaults, so tests can simulate any CPU.
"""

import functools
import logging
from typing import FrozenSet, Iterable, Optional

logger = logging.getLogger(__name__)

ENGINES = ('auto', 'openvino', 'tf')
PRECISIONS = ('auto', 'bf16', 'f32')

# /proc/cpuinfo flags of CPUs with native bf16 arithmetic: AMX tiles
# (Sapphire Rapids and later) or AVX-512 BF16 (Cooper Lake, Zen 4 and
# later). Without them OpenVINO would emulate bf16, slower than f32.
BF16_CPU_FLAGS = frozenset({'amx_bf16', 'avx512_bf16'})
# OpenVINO's name for the same thing in the CPU device's
# OPTIMIZATION_CAPABILITIES.
OV_BF16_CAPABILITY = 'BF16'


@functools.lru_cache(maxsize=1)
def cpu_flags() -> FrozenSet[str]:
  """The CPU's feature flags from /proc/cpuinfo (empty where unreadable)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


@functools.lru_cache(maxsize=1)
def openvino_capabilities() -> FrozenSet[str]:
  """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (empty without it)."""
  try:
    from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
    ov = import_openvino()
    return frozenset(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))
  except Exception:  # pylint: disable=broad-except
    return frozenset()


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
  try:
    from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
    import_openvino()
    return True
  except ImportError:
    return False


def has_bf16(flags: Optional[Iterable[str]] = None,
             ov_capabilities: Optional[Iterable[str]] = None) -> bool:
  """Whether bf16 runs natively: AMX or AVX-512 BF16.

  Args:
    flags: CPU flags (default: /proc/cpuinfo's). Decisive when non-empty.
    ov_capabilities: OpenVINO's OPTIMIZATION_CAPABILITIES, asked only when
      there are no flags (not Linux); default: the installed OpenVINO's.
  """
  flags = cpu_flags() if flags is None else frozenset(flags)
  if flags:
    return bool(BF16_CPU_FLAGS & flags)
  caps = (openvino_capabilities() if ov_capabilities is None
          else frozenset(ov_capabilities))
  return OV_BF16_CAPABILITY in caps


def resolve_engine(engine: str = 'auto',
                   ov_available: Optional[bool] = None) -> str:
  """'auto' -> 'openvino' where it imports, else 'tf'.

  Raises:
    ValueError: an unknown engine, or 'openvino' without OpenVINO installed.
  """
  if engine not in ENGINES:
    raise ValueError(f'--engine must be one of {ENGINES}, not {engine!r}')
  if engine == 'tf':
    return engine  # OpenVINO is not even imported (its import costs 18 MB).
  ov_available = openvino_available() if ov_available is None else ov_available
  if engine == 'auto':
    return 'openvino' if ov_available else 'tf'
  if engine == 'openvino' and not ov_available:
    raise ValueError('--engine openvino needs the openvino package '
                     '(pip install "openvino>=2025.0"); or use --engine tf.')
  return engine


def resolve_precision(precision: str = 'auto', engine: str = 'openvino',
                      bf16: Optional[bool] = None) -> str:
  """'auto' -> 'bf16' for OpenVINO on a CPU with bf16, else 'f32'.

  Args:
    precision: 'auto', 'bf16' or 'f32'.
    engine: a resolved engine ('openvino' or 'tf').
    bf16: whether the CPU has native bf16 (default: has_bf16()).

  TensorFlow runs f32 only (it is the reference). An explicit 'bf16' on a
  CPU without native bf16 runs f32, with a warning (OpenVINO would emulate
  it, slower than f32).

  Raises:
    ValueError: an unknown precision, or 'bf16' with engine 'tf'.
  """
  if precision not in PRECISIONS:
    raise ValueError(
        f'--precision must be one of {PRECISIONS}, not {precision!r}')
  if engine == 'tf':
    if precision == 'bf16':
      raise ValueError('--precision bf16 needs --engine openvino (or auto); '
                       'the TensorFlow engine runs f32.')
    return 'f32'
  bf16 = has_bf16() if bf16 is None else bf16
  if precision == 'auto':
    return 'bf16' if bf16 else 'f32'
  if precision == 'bf16' and not bf16:
    logger.warning('--precision bf16: this CPU has neither AMX nor AVX-512 '
                   'BF16, so the model runs in f32.')
    return 'f32'
  return precision


def resolve(engine: str = 'auto', precision: str = 'auto',
            ov_available: Optional[bool] = None,
            bf16: Optional[bool] = None):
  """(engine, precision), both concrete; see resolve_engine/precision."""
  engine = resolve_engine(engine, ov_available)
  return engine, resolve_precision(precision, engine, bf16)
