"""transforms/models/sharing.py: one load per key while a run shares."""

import threading

import pytest

from transforms.models import sharing


def loader(name, log):
  def load():
    log.append(name)
    return object()
  return load


def test_off_outside_a_run_and_once_per_key_inside():
  log = []
  a = sharing.shared_load('a', loader('a', log))
  assert sharing.shared_load('a', loader('a', log)) is not a
  with sharing.sharing_loaded_models():
    first = sharing.shared_load('a', loader('a', log))
    assert sharing.shared_load('a', loader('a', log)) is first
    assert sharing.shared_load('b', loader('b', log)) is not first
    # No key: nothing identifies it well enough to share.
    assert sharing.shared_load(None, loader('n', log)) is not None
    sharing.shared_load(None, loader('n', log))
  assert sharing.shared_load('a', loader('a', log)) is not first
  assert log == ['a', 'a', 'a', 'b', 'n', 'n', 'a']


def test_a_failed_load_is_not_kept():
  def broken():
    raise OSError('disk')
  with sharing.sharing_loaded_models():
    with pytest.raises(OSError):
      sharing.shared_load('a', broken)
    log = []
    sharing.shared_load('a', loader('a', log))
    assert log == ['a']


def test_a_run_inside_a_run_shares_the_outer_runs_loads():
  log = []
  with sharing.sharing_loaded_models():
    outer = sharing.shared_load('a', loader('a', log))
    with sharing.sharing_loaded_models():
      assert sharing.shared_load('a', loader('a', log)) is outer
    # The inner run's end does not end the outer run's sharing.
    assert sharing.shared_load('a', loader('a', log)) is outer
  assert log == ['a']


def test_a_slow_load_holds_up_only_its_own_key():
  """Another key loads meanwhile; the same key waits and then shares."""
  started, release = threading.Event(), threading.Event()
  results, log = {}, []

  def slow():
    started.set()
    assert release.wait(60)
    log.append('slow')
    return 'slow model'

  def call(name, key, load):
    results[name] = sharing.shared_load(key, load)

  with sharing.sharing_loaded_models():
    first = threading.Thread(target=call, args=('first', 'a', slow))
    first.start()
    assert started.wait(60)
    # Would wait for `slow` if one lock were held across every load.
    other = threading.Thread(target=call,
                             args=('other', 'b', lambda: 'other model'))
    other.start()
    other.join(60)
    assert results.get('other') == 'other model'
    same = threading.Thread(target=call, args=('same', 'a', slow))
    same.start()
    release.set()
    first.join(60)
    same.join(60)
  assert results['first'] == results['same'] == 'slow model'
  assert log == ['slow']
