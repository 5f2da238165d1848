"""Packaging: installed console scripts work, however often and with
whichever pip (>= 23) the package is installed, editable or not, and the
installed package carries the embedded model.

The reported failure: without pyproject.toml, pip 23.2.1 (what `python3 -m
venv` gives on Python 3.11) falls back to `setup.py develop` for `pip install
-e .`, whose easy-install launchers resolve every requirement through
pkg_resources at start-up and crash (DistributionNotFound for
backports.strenum, required by ai-edge-litert).

How this is tested cheaply: a throwaway venv made with `python -m venv`
(its bundled pip: 23.2.1 on Python 3.11) gets this package installed with
--no-deps and --no-build-isolation (no download: setuptools, wheel and every
dependency come from the test environment's site-packages through a .pth
file, which is also how pkg_resources sees them). The same is done with the
test environment's own, newer pip (`pip --python`). Each install is done
twice, as the README's two commands do. Then the venv's console scripts run
as subprocesses. With the old setup.py-only packaging, the second check of
test_reinstalled_console_scripts_work fails exactly as reported.

CI (.ci/run) also runs the README's two commands as they stand (pip 23.2.1,
install twice, full dependencies), and test_console_scripts_of_this_install
runs that venv's own scripts.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib

import pytest

from tests.conftest import ROOT, gradient

SCRIPTS = ('stylize', 'stylize-inspect', 'stylize-train')
MODEL_FILES = ('style_predict_quantized_256.tflite',
               'style_transfer_quantized_384.tflite', 'LICENSE', 'README.md')
NOISE = ('absl::InitializeLog', 'cudart_stub', 'cuInit', 'XNNPACK')
_IGNORE = shutil.ignore_patterns('.venv', '.git', 'out', '__pycache__',
                                 '*.egg-info', 'build', 'dist', '.pytest_cache',
                                 '.hypothesis', 'results')


def copy_source(dst: pathlib.Path) -> pathlib.Path:
  """The checkout's files (what a fresh clone holds), without venvs/outputs."""
  shutil.copytree(ROOT, dst, ignore=_IGNORE)
  return dst


def run(cmd, **kwargs):
  env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1',
             PYTHONNOUSERSITE='1')
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # The launchers set it themselves.
  env.update(kwargs.pop('env', {}))
  return subprocess.run([str(c) for c in cmd], capture_output=True,
                        text=True, env=env, timeout=kwargs.pop('timeout', 600),
                        check=False, **kwargs)


def make_venv(path: pathlib.Path, with_pip: bool = True) -> pathlib.Path:
  """A fresh venv (its bundled pip, unless with_pip is False: installing
  pip into it takes ~4 s) that sees this environment's packages."""
  made = run([sys.executable, '-m', 'venv', path,
              *([] if with_pip else ['--without-pip'])])
  assert made.returncode == 0, made.stderr
  purelib = run([path / 'bin' / 'python', '-c',
                 'import sysconfig; print(sysconfig.get_paths()["purelib"])'])
  site = pathlib.Path(purelib.stdout.strip())
  ours = {sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']}
  (site / 'zz-test-environment.pth').write_text('\n'.join(sorted(ours)) + '\n')
  return path


def pip_version(pip_cmd) -> tuple:
  out = run([*pip_cmd, '--version']).stdout.split()[1]
  return tuple(int(p) for p in out.split('.')[:2])


def install(pip_cmd, *args):
  done = run([*pip_cmd, 'install', '--quiet', '--no-deps',
              '--no-build-isolation', *args])
  assert done.returncode == 0, done.stdout + done.stderr


def pip_commands(venv: pathlib.Path):
  """pip of the venv itself (bundled), and this environment's pip aimed at
  the venv (pip --python, pip 22.3+)."""
  return {
      'bundled': [venv / 'bin' / 'python', '-m', 'pip'],
      'current': [sys.executable, '-m', 'pip', '--python',
                  venv / 'bin' / 'python'],
  }


def tiny_job(tmp: pathlib.Path):
  inputs = tmp / 'in'
  inputs.mkdir()
  gradient(96, 64).save(inputs / 'a.jpg')
  style = tmp / 'style.png'
  gradient(64, 64, seed=3).save(style)
  return ['--input', inputs, '--style', style, '--output', tmp / 'out',
          '--quiet']


def check_launchers(bin_dir: pathlib.Path, tmp: pathlib.Path):
  """The console scripts are plain entry-point launchers, and they start:
  `stylize-inspect magenta-lite` loads the model through ai-edge-litert
  (whose requirement backports.strenum crashed the launch under
  setup.py-only packaging)."""
  for name in SCRIPTS:
    launcher = (bin_dir / name).read_text()
    assert 'EASY-INSTALL' not in launcher and 'pkg_resources' not in launcher
  inspected = run([bin_dir / 'stylize-inspect', 'magenta-lite', '--json',
                   '--size', '64'], cwd=tmp)
  assert inspected.returncode == 0, inspected.stderr
  assert json.loads(inspected.stdout)['kind'] == 'tflite'


def check_scripts(bin_dir: pathlib.Path, tmp: pathlib.Path, model: str):
  """Runs the installed console scripts the way a user does."""
  check_launchers(bin_dir, tmp)
  shown = run([bin_dir / 'stylize', '--help'], cwd=tmp)
  assert shown.returncode == 0, shown.stderr
  assert '--max_size' in shown.stdout and '--route_model' in shown.stdout
  trained = run([bin_dir / 'stylize-train', '--help'], cwd=tmp)
  assert trained.returncode == 0 and '--feature_model' in trained.stdout
  # The session's model cache (tests/conftest.py, inherited): a builtin
  # job exports it only if no earlier test did, as once per user. (The
  # first-use export is checked with caches of their own in test_first_run.)
  job = run([bin_dir / 'stylize', *tiny_job(tmp), '--model', model], cwd=tmp)
  assert job.returncode == 0, job.stderr
  assert 'ok 1   failed 0' in job.stdout
  assert (tmp / 'out' / 'style' / 'a.jpg.jpg').is_file()
  assert not [n for n in NOISE if n in job.stderr], job.stderr


@pytest.mark.slow
@pytest.mark.parametrize('pip', ['bundled', 'current'])
def test_reinstalled_console_scripts_work(tmp_path, pip):
  src = copy_source(tmp_path / 'src')
  # pip --python needs no pip in the venv it installs into.
  venv = make_venv(tmp_path / 'venv', with_pip=pip == 'bundled')
  pip_cmd = pip_commands(venv)[pip]
  assert pip_version(pip_cmd) >= (23, 0)
  for _ in range(2):  # README command 1, then command 2 installs again.
    install(pip_cmd, '-e', src)
  where = run([venv / 'bin' / 'python', '-c',
               'import beam_jobs; print(beam_jobs.__file__)'], cwd=tmp_path)
  assert where.stdout.startswith(str(src)), where.stdout
  if pip == 'bundled':  # The README's pip: every script, and a job.
    check_scripts(venv / 'bin', tmp_path, 'magenta-lite')
  else:  # Another pip writes the same launchers: that they start.
    check_launchers(venv / 'bin', tmp_path)


@pytest.mark.slow
def test_non_editable_install_carries_the_embedded_model(tmp_path):
  src = copy_source(tmp_path / 'src')
  venv = make_venv(tmp_path / 'venv')
  install(pip_commands(venv)['bundled'], src)
  shutil.rmtree(src)  # The install must need nothing from the checkout.
  site = pathlib.Path(run([venv / 'bin' / 'python', '-c',
                           'import transforms; print(transforms.__file__)'],
                          cwd=tmp_path).stdout.strip()).parent
  assert str(site).startswith(str(venv))
  folder = site / 'models' / 'data' / 'magenta_lite'
  for name in MODEL_FILES:
    assert (folder / name).is_file(), name
  assert 'Apache License' in (folder / 'LICENSE').read_text()
  note = (folder / 'README.md').read_text()
  assert '203dbd6a09da1091ab7e48e8b101aef8c2d81438ad047a5cb150747a977134c1' in note
  inspected = run([venv / 'bin' / 'stylize-inspect', 'magenta-lite', '--json',
                   '--size', '64'], cwd=tmp_path)
  assert inspected.returncode == 0, inspected.stderr
  info = json.loads(inspected.stdout)
  assert info['kind'] == 'tflite' and info['resolved_path'] == str(folder)
  job = run([venv / 'bin' / 'stylize', *tiny_job(tmp_path), '--model',
             'magenta-lite'], cwd=tmp_path)
  assert job.returncode == 0, job.stderr
  assert 'ok 1   failed 0' in job.stdout


def test_sdist_for_dataflow_setup_file_carries_the_model(tmp_path):
  """Dataflow's --setup_file builds an sdist with `python setup.py sdist`
  (where the `build` package is missing): the shim reads pyproject.toml."""
  src = copy_source(tmp_path / 'src')
  built = run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir',
               tmp_path / 'dist'], cwd=src)
  assert built.returncode == 0, built.stderr
  (archive,) = (tmp_path / 'dist').glob('stylize-0.1.0.tar.gz')
  with tarfile.open(archive) as tar:
    names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
    requires = tar.extractfile(
        'stylize-0.1.0/stylize.egg-info/requires.txt').read().decode()
  for name in MODEL_FILES:
    assert f'transforms/models/data/magenta_lite/{name}' in names, name
  assert {'pyproject.toml', 'setup.py', 'beam_jobs/stylize.py',
          'training/model.py'} <= names
  assert 'apache-beam[gcp]' in requires and 'ai-edge-litert' in requires


def test_console_scripts_of_this_install(tmp_path):
  """The scripts of the environment running the tests (in CI: the README's
  commands, pip 23.2.1, installed twice)."""
  bin_dir = pathlib.Path(sysconfig.get_path('scripts'))
  if not (bin_dir / 'stylize').exists():
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(f'stylize is not installed in {bin_dir}')
    pytest.skip(f'stylize is not installed in {bin_dir} (pip install -e .)')
  check_scripts(bin_dir, tmp_path, 'builtin')


def test_dockerfile_copies_what_pip_install_needs():
  """The Dataflow image installs the package with `pip install .`: the files
  pyproject.toml names (readme, packages, package data) must be copied
  before that, and .dockerignore must not drop the embedded model."""
  text = (ROOT / 'Dockerfile').read_text()
  before = text.split('RUN pip install', 1)[0]
  copied = set()
  for line in before.splitlines():
    words = line.split()
    if words[:1] == ['COPY'] and not words[1].startswith('--'):
      copied.update(words[1:-1])
  assert {'pyproject.toml', 'setup.py', 'README.md', 'beam_jobs', 'transforms',
          'training'} <= copied
  ignored = (ROOT / '.dockerignore').read_text().split()
  assert not [p for p in ignored if 'tflite' in p or p.startswith('transforms')]


def test_dockerfile_beam_is_in_the_declared_range():
  """The image's Beam (its SDK container and the apache-beam it installs)
  is one release inside pyproject.toml's range."""
  from packaging.requirements import Requirement
  declared = [Requirement(d) for d in tomllib.loads(
      (ROOT / 'pyproject.toml').read_text())['project']['dependencies']]
  beam = next(r for r in declared if r.name == 'apache-beam')
  text = (ROOT / 'Dockerfile').read_text()
  version = re.search(r'^ARG BEAM_VERSION=(\S+)$', text, re.M).group(1)
  assert version in beam.specifier
  assert 'apache/beam_python3.11_sdk:${BEAM_VERSION}' in text
  assert '"apache-beam[gcp]==${BEAM_VERSION}"' in text
