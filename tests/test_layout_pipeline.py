"""The output layout through the real pipeline: one regression per reported case.

Each test runs `run([...])` with the builtin model on tiny real images and
checks what lands on disk: inputs untouched, every write inside --output,
stable and unique names.
"""

import hashlib
import os
import unicodedata

import pytest

from beam_jobs.options import ConfigError
from beam_jobs.stylize import run
from tests.conftest import gradient
from tests.test_end_to_end import manifest_rows


def _photo(path, seed=0, size=(24, 16)):
  path.parent.mkdir(parents=True, exist_ok=True)
  gradient(*size, seed=seed).save(path, 'JPEG' if path.suffix.lower() in (
      '.jpg', '.jpeg') or not path.suffix else 'PNG')
  return path


def _snapshot(folder):
  """{path: sha1} of every file below folder (links not followed)."""
  out = {}
  for dirpath, _, files in os.walk(folder):
    for name in files:
      p = os.path.join(dirpath, name)
      if os.path.islink(p):
        continue
      with open(p, 'rb') as f:
        out[p] = hashlib.sha1(f.read()).hexdigest()
  return out


def _written_outside(tmp_path, out, before):
  """Files that appeared or changed in tmp_path, outside out."""
  after = _snapshot(tmp_path)
  return sorted(p for p, h in after.items()
                if not p.startswith(str(out) + os.sep) and before.get(p) != h)


def _argv(style, out, *inputs):
  argv = ['--style', str(style), '--output', str(out), '--model', 'builtin',
          '--max_size', '32']
  for kind, value in inputs:
    argv += [kind, str(value)]
  return argv


@pytest.fixture
def style(samples):
  return samples / 'style' / 'waves.jpg'


def test_list_entry_with_dotdot_never_overwrites_the_input(tmp_path, style):
  photos = tmp_path / 'photos'
  original = _photo(photos / 'a.jpg')
  out = tmp_path / 'out'
  listing = tmp_path / 'todo.txt'
  # The reported case: '..' segments that used to map the output onto the
  # input itself; and the same file spelled four ways (one pair).
  listing.write_text(f'{photos}/x/../a.jpg\n{photos}/./a.jpg\n'
                     f'{photos}//a.jpg\n{original}\n')
  (photos / 'x').mkdir()
  before = _snapshot(tmp_path)
  run(_argv(style, out, ('--input_list', listing)))
  assert _written_outside(tmp_path, out, before) == []
  rows = manifest_rows(out)
  assert len(rows) == 1 and rows[0]['status'] == 'ok'
  assert rows[0]['input'] == str(original)
  assert rows[0]['output'] == f'{out}/waves/@file{photos}/a.jpg.jpg'


def test_hostile_names_in_an_input_folder_stay_inside_output(tmp_path, style):
  photos = tmp_path / 'photos'
  names = ['..\\..\\..\\escaped.jpg', 'ctrl\n\x07.jpg', '@gs.jpg', '%41.jpg',
           'x' * 240 + '.jpg', ' lead.jpg', 'caf\u00e9.jpg',
           'cafe\u0301.jpg', 'tilde~1.jpg', 'dot..jpg']
  for i, name in enumerate(names):
    _photo(photos / 'sub' / name, seed=i)
  out = tmp_path / 'deep' / 'out'
  before = _snapshot(tmp_path)
  run(_argv(style, out, ('--input', photos)))
  assert _written_outside(tmp_path, out, before) == []
  rows = manifest_rows(out)
  assert len(rows) == len(names)
  assert {r['status'] for r in rows} == {'ok'}
  outputs = [r['output'] for r in rows]
  assert len(set(outputs)) == len(outputs)  # NFC and NFD: two outputs.
  for o in outputs:
    assert os.path.realpath(o).startswith(str(out) + '/waves/sub/')
    assert os.path.isfile(o)
    assert unicodedata.is_normalized('NFC', o)
  assert f'{out}/waves/sub/..%5C..%5C..%5Cescaped.jpg.jpg' in outputs


def test_a_new_sibling_never_moves_an_existing_output(tmp_path, style):
  photos = tmp_path / 'photos'
  _photo(photos / 'IMG_1.jpg')
  _photo(photos / 'scan.tmp-1.jpg', seed=1)
  out = tmp_path / 'out'
  argv = _argv(style, out, ('--input', photos))
  run(argv)
  first = {r['input']: r['output'] for r in manifest_rows(out)}
  jpg_output = first[str(photos / 'IMG_1.jpg')]
  mtime = os.path.getmtime(jpg_output)
  _photo(photos / 'IMG_1.png', seed=2)  # Arrives next to IMG_1.jpg.
  run(argv)
  rows = {r['input']: r for r in manifest_rows(out)}
  assert rows[str(photos / 'IMG_1.jpg')]['status'] == 'skipped'
  assert rows[str(photos / 'IMG_1.jpg')]['output'] == jpg_output
  assert os.path.getmtime(jpg_output) == mtime
  # A name holding '.tmp-' is an ordinary input: kept and skipped.
  assert rows[str(photos / 'scan.tmp-1.jpg')]['status'] == 'skipped'
  assert os.path.isfile(first[str(photos / 'scan.tmp-1.jpg')])
  assert rows[str(photos / 'IMG_1.png')]['status'] == 'ok'
  assert rows[str(photos / 'IMG_1.png')]['output'] != jpg_output


def test_glob_double_star_includes_the_top_folder_and_literal_names(
    tmp_path, style):
  photos = tmp_path / 'photos'
  _photo(photos / 'top.jpg')
  _photo(photos / 'a' / 'b' / 'deep.jpg', seed=1)
  _photo(photos / 'a' / 'skip.png', seed=2)
  bracket = _photo(tmp_path / 'odd' / 'IMG [1].jpg', seed=3)
  out = tmp_path / 'out'
  run(_argv(style, out, ('--input', f'{photos}/**/*.jpg'),
            ('--input', bracket)))
  inputs = sorted(os.path.basename(r['input']) for r in manifest_rows(out))
  assert inputs == ['IMG [1].jpg', 'deep.jpg', 'top.jpg']


def test_symlinked_input_folder_cannot_hide_an_output_inside_it(
    tmp_path, style):
  real = tmp_path / 'real'
  _photo(real / 'a.jpg')
  link = tmp_path / 'link'
  link.symlink_to(real, target_is_directory=True)
  with pytest.raises(ConfigError, match='inside the input folder'):
    run(_argv(style, real / 'out', ('--input', link)))
  with pytest.raises(ConfigError, match='inside the input folder'):
    run(_argv(style, link / 'out', ('--input', real)))
  assert not (real / 'out').exists()


def test_link_loops_are_walked_once_and_links_are_followed(tmp_path, style):
  photos = tmp_path / 'photos'
  _photo(photos / 'a' / 'one.jpg')
  (photos / 'a' / 'loop').symlink_to(photos, target_is_directory=True)
  elsewhere = _photo(tmp_path / 'elsewhere' / 'two.jpg', seed=1)
  (photos / 'two-link.jpg').symlink_to(elsewhere)
  (photos / 'broken.jpg').symlink_to(tmp_path / 'missing.jpg')
  out = tmp_path / 'out'
  run(_argv(style, out, ('--input', photos)))
  rows = {r['input']: r for r in manifest_rows(out)}
  # Files are named by their real paths; a broken link by where it points.
  missing = str(tmp_path / 'missing.jpg')
  assert sorted(rows) == sorted([str(photos / 'a' / 'one.jpg'),
                                 str(elsewhere), missing])
  assert rows[str(elsewhere)]['status'] == 'ok'
  assert rows[str(elsewhere)]['output'] == (
      f'{out}/waves/@file{elsewhere}.jpg')
  assert rows[missing]['status'] == 'failed'
  assert 'FileNotFoundError' in rows[missing]['error']


def test_a_link_inside_the_output_cannot_take_writes_outside(tmp_path, style):
  photos = tmp_path / 'photos'
  _photo(photos / 'a.jpg')
  victim = tmp_path / 'victim'
  victim.mkdir()
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'waves').symlink_to(victim, target_is_directory=True)
  run(_argv(style, out, ('--input', photos)))
  assert list(victim.iterdir()) == []
  row, = manifest_rows(out)
  assert row['status'] == 'failed' and 'outside --output' in row['error']


def test_inputs_inside_the_output_are_failed_rows(tmp_path, style):
  out = tmp_path / 'out'
  inside = _photo(out / 'mine.jpg')
  listing = tmp_path / 'todo.txt'
  listing.write_text(f'{inside}\n')
  run(_argv(style, out, ('--input_list', listing)))
  row, = manifest_rows(out)
  assert row['status'] == 'failed'
  assert row['error'].startswith('input: the file is inside --output')
  with pytest.raises(ConfigError, match='inside --output'):
    run(_argv(style, out, ('--input', inside)))


def test_same_file_through_a_list_and_a_folder_is_one_pair(tmp_path, style):
  photos = tmp_path / 'photos'
  a = _photo(photos / 'a.jpg')
  listing = tmp_path / 'todo.txt'
  listing.write_text(f'{photos}/./a.jpg\n')
  out = tmp_path / 'out'
  run(_argv(style, out, ('--input', photos), ('--input_list', listing)))
  row, = manifest_rows(out)
  assert row['input'] == str(a) and row['output'] == f'{out}/waves/a.jpg.jpg'


def test_stale_temporary_files_of_other_runs_only_are_removed(tmp_path, style):
  photos = tmp_path / 'photos'
  _photo(photos / 'a.jpg')
  out = tmp_path / 'out'
  stale = out / '.stylize' / 'tmp' / 'old-run'
  stale.mkdir(parents=True)
  (stale / 'half-written').write_bytes(b'x')
  users = _photo(out / 'notes.tmp-1.jpg')  # Not the job's: never deleted.
  run(_argv(style, out, ('--input', photos)))
  assert not stale.exists()
  assert users.exists()
  assert not list((out / '.stylize' / 'tmp').iterdir())


def test_a_linked_state_folder_is_refused_before_any_work(tmp_path, style):
  """{output}/.stylize holds the job's markers and temporary files and is
  cleaned by every run: a link there must not take writes or deletions to
  another folder."""
  photos = tmp_path / 'photos'
  _photo(photos / 'a.jpg')
  victim = tmp_path / 'victim'
  (victim / 'tmp' / 'keep').mkdir(parents=True)
  (victim / 'tmp' / 'keep' / 'precious.txt').write_text('x')
  out = tmp_path / 'out'
  out.mkdir()
  (out / '.stylize').symlink_to(victim, target_is_directory=True)
  before = _snapshot(tmp_path)
  with pytest.raises(ConfigError, match='symbolic link'):
    run(_argv(style, out, ('--input', photos)))
  assert _snapshot(tmp_path) == before


def test_links_among_temporary_folders_are_left_alone(tmp_path, style):
  photos = tmp_path / 'photos'
  _photo(photos / 'a.jpg')
  victim = tmp_path / 'victim'
  victim.mkdir()
  (victim / 'precious.txt').write_text('x')
  out = tmp_path / 'out'
  (out / '.stylize' / 'tmp').mkdir(parents=True)
  (out / '.stylize' / 'tmp' / 'old-run').symlink_to(
      victim, target_is_directory=True)
  run(_argv(style, out, ('--input', photos)))
  assert (victim / 'precious.txt').read_text() == 'x'
  row, = manifest_rows(out)
  assert row['status'] == 'ok'


def test_list_files_are_read_literally_and_relative_to_their_folder(
    tmp_path, style, monkeypatch):
  """A list named 'todo[1].txt' is that file (not the glob that matches
  'todo1.txt'); relative entries are relative to the list's folder, also
  when --input_list itself is a relative path."""
  photos = tmp_path / 'lists' / 'photos'
  a = _photo(photos / 'a.jpg')
  b = _photo(photos / 'b.jpg', seed=1)
  (tmp_path / 'lists' / 'todo[1].txt').write_text('photos/a.jpg\n')
  (tmp_path / 'lists' / 'todo1.txt').write_text('photos/b.jpg\n')
  monkeypatch.chdir(tmp_path)
  out = tmp_path / 'out'
  run(_argv(style, out, ('--input_list', 'lists/todo[1].txt')))
  row, = manifest_rows(out)
  assert row['input'] == str(a) and row['status'] == 'ok'
  assert str(b) not in {r['input'] for r in manifest_rows(out)}
  with pytest.raises(ConfigError, match='is a folder'):
    run(_argv(style, out, ('--input_list', 'lists')))


def test_the_naming_rule_note_is_said_once_and_only_for_earlier_runs(
    tmp_path, style):
  """README "The layout rule": a folder an earlier version finished runs on
  (no naming-rule file) gets the note once; a new folder, and one whose
  only run was stopped before its end (markers, no summary.json), none."""
  from transforms.layout import naming_rule_uri
  photos = tmp_path / 'photos'
  _photo(photos / 'a b.jpg')
  out = tmp_path / 'out'
  argv = _argv(style, out, ('--input', photos))
  assert run(argv).job.naming_note == ''
  os.remove(naming_rule_uri(str(out)))  # As an earlier version left it.
  assert 'naming rule' in run(argv + ['--force']).job.naming_note
  assert run(argv).job.naming_note == ''
  # As if only a first run had been stopped early: its markers, no
  # summary.json, no naming-rule file.
  os.remove(naming_rule_uri(str(out)))
  os.remove(out / 'summary.json')
  assert run(argv).job.naming_note == ''
