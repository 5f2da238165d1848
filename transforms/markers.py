"""Done markers: one small JSON file per (style, input), replaced whole.

    {output}/.stylize/done/{style label}/{key}.{format}.json

holds what the last run that finished the pair made of it:
- status 'ok': the pair identity (transforms/identity.py) the output was
  made for, and the output's size and CRC32C. The output is written (and
  made durable) before its marker, so a marker never names an output that
  is not complete; a rerun skips the pair only when the marker holds the
  current identity and the output is there with that size (and, where the
  listing gives it, that CRC32C). A setting changed and changed back, or an
  output truncated by a crash, is therefore redone.
- status 'failed': a failure of the image itself (unreadable data, over a
  limit, refused by the model) with the identity it failed under (which
  also covers the limits); a rerun with the same input and settings lists
  it as a known failure without retrying it (--retry_failed retries).

Each write replaces the one marker of the pair (storage.durable_write), so
old markers never accumulate. Markers of the earlier format (an empty file
named `{key}.{format}.{sha1}`) are not trusted and are removed.
"""

import dataclasses
import json
from typing import Optional

OK = 'ok'
FAILED = 'failed'
FORMAT = 'stylize-marker-1'


@dataclasses.dataclass(frozen=True, slots=True)
class Marker:
  """What a marker file says (see the module docstring)."""
  status: str
  identity: str
  size: int = -1
  crc32c: str = ''
  error: str = ''
  run_id: str = ''
  engine: str = ''
  precision: str = ''

  def to_bytes(self) -> bytes:
    data = {'format': FORMAT, 'status': self.status,
            'identity': self.identity, 'run_id': self.run_id}
    if self.status == OK:
      data.update(size=self.size, crc32c=self.crc32c, engine=self.engine,
                  precision=self.precision)
    else:
      data['error'] = self.error
    return json.dumps(data, sort_keys=True).encode('utf-8')

  @classmethod
  def from_bytes(cls, data: bytes) -> Optional['Marker']:
    """The marker, or None for a file that is not one (e.g. truncated by a
    crash before the job wrote markers durably): then it counts as absent."""
    try:
      d = json.loads(data.decode('utf-8'))
      if d.get('format') != FORMAT or d.get('status') not in (OK, FAILED):
        return None
      return cls(status=d['status'], identity=str(d['identity']),
                 size=int(d.get('size', -1)), crc32c=str(d.get('crc32c', '')),
                 error=str(d.get('error', '')),
                 run_id=str(d.get('run_id', '')),
                 engine=str(d.get('engine', '')),
                 precision=str(d.get('precision', '')))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
      return None
