"""The guide's model, hub.KerasLayer + Dense: built, trained, saved as a router.

Keras version: TF 2.16+ ships Keras 3 as tf.keras, but hub.KerasLayer is a
Keras 2 layer (tensorflow_hub imports tf_keras itself when tf.keras is Keras
3), so the model around it must be Keras 2 as well. This module imports
tf_keras directly rather than relying on TF_USE_LEGACY_KERAS=1, which only
works if set before TensorFlow is first imported in the process.
"""

import dataclasses
import logging
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms import paths
from transforms.models import router as router_format
from transforms.storage import iter_files, durable_write
from training.data import LabelledImage, load_for_model

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _keras():
  import tf_keras  # Keras 2; see the module docstring.
  return tf_keras


@dataclasses.dataclass
class FitResult:
  """What one Keras fit did."""
  history: Dict[str, List[float]]
  epochs_run: int
  best_epoch: int  # 1-based
  seconds: float = 0.0


def build_model(feature_model, image_size: int, n_classes: int,
                dropout: float, trainable: bool):
  """Sequential([hub.KerasLayer, Dropout, Dense(softmax)]), built for
  [None, image_size, image_size, 3] float32 images in [0, 1].
  feature_model: what hub.KerasLayer takes: a SavedModel folder, or the
  object hub.load made of one."""
  import tensorflow_hub as hub
  keras = _keras()
  try:
    feature_layer = hub.KerasLayer(feature_model, trainable=trainable,
                                   name='feature_model')
  except ValueError as e:
    from transforms.models.base import ModelLoadError
    raise ModelLoadError(
        f'hub.KerasLayer refused the feature model: {e}') from e
  model = keras.Sequential([feature_layer] + _head_layers(n_classes, dropout))
  model.build([None, image_size, image_size, 3])
  return model


def _head_layers(n_classes: int, dropout: float) -> list:
  """What sits on the feature vector: the guide's Dropout and Dense, after a
  Normalization layer. Feature vectors come at any scale (the Magenta
  style features are small, Inception's are ReLU outputs); standardising
  them with the training set's mean and variance lets one learning rate
  suit every feature model, and it is saved inside the model."""
  keras = _keras()
  return [keras.layers.Normalization(name='normalize'),
          keras.layers.Dropout(dropout, name='dropout'),
          keras.layers.Dense(n_classes, activation='softmax',
                             name='classifier')]


def build_head(train_features: np.ndarray, n_classes: int, dropout: float):
  """The trainable part alone, on precomputed feature vectors; its
  Normalization adapted to train_features."""
  keras = _keras()
  head = keras.Sequential(
      [keras.Input(shape=(train_features.shape[1],), name='features')] +
      _head_layers(n_classes, dropout))
  head.get_layer('normalize').adapt(train_features)
  return head


def copy_head(head, model) -> None:
  """The head's weights into the full model (same layer names)."""
  for name in ('normalize', 'classifier'):
    model.get_layer(name).set_weights(head.get_layer(name).get_weights())


def _fit(model, train, val, epochs: int, patience: int, learning_rate: float,
         batch_size: Optional[int] = None, verbose: int = 2) -> FitResult:
  import time
  keras = _keras()
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=['accuracy'])
  stop = keras.callbacks.EarlyStopping(monitor='val_loss', patience=patience,
                                       restore_best_weights=True)
  start = time.perf_counter()
  if isinstance(train, tuple):
    history = model.fit(train[0], train[1], validation_data=val,
                        epochs=epochs, batch_size=batch_size,
                        callbacks=[stop], verbose=verbose, shuffle=True)
  else:
    history = model.fit(train, validation_data=val, epochs=epochs,
                        callbacks=[stop], verbose=verbose)
  hist = {k: [round(float(v), 5) for v in vals]
          for k, vals in history.history.items()}
  return FitResult(history=hist, epochs_run=len(hist.get('loss', [])),
                   best_epoch=stop.best_epoch + 1,
                   seconds=time.perf_counter() - start)


def train_head(head, train_x: np.ndarray, train_y: np.ndarray,
               val_x: np.ndarray, val_y: np.ndarray, epochs: int,
               batch_size: int, learning_rate: float, patience: int,
               verbose: int = 2) -> FitResult:
  """Early-stopped training on feature vectors; best weights kept."""
  return _fit(head, (train_x, train_y), (val_x, val_y), epochs, patience,
              learning_rate, batch_size, verbose)


def image_dataset(images: Sequence[LabelledImage], size: int,
                  batch_size: int, shuffle: bool, seed: int):
  """tf.data of (float32 [S, S, 3] in [0, 1], label), decoded in parallel
  from the files (streamed, never all in memory)."""
  import tensorflow as tf
  uris = [i.uri for i in images]
  labels = np.array([i.label for i in images], np.int32)

  def load(uri):
    return load_for_model(uri.decode('utf-8'), size)

  def to_input(uri, label):
    pixels = tf.numpy_function(load, [uri], tf.uint8, stateful=False)
    pixels.set_shape([size, size, 3])
    return tf.cast(pixels, tf.float32) * (1.0 / 255.0), label

  ds = tf.data.Dataset.from_tensor_slices((uris, labels))
  if shuffle:
    ds = ds.shuffle(len(uris), seed=seed, reshuffle_each_iteration=True)
  return (ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def fine_tune(model, train: Sequence[LabelledImage],
              val: Sequence[LabelledImage], size: int, epochs: int,
              batch_size: int, learning_rate: float, patience: int,
              seed: int, verbose: int = 2) -> FitResult:
  """Trains the feature layer too (trainable=True), at a low learning rate,
  starting from a trained head (as the Keras transfer-learning guide does:
  a random head would send large gradients into the pretrained weights)."""
  model.get_layer('feature_model').trainable = True
  return _fit(model, image_dataset(train, size, batch_size, True, seed),
              image_dataset(val, size, batch_size, False, seed), epochs,
              patience, learning_rate, verbose=verbose)


def predict_images(model, images: Sequence[LabelledImage], size: int,
                   batch_size: int) -> np.ndarray:
  return model.predict(image_dataset(images, size, batch_size, False, 0),
                       verbose=0)


def _upload_tree(local: str, output: str) -> List[str]:
  """Copies every file below local to output (local or gs://)."""
  written = []
  for root, _, files in os.walk(local):
    for name in sorted(files):
      full = os.path.join(root, name)
      rel = os.path.relpath(full, local).replace(os.sep, '/')
      uri = paths.join(output, rel)
      if paths.has_scheme(uri):
        with open(full, 'rb') as fin, FileSystems.create(
            uri, compression_type='uncompressed') as fout:
          shutil.copyfileobj(fin, fout, _CHUNK)
      else:
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        shutil.copyfile(full, uri)
      written.append(uri)
  return written


def save_model(model, image_size: int, output: str, model_dir: str) -> float:
  """Writes {output}/{model_dir}/ (a folder of its own: an earlier router's
  model stays whole and in use until router.json names the new one, see
  write_router_files); returns its size in MB.

  The Keras model is saved whole (feature layer included) as a TF2
  SavedModel with a serving signature that takes uint8 images, so the job
  loads it with tf.saved_model.load alone.
  """
  import tensorflow as tf

  # autograph=False: nothing to convert (no Python control flow), and
  # AutoGraph would only warn about the closure over the model.
  @tf.function(input_signature=[tf.TensorSpec(
      [None, image_size, image_size, 3], tf.uint8,
      name=router_format.INPUT_NAME)], autograph=False)
  def serve(images):
    x = tf.cast(images, tf.float32) * (1.0 / 255.0)
    return {router_format.OUTPUT_NAME: model(x, training=False)}

  tmp = tempfile.mkdtemp(prefix='stylize-router-')
  tf_logger = logging.getLogger('tensorflow')
  level = tf_logger.level
  try:
    # Keras 2 warns while tracing the save that "compiled metrics have yet
    # to be built": true, irrelevant (the router is saved for inference).
    tf_logger.setLevel(logging.ERROR)
    try:
      model.save(os.path.join(tmp, model_dir),
                 save_format='tf', include_optimizer=False,
                 signatures={router_format.SIGNATURE: serve})
    finally:
      tf_logger.setLevel(level)
    written = _upload_tree(tmp, output)
    megabytes = sum(os.path.getsize(os.path.join(r, f))
                    for r, _, fs in os.walk(tmp) for f in fs) / 1e6
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logger.info('Router model written: %d files, %.1f MB', len(written),
              megabytes)
  return megabytes


def write_router_files(info: router_format.RouterInfo, report: Dict,
                       output: str) -> None:
  """router.json (one atomic write: from now on the router is the new one,
  its model info.saved_model), then report.json."""
  import json
  durable_write(paths.join(output, router_format.ROUTER_FILE),
                json.dumps(info.to_json_dict(), indent=2).encode(),
                'application/json')
  durable_write(paths.join(output, router_format.REPORT_FILE),
                json.dumps(report, indent=2, sort_keys=True).encode(),
                'application/json')


def remove_other_models(output: str, keep: str) -> int:
  """Deletes the SavedModel folders of earlier (or failed) trainings in the
  router folder, all but keep, and files a killed training left half
  written; the number of files deleted."""
  from transforms.storage import TEMPORARY_NAME
  stale = [e.path for e in iter_files(output) if '/' not in e.path[len(
      paths.join(output)) + 1:] and TEMPORARY_NAME.match(paths.basename(
          e.path))]
  for folder in (router_format.SAVED_MODEL_DIR, router_format.MODELS_DIR):
    for entry in iter_files(paths.join(output, folder)):
      rel = entry.path[len(paths.join(output)) + 1:]
      if not (rel == keep or rel.startswith(keep + '/')):
        stale.append(entry.path)
  if stale:
    FileSystems.delete(stale)
  if not paths.has_scheme(output):
    # Local: the emptied folders too (bottom-up; keep's are not empty).
    for folder in (router_format.SAVED_MODEL_DIR, router_format.MODELS_DIR):
      for dirpath, _, _ in os.walk(os.path.join(output, folder),
                                   topdown=False):
        if not os.listdir(dirpath):
          os.rmdir(dirpath)
  return len(stale)
