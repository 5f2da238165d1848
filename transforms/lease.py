"""One run per output folder: a lease with a heartbeat.

A run takes the lease on --output before any work and holds it to the end:

    {output}/.stylize/lease.json   run id, host, pid, start, last heartbeat

- Local folders: the file is created and replaced under an exclusive
  fcntl lock ({output}/.stylize/lease.lock), so two runs never both take
  it; gs://: the object is created with ifGenerationMatch=0 and replaced
  with ifGenerationMatch=<the generation read>, so the same holds without
  a lock server.
- The holder rewrites its heartbeat every HEARTBEAT_S seconds. A lease
  whose heartbeat is older than its expiry (MISSED_HEARTBEATS heartbeats)
  is stale and may be taken over; so is one held by a process of this host
  that no longer exists. --break_lease takes it over regardless.
- A second run finds the lease held and stops before any work (exit code 2)
  with a message naming the holder and how to clear a stale lease.
- Remote runs: the launcher takes the lease; the workers check it and keep
  its heartbeat (so a submitted job holds it after the launcher returns),
  and the job's last step releases it.
"""

import dataclasses
import json
import logging
import os
import socket
import threading
import time
from typing import Callable, Optional

from transforms import gcs, paths
from transforms.layout import STATE_DIR

logger = logging.getLogger(__name__)

LEASE_NAME = 'lease.json'
LOCK_NAME = 'lease.lock'
HEARTBEAT_S = 30.0
MISSED_HEARTBEATS = 10
# A job submitted to a remote runner: its workers may take many minutes to
# start and take over the heartbeat.
SUBMITTED_EXPIRY_S = 3600.0
FORMAT = 'stylize-lease-1'


class LeaseHeld(RuntimeError):
  """Another run holds the lease; the message names it and what to do."""


class LeaseLost(RuntimeError):
  """This run's lease was taken over by another run."""


@dataclasses.dataclass(frozen=True)
class LeaseInfo:
  """What lease.json holds."""
  run_id: str
  host: str
  pid: int
  started_at: float
  heartbeat_at: float
  expires_after_s: float
  process_start: str = ''
  holder: str = ''

  def to_bytes(self) -> bytes:
    return json.dumps(dict(dataclasses.asdict(self), format=FORMAT),
                      sort_keys=True, indent=1).encode('utf-8')

  @classmethod
  def from_bytes(cls, data: bytes) -> Optional['LeaseInfo']:
    try:
      d = json.loads(data.decode('utf-8'))
      d.pop('format', None)
      return cls(**d)
    except (ValueError, TypeError, UnicodeDecodeError):
      return None

  def expired(self, now: float) -> bool:
    return now - self.heartbeat_at > self.expires_after_s

  def gone(self) -> bool:
    """Held by a process of this host that no longer exists."""
    if self.host != socket.gethostname() or self.pid <= 0:
      return False
    start = process_start(self.pid)
    return start is None or bool(self.process_start and
                                 start != self.process_start)

  def describe(self, now: float) -> str:
    since = max(0, int(now - self.heartbeat_at))
    who = self.holder or f'pid {self.pid} on {self.host}'
    return (f'run {self.run_id} ({who}, started '
            f'{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))}, '
            f'last heartbeat {since}s ago)')


def process_start(pid: int) -> Optional[str]:
  """A process's start time (Linux: /proc/<pid>/stat, in clock ticks since
  boot), telling a live process from a later one that reuses its pid; None
  when there is no such process."""
  try:
    with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
      # The command name may hold spaces and ')': fields follow the last ')'.
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    pass
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return None
  except PermissionError:
    pass
  return ''


def lease_uri(output: str) -> str:
  return paths.join(output, STATE_DIR, LEASE_NAME)


class _LocalStore:
  """lease.json in a local folder, changed only under an exclusive lock."""

  def __init__(self, uri: str):
    self.uri = uri
    self._lock_path = os.path.join(os.path.dirname(uri), LOCK_NAME)

  def transact(self, change: Callable[[Optional[LeaseInfo]],
                                      Optional[LeaseInfo]]) -> None:
    """change(current) -> the lease to write (None: delete), under the lock;
    change may raise to leave the lease as it is."""
    import fcntl  # pylint: disable=import-outside-toplevel
    from transforms.storage import durable_write  # pylint: disable=import-outside-toplevel
    os.makedirs(os.path.dirname(self.uri), exist_ok=True)
    fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      try:
        with open(self.uri, 'rb') as f:
          current = LeaseInfo.from_bytes(f.read())
      except FileNotFoundError:
        current = None
      new = change(current)
      if new is not None:
        durable_write(self.uri, new.to_bytes())
      elif current is not None:
        os.remove(self.uri)
    finally:
      os.close(fd)  # Releases the lock.

  def read(self) -> Optional[LeaseInfo]:
    try:
      with open(self.uri, 'rb') as f:
        return LeaseInfo.from_bytes(f.read())
    except FileNotFoundError:
      return None


class _GcsStore:
  """lease.json as a GCS object, changed only if unchanged since read."""

  def __init__(self, uri: str):
    self.uri = uri

  def transact(self, change) -> None:
    for _ in range(5):
      try:
        data, generation = gcs.read(self.uri)
        current = LeaseInfo.from_bytes(data)
      except FileNotFoundError:
        current, generation = None, 0
      new = change(current)
      try:
        if new is not None:
          gcs.write(self.uri, new.to_bytes(), if_generation_match=generation)
        elif current is not None:
          gcs.delete(self.uri, if_generation_match=generation)
        return
      except gcs.PreconditionFailed:
        continue  # Changed between our read and write: decide again.
    raise LeaseHeld(f'{self.uri} keeps changing under this run; another '
                    'run is taking it.')

  def read(self) -> Optional[LeaseInfo]:
    try:
      return LeaseInfo.from_bytes(gcs.read(self.uri)[0])
    except FileNotFoundError:
      return None


def _store(uri: str):
  if uri.startswith('gs://'):
    return _GcsStore(uri)
  if paths.has_scheme(uri):
    return None
  return _LocalStore(uri)


class Lease:
  """This run's lease on an output folder (see the module docstring)."""

  def __init__(self, output: str, run_id: str,
               clock: Callable[[], float] = time.time,
               heartbeat_s: float = HEARTBEAT_S, holder: str = ''):
    self.uri = lease_uri(output)
    self.run_id = run_id
    self._clock = clock
    self._heartbeat_s = heartbeat_s
    self._holder = holder
    self._store = _store(self.uri)
    self._stop = threading.Event()
    self._thread = None
    self.lost: Optional[str] = None
    self._started = clock()

  @property
  def supported(self) -> bool:
    return self._store is not None

  def _info(self, expires_after_s: Optional[float] = None) -> LeaseInfo:
    return LeaseInfo(
        run_id=self.run_id, host=socket.gethostname(), pid=os.getpid(),
        started_at=self._started, heartbeat_at=self._clock(),
        expires_after_s=expires_after_s or
        self._heartbeat_s * MISSED_HEARTBEATS,
        process_start=process_start(os.getpid()) or '', holder=self._holder)

  def acquire(self, break_lease: bool = False,
              expires_after_s: Optional[float] = None) -> Optional[LeaseInfo]:
    """Takes the lease; returns the stale lease it replaced, if any.

    Raises:
      LeaseHeld: another run holds it (and it is not stale).
    """
    if self._store is None:
      logger.warning('No lease on %s: only local and gs:// outputs have '
                     'one; do not run two jobs on it at once.', self.uri)
      return None
    replaced = []

    def change(current: Optional[LeaseInfo]) -> LeaseInfo:
      replaced[:] = []
      if current is not None and current.run_id != self.run_id:
        now = self._clock()
        if not (break_lease or current.expired(now) or current.gone()):
          raise LeaseHeld(held_message(self.uri, current, now))
        replaced.append(current)
      return self._info(expires_after_s)

    self._store.transact(change)
    if replaced:
      logger.warning('Took over the lease on --output from %s (%s).',
                     replaced[0].describe(self._clock()),
                     'broken with --break_lease' if break_lease else
                     'it was stale')
    return replaced[0] if replaced else None

  def refresh(self, expires_after_s: Optional[float] = None) -> None:
    """Rewrites the heartbeat.

    Raises:
      LeaseLost: another run holds the lease now.
    """
    if self._store is None:
      return

    def change(current: Optional[LeaseInfo]) -> LeaseInfo:
      if current is None or current.run_id != self.run_id:
        raise LeaseLost(lost_message(self.uri, current, self._clock()))
      return dataclasses.replace(
          current, heartbeat_at=self._clock(),
          expires_after_s=expires_after_s or
          self._heartbeat_s * MISSED_HEARTBEATS)

    self._store.transact(change)

  def current(self) -> Optional[LeaseInfo]:
    """The lease as it stands (one read); None if nobody holds it."""
    return self._store.read() if self._store is not None else None

  def release(self) -> None:
    """Gives the lease up, if this run still holds it."""
    self.stop_heartbeat()
    if self._store is None:
      return

    def change(current: Optional[LeaseInfo]) -> Optional[LeaseInfo]:
      if current is not None and current.run_id != self.run_id:
        return current  # Not ours (any more): left as it is.
      return None

    try:
      self._store.transact(change)
    except Exception as e:  # pylint: disable=broad-except
      logger.warning('Could not release the lease %s: %s', self.uri, e)

  # -- heartbeat ---------------------------------------------------------

  def start_heartbeat(self) -> None:
    if self._store is None or self._thread is not None:
      return
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, daemon=True,
                                    name='stylize-lease')
    self._thread.start()

  def stop_heartbeat(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None

  def _beat(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      try:
        self.refresh()
      except LeaseLost as e:
        self.lost = str(e)
        logger.error('%s', e)
        return
      except Exception as e:  # pylint: disable=broad-except
        # A missed heartbeat (network); the next one may go through.
        logger.warning('Lease heartbeat failed: %s', e)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def keep_on_worker(output: str, run_id: str, heartbeat: bool) -> Lease:
  """A worker's side of the run's lease: it must hold this run's id (a
  lease nobody holds is taken: a classic template's job has no launcher
  to take it); with heartbeat (remote runners) this process keeps it alive
  until the job's last step releases it. Callers share one per process
  (apache_beam.utils.shared.Shared).

  Raises:
    LeaseLost: another run holds the lease.
  """
  lease = Lease(output, run_id, holder='the job\'s workers')
  if not lease.supported:
    return lease
  current = lease.current()
  if current is None:
    lease.acquire()
  elif current.run_id != run_id:
    raise LeaseLost(lost_message(lease.uri, current, time.time()))
  if heartbeat:
    lease.start_heartbeat()
  return lease


def release_at_end(output: str, run_id: str) -> None:
  """The job's last step on remote runners: gives the run's lease up."""
  Lease(output, run_id).release()


def held_message(uri: str, current: LeaseInfo, now: float) -> str:
  expiry = int(current.expires_after_s)
  return (f'--output is in use by another stylize {current.describe(now)}: '
          f'its lease is {uri}. Two runs on one output folder would '
          'overwrite each other\'s manifest and outputs, so this run stops '
          f'before any work. If that run is gone, its lease expires '
          f'{expiry}s after its last heartbeat (a run of this machine that '
          'no longer exists is noticed at once); to take over now, rerun '
          'with --break_lease.')


def lost_message(uri: str, current: Optional[LeaseInfo], now: float) -> str:
  who = current.describe(now) if current else 'nobody (it was deleted)'
  return (f'this run lost its lease on --output ({uri}): it is now held by '
          f'{who}. Outputs written from now on may mix with that run\'s.')
