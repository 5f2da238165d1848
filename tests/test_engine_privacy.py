"""The engine sends nothing anywhere: OpenVINO's converter would send usage
telemetry and write a client id and counters to ~/intel/."""

import os
import subprocess
import sys

from tests.conftest import ROOT, shared_path

CONVERT = '''
import sys
from transforms.models.loader import load_stylizer
s = load_stylizer(sys.argv[1], engine='openvino', precision='f32')
assert s.engine == 'openvino', s.engine
print('telemetry module:', sys.modules.get('openvino_telemetry'))
'''


def test_converting_a_model_sends_no_telemetry(tmp_path):
  model = shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')
  home = tmp_path / 'home'
  home.mkdir()
  # A cache of its own: the conversion (made in a child process, once per
  # machine: engine/ov_ir.py) runs in this test, not found from another.
  cache = tmp_path / 'cache'
  env = dict(os.environ, HOME=str(home), STYLIZE_CACHE_DIR=str(cache))
  env.pop('CI', None)  # OpenVINO's telemetry is off under CI=true anyway.
  done = subprocess.run([sys.executable, '-c', CONVERT, str(model)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stderr
  assert 'telemetry module: None' in done.stdout
  assert list((cache / 'openvino').glob('*/transfer.xml'))  # Converted.
  assert not (home / 'intel').exists()  # No client id or counters.
