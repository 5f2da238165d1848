"""Waves: a large local run processed as several pipelines, one after another.

Beam's in-process runner holds every element of a grouping step in memory
(about 2 KB per (input, style) pair in this job, see README "Archive
scale"), so one local pipeline over 10^6 pairs grows by gigabytes. A local
run over more than --wave_pairs pairs is therefore split by input key into
waves (beam_jobs/waves.py decides how many); each wave is a whole pipeline
over its share of the inputs, and only one wave's elements are held at a
time. Distributed runners do not need this and never use it.

A wave keeps what must span the run in small state files in a local folder
of the launcher (the wave runs on this machine): the summary's counts, the
manifest shard names, and the report's bounded samples. Each wave merges
the state of the waves before it, so after the last wave summary.json,
report.html and the manifest describe the whole run, as a single pipeline
would have.
"""

import dataclasses
import os
import pickle
import zlib
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class Wave:
  """Wave `index` (0-based) of `count`; state kept in local `state_dir`."""
  index: int
  count: int
  state_dir: str

  @property
  def first(self) -> bool:
    return self.index == 0

  @property
  def last(self) -> bool:
    return self.index == self.count - 1

  def holds(self, key: str) -> bool:
    """Whether the input with this key belongs to this wave. A stable hash
    (CRC-32, not Python's per-process hash()), so every worker process and
    every wave agree, and all aliases of a file (one key) share a wave."""
    return in_wave(key, self.index, self.count)

  def shard_tag(self) -> str:
    """Part of this wave's manifest shard names: manifest-w0002-of-0005-...
    (more digits past 9999 waves; layout.MANIFEST_SHARD takes 4 or more)."""
    return f'w{self.index:04d}-of-{self.count:04d}'

  def _path(self, name: str, index: int) -> str:
    # One file per wave: a step run twice within a wave reads the same
    # earlier state, so it can never merge its own counts twice.
    return os.path.join(self.state_dir, f'{name}-w{index:04d}.pkl')

  def load(self, name: str) -> Optional[Any]:
    """What the waves before this one saved under name (None for the first).

    Raises:
      FileNotFoundError: a later wave without its predecessor's state (the
        summary would otherwise count one wave and read as a whole run).
    """
    if self.first:
      return None
    path = self._path(name, self.index - 1)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f'wave {self.index + 1} of {self.count}: the state of the waves '
          f'before it is missing ({path}); the launcher and its local workers '
          'must share this folder')
    with open(path, 'rb') as f:
      return pickle.load(f)

  def save(self, name: str, value: Any) -> None:
    """State for the next wave, written whole (storage.durable_write)."""
    from transforms.storage import durable_write  # pylint: disable=import-outside-toplevel
    durable_write(self._path(name, self.index), pickle.dumps(value))


def in_wave(key: str, index: int, count: int) -> bool:
  if count <= 1:
    return True
  return zlib.crc32(key.encode('utf-8', 'surrogatepass')) % count == index
