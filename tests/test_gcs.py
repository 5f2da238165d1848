"""gs:// end to end on a real GCS emulator (fake-gcs-server on 127.0.0.1)."""

import json
import pathlib

import pytest
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from beam_jobs.stylize import run
from tests.conftest import gradient, shared_path, upload
from transforms.models.cache import model_digest


def gs_rows(output):
  rows = []
  for meta in FileSystems.match([f'{output}/manifest*.jsonl'])[0].metadata_list:
    with FileSystems.open(meta.path) as f:
      rows += [json.loads(l) for l in f.read().decode().splitlines() if l]
  return rows


def gs_summary(output):
  with FileSystems.open(f'{output}/summary.json') as f:
    return json.loads(f.read())


@pytest.mark.slow
def test_gs_round_trip_real_model(gcs_emulator, tmp_path):
  bucket = gcs_emulator()
  content = upload(shared_path('images', 'content'), f'{bucket}/photos')
  style = upload(shared_path('images', 'style', 'towers_1916_sq.jpg'),
                 f'{bucket}/styles')
  model = upload(shared_path('models', 'magenta-arbitrary-v1-256-savedmodel'),
                 f'{bucket}/models/magenta')
  listing = f'{bucket}/lists/todo.txt'
  with FileSystems.create(listing) as f:
    f.write(f'# two again, by list\n{content}/eiffel_tower.jpg\n'.encode())
  output = f'{bucket}/out'
  run(['--input', f'{content}/*.jpg', '--input_list', listing,
       '--style', style, '--model', model, '--output', output])
  rows = gs_rows(output)
  assert len(rows) == 4 and {r['status'] for r in rows} == {'ok'}
  for row in rows:
    assert row['output'].startswith(f'{output}/towers_1916_sq/')
    with FileSystems.open(row['output']) as f:
      data = f.read()
    im = Image.open(__import__('io').BytesIO(data))
    assert im.size == (row['width'], row['height'])
  assert gs_summary(output)['counts']['ok'] == 4


def test_gs_rerun_skips_done_and_does_new(gcs_emulator, tmp_path, samples):
  bucket = gcs_emulator()
  local = tmp_path / 'in'
  local.mkdir()
  for i in range(6):
    gradient(48, 32, seed=i).save(local / f'old{i}.jpg')
  photos = upload(local, f'{bucket}/photos')
  style = upload(samples / 'style' / 'waves.jpg', f'{bucket}/styles')
  output = f'{bucket}/out'
  argv = ['--input', photos, '--style', style, '--model', 'builtin',
          '--output', output]
  run(argv)
  assert [r['status'] for r in gs_rows(output)] == ['ok'] * 6
  new = tmp_path / 'new'
  new.mkdir()
  for i in range(3):
    gradient(48, 32, seed=10 + i).save(new / f'new{i}.jpg')
  upload(new, f'{bucket}/photos')
  result = run(argv)
  rows = gs_rows(output)
  by_status = {}
  for r in rows:
    by_status.setdefault(r['status'], []).append(r['input'].rsplit('/', 1)[1])
  assert sorted(by_status['skipped']) == [f'old{i}.jpg' for i in range(6)]
  assert sorted(by_status['ok']) == [f'new{i}.jpg' for i in range(3)]
  assert gs_summary(output)['counts'] == {'ok': 3, 'failed': 0, 'skipped': 6}
  from apache_beam.metrics.metric import MetricsFilter
  stylized = result.metrics().query(MetricsFilter().with_name('stylized'))
  assert sum(c.committed for c in stylized['counters']) == 3


def test_gs_lite_pair_and_tar_gz_model_with_digest(gcs_emulator, tmp_path,
                                                  samples):
  import tarfile
  bucket = gcs_emulator()
  lite = shared_path('models', 'magenta-arbitrary-v1-256-lite')
  predict = upload(lite / 'style_predict_quantized_256.tflite',
                   f'{bucket}/lite')
  transfer = upload(lite / 'style_transfer_quantized_384.tflite',
                    f'{bucket}/lite')
  photo = tmp_path / 'p.jpg'
  gradient(64, 48).save(photo)
  out = tmp_path / 'out_lite'
  run(['--input', str(photo), '--style', str(samples / 'style' / 'waves.jpg'),
       '--model', f'{predict},{transfer}', '--output', str(out)])
  rows = [json.loads(l) for m in sorted(out.glob('manifest-*.jsonl'))
          for l in m.read_text().splitlines()]
  assert rows[0]['status'] == 'ok'
  assert rows[0]['params']['strength_mode'] == 'style-vector'

  saved = shared_path('models', 'magenta-arbitrary-v1-256-savedmodel')
  archive = tmp_path / 'magenta.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(saved, arcname='magenta')
  remote = upload(archive, f'{bucket}/packed')
  digest = model_digest(str(saved))
  out2 = tmp_path / 'out_tar'
  run(['--input', str(photo), '--style', str(samples / 'style' / 'waves.jpg'),
       '--model', remote, '--model_sha256', digest, '--output', str(out2)])
  assert json.loads((out2 / 'summary.json').read_text())['counts']['ok'] == 1


def test_gs_object_names_with_dots_and_slashes_stay_inside_output(
    gcs_emulator, samples):
  """Object names are taken literally and every output lands below --output,
  each input once. (fake-gcs-server cleans '.', '..' and '//' out of object
  names on upload, so those names are covered by tests/test_layout.py's
  property tests of the key mapping, not here.)"""
  bucket = gcs_emulator()
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage
  client = storage.Client(credentials=AnonymousCredentials(), project='test')
  data = __import__('tests.conftest', fromlist=['image_bytes']).image_bytes(
      gradient(24, 16), 'JPEG')
  names = ['photos/..\\..\\back.jpg', 'photos/@gs.jpg', 'photos/100%.jpg',
           'photos/q?#x.jpg', 'photos/sub/ok.jpg']
  b = client.bucket(bucket[len('gs://'):])
  for name in names:
    b.blob(name).upload_from_string(data, content_type='image/jpeg')
  style = upload(samples / 'style' / 'waves.jpg', f'{bucket}/styles')
  output = f'{bucket}/out'
  run(['--input', f'{bucket}/photos', '--style', style, '--model', 'builtin',
       '--output', output])
  rows = gs_rows(output)
  assert sorted(r['input'] for r in rows) == sorted(
      f'{bucket}/{n}' for n in names)
  assert {r['status'] for r in rows} == {'ok'}
  outputs = {r['output'] for r in rows}
  assert len(outputs) == len(names)
  for o in outputs:
    assert o.startswith(f'{output}/waves/')
    rest = o[len(output) + 1:].split('/')
    assert not any(level in ('', '.', '..') for level in rest)
  written = [x.name for x in b.list_blobs()]
  assert all(n.startswith(('out/', 'photos', 'styles/')) for n in written)


def test_gs_content_identity_and_the_lease(gcs_emulator, tmp_path, samples):
  """On GCS an input's identity is its CRC32C: an object replaced by other
  bytes of the same size is redone, one re-uploaded with the same bytes (a
  new generation) is not. And a second run on a held gs:// output is
  refused before any work; the lease object is created only if absent."""
  from beam_jobs.errors import ConfigError
  from transforms.lease import Lease
  bucket = gcs_emulator()
  local = tmp_path / 'in'
  local.mkdir()
  for i in range(3):
    gradient(40, 30, seed=i).save(local / f'p{i}.bmp')
  photos = upload(local, f'{bucket}/photos')
  style = upload(samples / 'style' / 'waves.jpg', f'{bucket}/styles')
  output = f'{bucket}/out'
  argv = ['--input', photos, '--style', style, '--model', 'builtin',
          '--output', output]
  run(argv)
  # p0: other pixels, the same number of bytes; p1: the same bytes again.
  gradient(40, 30, seed=7).save(local / 'p0.bmp')
  assert (local / 'p0.bmp').stat().st_size == (local / 'p2.bmp').stat().st_size
  upload(local / 'p0.bmp', f'{bucket}/photos')
  upload(local / 'p1.bmp', f'{bucket}/photos')
  run(argv)
  status = {r['input'].rsplit('/', 1)[1]: r['status'] for r in gs_rows(output)}
  assert status == {'p0.bmp': 'ok', 'p1.bmp': 'skipped', 'p2.bmp': 'skipped'}

  holder = Lease(output, 'someone-else')
  holder.acquire()
  try:
    with pytest.raises(ConfigError, match='in use by another stylize run '
                       'someone-else'):
      run(argv)
    from transforms import gcs
    with pytest.raises(gcs.PreconditionFailed):  # Created only if absent.
      gcs.write(holder.uri, b'{}', if_generation_match=0)
  finally:
    holder.release()
  run(argv)
  assert {r['status'] for r in gs_rows(output)} == {'skipped'}


def test_a_cached_model_copy_that_changed_is_fetched_again(
    gcs_emulator, tmp_path, samples, model_cache):
  bucket = gcs_emulator()
  lite = shared_path('models', 'magenta-arbitrary-v1-256-lite')
  remote = f'{bucket}/lite'
  for name in ('style_predict_quantized_256.tflite',
               'style_transfer_quantized_384.tflite'):
    upload(lite / name, remote)
  from transforms.models import cache
  first = cache.localize(remote)
  copy = next(p for p in pathlib.Path(first).iterdir()
              if p.name.startswith('style_transfer'))
  original = copy.read_bytes()
  copy.write_bytes(original[:-10] + b'0123456789')  # Tampered in place.
  again = cache.localize(remote)
  assert again == first
  assert copy.read_bytes() == original
