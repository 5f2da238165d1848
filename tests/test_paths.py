"""Path mapping: input roots, relative paths, output names, style labels."""

import os

from transforms import paths
from transforms.paths import output_uri


def test_directory_input_matches_recursively(tmp_path):
  spec = paths.make_input_spec(str(tmp_path))
  assert spec.pattern == f'{tmp_path}/**'
  assert spec.root == str(tmp_path)
  assert not spec.explicit


def test_directory_with_trailing_slash(tmp_path):
  spec = paths.make_input_spec(str(tmp_path) + '/')
  assert spec.root == str(tmp_path)


def test_glob_root_is_folder_before_first_wildcard(tmp_path):
  spec = paths.make_input_spec(f'{tmp_path}/a/*/x*.jpg')
  assert spec.root == f'{tmp_path}/a'
  assert spec.pattern == f'{tmp_path}/a/*/x*.jpg'
  assert not spec.explicit


def test_explicit_file_is_explicit(tmp_path):
  f = tmp_path / 'notes.dat'
  f.write_bytes(b'x')
  spec = paths.make_input_spec(str(f))
  assert spec.explicit and spec.root == str(tmp_path)


def test_relative_arguments_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'photos').mkdir()
  assert paths.make_input_spec('photos').root == str(tmp_path / 'photos')


def test_gcs_glob_root():
  spec = paths.make_input_spec('gs://bucket/archive/2024/*.jpg')
  assert spec.root == 'gs://bucket/archive/2024'


def test_common_base():
  assert paths.common_base(['/a/b/c', '/a/b/d']) == '/a/b'
  assert paths.common_base(['/a/b']) == '/a/b'
  assert paths.common_base(['gs://x/p/q', 'gs://x/p/r']) == 'gs://x/p'
  assert paths.common_base(['gs://x/p', '/local']) == ''


def test_relative_path_keeps_subfolders():
  assert paths.relative_path('/in/a/b/IMG_1.JPG', '/in') == 'a/b/IMG_1.JPG'
  assert paths.relative_path('gs://b/in/x.jpg', 'gs://b/in') == 'x.jpg'


def test_relative_path_outside_base_is_scheme_stripped():
  assert paths.relative_path('gs://b/x/y.jpg', '/in') == 'b/x/y.jpg'
  assert paths.strip_scheme('/data/y.jpg') == 'data/y.jpg'


def test_same_name_in_two_folders_maps_to_two_outputs():
  a = paths.relative_path('/in/one/IMG_0001.jpg', '/in')
  b = paths.relative_path('/in/two/IMG_0001.jpg', '/in')
  assert output_uri('/out', 's', os.path.splitext(a)[0], 'jpg') != output_uri(
      '/out', 's', os.path.splitext(b)[0], 'jpg')


def test_output_uri_names_style_and_keeps_tree():
  assert output_uri('/out', 'waves', 'a/b/IMG_1', 'png') == (
      '/out/waves/a/b/IMG_1.png')
  assert output_uri('gs://b/out/', 'w', 'x', 'jpg') == 'gs://b/out/w/x.jpg'


def test_style_labels_unique_and_safe():
  labels = paths.style_labels(['/s/a/starry night.jpg', '/s/b/starry night.jpg',
                               '/s/kandinsky.png'])
  assert labels[2] == 'kandinsky'
  assert labels[0] != labels[1]
  assert all(l.startswith('starry_night-') for l in labels[:2])


def test_non_ascii_names_kept():
  assert paths.safe_name('Mondrian–Komposition') == 'Mondrian_Komposition'
  assert paths.safe_name('café') == 'café'


def test_image_extensions_any_case():
  assert paths.is_image_name('/x/IMG.JPEG')
  assert paths.is_image_name('a.WebP')
  assert paths.is_image_name('a.tif')
  assert not paths.is_image_name('/x/.DS_Store')
  assert not paths.is_image_name('/x/IMG.xmp')


def test_list_entries_skip_blanks_and_comments():
  assert list(paths.list_entries(['# header', '', ' /a.jpg ', 'gs://b/c.png',
                                  '   # indented comment'])) == [
                                      '/a.jpg', 'gs://b/c.png']


def test_is_within(tmp_path):
  assert paths.is_within(str(tmp_path / 'in' / 'out'), str(tmp_path / 'in'))
  assert paths.is_within(str(tmp_path / 'in'), str(tmp_path / 'in'))
  assert not paths.is_within(str(tmp_path / 'inx'), str(tmp_path / 'in'))
  assert paths.is_within('gs://b/in/out', 'gs://b/in')
