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
import random
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
  """What lease.json holds.

  pid is 0 for a lease held by a job rather than one process (a job
  submitted to a remote runner: its workers keep the heartbeat); machine
  says where pid means something (machine_id()).
  """
  run_id: str
  host: str
  pid: int
  started_at: float
  heartbeat_at: float
  expires_after_s: float
  process_start: str = ''
  holder: str = ''
  machine: str = ''

  def to_bytes(self) -> bytes:
    return json.dumps(dict(dataclasses.asdict(self), format=FORMAT),
                      sort_keys=True, indent=1).encode('utf-8')

  @classmethod
  def from_bytes(cls, data: bytes) -> 'LeaseInfo':
    """The lease; one this version cannot read (another format, a damaged
    file) counts as held by an unknown run that never expires: only
    --break_lease takes it over."""
    try:
      d = json.loads(data.decode('utf-8'))
      if d.pop('format', None) == FORMAT:
        return cls(**d)
    except (ValueError, TypeError, UnicodeDecodeError):
      pass
    return cls(run_id='(unreadable lease)', host='?', pid=0, started_at=0.0,
               heartbeat_at=float('inf'), expires_after_s=0.0,
               holder='a lease file this version cannot read')

  def expired(self, now: float) -> bool:
    return now - self.heartbeat_at > self.expires_after_s

  def gone(self) -> bool:
    """Held by a process that no longer exists, as far as this process can
    tell: only for a process of this very machine, boot and pid namespace
    (a container sharing the host name has its own pids)."""
    if self.pid <= 0 or self.host != socket.gethostname() or (
        self.machine != machine_id()):
      return False
    start = process_start(self.pid)
    return start is None or bool(self.process_start and
                                 start != self.process_start)

  def describe(self, now: float) -> str:
    who = self.holder or f'pid {self.pid} on {self.host}'
    if self.heartbeat_at == float('inf'):
      return f'run {self.run_id} ({who})'
    since = max(0, int(now - self.heartbeat_at))
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


def machine_id() -> str:
  """This boot of this machine and this pid namespace (Linux), so that a
  pid is only judged where it means the same process; '' elsewhere."""
  try:
    with open('/proc/sys/kernel/random/boot_id', encoding='ascii') as f:
      boot = f.read().strip()
    return f'{boot}/{os.readlink("/proc/self/ns/pid")}'
  except OSError:
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
      current = self.read()
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
    except (FileNotFoundError, NotADirectoryError):
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
  """This run's lease on an output folder (see the module docstring).

  process: the lease is this process's (the launcher of a local run, or a
  launcher that waits for its remote job); False for a job's lease, kept by
  whichever of its workers is alive (pid 0: never judged gone).
  """

  def __init__(self, output: str, run_id: str,
               clock: Callable[[], float] = time.time,
               heartbeat_s: float = HEARTBEAT_S, holder: str = '',
               process: bool = True):
    self.uri = lease_uri(output)
    self.run_id = run_id
    self._clock = clock
    self._heartbeat_s = heartbeat_s
    self._holder = holder
    self._process = process
    self._store = _store(self.uri)
    self._stop = threading.Event()
    self._thread = None
    self._checked_at = None
    self.lost: Optional[str] = None
    self._started = clock()

  @property
  def supported(self) -> bool:
    return self._store is not None

  def _info(self, expires_after_s: Optional[float] = None) -> LeaseInfo:
    mine = self._process
    return LeaseInfo(
        run_id=self.run_id, host=socket.gethostname(),
        pid=os.getpid() if mine else 0,
        started_at=self._started, heartbeat_at=self._clock(),
        expires_after_s=expires_after_s or
        self._heartbeat_s * MISSED_HEARTBEATS,
        process_start=(process_start(os.getpid()) or '') if mine else '',
        holder=self._holder, machine=machine_id() if mine else '')

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

  def refresh(self, expires_after_s: Optional[float] = None,
              if_older_than: float = 0.0) -> None:
    """Rewrites the heartbeat (only if it is older than if_older_than
    seconds: many workers of one job then write it about once a period).

    Raises:
      LeaseLost: another run holds the lease now, or nobody does.
    """
    if self._store is None:
      return

    def change(current: Optional[LeaseInfo]) -> LeaseInfo:
      if current is None or current.run_id != self.run_id:
        raise LeaseLost(lost_message(self.uri, current, self._clock()))
      if self._clock() - current.heartbeat_at < if_older_than:
        return current
      return dataclasses.replace(
          current, heartbeat_at=self._clock(),
          expires_after_s=expires_after_s or
          self._heartbeat_s * MISSED_HEARTBEATS)

    self._store.transact(change)

  def current(self) -> Optional[LeaseInfo]:
    """The lease as it stands (one read); None if nobody holds it."""
    return self._store.read() if self._store is not None else None

  def check_recent(self, max_age_s: Optional[float] = None) -> None:
    """Raises LeaseLost unless this run held the lease when last looked at,
    at most max_age_s ago (default: every time for a local folder, where a
    read costs microseconds; every 10 s on GCS), so a check before every
    write costs almost nothing."""
    if self._store is None:
      return
    if max_age_s is None:
      max_age_s = 10.0 if isinstance(self._store, _GcsStore) else 0.0
    now = time.monotonic()
    if self._checked_at is not None and now - self._checked_at < max_age_s:
      if self.lost:
        raise LeaseLost(self.lost)
      return
    self._checked_at = now
    current = self._store.read()
    if current is None or current.run_id != self.run_id:
      self.lost = lost_message(self.uri, current, self._clock())
      raise LeaseLost(self.lost)

  def release(self, expect_held: bool = True) -> None:
    """Gives the lease up, if this run still holds it; if another run took
    it over meanwhile (or removed it: only its holder may), says so in
    self.lost: the run must not pass. expect_held=False where the job's own
    last step may have released it first (a waited-for remote job)."""
    self.stop_heartbeat()
    if self._store is None:
      return

    def change(current: Optional[LeaseInfo]) -> Optional[LeaseInfo]:
      if (current is not None and current.run_id != self.run_id) or (
          current is None and expect_held):
        self.lost = self.lost or lost_message(self.uri, current,
                                              self._clock())
        return current  # Not ours: left as it is.
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
    # A job's workers each look every period (with jitter) and write only
    # when the last heartbeat is half a period old.
    period = self._heartbeat_s
    min_age = 0.0 if self._process else period / 2
    while not self._stop.wait(period * (1.0 if self._process else
                                        random.uniform(0.75, 1.25))):
      try:
        self.refresh(if_older_than=min_age)
      except LeaseLost as e:
        current = self.current()
        if current is None and not self._process:
          # The job's last step released it: this worker is done.
          logger.info('The lease on %s was released.', self.uri)
        else:
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


def keep_on_worker(output: str, run_id: str, heartbeat: bool,
                   take: bool = False) -> Lease:
  """A worker's side of the run's lease: it must hold this run's id; with
  heartbeat (remote runners) this process keeps it alive until the job's
  last step releases it. take: a lease nobody holds is taken (a classic
  template's job has no launcher to take it); otherwise a missing lease
  means another run took the folder over and finished. Callers share one
  per process (apache_beam.utils.shared.Shared).

  Raises:
    LeaseLost: another run holds the lease, or (without take) nobody does.
  """
  lease = Lease(output, run_id, holder='the job\'s workers', process=False)
  if not lease.supported:
    return lease
  current = lease.current()
  if current is None and take:
    lease.acquire()
  elif current is None or current.run_id != run_id:
    raise LeaseLost(lost_message(lease.uri, current, time.time()))
  if heartbeat:
    lease.start_heartbeat()
  return lease


@dataclasses.dataclass(frozen=True)
class WorkerLease:
  """How a run's workers treat its lease: run id; keep its heartbeat
  (remote runners); take it if nobody holds it (classic templates)."""
  run_id: str
  heartbeat: bool = False
  take: bool = False


def worker_lease(shared_handle, output: str, spec: WorkerLease) -> Lease:
  """keep_on_worker(), once per worker process (shared_handle: a DoFn's
  apache_beam.utils.shared.Shared)."""
  return shared_handle.acquire(
      lambda: keep_on_worker(output, spec.run_id, spec.heartbeat, spec.take),
      tag=('lease', output, spec.run_id))


def release_at_end(output: str, run_id: str) -> None:
  """The job's last step on remote runners: gives the run's lease up.

  Raises:
    LeaseLost: another run took it over while this one ran (the job must
      not pass for a success).
  """
  lease = Lease(output, run_id, process=False)
  lease.release(expect_held=True)
  if lease.lost:
    raise LeaseLost(lease.lost)


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
