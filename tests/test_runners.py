"""Beyond the local runner: PortableRunner through Beam's job service with an
EXTERNAL SDK worker pool, and Dataflow template creation on the GCS emulator."""

import json
import os
import socket
import subprocess
import sys
import threading
import types

import pytest
from apache_beam.io.filesystems import FileSystems

from beam_jobs.stylize import main
from tests.conftest import CHILD_MODEL, ROOT, gradient, shared_path, upload
from tests.test_end_to_end import manifest_rows, summary


# Both services bind port 0 and say which port they got (no free-port probe
# that another process could take in between): the job service through its
# own --port_file; the worker pool, whose CLI only logs it, through this
# launcher, which starts Beam's pool servicer and writes its address.
_POOL = """
import os, sys, threading
from apache_beam.runners.worker.worker_pool_main import (
    BeamFnExternalWorkerPoolServicer)
address, server = BeamFnExternalWorkerPoolServicer.start(use_process=True,
                                                         port=0)
with open(sys.argv[1] + '.tmp', 'w') as f:
  f.write(address)
os.rename(sys.argv[1] + '.tmp', sys.argv[1])
threading.Event().wait()
"""

# Code the SDK workers run at start-up (sitecustomize): while the file named
# by STYLIZE_TEST_HOLD exists, encoding waits (the job is held in the middle
# of its work, so a test can look at it without racing it).
_HOLD = """
import os, threading
if os.environ.get('STYLIZE_TEST_HOLD'):
  from transforms import encode
  _real = encode.encode_image
  def _held(*args, **kwargs):
    while os.path.exists(os.environ['STYLIZE_TEST_HOLD']):
      threading.Event().wait(0.05)
    return _real(*args, **kwargs)
  encode.encode_image = _held
"""


def _port_from(path, proc, timeout: float = 120) -> str:
  """The port a service wrote to `path` (an event: the file appears whole)."""
  waited = 0.0
  while not os.path.exists(path):
    if proc.poll() is not None:
      raise RuntimeError(f'process exited with {proc.returncode}')
    if waited > timeout:
      raise TimeoutError(f'no port written to {path}')
    threading.Event().wait(0.05)
    waited += 0.05
  with open(path) as f:
    return f.read().strip().rsplit(':', 1)[-1]


@pytest.fixture(scope='module')
def portable(tmp_path_factory):
  """Beam's local job service and an EXTERNAL worker pool on loopback
  ports of their own choosing, both started with this venv's Python (the
  pool starts its SDK worker processes with the same interpreter, so they
  import this package). Yields the runner flags and the hold file."""
  logs = tmp_path_factory.mktemp('portable')
  site = logs / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(_HOLD)
  hold = logs / 'hold'
  # The pool starts SDK workers as a bare 'python': this venv's must come
  # first on PATH.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
             STYLIZE_TEST_HOLD=str(hold),
             PYTHONPATH=os.pathsep.join(
                 [str(site), str(ROOT), os.environ.get('PYTHONPATH', '')]),
             PATH=os.pathsep.join([os.path.dirname(sys.executable),
                                   os.environ.get('PATH', '')]))
  procs = [
      subprocess.Popen(
          [sys.executable, '-m',
           'apache_beam.runners.portability.local_job_service_main',
           '--port', '0', '--port_file', str(logs / 'job.port'),
           '--staging_dir', str(logs / 'staging')],
          cwd=ROOT, env=env, stdout=open(logs / 'job.log', 'wb'),
          stderr=subprocess.STDOUT),
      subprocess.Popen(
          [sys.executable, '-c', _POOL, str(logs / 'pool.port')],
          cwd=ROOT, env=env, stdout=open(logs / 'pool.log', 'wb'),
          stderr=subprocess.STDOUT),
  ]
  try:
    job_port = _port_from(logs / 'job.port', procs[0])
    pool_port = _port_from(logs / 'pool.port', procs[1])
    yield types.SimpleNamespace(
        flags=['--runner=PortableRunner', f'--job_endpoint=localhost:{job_port}',
               '--environment_type=EXTERNAL',
               f'--environment_config=localhost:{pool_port}'],
        hold=hold)
  finally:
    for p in procs:
      p.terminate()
    for p in procs:
      try:
        p.wait(timeout=20)
      except subprocess.TimeoutExpired:
        p.kill()


def _job(tmp_path, samples, n=4, broken=0, model=CHILD_MODEL):
  """A small job, run by the pool's SDK worker processes (CHILD_MODEL)."""
  inputs = tmp_path / 'in'
  inputs.mkdir()
  for i in range(n):
    gradient(40, 30, seed=i).save(inputs / f'p{i}.jpg')
  for i in range(broken):
    (inputs / f'broken{i}.jpg').write_bytes(b'not a jpeg')
  return ['--input', str(inputs), '--style',
          str(samples / 'style' / 'waves.jpg'), '--model', model,
          '--output', str(tmp_path / 'out'), '--max_size', '64']


@pytest.mark.slow
def test_portable_runner_runs_the_job_and_waits_on_request(
    portable, tmp_path, samples, capsys):
  code = main(_job(tmp_path, samples) + portable.flags + ['--wait'])
  out = capsys.readouterr().out
  assert code == 0, out
  assert 'ok 4' in out
  rows = manifest_rows(tmp_path / 'out')
  assert [r['status'] for r in rows] == ['ok'] * 4
  # The pipeline itself wrote the summary and the report.
  assert summary(tmp_path / 'out')['verdict'] == 'ok'
  assert (tmp_path / 'out' / 'report.html').exists()


@pytest.mark.slow
def test_portable_runner_submits_and_returns_without_wait(
    portable, tmp_path, samples, capsys):
  # The job is held before it encodes anything: the launcher returning
  # now shows that it did not wait for the job.
  portable.hold.touch()
  try:
    code = main(_job(tmp_path, samples) + portable.flags)
    out = capsys.readouterr().out
    assert code == 0 and 'submitted job' in out
    summary_path = tmp_path / 'out' / 'summary.json'
    assert not summary_path.exists()
  finally:
    portable.hold.unlink()
  # Released, the submitted job finishes on its own.
  waited = 0.0
  while not summary_path.exists() and waited < 300:
    threading.Event().wait(0.1)
    waited += 0.1
  assert json.loads(summary_path.read_text())['counts']['ok'] == 4


@pytest.mark.slow
def test_too_many_failures_fail_the_job_itself(portable, tmp_path, samples,
                                               capsys):
  code = main(_job(tmp_path, samples, n=1, broken=2) + portable.flags
              + ['--wait'])
  captured = capsys.readouterr()
  assert code == 1
  assert 'more than --max_failure_ratio' in captured.err
  assert summary(tmp_path / 'out')['verdict'] == 'too_many_failures'


@pytest.mark.slow
def test_dataflow_template_is_written_with_stages_and_image(
    gcs_emulator, samples, capsys):
  bucket = gcs_emulator()
  style = upload(samples / 'style' / 'waves.jpg', f'{bucket}/styles')
  upload(samples / 'content', f'{bucket}/photos')
  template = f'{bucket}/templates/stylize.json'
  image = 'europe-west1-docker.pkg.dev/proj/stylize/stylize:test'
  code = main([
      '--runner=DataflowRunner', '--project=test-project',
      '--region=europe-west1', f'--temp_location={bucket}/tmp',
      f'--staging_location={bucket}/staging',
      f'--template_location={template}', f'--sdk_container_image={image}',
      '--sdk_location=container', '--input', f'{bucket}/photos',
      '--style', style, '--model', 'builtin', '--output', f'{bucket}/out'])
  out = capsys.readouterr().out
  assert code == 0, out
  assert f'template written to {template}' in out
  with FileSystems.open(template) as f:
    spec = json.loads(f.read().decode('utf-8'))
  assert json.dumps(spec).count(image) >= 1  # The workers' container.
  # The staged job graph (Runner v2 stages the pipeline proto beside the
  # template) holds every stage of the job and the same container.
  from apache_beam.portability.api import beam_runner_api_pb2
  staged = [m.path for m in FileSystems.match(
      [f'{bucket}/staging/**/pipeline.pb'])[0].metadata_list]
  assert len(staged) == 1
  with FileSystems.open(staged[0]) as f:
    graph = beam_runner_api_pb2.Pipeline.FromString(f.read())
  names = {t.unique_name for t in graph.components.transforms.values()}
  for stage in ('ListInputs', 'SkipDone', 'ReadAndDecode', 'Stylize',
                'EncodeAndWrite', 'WriteManifest', 'WriteReport', 'Verdict'):
    assert stage in names, stage
  payloads = [e.payload for e in graph.components.environments.values()]
  assert any(image.encode() in p for p in payloads)
  # Nothing ran: no outputs, no summary.
  assert not FileSystems.exists(f'{bucket}/out/summary.json')


@pytest.mark.slow
def test_remote_launcher_needs_no_tensorflow(portable, tmp_path, samples):
  """The launcher for a remote runner checks the job without importing
  TensorFlow (no model download, no model run), even for a TensorFlow
  model."""
  argv = _job(tmp_path, samples, model='builtin') + portable.flags
  code = ('import json, sys\n'
          'from beam_jobs.stylize import run\n'
          f'result = run({argv!r}, wait=False)\n'
          'print(json.dumps({"tf": "tensorflow" in sys.modules, '
          '"waited": result.waited}))\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, text=True,
                        capture_output=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
      'tf': False, 'waited': False}


@pytest.mark.slow
def test_a_model_that_cannot_stylize_fails_in_the_workers_setup(
    portable, tmp_path, samples, capsys):
  """A SavedModel that exists (the light launch check passes) but is no
  style-transfer model fails the job in the workers' setup(), with the
  same clear reason a local launch gives."""
  features = shared_path('models', 'magenta-style-features-v1-256')
  argv = _job(tmp_path, samples, n=1, model=str(features)) + portable.flags + [
      '--wait']
  code = main(argv)
  err = capsys.readouterr().err
  assert code == 1
  assert 'failed on a 64x64 test image' in err


def test_a_failed_job_names_the_workers_own_error():
  """The job service's last error is often 'Error running pipeline.'; the
  reason a user can act on is in the worker's traceback before it."""
  from beam_jobs.runners import worker_reason
  traceback = (
      'Traceback (most recent call last):\n'
      '  File "/x/transforms/stylize.py", line 84, in try_model\n'
      '    raise ModelLoadError(\n'
      "transforms.models.base.ModelLoadError: --model '/m' loaded but "
      'failed on a 64x64 test image: ValueError: no matching function\n'
      '  Positional arguments (2 total):\n'
      " [while running 'Stylize/RunModel/ParDo(StylizeBatches)']\n")
  assert worker_reason(['Pipeline job-1 failed in state FAILED: Error '
                        'running pipeline.', traceback,
                        'Error running pipeline.']) == (
      "ModelLoadError: --model '/m' loaded but failed on a 64x64 test image: "
      'ValueError: no matching function')
  # Errors from other code (TF, Beam) are left to the runner's own message.
  assert worker_reason(['ValueError: bad', 'RuntimeError: x']) is None
