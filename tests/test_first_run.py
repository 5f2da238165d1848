"""What a new user meets (issue 12): the quickstart's real network, dry runs
that check the model, configuration errors that leave nothing behind, a
clean terminal, and the smaller points (inspect's HANDLE, blend captions,
which files were ignored, the README's venv)."""

import json
import os
import re
import pathlib
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
import pytest
from PIL import Image

from beam_jobs.inspect_model import main as inspect_main
from beam_jobs.stylize import format_summary, main, run
from tests.conftest import CHILD_MODEL, ROOT, gradient
from tests.test_end_to_end import manifest_rows, summary
from transforms import native_logs
from transforms.manifest import IGNORED_LISTED, build_summary
from transforms.models import cache, checks, embedded
from transforms.records import StyleRef
from transforms.report import render_html, style_caption

NOISE = ('absl::InitializeLog', 'cudart_stub', 'cuInit', 'XNNPACK',
         'Discarding unparseable args', 'semi_persistent_directory')


@pytest.fixture
def world(tmp_path):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  gradient(80, 60).save(inputs / 'a.jpg')
  Image.new('RGB', (64, 48), (120, 120, 120)).save(inputs / 'flat.png')
  style = tmp_path / 'style.png'
  gradient(64, 64, seed=2).save(style)
  return {'in': inputs, 'style': style, 'out': tmp_path / 'out',
          'tmp': tmp_path}


def job_args(world, *extra):
  return ['--input', str(world['in']), '--style', str(world['style']),
          '--output', str(world['out']), *extra]


def console_script(name: str) -> pathlib.Path:
  path = pathlib.Path(sysconfig.get_path('scripts')) / name
  if not path.exists():
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(f'{name} is not installed in {path.parent}')
    pytest.skip(f'{name} is not installed in {path.parent}')
  return path


def fresh_temp(parent: pathlib.Path) -> pathlib.Path:
  """An empty folder to be a command's TMPDIR (to see what it leaves)."""
  return pathlib.Path(tempfile.mkdtemp(prefix='temp-', dir=parent))


def run_script(cmd, cwd, env=None):
  full = dict(os.environ)
  full.pop('TF_CPP_MIN_LOG_LEVEL', None)  # The launcher sets it itself.
  full.update(env or {})
  return subprocess.run([str(c) for c in cmd], cwd=cwd, env=full,
                        capture_output=True, text=True, timeout=600,
                        check=False)


# --------------------------------------------------------- magenta-lite --

def checkerboard(side=96, square=16):
  """Two colours only, in squares."""
  y, x = np.mgrid[0:side, 0:side]
  dark = ((y // square + x // square) % 2).astype(bool)
  pixels = np.where(dark[..., None], [40, 60, 90], [200, 180, 150])
  return Image.fromarray(pixels.astype(np.uint8)), dark


def test_magenta_lite_is_a_network_builtin_a_colour_transfer(world):
  """A colour transfer maps each colour to one colour, wherever it is; the
  network paints texture: the same input colour comes out varied."""
  board, dark = checkerboard()
  board.save(world['in'] / 'board.png')
  for model in ('magenta-lite', 'builtin'):
    out = world['tmp'] / model
    run(job_args(world, '--model', model, '--output', str(out),
                 '--output_format', 'png'))
    rows = {pathlib.Path(r['input']).name: r for r in manifest_rows(out)}
    assert {r['status'] for r in rows.values()} == {'ok'}
    assert {r['model'] for r in rows.values()} == {model}
    pixels = np.asarray(Image.open(rows['board.png']['output']), np.float32)
    spread = max(pixels[dark].std(axis=0).max(),
                 pixels[~dark].std(axis=0).max())
    if model == 'magenta-lite':
      assert spread > 10, spread
      assert rows['a.jpg']['params']['strength_mode'] == 'style-vector'
    else:
      assert spread < 2, spread
      assert rows['a.jpg']['params']['strength_mode'] == 'pixel-blend'


def test_embedded_model_digest_is_the_same_light_and_loaded():
  files = embedded.resolve('magenta-lite')
  assert checks.digest(files) == cache.model_digest(files)
  assert embedded.folder('magenta-lite') == os.path.dirname(files.split(',')[0])
  assert not checks.is_local_path('magenta-lite')  # Workers have it too.


# -------------------------------------------------------------- dry run --

def test_dry_run_checks_model_and_digest_without_loading(world, capsys):
  missing = str(world['tmp'] / 'no-model')
  assert main(job_args(world, '--dry_run', '--model', missing)) == 2
  assert "--model: model '" in capsys.readouterr().err
  assert main(job_args(world, '--dry_run', '--model', 'magenta-lite',
                       '--model_sha256', '00')) == 2
  err = capsys.readouterr().err
  assert "model 'magenta-lite' has SHA-256" in err and 'not the expected 00' in err
  right = checks.digest(embedded.resolve('magenta-lite'))
  assert main(job_args(world, '--dry_run', '--model', 'magenta-lite',
                       '--model_sha256', right)) == 0
  assert 'model not loaded' in capsys.readouterr().out
  # Not a model at all (a folder of images).
  assert main(job_args(world, '--dry_run', '--model', str(world['in']))) == 2
  assert 'not a model' in capsys.readouterr().err
  assert not world['out'].exists()


def test_dry_run_imports_neither_tensorflow_nor_litert(world):
  code = ('import sys; from beam_jobs.stylize import main; '
          f'rc = main({job_args(world, "--dry_run", "--model", "magenta-lite")!r}); '
          'print(rc, "tensorflow" in sys.modules, "ai_edge_litert" in sys.modules)')
  done = run_script([sys.executable, '-c', code], cwd=world['tmp'])
  assert done.stdout.strip().splitlines()[-1] == '0 False False', done.stderr


# ------------------------------------------------------- clean failures --

def _closed_port_handle():
  return 'http://127.0.0.1:9/google/magenta/nothing/1'  # Refused at once.


CONFIG_ERRORS = {
    'unknown flag': lambda w: ['--max-size', '128'],
    'unknown config key': lambda w: ['--config', str(_yaml(w, 'inptu: x'))],
    'value out of range': lambda w: ['--jpeg_quality', '0'],
    'value of the wrong type': lambda w: ['--batch_size', 'four'],
    'missing style': lambda w: ['--style', str(w['tmp'] / 'gone.jpg')],
    'style not an image': lambda w: ['--style', str(_text(w, 's.jpg'))],
    'output not writable': lambda w: ['--output',
                                      str(_text(w, 'blocker') / 'out')],
    'route without router': lambda w: ['--route', 'photo=x.jpg'],
    'missing model': lambda w: ['--model', str(w['tmp'] / 'no-model')],
    'folder that is no model': lambda w: ['--model', str(w['in'])],
    'broken SavedModel': lambda w: ['--model', str(_broken_savedmodel(w))],
    'model digest': lambda w: ['--model', 'magenta-lite', '--model_sha256',
                               '00'],
    'unreachable hub handle': lambda w: ['--model', _closed_port_handle()],
    'dry run, missing model': lambda w: ['--dry_run', '--model',
                                         str(w['tmp'] / 'no-model')],
    'dataflow, local paths': lambda w: ['--runner=DataflowRunner',
                                        '--sdk_container_image=i:1'],
}


def _broken_savedmodel(world):
  """A folder with a saved_model.pb that is not one: its OpenVINO
  conversion (a child process, then the launch's own load) fails."""
  folder = world['tmp'] / 'broken-model'
  folder.mkdir(exist_ok=True)
  (folder / 'saved_model.pb').write_bytes(b'not a protobuf')
  return folder


def _yaml(world, text):
  path = world['tmp'] / 'job.yaml'
  path.write_text(text + '\n')
  return path


def _text(world, name):
  path = world['tmp'] / name
  path.write_text('not a picture')
  return path


def _tree(root: pathlib.Path):
  return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


@pytest.mark.parametrize('kind', sorted(CONFIG_ERRORS))
def test_config_error_creates_nothing(world, kind, monkeypatch, capsys,
                                      tmp_path_factory):
  monkeypatch.chdir(world['tmp'])
  monkeypatch.setenv('STYLIZE_CACHE_DIR', str(world['tmp'] / 'cache'))
  monkeypatch.setenv('TFHUB_CACHE_DIR', str(world['tmp'] / 'tfhub'))
  monkeypatch.delenv('STYLIZE_SDK_CONTAINER_IMAGE', raising=False)
  # A private temporary folder: the job's own temporary files must go too.
  temp = tmp_path_factory.mktemp('system-temp')
  monkeypatch.setattr(tempfile, 'tempdir', str(temp))
  extra = CONFIG_ERRORS[kind](world)
  before = _tree(world['tmp'])
  assert main(job_args(world, '--model', 'builtin') + extra) == 2
  assert capsys.readouterr().err.startswith('stylize: error: ')
  assert _tree(world['tmp']) == before  # No output, cache or anything else.
  assert not list(temp.iterdir())


# ------------------------------------------------------ a clean terminal --

def test_noise_filter_keeps_real_errors():
  text = (
      'WARNING: All log messages before absl::InitializeLog() is called are '
      'written to STDERR\n'
      'I0000 00:00:1795996993.778898   11365 cudart_stub.cc:31] Could not '
      'find cuda drivers on your machine, GPU will not be used.\n'
      'E0000 00:00:1795996998.819777   11365 cuda_platform.cc:52] failed call '
      'to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR '
      '(303)\n'
      'W0000 00:00:1795996998.8   11365 op_kernel.cc:1] a warning\n'
      'E0000 00:00:1795996998.9   11365 saved_model.cc:7] real trouble\n'
      '2025-09-17 14:44:05.157831: I external/x/cudart_stub.cc:32] old style\n'
      'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n'
      'Traceback (most recent call last):\n')
  kept = native_logs.filter_lines(text, level=2, gpu_machine=False)
  assert kept == ('E0000 00:00:1795996998.9   11365 saved_model.cc:7] real '
                  'trouble\nTraceback (most recent call last):\n')
  # On a machine with a GPU a failed cuInit is a real error.
  assert 'cuInit' in native_logs.filter_lines(text, 2, gpu_machine=True)
  # TF_CPP_MIN_LOG_LEVEL=0 asks for everything but absl's banner.
  everything = native_logs.filter_lines(text, 0, gpu_machine=True)
  assert 'cudart_stub' in everything and 'a warning' in everything
  assert 'absl::InitializeLog' not in everything


def test_filtered_stderr_replays_real_lines_and_raises(capfd):
  def noisy():
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is '
                b'called are written to STDERR\n')
    os.write(2, b'E0000 00:00:1.2   1 loader.cc:3] the real reason\n')
    raise ValueError('clear message')
  with pytest.raises(ValueError, match='clear message'):
    native_logs.filtered_stderr(noisy)
  err = capfd.readouterr().err
  assert err == 'E0000 00:00:1.2   1 loader.cc:3] the real reason\n'


def test_console_script_terminal_is_clean(world):
  """The installed `stylize`, on the model that imports TensorFlow."""
  temp = fresh_temp(world['tmp'])
  done = run_script([console_script('stylize'), *job_args(
      world, '--model', 'builtin', '--quiet')], cwd=world['tmp'],
      env={'STYLIZE_CACHE_DIR': str(world['tmp'] / 'cache'),
           'TMPDIR': str(temp)})
  assert done.returncode == 0, done.stderr
  assert 'ok 2   failed 0' in done.stdout
  assert not list(temp.iterdir())  # Nothing left in the temporary folder.
  # Only the job's own phase lines (logged, as stderr is not a terminal).
  assert done.stderr.splitlines() == [
      'INFO transforms.progress: loading model builtin ...',
      'INFO transforms.progress: loading model builtin ... '
      f'{_seconds(done.stderr)} s (tf f32)'], done.stderr


def _seconds(text):
  return re.search(r'\.\.\. (\d+\.\d) s', text).group(1)


def test_console_script_real_errors_still_surface(world):
  broken = world['tmp'] / 'broken-model'
  broken.mkdir()
  (broken / 'saved_model.pb').write_bytes(b'not a protobuf at all')
  temp = fresh_temp(world['tmp'])
  done = run_script([console_script('stylize'), *job_args(
      world, '--model', str(broken))], cwd=world['tmp'],
      env={'TMPDIR': str(temp)})
  assert done.returncode == 2
  assert not list(temp.iterdir())
  lines = done.stderr.splitlines()
  assert lines[0] == f'INFO transforms.progress: loading model {broken} ...'
  assert lines[1].startswith('stylize: error: --model: could not load '
                             f'model {str(broken)!r}'), done.stderr
  assert '..' not in lines[1].replace(str(broken), ''), lines[1]
  assert not [n for n in NOISE if n in done.stderr], done.stderr


@pytest.mark.slow
def test_readme_multiprocess_example_is_quiet(tmp_path):
  """README "Real use": local worker processes, each importing TF (builtin),
  print none of TF's start-up lines and no 'Discarding unparseable args'."""
  temp = fresh_temp(tmp_path)
  done = run_script([console_script('stylize'), '--config',
                     'configs/local.yaml', '--direct_running_mode='
                     'multi_processing', '--direct_num_workers=2',
                     '--model', 'builtin', '--output', tmp_path / 'out',
                     '--quiet'], cwd=ROOT,
                    env={'STYLIZE_CACHE_DIR': str(tmp_path / 'cache'),
                         'TMPDIR': str(temp)})
  assert done.returncode == 0, done.stderr
  assert 'ok 8   failed 0' in done.stdout
  assert not [n for n in NOISE if n in done.stderr], done.stderr
  # The workers' and the launcher's temporary files are gone too.
  assert not list(temp.iterdir()), list(temp.rglob('*'))


# ------------------------------------------------------- smaller points --

def test_inspect_errors_name_the_handle_not_a_flag(tmp_path, capsys):
  assert inspect_main([str(tmp_path / 'nothing')]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"stylize-inspect: error: HANDLE '{tmp_path / 'nothing'}'")
  assert '--model ' not in err and '--model:' not in err
  assert inspect_main(['magenta-lite', '--model_sha256', '00']) == 2
  err = capsys.readouterr().err
  assert "HANDLE 'magenta-lite'" in err and '--model ' not in err


def test_report_blend_components_carry_their_own_names():
  blend = StyleRef(uri='/s/waves.jpg=0.7,/s/mosaic.png=0.3',
                   label='waves-70+mosaic-30',
                   parts=(('/s/waves.jpg', 0.7), ('/s/mosaic.png', 0.3)))
  plain = StyleRef(uri='/s/starry.jpg', label='starry')
  assert style_caption(blend, '/s/waves.jpg', 0.7) == (
      'waves (70% of waves-70+mosaic-30)')
  assert style_caption(plain, '/s/starry.jpg', 1.0) == 'starry'
  thumbs = {u: {'thumb': f'report/thumbs/{i}.jpg', 'width': 10, 'height': 10}
            for i, u in enumerate(['/s/waves.jpg', '/s/mosaic.png',
                                   '/s/starry.jpg'])}
  page = render_html([], [], thumbs, [blend, plain], {}, '/out')
  assert 'alt="waves (70% of waves-70+mosaic-30)"' in page
  assert '<figcaption>mosaic (30% of waves-70+mosaic-30)</figcaption>' in page
  assert '<figcaption>starry</figcaption>' in page


def test_summary_names_the_ignored_files(world, capsys):
  (world['in'] / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
  (world['in'] / 'notes.txt').write_text('not a photo')
  assert main(job_args(world, '--model', 'builtin', '--quiet')) == 0
  out = capsys.readouterr().out
  ignored = [str(world['in'] / '.DS_Store'), str(world['in'] / 'notes.txt')]
  assert 'ignored files 2' in out
  assert f'  ignored (not images): {ignored[0]}, {ignored[1]}\n' in out + '\n'
  assert summary(world['out'])['ignored_files'] == ignored


def test_ignored_files_are_bounded():
  acc = {'counts': {'ok': 1}, 'errors': {}}
  names = [f'/in/{i:03d}.xmp' for i in range(50)]
  done = build_summary(acc, 50, [], {'run_id': 'r', 'output': '/o'}, 1,
                       ignored_files=list(reversed(names[:IGNORED_LISTED])))
  assert done['ignored_files'] == names[:IGNORED_LISTED]
  text = format_summary(done, 1.0)
  assert ('ignored (not images): /in/000.xmp, /in/001.xmp, /in/002.xmp and '
          '47 more (the first 20 in summary.json)') in text


def test_readme_real_use_says_the_venv_must_be_active():
  readme = (ROOT / 'README.md').read_text()
  section = readme.split('## Real use', 1)[1].split('\n## ', 1)[0]
  first_command = section.index('\nstylize ')
  assert 'source .venv/bin/activate' in section[:first_command]


def test_a_failed_job_does_not_report_an_earlier_runs_summary(tmp_path,
                                                              capsys):
  """A job that raised prints its own error, not the verdict a summary.json
  from an earlier run (of the same --output) holds."""
  import time
  from beam_jobs.stylize import _job_failed
  old = {'run_id': 'old', 'started_at': time.time() - 3600,
         'verdict': 'incomplete', 'verdict_reason': 'an old story',
         'counts': {'ok': 1}, 'total': 1, 'output': str(tmp_path)}
  (tmp_path / 'summary.json').write_text(json.dumps(old))
  assert _job_failed(str(tmp_path), RuntimeError('worker died'),
                     launched_at=time.time()) == 1
  captured = capsys.readouterr()
  assert 'worker died' in captured.err
  assert 'an old story' not in captured.err + captured.out
  # This run's own summary (written after the launch) is what it reports.
  mine = dict(old, started_at=time.time(), verdict_reason='this run')
  (tmp_path / 'summary.json').write_text(json.dumps(mine))
  assert _job_failed(str(tmp_path), RuntimeError('x'),
                     launched_at=mine['started_at'] - 5) == 1
  assert 'this run' in capsys.readouterr().err


# ------------------------------------------------- nothing left in /tmp --

@pytest.mark.slow
def test_commands_leave_nothing_in_the_temporary_folder(world, tmp_path,
                                                        features_model):
  """The commands not checked elsewhere, run as a user runs them, each with
  a fresh TMPDIR of its own: once they exit, that folder is empty (Beam's
  temporary folders, training's extraction files, TensorFlow's autograph
  files). `stylize` itself is checked so in
  test_console_script_terminal_is_clean (a run),
  test_console_script_real_errors_still_surface (a config error) and
  test_readme_multiprocess_example_is_quiet (worker processes)."""
  from tests.conftest import train_args
  from tests.test_train import small_set
  data = small_set(tmp_path / 'data', per_class=2,
                   classes=('document', 'photo'))
  commands = {
      'stylize --dry_run': [console_script('stylize'), *job_args(
          world, '--model', 'builtin', '--dry_run')],
      # CHILD_MODEL here: stylize-train's run below is the one that checks
      # TensorFlow's own temporary files.
      'stylize-inspect': [console_script('stylize-inspect'), CHILD_MODEL,
                          '--size', '64'],
      'stylize-train': [console_script('stylize-train'), *train_args(
          data, tmp_path / 'router', features_model, '--epochs', '2')],
  }
  for name, cmd in commands.items():
    temp = fresh_temp(tmp_path)
    done = run_script(cmd, cwd=world['tmp'], env={
        'TMPDIR': str(temp), 'STYLIZE_CACHE_DIR': str(world['tmp'] / 'cache')})
    assert done.returncode == 0, (name, done.stderr)
    assert not list(temp.iterdir()), (name, list(temp.rglob('*')))
