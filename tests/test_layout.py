"""The output layout's guarantees, over generated names and trees (Hypothesis)."""

import os
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from transforms import layout as L
from transforms import paths, storage
from transforms.inputs import make_input
from transforms.layout import OutputLayout, encode_name, input_key

# Names as they occur: any text without '/', with the dangerous cases
# weighted in: dots, backslashes, control characters, '@', '%', '~',
# combining marks, surrogate-escaped bytes (local names that are not UTF-8),
# and very long names.
_DANGEROUS = st.sampled_from([
    '.', '..', '...', '\\', '..\\..\\escaped.jpg', ' ', '@', '%', '%2E', '~',
    '\n', '\r', '\x00', '\x7f', '\u0301', 'e\u0301', '\u00e9', '\ud800',
    '\udcff', '\u212b', '\u1100\u1161', 'a' * 300, 'é' * 200, '@gs', '%7E'])
NAMES = st.one_of(
    st.text(st.characters(blacklist_characters='/'), min_size=1, max_size=40),
    _DANGEROUS,
    st.lists(_DANGEROUS, min_size=1, max_size=4).map(''.join),
).filter(lambda n: '/' not in n)
LOCAL_NAMES = NAMES.filter(lambda n: n not in ('.', '..') and '\x00' not in n)


def _bad_level(level: str) -> bool:
  return (level in ('', '.', '..') or '/' in level or '\\' in level or
          any(unicodedata.category(c) in ('Cc', 'Cs') for c in level))


@given(NAMES)
def test_encoded_name_is_one_safe_level(name):
  enc = encode_name(name)
  assert not _bad_level(enc)
  assert len(enc.encode('utf-8')) <= L.MAX_NAME_BYTES
  assert unicodedata.is_normalized('NFC', enc)
  assert not enc.startswith(L.OUTSIDE_MARK)


@given(NAMES, NAMES)
def test_encoding_is_injective(a, b):
  assume(a != b)
  assert encode_name(a) != encode_name(b)


@given(st.text(min_size=1, max_size=20).filter(lambda n: '/' not in n))
def test_nfc_and_nfd_spellings_keep_distinct_nfc_outputs(name):
  nfd = unicodedata.normalize('NFD', name)
  nfc = unicodedata.normalize('NFC', name)
  assume(nfd != nfc)
  assert encode_name(nfd) != encode_name(nfc)
  assert unicodedata.is_normalized('NFC', encode_name(nfd))


@given(st.lists(NAMES, min_size=1, max_size=6), st.sampled_from(
    ['/data/in', 'gs://bucket/in']), st.booleans())
def test_every_output_is_inside_the_output_folder(levels, base, inside):
  scheme_root = base if inside else ('/elsewhere' if base.startswith('/')
                                     else 'gs://other')
  if base.startswith('/'):
    assume(all(n not in ('.', '..', '') and '\x00' not in n for n in levels))
  uri = scheme_root + '/' + '/'.join(levels)
  for out in ('/out', 'gs://b/out'):
    lay = OutputLayout.create(out, 'jpg', base) if out.startswith('gs') else (
        OutputLayout(out, 'jpg', base))
    key = lay.key(uri)
    try:
      target = lay.output_uri('waves', key)
      marker = lay.marker_uri('waves', key)
    except L.LayoutError as e:
      assert 'limit' in str(e)  # Only too long a path is refused.
      continue
    for path in (target, marker):
      assert L.is_inside(path, lay.output)
      rel = path[len(lay.output) + 1:]
      assert not any(_bad_level(level) for level in rel.split('/'))
      if not out.startswith('gs'):
        assert os.path.normpath(path).startswith(out + '/')


@given(st.lists(st.lists(NAMES, min_size=1, max_size=4), min_size=2,
                max_size=8, unique_by=tuple),
       st.sampled_from(['/data/in', 'gs://bucket/in']))
def test_keys_are_unique_and_do_not_depend_on_other_files(trees, base):
  uris = [base + '/' + '/'.join(t) for t in trees]
  outside = ['gs://x/' + '/'.join(t) for t in trees] + [
      '/y/' + '/'.join(t) for t in trees if '\x00' not in ''.join(t)]
  everything = uris + outside
  assume(len(set(everything)) == len(everything))
  keys = [input_key(u, base) for u in everything]
  assert len(set(keys)) == len(keys)  # Two inputs never share an output.
  # A key is a function of its own URI and the base: computing it among
  # fewer or more files gives the same answer.
  assert [input_key(u, base) for u in uris[:1]] == keys[:1]


@given(st.sampled_from(['report', 'report.html', 'summary.json', '.stylize',
                        'manifest-00000-of-00001.jsonl', 'manifest']))
def test_style_labels_never_take_the_jobs_own_names(label):
  assert L.style_label(label) not in ('report', 'report.html', 'summary.json',
                                      '.stylize')
  assert not L.MANIFEST_SHARD.match(L.style_label(label))


def test_key_examples():
  assert input_key('/in/a/IMG_1.jpg', '/in') == 'a/IMG_1.jpg'
  assert input_key('/in/..\\..\\x.jpg', '/in') == '..%5C..%5Cx.jpg'
  assert input_key('/data/x.jpg', '/in') == '@file/data/x.jpg'
  assert input_key('gs://b/x/y.jpg', '') == '@gs/b/x/y.jpg'
  assert input_key('gs://b/in/../x.jpg', 'gs://b/in') == '%2E%2E/x.jpg'
  assert input_key('gs://b/in//x.jpg', 'gs://b/in') == '%2F/x.jpg'
  assert input_key('/in/@home.jpg', '/in') == '%40home.jpg'
  lay = OutputLayout('/out', 'jpg', '/in')
  assert lay.output_uri('waves', 'a/IMG_1.jpg') == '/out/waves/a/IMG_1.jpg.jpg'


def test_long_names_are_cut_with_a_hash():
  a, b = 'x' * 400 + 'a.jpg', 'x' * 400 + 'b.jpg'
  assert encode_name(a) != encode_name(b)
  assert encode_name(a).startswith('x' * 100)
  assert '~' in encode_name(a)


def test_check_refuses_paths_outside_and_traversal():
  lay = OutputLayout('/out', 'jpg', '/in')
  for bad in ('/out', '/outside/x', '/out/../x', '/out/a/../../x', '/out//x',
              '/out/a\\b', 'gs://out/x'):
    with pytest.raises(L.LayoutError):
      lay.check(bad)
  lay.check('/out/waves/x.jpg.jpg')


def test_parse_listed_round_trips():
  lay = OutputLayout('/out', 'jpg', '/in')
  key = input_key('/in/sub/%weird name.JPG', '/in')
  assert lay.parse_listed(lay.output_uri('waves', key)) == L.Listed(
      'output', 'waves', key)
  assert lay.parse_listed(lay.marker_uri('waves', key)) == L.Listed(
      'marker', 'waves', key)
  # A marker of the earlier format (to remove), and files that are no one's.
  legacy = f'/out/.stylize/done/waves/{key}.jpg.{"f" * 40}'
  assert lay.parse_listed(legacy) == L.Listed('legacy-marker', 'waves', key)
  # Whatever format it was made for: every old marker is removed.
  legacy_png = f'/out/.stylize/done/waves/{key}.png.{"f" * 40}'
  assert lay.parse_listed(legacy_png) == L.Listed('legacy-marker', 'waves',
                                                  key)
  assert lay.parse_listed('/out/.stylize/done/waves/x.jpg.txt') is None
  assert lay.parse_listed('/out/manifest-00000-of-00001.jsonl') is None
  assert lay.parse_listed('/out/waves/x.png') is None  # Another format.


def test_make_input_refuses_inputs_inside_the_output(tmp_path):
  lay = OutputLayout.create(str(tmp_path / 'out'), 'jpg', str(tmp_path))
  (tmp_path / 'out').mkdir()
  inside = tmp_path / 'out' / 'x.jpg'
  inside.write_bytes(b'x')
  item = make_input(str(inside), storage.stat(str(inside)), lay)
  assert item.error.startswith('input: the file is inside --output')


# -- trees on disk ----------------------------------------------------------

POSIX_NAMES = LOCAL_NAMES.filter(
    lambda n: len(os.fsencode(n)) <= 200 if _fsencodable(n) else False)


def _fsencodable(name: str) -> bool:
  try:
    os.fsencode(name)
    return True
  except UnicodeEncodeError:
    return False


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(POSIX_NAMES, min_size=1, max_size=3), min_size=1,
                max_size=6))
def test_real_trees_map_inside_and_one_to_one(tmp_path_factory, trees):
  root = tmp_path_factory.mktemp('tree')
  inputs = root / 'in'
  inputs.mkdir()
  made = set()
  for levels in trees:
    path = inputs.joinpath(*levels)
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      if path.exists():
        continue
      path.write_bytes(b'x')
      made.add(os.path.realpath(path))
    except OSError:
      continue  # A prefix of another tree is already a file, or a dir.
  lay = OutputLayout.create(str(root / 'out'), 'jpg', str(inputs))
  items = [make_input(e.path, e, lay)
           for e in storage.iter_files(str(inputs), follow_links=True)]
  assert {i.uri for i in items} == made
  outputs = [lay.output_uri('s', i.key) for i in items if not i.error]
  assert len(set(outputs)) == len(outputs)
  for out in outputs:
    assert os.path.realpath(out).startswith(str(root / 'out') + '/')


def test_glob_semantics_follow_python_glob():
  rx = paths.glob_regex('/d/**/*.jpg')
  assert rx.match('/d/a.jpg') and rx.match('/d/x/y/a.jpg')
  assert not rx.match('/d/a.png') and not rx.match('/e/a.jpg')
  rx = paths.glob_regex('/d/*.jpg')
  assert rx.match('/d/a.jpg') and not rx.match('/d/x/a.jpg')
  assert rx.match('/d/a\\b.jpg')  # A backslash is a name character.
  rx = paths.glob_regex('/d/IMG_[0-9]?.JPG')
  assert rx.match('/d/IMG_12.JPG') and not rx.match('/d/IMG_a2.JPG')
  rx = paths.glob_regex('/d/[!a]*')
  assert rx.match('/d/b') and not rx.match('/d/a') and not rx.match('/d/b/c')
  rx = paths.glob_regex('gs://b/p/**')
  assert rx.match('gs://b/p/a/b/c.jpg')
  assert paths.glob_root('/d/x/**/*.jpg') == '/d/x'
  assert paths.glob_root('gs://b/p/*.jpg') == 'gs://b/p'
  rx = paths.glob_regex('/d/IMG [[]1].jpg')  # glob.escape('IMG [1].jpg')
  assert rx.match('/d/IMG [1].jpg')


def test_common_base():
  assert paths.common_base(['/a/b/c', '/a/b/d']) == '/a/b'
  assert paths.common_base(['/a/b']) == '/a/b'
  assert paths.common_base(['gs://x/p/q', 'gs://x/p/r']) == 'gs://x/p'
  assert paths.common_base(['gs://x/p', '/local']) == ''


def test_image_extensions_any_case():
  assert paths.is_image_name('/x/IMG.JPEG')
  assert paths.is_image_name('a.WebP')
  assert not paths.is_image_name('/x/.DS_Store')
  assert not paths.is_image_name('/x/IMG.xmp')
  # The extension follows the last dot, leading dots or not.
  assert paths.is_image_name('/x/..jpg') and paths.is_image_name('.a.png')
  assert paths.is_image_name('gs://b/x..y.JPG')
  assert not paths.is_image_name('/x/.jpg')  # A dotfile named "jpg".
  assert not paths.is_image_name('/x.jpg/readme')
  # A Mac's AppleDouble twin of a photo is metadata, not an image.
  assert not paths.is_image_name('/x/._IMG_0001.JPG')
  assert paths.is_image_name('/x/_IMG_0001.JPG')


def test_list_entries_skip_blanks_and_comments():
  assert list(paths.list_entries(['# header', '', ' /a.jpg ', 'gs://b/c.png',
                                  '   # indented comment'])) == [
                                      '/a.jpg', 'gs://b/c.png']


def test_is_within(tmp_path):
  assert paths.is_within(str(tmp_path / 'in' / 'out'), str(tmp_path / 'in'))
  assert paths.is_within(str(tmp_path / 'in'), str(tmp_path / 'in'))
  assert not paths.is_within(str(tmp_path / 'inx'), str(tmp_path / 'in'))
  assert paths.is_within('gs://b/in/out', 'gs://b/in')
