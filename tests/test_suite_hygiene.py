"""The test suite's own temporary folders (tests/conftest.py).

Found by running the formerly flaky tests 20 times while another test
session ran: each session used one folder per user and emptied it at its
end, so a session ending removed the files of one still running (the GCS
emulator's storage among them: buckets vanished mid-test). Each session now
has a folder of its own.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_a_second_session_leaves_this_sessions_files_alone():
  mine = pathlib.Path(tempfile.gettempdir())
  assert mine.name.startswith('session-'), mine  # This session's own.
  keep = mine / 'still-here.txt'
  keep.write_text('x')
  env = dict(os.environ)
  # A session of its own: as if started from another terminal.
  for name in ('STYLIZE_TEST_TMPDIR', 'PYTEST_XDIST_WORKER',
               'PYTEST_XDIST_TESTRUNUID', 'PYTEST_DEBUG_TEMPROOT'):
    env.pop(name, None)
  env['TMPDIR'] = str(mine.parent.parent)  # The same {tmp} as this session.
  other = subprocess.Popen(
      [sys.executable, '-m', 'pytest', '-q', '-n', '0', 'tests/test_identity.py'
       '::test_every_field_declares_its_flag_and_its_identity'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  out, _ = other.communicate(timeout=300)
  assert other.returncode == 0, out
  assert keep.read_text() == 'x'
  # The other session's folder is gone with it; this one's is still here.
  names = [p.name for p in mine.parent.iterdir()]
  assert mine.name in names
  assert not [n for n in names if n.startswith(f'session-{other.pid}-')]
