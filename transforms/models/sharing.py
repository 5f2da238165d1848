"""One load per run for what a launcher loads more than once: the launcher
loads a model to check it, and on Beam's in-process runner the workers are
the same process (stylize: the model, the router; stylize-train: the
feature model, which the launcher also builds the router's model around).

Not Beam's apache_beam.utils.shared.Shared: that holds one object per Shared
instance, made by a DoFn, which the launcher (no DoFn) cannot reach, and it
lets go of an object as soon as nobody holds it, between the check and the
workers' setup. Here a run turns sharing on for its length
(sharing_loaded_models) and loaders ask for a key (shared_load); off again,
and the models let go, when the run ends. Worker processes (other runners,
multi_processing) are other processes: there sharing is off, a load a load.
"""

import contextlib
import threading
from typing import Any, Callable, Dict, Hashable, Iterator, Optional, TypeVar

T = TypeVar('T')

_shared: Optional[Dict[Hashable, Any]] = None
_key_locks: Dict[Hashable, threading.Lock] = {}
_depth = 0  # Nested runs (a run inside a run) share the outer run's loads.
_lock = threading.Lock()  # Guards the three above; not held while loading.


@contextlib.contextmanager
def sharing_loaded_models() -> Iterator[None]:
  """For the length of a run: what is loaded under one key (shared_load)
  is loaded once."""
  global _shared, _depth  # pylint: disable=global-statement
  with _lock:
    if _depth == 0:
      _shared = {}
      _key_locks.clear()
    _depth += 1
  try:
    yield
  finally:
    with _lock:
      _depth -= 1
      if _depth == 0:
        _shared = None
        _key_locks.clear()


def shared_load(key: Optional[Hashable], load: Callable[[], T]) -> T:
  """load(), or what an earlier call with this key loaded while sharing is
  on. key None: always load (nothing identifies the thing well enough).
  One load per key at a time (the others wait for it, then share it); loads
  under other keys go on meanwhile. A load that raises is not kept."""
  with _lock:
    shared = _shared
    if shared is None or key is None:
      key_lock = None
    else:
      key_lock = _key_locks.setdefault(key, threading.Lock())
  if key_lock is None:
    return load()
  with key_lock:
    with _lock:
      if key in shared:
        return shared[key]
    loaded = load()
    with _lock:
      shared[key] = loaded
    return loaded
