"""stylize-train: transfer learning with hub.KerasLayer, saved as a router.

Real feature model (../shared/models/magenta-style-features-v1-256), real
labelled images made in the tests (tests/labelled.py), real Beam extraction.
"""

import http.server
import io
import json
import os
import pathlib
import shutil
import tarfile
import threading
import urllib.parse

import numpy as np
import pytest

from beam_jobs.options import ConfigError
from beam_jobs.train import main as train_main
from beam_jobs.train import run as train
from tests.conftest import shared_path, train_args
from tests.labelled import CLASSES, write_labelled_set
from transforms.models import tfhub
from transforms.models.base import ModelLoadError
from transforms.models.features import (DEFAULT_FEATURE_MODEL, FeatureModel,
                                        size_from_handle)
from transforms.models.router import (REPORT_FILE, ROUTER_FILE,
                                      SAVED_MODEL_DIR, Router, fit_image)
from training.data import TRAIN, VALIDATION, split
from training.evaluate import per_class_metrics


def writable_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  """A copy of a (read-only) folder that the test may later delete."""
  for path in src.rglob('*'):
    target = dst / path.relative_to(src)
    if path.is_dir():
      target.mkdir(parents=True, exist_ok=True)
    else:
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(path, target)
  return dst


def small_set(root, per_class=3, seed=5, classes=CLASSES):
  photos = sorted(shared_path('images', 'content').glob('*.jpg'))
  write_labelled_set(root, photos, per_class, seed=seed, classes=classes)
  return root


# ------------------------------------------------------------ pure parts --

def test_split_is_stratified_deterministic_and_keeps_one_each_side():
  classes = {'a': [f'/d/a/{i}.jpg' for i in range(10)],
             'b': ['/d/b/0.jpg', '/d/b/1.jpg']}
  labels, images = split('/d', classes, 0.2, seed=0)
  assert labels == ['a', 'b']
  val = [i for i in images if i.split == VALIDATION]
  assert sorted((i.label, i.uri) for i in val) == sorted(
      (i.label, i.uri) for i in split('/d', classes, 0.2, seed=0)[1]
      if i.split == VALIDATION)
  assert sum(1 for i in val if i.label == 0) == 2
  assert sum(1 for i in val if i.label == 1) == 1
  assert sum(1 for i in images if i.label == 1 and i.split == TRAIN) == 1
  other = {i.uri for i in split('/d', classes, 0.2, seed=1)[1]
           if i.split == VALIDATION}
  assert other != {i.uri for i in val}  # The seed matters.


@pytest.mark.parametrize('elsewhere', ['/elsewhere/copy', 'gs://bucket/set'])
def test_the_same_set_copied_elsewhere_splits_the_same_way(elsewhere):
  """The split goes by each image's name within the data folder, not where
  the folder is: a copy (another disk, a bucket) trains the same router."""
  names = [f'{c}/{i:02d}.jpg' for c in 'abc' for i in range(20)]

  def validation_names(root):
    classes = {c: [f'{root}/{n}' for n in names if n[0] == c] for c in 'abc'}
    return sorted(i.uri[len(root) + 1:]
                  for i in split(root, classes, 0.2, seed=3)[1]
                  if i.split == VALIDATION)

  here = validation_names('/tmp/d')
  assert len(here) == 12
  assert validation_names(elsewhere) == here
  with pytest.raises(ValueError, match='not in the labelled folder'):
    split('/tmp/d', {'a': ['/other/a/0.jpg', '/other/a/1.jpg']}, 0.2, 0)


def test_features_are_read_in_uri_order_whatever_the_shards(tmp_path):
  """Which image lands in which shard is Beam's choice (shard names are
  content hashes): the training reads them in URI order, so the same data
  and --seed train the same router."""
  from training.extract import read_features, write_shard
  rows = {u: (i % 2, np.full(3, i, np.float32))
          for i, u in enumerate(['d', 'a', 'c', 'b', 'e'])}

  def batch(uris):
    return {'uris': np.array(uris),
            'labels': np.array([rows[u][0] for u in uris], np.int32),
            'features': np.stack([rows[u][1] for u in uris])}

  got = []
  for k, shards in enumerate(([['d', 'a'], ['c', 'b', 'e']],
                              [['e', 'b'], ['a'], ['c', 'd']])):
    for uris in shards:
      write_shard(batch(uris), str(tmp_path / str(k)))
    got.append(read_features(str(tmp_path / str(k))))
  for feats in got:
    assert list(feats['uris']) == ['a', 'b', 'c', 'd', 'e']
    assert list(feats['labels']) == [rows[u][0] for u in 'abcde']
    np.testing.assert_array_equal(feats['features'],
                                  np.stack([rows[u][1] for u in 'abcde']))


def test_per_class_precision_and_recall():
  true = np.array([0, 0, 0, 1, 1, 2])
  predicted = np.array([0, 0, 1, 1, 1, 1])
  m = per_class_metrics(true, predicted, ['a', 'b', 'c'])
  assert m['accuracy'] == pytest.approx(4 / 6, abs=1e-4)
  assert m['per_class']['a'] == {'precision': 1.0, 'recall': pytest.approx(
      0.6667, abs=1e-4), 'support': 3}
  assert m['per_class']['b']['precision'] == pytest.approx(0.5)
  assert m['per_class']['b']['recall'] == 1.0
  assert m['per_class']['c'] == {'precision': None, 'recall': 0.0,
                                 'support': 1}
  assert m['confusion'] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]


@pytest.mark.parametrize('handle,size', [
    (DEFAULT_FEATURE_MODEL, 299),
    ('https://tfhub.dev/google/imagenet/inception_resnet_v2/feature_vector/5',
     299),
    ('https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5',
     224),
    ('https://tfhub.dev/google/imagenet/mobilenet_v2_140_224/feature_vector/5',
     224),
    ('https://tfhub.dev/google/imagenet/nasnet_large/feature_vector/5', 331),
    ('https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5', None),
    ('/models/my_model_300', None),  # A folder's name promises nothing.
])
def test_image_size_from_handle(handle, size):
  assert size_from_handle(handle) == size


def _export_fixed_size_feature_model(path, size):
  """A real TF2 SavedModel whose __call__ declares [None, size, size, 3]."""
  import tensorflow as tf

  class Fixed(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3],
                                                tf.float32)])
    def __call__(self, images):
      return tf.reduce_mean(images, axis=[1, 2])

  tf.saved_model.save(Fixed(), str(path))
  return path


def test_image_size_from_the_model_then_the_default(tmp_path,
                                                   features_model):
  fixed = FeatureModel(str(_export_fixed_size_feature_model(
      tmp_path / 'fixed', 64)))
  assert fixed.default_image_size() == (64, 'model signature')
  assert fixed.features(np.zeros((2, 64, 64, 3), np.uint8)).shape == (2, 3)
  # The Magenta style features take any size and their path names none.
  magenta = FeatureModel(str(features_model))
  assert magenta.fixed_image_size() is None
  assert magenta.default_image_size() == (256, 'default')


def test_fit_image_is_the_whole_image_squared():
  pixels = np.zeros((40, 100, 3), np.uint8)
  pixels[:, 50:] = 255
  out = fit_image(pixels, 32)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  assert out[:, :14].max() == 0 and out[:, 18:].min() == 255
  assert fit_image(out, 32) is out


# --------------------------------------------------------------- mirrors --

def test_mirror_rewrites_tfhub_handles_only(monkeypatch):
  monkeypatch.delenv(tfhub.MIRROR_ENV, raising=False)
  cn = 'https://hub.tensorflow.google.cn'
  assert tfhub.apply_mirror(DEFAULT_FEATURE_MODEL, cn + '/') == (
      cn + '/google/tf2-preview/inception_v3/feature_vector/4')
  assert tfhub.apply_mirror('https://www.kaggle.com/models/x', cn) == (
      'https://www.kaggle.com/models/x')
  assert tfhub.apply_mirror('/local/model', cn) == '/local/model'
  assert tfhub.mirrored(DEFAULT_FEATURE_MODEL) == DEFAULT_FEATURE_MODEL
  monkeypatch.setenv(tfhub.MIRROR_ENV, 'http://127.0.0.1:9')
  assert tfhub.mirrored(DEFAULT_FEATURE_MODEL).startswith(
      'http://127.0.0.1:9/google/')
  # The flag wins over the environment.
  assert tfhub.mirrored(DEFAULT_FEATURE_MODEL, cn).startswith(cn)
  with pytest.raises(ValueError, match='not an http'):
    tfhub.mirror_from('ftp://mirror.example')


def _tar_gz(folder: pathlib.Path) -> bytes:
  """A SavedModel folder packed the way TF Hub serves compressed models:
  a .tar.gz with the folder's files at its root."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    for path in sorted(folder.rglob('*')):
      tar.add(path, arcname=path.relative_to(folder).as_posix(),
              recursive=False)
  return buf.getvalue()


class HubMirror:
  """A TF Hub mirror on 127.0.0.1: GET <path>?tf-hub-format=compressed
  returns that model's .tar.gz; anything else is 404."""

  def __init__(self, models):
    self.models = models
    self.requests = []
    mirror = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        url = urllib.parse.urlparse(self.path)
        mirror.requests.append(self.path)
        body = mirror.models.get(url.path)
        query = urllib.parse.parse_qs(url.query)
        if body is None or query.get('tf-hub-format') != ['compressed']:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header('Content-Type', 'application/x-gzip')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):  # Quiet.
        pass

    self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
    threading.Thread(target=self.server.serve_forever, daemon=True).start()

  def close(self):
    self.server.shutdown()
    self.server.server_close()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  """A private TF Hub download cache, so every test really downloads."""
  path = tmp_path / 'tfhub-cache'
  monkeypatch.setenv('TFHUB_CACHE_DIR', str(path))
  return path


@pytest.mark.slow
def test_train_default_handle_through_mirror_env(tmp_path, hub_cache,
                                                 features_model, monkeypatch):
  handle_path = urllib.parse.urlparse(DEFAULT_FEATURE_MODEL).path
  mirror = HubMirror({handle_path: _tar_gz(features_model)})
  monkeypatch.setenv(tfhub.MIRROR_ENV, mirror.url)
  try:
    data = small_set(tmp_path / 'data', per_class=3,
                     classes=('document', 'photo'))
    lines = []
    # The default --feature_model (TF Hub's Inception v3 handle), no
    # --image_size: the size comes from the handle's name.
    report = train(['--data', str(data), '--output', str(tmp_path / 'router'),
                    '--epochs', '2', '--batch_size', '4', '--quiet'],
                   out=lines.append)
  finally:
    mirror.close()
  assert mirror.requests == [f'{handle_path}?tf-hub-format=compressed']
  assert report['feature_model'] == DEFAULT_FEATURE_MODEL
  assert report['feature_model_source'] == mirror.url + handle_path
  assert (report['image_size'], report['image_size_from']) == (299,
                                                               'handle name')
  info = json.loads((tmp_path / 'router' / ROUTER_FILE).read_text())
  assert info['image_size'] == 299
  assert info['feature_model'] == DEFAULT_FEATURE_MODEL
  assert any(hub_cache.iterdir())  # tensorflow_hub's own cache was used.


@pytest.mark.slow
def test_stylize_tfhub_handle_through_mirror_flag(tmp_path, hub_cache,
                                                  samples):
  from beam_jobs.stylize import run
  from transforms.models.builtin import ensure_builtin
  from transforms.models.loader import DEFAULT_MODEL
  from transforms.identity import local_tree_digest
  handle_path = urllib.parse.urlparse(DEFAULT_MODEL).path
  mirror = HubMirror({handle_path: _tar_gz(pathlib.Path(ensure_builtin()))})
  digest = local_tree_digest([ensure_builtin()])
  out = tmp_path / 'out'
  argv = ['--input', str(samples / 'content'), '--style',
          str(samples / 'style' / 'waves.jpg'), '--output', str(out),
          '--model', DEFAULT_MODEL, '--tfhub_mirror', mirror.url]
  try:
    # --model_sha256 applies to a handle: the downloaded folder's digest.
    with pytest.raises(ConfigError, match=f'has SHA-256 {digest}, not the '
                       'expected 0+ '):
      run(argv + ['--model_sha256', '0' * 64])
    run(argv + ['--model_sha256', digest])
  finally:
    mirror.close()
  assert mirror.requests == [f'{handle_path}?tf-hub-format=compressed']
  rows = [json.loads(l) for l in
          (out / 'manifest-00000-of-00001.jsonl').read_text().splitlines()]
  assert len(rows) == 4 and {r['status'] for r in rows} == {'ok'}
  # The manifest names the model asked for, not the mirror.
  assert {r['model'] for r in rows} == {DEFAULT_MODEL}


def test_tfhub_cache_is_the_users_own_by_default(monkeypatch, tmp_path):
  monkeypatch.delenv('TFHUB_CACHE_DIR', raising=False)
  monkeypatch.setenv('STYLIZE_CACHE_DIR', str(tmp_path / 'mine'))
  assert tfhub.hub_cache_dir() == str(tmp_path / 'mine' / 'tfhub')
  monkeypatch.setenv('TFHUB_CACHE_DIR', str(tmp_path / 'chosen'))
  assert tfhub.hub_cache_dir() == str(tmp_path / 'chosen')


def test_unreachable_mirror_is_a_config_error(tmp_path, hub_cache):
  data = small_set(tmp_path / 'data', per_class=2,
                   classes=('document', 'photo'))
  # Port 9 (discard) on 127.0.0.1: refused at once, no network involved.
  with pytest.raises(ConfigError, match='could not download.*mirror'):
    train(['--data', str(data), '--output', str(tmp_path / 'r'),
           '--tfhub_mirror', 'http://127.0.0.1:9'])


# ------------------------------------------------------- TF1 Hub format --

def make_tf1_hub_module(path: pathlib.Path) -> pathlib.Path:
  """A real module in the TF1 Hub format, as hub.Module exports wrote them:
  a TF1 SavedModel (graph, variables, a 'default' signature, empty tag set)
  plus tfhub_module.pb, a ModuleDef proto saying FORMAT_V3. tensorflow_hub
  0.16 cannot export these any more (hub.Module is gone), so the graph is
  built with tf.compat.v1 and the one-field proto is written directly."""
  import tensorflow as tf
  tf1 = tf.compat.v1
  with tf.Graph().as_default() as graph:
    images = tf1.placeholder(tf.float32, [None, None, None, 3], name='images')
    weights = tf1.get_variable('w', initializer=tf.ones([3, 4]))
    out = tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights)
    with tf1.Session(graph=graph) as sess:
      sess.run(tf1.global_variables_initializer())
      builder = tf1.saved_model.Builder(str(path))
      signature = tf1.saved_model.signature_def_utils.predict_signature_def(
          {'images': images}, {'default': out})
      builder.add_meta_graph_and_variables(
          sess, tags=[], signature_def_map={'default': signature})
      builder.save()
  (path / tfhub.TF1_MODULE_FILE).write_bytes(b'\x08\x03')  # format: 3
  return path


@pytest.fixture(scope='module')
def tf1_module(tmp_path_factory):
  return make_tf1_hub_module(tmp_path_factory.mktemp('tf1') / 'module')


def test_tf1_module_really_is_what_tensorflow_hub_calls_tf1(tf1_module):
  import tensorflow_hub as hub
  loaded = hub.load(str(tf1_module))
  # tensorflow_hub loads it as a bare TF1 SavedModel: not callable.
  assert loaded._is_hub_module_v1  # pylint: disable=protected-access
  assert not callable(loaded)


def test_tf1_feature_model_is_refused_naming_the_format(tf1_module, tmp_path,
                                                       capsys):
  data = small_set(tmp_path / 'data', per_class=2,
                   classes=('document', 'photo'))
  argv = ['--data', str(data), '--output', str(tmp_path / 'r'),
          '--feature_model', str(tf1_module)]
  with pytest.raises(ConfigError, match='TF1 Hub format.*hub.Module') as e:
    train(argv)
  assert 'TF2 SavedModel' in str(e.value)
  assert train_main(argv) == 2
  assert 'TF1 Hub format' in capsys.readouterr().err
  with pytest.raises(ModelLoadError, match='TF1 Hub format'):
    FeatureModel(str(tf1_module))


def test_tf1_style_model_is_refused_naming_the_format(tf1_module, tmp_path,
                                                     samples):
  from beam_jobs.options import validate
  from beam_jobs.stylize import parse
  with pytest.raises(ConfigError, match='--model: .*TF1 Hub format'):
    validate(parse(['--input', str(samples / 'content'), '--style',
                    str(samples / 'style' / 'waves.jpg'), '--output',
                    str(tmp_path / 'out'), '--model', str(tf1_module)]))


# ---------------------------------------------------------- validation --

@pytest.fixture
def data_dir(tmp_path):
  return small_set(tmp_path / 'data', per_class=2,
                   classes=('document', 'photo'))


def _fails(argv, match):
  with pytest.raises(ConfigError, match=match):
    train(argv)


def test_train_needs_data(tmp_path):
  _fails(['--output', str(tmp_path / 'r')], 'no --data')


def test_train_needs_output(data_dir):
  _fails(['--data', str(data_dir)], 'no --output')


@pytest.mark.parametrize('flag,value,match', [
    ('--epochs', '0', '--epochs'),
    ('--fine_tune_epochs', '0', '--fine_tune_epochs'),
    ('--batch_size', '0', '--batch_size'),
    ('--image_size', '8', '--image_size'),
    ('--validation_split', '0.9', '--validation_split'),
    ('--learning_rate', '0', '--learning_rate'),
    ('--patience', '0', '--patience'),
    ('--dropout', '1', '--dropout'),
    ('--tfhub_mirror', 'ftp://x', '--tfhub_mirror'),
])
def test_train_flag_ranges(data_dir, tmp_path, flag, value, match):
  _fails(['--data', str(data_dir), '--output', str(tmp_path / 'r'), flag,
          value], match)


def test_train_unknown_flag_is_not_dropped(data_dir, tmp_path):
  _fails(['--data', str(data_dir), '--output', str(tmp_path / 'r'),
          '--epoch', '3'], 'unknown flag --epoch')


def test_train_data_without_class_folders(tmp_path):
  flat = tmp_path / 'flat'
  flat.mkdir()
  small_set(tmp_path / 'x', per_class=1, classes=('photo',))
  shutil.copy(next((tmp_path / 'x' / 'photo').iterdir()), flat / 'a.jpg')
  _fails(['--data', str(flat), '--output', str(tmp_path / 'r')],
         'no images in class subfolders')


def test_train_one_class_is_not_enough(tmp_path):
  data = small_set(tmp_path / 'data', per_class=2, classes=('photo',))
  _fails(['--data', str(data), '--output', str(tmp_path / 'r')],
         'at least two class')


def test_train_class_with_one_image(tmp_path):
  data = small_set(tmp_path / 'data', per_class=2,
                   classes=('document', 'photo'))
  os.remove(sorted((data / 'photo').iterdir())[0])
  _fails(['--data', str(data), '--output', str(tmp_path / 'r')],
         "at least 2 images.*'photo': 1")


def test_train_class_name_that_clashes_with_route_syntax(tmp_path):
  data = small_set(tmp_path / 'data', per_class=2,
                   classes=('document', 'photo'))
  (data / 'photo').rename(data / 'a=b')
  _fails(['--data', str(data), '--output', str(tmp_path / 'r')],
         'may not contain "="')


def test_train_output_inside_data(data_dir):
  _fails(['--data', str(data_dir), '--output', str(data_dir / 'router')],
         'inside --data')


def test_train_feature_model_missing(data_dir, tmp_path):
  _fails(['--data', str(data_dir), '--output', str(tmp_path / 'r'),
          '--feature_model', str(tmp_path / 'nope')], '--feature_model')


def test_train_feature_model_that_is_not_a_feature_model(data_dir, tmp_path):
  from transforms.models.builtin import ensure_builtin
  # The builtin stylizer takes (content, style): not model(images).
  _fails(['--data', str(data_dir), '--output', str(tmp_path / 'r'),
          '--feature_model', ensure_builtin()], '--feature_model')


def test_train_output_holding_other_files_is_left_untouched(data_dir,
                                                            tmp_path):
  """Training replaces a router folder's contents: a folder holding
  anything else (photos, a model, a saved_model/ of someone else's next to
  their files) is refused, and nothing in it changes."""
  photos = tmp_path / 'photos'
  (photos / 'saved_model').mkdir(parents=True)
  (photos / 'saved_model' / 'keep.pb').write_bytes(b'x')
  (photos / 'holiday.jpg').write_bytes(b'y')
  _fails(['--data', str(data_dir), '--output', str(photos)],
         'not a router')
  assert (photos / 'saved_model' / 'keep.pb').read_bytes() == b'x'
  assert (photos / 'holiday.jpg').read_bytes() == b'y'


def test_train_data_inside_output(data_dir):
  _fails(['--data', str(data_dir), '--output', str(data_dir.parent)],
         'inside --output')


def test_train_output_over_the_feature_model(data_dir, tmp_path):
  from transforms.models.builtin import ensure_builtin
  model = ensure_builtin()
  _fails(['--data', str(data_dir), '--output', model, '--feature_model',
          model], 'overlap')


# ------------------------------------------------------------- training --

@pytest.mark.slow
def test_trained_router_is_self_contained(trained_router, tmp_path):
  router_dir = trained_router['path']
  lines = '\n'.join(trained_router['lines'])
  # The guide's Keras summary, then precision and recall per class.
  assert 'feature_model (KerasLayer)' in lines
  assert 'classifier (Dense)' in lines
  assert 'Trainable params: 303' in lines  # Frozen features: the head only.
  assert 'precision  recall  support' in lines
  for name in CLASSES:
    assert f'  {name} ' in lines
  info = json.loads((router_dir / ROUTER_FILE).read_text())
  assert info['labels'] == list(CLASSES)
  assert info['image_size'] == 96 and info['fine_tuned'] is False
  report = json.loads((router_dir / REPORT_FILE).read_text())
  assert report == json.loads(json.dumps(trained_router['report']))
  assert report['classes'] == {c: {'train': 8, 'validation': 2}
                               for c in CLASSES}
  assert report['validation']['images'] == 6
  assert report['validation']['accuracy'] >= 0.8
  assert set(report['validation']['per_class']) == set(CLASSES)
  assert report['training']['head']['epochs_run'] >= 1
  assert info['saved_model'] == f'models/{info["router_id"]}'
  assert (router_dir / info['saved_model'] / 'saved_model.pb').exists()
  assert not (router_dir / SAVED_MODEL_DIR).exists()
  assert not (router_dir / '.stylize-train').exists()  # Features removed.
  # The feature model it was trained on is gone (a copy, deleted by the
  # fixture): the router alone classifies, wherever it is copied to.
  assert not pathlib.Path(info['feature_model']).exists()
  moved = shutil.copytree(router_dir, tmp_path / 'elsewhere')
  router = Router(str(moved))
  held_out = small_set(tmp_path / 'held_out', per_class=5, seed=99)
  right = 0
  for index, name in enumerate(CLASSES):
    from PIL import Image
    images = [np.asarray(Image.open(p).convert('RGB'))
              for p in sorted((held_out / name).iterdir())]
    probs = router.probabilities(images)
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    right += int((probs.argmax(axis=1) == index).sum())
  assert right >= 12, f'{right}/15 held-out images classified right'


@pytest.mark.slow
def test_fine_tune_trains_the_feature_layer(tmp_path, features_model,
                                           calls_to):
  from transforms.models.features import FeatureModel
  data = small_set(tmp_path / 'data', per_class=4,
                   classes=('document', 'photo'))
  loads = calls_to(FeatureModel, '__init__')
  lines = []
  report = train(train_args(data, tmp_path / 'router', features_model,
                            '--fine_tune', '--fine_tune_epochs', '1',
                            '--image_size', '64'), out=lines.append)
  text = '\n'.join(lines)
  # One load: the check, the extraction (in this process) and the model
  # around the feature layer share it.
  assert len(loads) == 1
  assert 'fine-tuning the feature model' in text
  assert 'Non-trainable params: 201' in text  # Only the normalisation.
  assert report['training']['fine_tune']['epochs_run'] >= 1
  assert report['settings']['fine_tune'] is True
  info = json.loads((tmp_path / 'router' / ROUTER_FILE).read_text())
  assert info['fine_tuned'] is True
  router = Router(str(tmp_path / 'router'))
  assert len(router.classify([np.zeros((30, 50, 3), np.uint8)])) == 1


@pytest.mark.slow
def test_a_failed_retrain_keeps_the_router_and_bad_images_are_left_out(
    tmp_path, features_model, monkeypatch):
  from training import model as keras_model
  data = small_set(tmp_path / 'data', per_class=3,
                   classes=('document', 'photo'))
  (data / 'photo' / 'broken.jpg').write_bytes(b'not a jpeg')
  router = tmp_path / 'router'
  args = train_args(data, router, features_model, '--epochs', '2')
  report = train(args, out=lambda _: None)
  # An unreadable training image is left out, with its reason.
  assert [u['uri'] for u in report['unreadable']] == [
      str(data / 'photo' / 'broken.jpg')]
  assert 'not an image' in report['unreadable'][0]['reason']
  before = json.loads((router / ROUTER_FILE).read_text())

  def crash(*_, **__):
    raise OSError('disk full')  # The new model is saved; the swap fails.

  monkeypatch.setattr(keras_model, 'write_router_files', crash)
  with pytest.raises(OSError, match='disk full'):
    train(args, out=lambda _: None)
  # The old router is whole and in use; the new model waits beside it.
  assert json.loads((router / ROUTER_FILE).read_text()) == before
  assert len(list((router / 'models').iterdir())) == 2
  assert len(Router(str(router)).classify([np.zeros((8, 8, 3), np.uint8)])) == 1
  monkeypatch.undo()
  # A killed write leaves a temporary file beside router.json: no obstacle.
  (router / '.router.json.tmp-0123456789ab').write_text('{')
  train(args, out=lambda _: None)
  assert not (router / '.router.json.tmp-0123456789ab').exists()
  after = json.loads((router / ROUTER_FILE).read_text())
  assert after['router_id'] != before['router_id']
  # Only the router's own model is left.
  assert [p.name for p in (router / 'models').iterdir()] == [
      after['router_id']]


@pytest.mark.slow
def test_train_from_and_to_gs(gcs_emulator, tmp_path, features_model):
  from apache_beam.io.filesystems import FileSystems
  from tests.conftest import upload
  bucket = gcs_emulator()
  data = upload(small_set(tmp_path / 'data', per_class=3,
                          classes=('document', 'photo')), f'{bucket}/data')
  output = f'{bucket}/routers/r1'
  report = train(train_args(data, output, features_model, '--epochs', '3'),
                 out=lambda _: None)
  assert report['classes'] == {'document': {'train': 2, 'validation': 1},
                               'photo': {'train': 2, 'validation': 1}}
  assert FileSystems.exists(f'{output}/{ROUTER_FILE}')
  with FileSystems.open(f'{output}/{ROUTER_FILE}') as f:
    model_dir = json.loads(f.read())['saved_model']
  assert FileSystems.exists(f'{output}/{model_dir}/saved_model.pb')
  router = Router(output)  # Copied into the local cache, then loaded.
  assert router.labels == ('document', 'photo')
  # The bucket's copy and the local folder (with or without a trailing
  # slash) list the same names and split them the same way.
  from training.data import list_labelled, relative_name

  def validation_names(root):
    classes = list_labelled(root).classes
    return sorted(relative_name(root, i.uri)
                  for i in split(root, classes, 0.5, seed=0)[1]
                  if i.split == VALIDATION)
  local = validation_names(str(tmp_path / 'data'))
  assert len(local) == 4
  assert validation_names(data) == local
  assert validation_names(str(tmp_path / 'data') + '/') == local
