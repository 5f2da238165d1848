"""The identity of work: one declaration per flag decides what it covers.

Property tests over JobSettings: every setting declared Identity.VALUE
changes the job key and every other setting leaves it alone, for any valid
values; the outcome key (remembered failures) also covers the limits.
"""

import dataclasses
import typing

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from beam_jobs import settings as S
from beam_jobs.errors import ConfigError
from beam_jobs.options import JobConfig
from transforms import identity
from transforms.layout import OutputLayout
from transforms.records import InputFile, StyleRef
from transforms.incremental import identity_of

BASE = {'input': ['/in'], 'output': '/out', 'style': ['/s.jpg']}


def _job(job_settings: S.JobSettings, fingerprint='sha256:model') -> JobConfig:
  return JobConfig(settings=job_settings, input_specs=[], input_lists=[],
                   layout=OutputLayout('/out', 'jpg', '/in'), styles=[],
                   model='m', model_source='m', model_fingerprint=fingerprint,
                   tf_threads=0, run_id='r')


# Settings that need a router (and no --style) to be valid.
ROUTED = {'route_model', 'route', 'route_model_sha256'}


def _other_value(name: str):
  """A valid value of the setting, other than its default."""
  info = S.JobSettings.model_fields[name]
  default, annotation = info.default, info.annotation
  args = typing.get_args(annotation)
  if annotation is bool:
    return not default
  if typing.get_origin(annotation) is typing.Literal:
    return next(v for v in args if v != default)
  if name == 'tile_size':
    return 128  # 0 or at least 64.
  if annotation is float:
    return default / 2
  if annotation is int or int in args:
    value = (default or 0) + 1
    return value if value <= S._bounds(name).get('le', value) else value - 2  # pylint: disable=protected-access
  if any(typing.get_origin(a) is list for a in args):
    return ['/other']
  return '/other'


def _settings(**changes) -> S.JobSettings:
  values = dict(BASE)
  if ROUTED & set(changes):
    values.pop('style')
    values.update(route_model='/router', route=['photo=/s.jpg'])
  values.update(changes)
  return S.JobSettings(**values)


@pytest.mark.parametrize('name', sorted(S.JobSettings.model_fields))
def test_each_setting_moves_the_keys_it_is_declared_to(name):
  kind = S.field_extra(name)['identity']
  base = _job(_settings(**({'route_model': '/router'} if name in ROUTED
                           else {})))
  changed = _job(_settings(**{name: _other_value(name)}))
  assert (changed.job_key != base.job_key) == (kind == S.Identity.VALUE.value)
  assert (changed.failure_key != base.failure_key) == (kind in (
      S.Identity.VALUE.value, S.Identity.OUTCOME.value))


def test_every_field_declares_its_flag_and_its_identity():
  for name in S.JobSettings.model_fields:
    extra = S.field_extra(name)
    assert extra['group'] in S.GROUPS
    assert extra['identity'] in {i.value for i in S.Identity}

  class Forgetful(S.JobSettings):
    new_pixel_flag: int = 3  # Declared without setting(): no identity.

  with pytest.raises(TypeError, match='new_pixel_flag must be declared'):
    S.check_declarations(Forgetful)


VALUE_FIELDS = {
    'max_size': st.integers(0, 8192),
    'style_size': st.integers(16, 2048),
    'jpeg_quality': st.integers(1, 100),
    'output_format': st.sampled_from(['jpg', 'png', 'webp']),
    'style_strength': st.floats(0, 1),
    'preserve_colors': st.booleans(),
    'keep_gps': st.booleans(),
    'max_untiled_pixels': st.integers(2048 * 2048, 10**8),
    'tile_overlap': st.integers(0, 32),
    'engine': st.sampled_from(['auto', 'openvino']),
    'precision': st.sampled_from(['auto', 'bf16', 'f32']),
}


def test_the_generated_fields_cover_every_value_setting():
  assert set(S.fields_with(S.Identity.VALUE)) - {'route', 'tile_size'} == set(
      VALUE_FIELDS)


@hsettings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries(VALUE_FIELDS), st.fixed_dictionaries(VALUE_FIELDS),
       st.fixed_dictionaries({'batch_size': st.integers(1, 256),
                              'io_threads': st.integers(0, 64),
                              'wave_pairs': st.integers(0, 10**6),
                              'force': st.booleans(),
                              'max_failure_ratio': st.floats(0, 1)}))
def test_keys_equal_exactly_when_the_output_settings_are_equal(a, b, how):
  ja, jb = _job(_settings(**a)), _job(_settings(**b, **how))
  assert (ja.job_key == jb.job_key) == (a == b)


@hsettings(max_examples=100, deadline=None)
@given(st.integers(0, 10**9), st.text(min_size=1, max_size=12),
       st.text(min_size=1, max_size=12), st.floats(0.01, 1))
def test_pair_identity_changes_with_content_not_with_names(size, v1, v2, w):
  style = StyleRef(uri='/s.jpg', label='s', fingerprint=identity.style_fingerprint(
      [('a' * 64, w)]))
  item = InputFile(uri='/in/x.jpg', key='x.jpg', size_bytes=size, version=v1)
  same = identity_of(item, style, 'key')
  changed = identity_of(dataclasses.replace(item, version=v2), style, 'key')
  assert (changed == same) == (v1 == v2)
  resized = dataclasses.replace(item, size_bytes=size + 1)
  assert identity_of(resized, style, 'key') != same
  renamed = dataclasses.replace(style, uri='/elsewhere/t.jpg', label='t')
  assert identity_of(item, renamed, 'key') == same  # Content, not names.
  other = dataclasses.replace(style, fingerprint=identity.style_fingerprint(
      [('b' * 64, w)]))
  assert identity_of(item, other, 'key') != same
  assert identity_of(item, style, 'key2') != same


def test_model_fingerprint_follows_content(tmp_path):
  model = tmp_path / 'm'
  model.mkdir()
  (model / 'saved_model.pb').write_bytes(b'one')
  first = identity.model_fingerprint(str(model))
  copy = tmp_path / 'copy'
  copy.mkdir()
  (copy / 'saved_model.pb').write_bytes(b'one')
  assert identity.model_fingerprint(str(copy)) == first  # Renamed: same.
  (model / 'saved_model.pb').write_bytes(b'two')
  assert identity.model_fingerprint(str(model)) != first
  assert identity.model_fingerprint('builtin').startswith('builtin:')
  hub = 'https://tfhub.dev/google/magenta/arbitrary-image-stylization-v1-256/2'
  assert identity.model_fingerprint(hub) == f'hub:{hub}'


def test_model_and_router_loads_refuse_files_changed_since_launch(tmp_path):
  """The model's and the router's loaders share one check: same files pass,
  changed files and missing files are their own error, said the same way."""
  from transforms.models import loader, router
  folder = tmp_path / 'r'
  (folder / 'model').mkdir(parents=True)
  (folder / 'model' / 'saved_model.pb').write_bytes(b'one')
  (folder / router.ROUTER_FILE).write_text('{}')
  info = router.RouterInfo(labels=('a', 'b'), image_size=224,
                           feature_model='f', router_id='r',
                           saved_model='model')
  files = router.router_files(str(folder), info)
  launched = identity.files_fingerprint(files)
  model_launched = identity.files_fingerprint(str(folder / 'model'))
  router.verify_fingerprint(str(folder), info, launched)
  loader.verify_fingerprint(str(folder / 'model'), model_launched)

  (folder / 'model' / 'saved_model.pb').write_bytes(b'two')
  for check, error in (
      (lambda: router.verify_fingerprint(str(folder), info, launched),
       router.RouterError),
      (lambda: loader.verify_fingerprint(str(folder / 'model'),
                                         model_launched),
       loader.ModelLoadError)):
    with pytest.raises(error, match=r'changed since the job was launched '
                       r'\(its files now have fingerprint sha256:\w+, the '
                       r'launch saw sha256:\w+\).* Rerun the job\.$'):
      check()
  (folder / 'model' / 'saved_model.pb').unlink()
  (folder / 'model').rmdir()
  with pytest.raises(router.RouterError, match='cannot be read'):
    router.verify_fingerprint(str(folder), info, launched)
  with pytest.raises(loader.ModelLoadError, match='cannot be read'):
    loader.verify_fingerprint(str(folder / 'model'), model_launched)


def test_bounds_are_phrased_for_the_command_line():
  with pytest.raises(ConfigError, match=r'^--jpeg_quality must be between 1 '
                     r'and 100, got 0\.$'):
    S.from_values(dict(BASE, jpeg_quality=0))
  with pytest.raises(ConfigError, match=r'^--wave_pairs must be at least 0'):
    S.from_values(dict(BASE, wave_pairs=-1))
  with pytest.raises(ConfigError, match=r"^--output_format: invalid choice: "
                     r"'gif'"):
    S.from_values(dict(BASE, output_format='gif'))
