"""Seeing the work: progress, summary, report.html, dry run, model inspection."""

import fcntl
import html.parser
import io
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time

import pytest

from beam_jobs.inspect_model import main as inspect_main
from beam_jobs.stylize import main, run
from tests.conftest import ROOT, gradient
from transforms.progress import progress_line, read_events


def _job(tmp_path, samples, n=3, broken=True):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  for i in range(n):
    gradient(60, 40, seed=i).save(inputs / f'p{i}.jpg')
  if broken:
    (inputs / 'broken.jpg').write_bytes(b'not a jpeg')
  return ['--input', str(inputs), '--style', str(samples / 'style' / 'waves.jpg'),
          '--style', str(samples / 'style' / 'mosaic.png'), '--model', 'builtin',
          '--output', str(tmp_path / 'out'), '--max_failure_ratio', '0.5']


def test_progress_events_count_pairs_and_rows(tmp_path, samples):
  events_dir = tmp_path / 'events'
  events_dir.mkdir()
  run(_job(tmp_path, samples), progress_dir=str(events_dir))
  events = read_events(str(events_dir))
  # The launcher's count (known before the pipeline lists anything), the
  # pipeline's planned pairs, and the rows as they were made.
  assert events == {'expected': 8, 'pairs': 8, 'ok': 6, 'failed': 2}
  line = progress_line(events, 3.0, '0s')
  assert line == '8/8 pairs  ok 6  failed 2  skipped 0  3.00 img/s  ETA 0s'


def test_progress_total_rate_and_eta_from_the_first_pair():
  """The total is the launcher's count before the pipeline plans anything;
  the rate and ETA are the work's, from the first finished pair on (start-up
  and the model's load are not in them). A fake clock: no waiting."""
  from transforms.progress import Pace
  pace = Pace()
  assert progress_line({'expected': 100}) == (
      '0/100 pairs  ok 0  failed 0  skipped 0  0.00 img/s  ETA ?')
  # 30 s of start-up, then the first pairs finish.
  assert pace.update({'expected': 100, 'ok': 1}, now=30.0) == (0.0, '?')
  rate, eta = pace.update({'expected': 100, 'pairs': 90, 'ok': 20,
                           'failed': 1, 'skipped': 4}, now=40.0)
  assert rate == 2.0 and eta == '37s'  # (100 - 25) / 2 per second.
  # Routing found images of classes without styles: fewer pairs.
  rate, eta = pace.update({'expected': 100, 'pairs': 90, 'pairs_delta': -20,
                           'ok': 41, 'skipped': 4}, now=50.0)
  assert rate == 2.0 and eta == '17s'  # (80 - 45) / 2.


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_bar_of_a_finished_run_ends_at_its_pairs(tmp_path):
  """The launcher counts aliases of one file each time (10 entries, 8
  pairs): a run that completed ends its bar at 8/8, not 8/10; one that
  was interrupted keeps the count it had."""
  from transforms.progress import ProgressMonitor, record_expected
  for finished in (True, False):
    folder = tmp_path / str(finished)
    folder.mkdir()
    record_expected(str(folder), 10)
    (folder / '1.log').write_text('pairs 8\nok 7\nfailed 1\n')
    screen = _Terminal()
    try:
      with ProgressMonitor(str(folder), stream=screen,
                           interval=3600) as monitor:
        assert monitor.update().startswith('8/10 pairs')  # Opens the bar.
        if not finished:
          raise KeyboardInterrupt
    except KeyboardInterrupt:
      pass
    last = screen.getvalue().replace('\r', '\n').strip().splitlines()[-1]
    assert (' 8/8 ' if finished else ' 8/10 ') in last, last


def _run_in_terminal(argv, timeout=240):
  """Runs the CLI under a pseudo-terminal; returns (exit code, screen text)."""
  master, slave = pty.openpty()
  # A 120x40 terminal, as a person's would be.
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))
  proc = subprocess.Popen([sys.executable, '-m', 'beam_jobs.stylize'] + argv,
                          cwd=ROOT, stdin=slave, stdout=slave, stderr=slave)
  os.close(slave)
  chunks, deadline = [], time.time() + timeout
  while time.time() < deadline:
    ready, _, _ = select.select([master], [], [], 0.5)
    if ready:
      try:
        data = os.read(master, 65536)
      except OSError:
        break
      if not data:
        break
      chunks.append(data)
    elif proc.poll() is not None:
      break
  proc.wait(timeout=30)
  os.close(master)
  return proc.returncode, b''.join(chunks).decode('utf-8', 'replace')


@pytest.mark.slow
def test_terminal_run_shows_progress_then_summary_table(tmp_path, samples):
  code, screen = _run_in_terminal(_job(tmp_path, samples, n=12))
  assert code == 0, screen[-2000:]
  # The live bar (tqdm) reached the total, then the summary table.
  assert re.search(r'stylize: .*26/26', screen), screen[-2000:]
  assert 'img/s' in screen and 'ETA' in screen
  summary = screen[screen.index('stylize run'):]
  assert 'ok 24   failed 2   skipped 0' in summary
  assert 'failed x2: decode: not an image' in summary
  data = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert data['elapsed_s'] > 0 and data['images_per_s'] > 0
  assert data['top_failure_reasons'][0]['count'] == 2


class _Html(html.parser.HTMLParser):
  """Checks tags balance (void elements aside) and collects image sources."""
  VOID = {'meta', 'img', 'br', 'hr', 'link', 'input'}

  def __init__(self):
    super().__init__()
    self.stack, self.images, self.links, self.errors = [], [], [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'img':
      self.images.append(attrs['src'])
    if tag == 'a':
      self.links.append(attrs['href'])
    if tag not in self.VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag):
    if not self.stack or self.stack[-1] != tag:
      self.errors.append(f'unexpected </{tag}> (open: {self.stack[-3:]})')
    else:
      self.stack.pop()


def _report(tmp_path, samples):
  run(_job(tmp_path, samples))
  out = tmp_path / 'out'
  page = (out / 'report.html').read_text()
  parser = _Html()
  parser.feed(page)
  return out, page, parser


def test_report_is_well_formed_and_links_resolve(tmp_path, samples):
  out, page, parser = _report(tmp_path, samples)
  assert not parser.errors and not parser.stack
  # 2 style thumbnails + an input and an output thumbnail per done pair.
  assert len(parser.images) == 2 + 2 * 6
  for src in parser.images + parser.links:
    assert not src.startswith(('/', 'file:', 'gs:')), src  # Relative.
    assert (out / src).exists(), src
  assert 'broken.jpg' in page and 'not an image' in page  # Failures listed.


def _chromium():
  for name in ('chromium', 'chromium-browser', 'google-chrome'):
    path = shutil.which(name)
    if path:
      return path
  if os.environ.get('CI', '').lower() == 'true':
    pytest.fail('Chromium is missing: .ci/run installs Debian\'s chromium')
  pytest.skip('Chromium is not installed (apt-get install chromium)')


@pytest.mark.slow
def test_report_renders_in_chromium_with_every_thumbnail(tmp_path, samples):
  browser = _chromium()
  out, _, parser = _report(tmp_path, samples)
  flags = [browser, '--headless', '--no-sandbox', '--disable-gpu',
           '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run', '--disable-quic',
           f'--user-data-dir={tmp_path / "profile"}',
           '--virtual-time-budget=10000', '--allow-file-access-from-files']
  url = (out / 'report.html').as_uri()
  dom = subprocess.run(flags + ['--dump-dom', url], capture_output=True,
                       text=True, timeout=120).stdout
  body = re.search(r'<body[^>]*>', dom).group(0)
  images = int(re.search(r'data-images="(\d+)"', body).group(1))
  loaded = int(re.search(r'data-loaded="(\d+)"', body).group(1))
  assert images == len(parser.images) and loaded == images, body
  shot = tmp_path / 'report.png'
  subprocess.run(flags + [f'--screenshot={shot}', '--window-size=1200,900',
                          url], capture_output=True, timeout=120, check=True)
  assert shot.stat().st_size > 10_000


def test_dry_run_lists_work_without_model_or_writes(tmp_path, samples, capsys):
  argv = _job(tmp_path, samples)
  out = tmp_path / 'out'
  assert main(argv + ['--dry_run']) == 0
  text = capsys.readouterr().out
  assert 'dry run: 8 (input, style) pairs to do, 0 skipped as already done' in text
  assert 'model not loaded' in text
  assert f'{tmp_path / "in"}: 8' in text
  assert not out.exists()
  run(argv)
  assert main(argv + ['--dry_run']) == 0
  text = capsys.readouterr().out
  # The 6 done pairs are skipped; the broken image's 2 pairs are known to
  # fail (the same image, the same settings), and only retried on request.
  assert ('dry run: 0 (input, style) pairs to do, 6 skipped as already done, '
          '2 known to fail (not retried without --retry_failed)') in text
  assert 'waves: 0 / 3' in text
  assert 'to do per input root' not in text  # No empty heading.
  assert main(argv + ['--dry_run', '--retry_failed']) == 0
  text = capsys.readouterr().out
  assert 'dry run: 2 (input, style) pairs to do, 6 skipped as already done' in text
  assert 'waves: 1 / 3' in text


def test_dry_run_never_loads_the_model(tmp_path, samples, capsys,
                                       monkeypatch):
  load_log = tmp_path / 'loads.jsonl'
  monkeypatch.setenv('STYLIZE_MODEL_LOAD_LOG', str(load_log))
  argv = _job(tmp_path, samples)
  assert main(argv + ['--dry_run']) == 0
  assert not load_log.exists()


def test_inspect_describes_a_model(capsys, samples):
  assert inspect_main(['builtin', '--json', '--size', '64']) == 0
  info = json.loads(capsys.readouterr().out)
  assert info['kind'] == 'builtin'
  assert info['inputs'] == {'content': 'float32 (None, None, None, 3)',
                            'style': 'float32 (None, None, None, 3)'}
  assert info['output_shape'] == [1, 64, 64, 3]
  assert os.path.isdir(info['resolved_path'])


def test_inspect_lite_pair(capsys):
  from tests.conftest import shared_path
  lite = shared_path('models', 'magenta-arbitrary-v1-256-lite')
  assert inspect_main([str(lite), '--json']) == 0
  info = json.loads(capsys.readouterr().out)
  assert info['kind'] == 'tflite' and info['fixed_size'] == [384, 384]
  assert info['inputs']['prediction'] == {
      'style_image': 'float32 [1, 256, 256, 3]'}
  assert info['call_384px_s'] > 0


def test_inspect_clear_error_for_a_bad_handle(tmp_path, capsys):
  assert inspect_main([str(tmp_path / 'nothing-here')]) == 2
  assert 'does not exist' in capsys.readouterr().err
