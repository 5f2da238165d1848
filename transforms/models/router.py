"""The router: an image classifier trained by stylize-train, loaded by the job.

A router is a folder that is enough on its own (nothing is fetched when it
is loaded, so workers need no network):

  router.json    format, labels (in output order), input size, the feature
                 model it was trained on, a unique id, and which SavedModel
                 folder is the router's (`saved_model`)
  models/<id>/   the whole Keras model (the hub.KerasLayer feature model and
                 the trained head) as a TF2 SavedModel; its serving signature
                 takes uint8 [B, S, S, 3] `images` and returns float32
                 [B, classes] `probabilities`. (Routers trained before
                 this layout keep theirs in saved_model/.)
  report.json    how it was trained and how well it did on validation

Retraining writes the new model into a folder of its own beside the old one
and then replaces router.json (one atomic write): until that moment the old
router is whole and in use, so a retrain that fails loses nothing.

The job loads saved_model/ with tf.saved_model.load, so it needs neither
Keras nor tensorflow_hub, whichever Keras version TF ships.
"""

import dataclasses
import json
import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from transforms import paths
from transforms.models.base import ModelLoadError

logger = logging.getLogger(__name__)

ROUTER_FILE = 'router.json'
REPORT_FILE = 'report.json'
SAVED_MODEL_DIR = 'saved_model'  # Routers trained before models/<id>/.
MODELS_DIR = 'models'
ROUTER_FORMAT = 'stylize-router'
ROUTER_VERSION = 1
SIGNATURE = 'serving_default'
INPUT_NAME = 'images'
OUTPUT_NAME = 'probabilities'


class RouterError(ModelLoadError):
  """A --route_model that is not a usable router; the message says why."""


@dataclasses.dataclass(frozen=True)
class RouterInfo:
  """What router.json says.

  Attributes:
    labels: class names, in the order of the model's outputs.
    image_size: side of the square the model takes (see fit_image).
    feature_model: the --feature_model it was trained on (informative: the
      feature model's weights are inside saved_model/).
    router_id: unique per training run; part of the job's identity of work.
    created: UTC time of training, ISO 8601.
    fine_tuned: whether the feature model's weights were trained too.
    saved_model: the router's SavedModel folder, relative to the router.
  """
  labels: Tuple[str, ...]
  image_size: int
  feature_model: str
  router_id: str
  created: str = ''
  fine_tuned: bool = False
  saved_model: str = SAVED_MODEL_DIR

  def to_json_dict(self) -> dict:
    return {
        'format': ROUTER_FORMAT, 'version': ROUTER_VERSION,
        'labels': list(self.labels), 'image_size': self.image_size,
        'feature_model': self.feature_model, 'router_id': self.router_id,
        'created': self.created, 'fine_tuned': self.fine_tuned,
        'saved_model': self.saved_model, 'signature': SIGNATURE,
        'input': f'{INPUT_NAME}: uint8 [batch, {self.image_size}, '
                 f'{self.image_size}, 3], the whole image resized',
        'output': f'{OUTPUT_NAME}: float32 [batch, {len(self.labels)}]',
    }


def _not_a_router(folder: str, why: str) -> RouterError:
  return RouterError(
      f'{folder!r} is not a router ({why}). Give --route_model the --output '
      'folder of stylize-train (it holds router.json and saved_model/).')


def parse_router_info(data: bytes, folder: str) -> RouterInfo:
  """router.json's bytes -> RouterInfo.

  Raises:
    RouterError: not JSON, another format or version, or missing fields.
  """
  try:
    d = json.loads(data.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _not_a_router(folder, f'{ROUTER_FILE} is not JSON: {e}') from None
  if not isinstance(d, dict) or d.get('format') != ROUTER_FORMAT:
    raise _not_a_router(folder, f'{ROUTER_FILE} does not say "format": '
                        f'"{ROUTER_FORMAT}"')
  if d.get('version') != ROUTER_VERSION:
    raise RouterError(
        f'router {folder!r} has version {d.get("version")!r}; this stylize '
        f'reads version {ROUTER_VERSION}. Retrain it with this stylize-train.')
  labels = d.get('labels')
  if (not isinstance(labels, list) or len(labels) < 2 or
      not all(isinstance(l, str) and l for l in labels) or
      len(set(labels)) != len(labels)):
    raise _not_a_router(folder, f'{ROUTER_FILE} needs "labels": two or more '
                        'distinct class names')
  size = d.get('image_size')
  if not isinstance(size, int) or size < 1:
    raise _not_a_router(folder, f'{ROUTER_FILE} needs a positive integer '
                        '"image_size"')
  if not d.get('router_id'):
    raise _not_a_router(folder, f'{ROUTER_FILE} has no "router_id"')
  saved_model = str(d.get('saved_model') or SAVED_MODEL_DIR)
  if any(level in ('', '.', '..') for level in saved_model.split('/')):
    raise _not_a_router(folder, f'{ROUTER_FILE} names a "saved_model" '
                        f'outside the router: {saved_model!r}')
  return RouterInfo(labels=tuple(labels), image_size=size,
                    feature_model=str(d.get('feature_model', '')),
                    router_id=str(d['router_id']),
                    created=str(d.get('created', '')),
                    fine_tuned=bool(d.get('fine_tuned', False)),
                    saved_model=saved_model)


def router_files(folder: str, info: RouterInfo) -> str:
  """What makes the router (its router.json and its SavedModel folder), as
  a comma-separated handle for fingerprints and digests: earlier models
  left beside it do not count."""
  return (f'{paths.join(folder, ROUTER_FILE)},'
          f'{paths.join(folder, info.saved_model)}')


def read_router_info(folder: str) -> RouterInfo:
  """Reads {folder}/router.json (local or gs://) without loading the model.

  Raises:
    RouterError: what is wrong, and what to give instead.
  """
  uri = paths.join(folder, ROUTER_FILE)
  try:
    exists = FileSystems.exists(uri)
  except Exception as e:  # pylint: disable=broad-except
    raise RouterError(f'cannot read router {folder!r}: {type(e).__name__}: '
                      f'{e}') from None
  if not exists:
    why = (f'no {ROUTER_FILE} in it' if FileSystems.exists(folder) or
           paths.has_scheme(folder) else 'it does not exist')
    raise _not_a_router(folder, why)
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    return parse_router_info(f.read(), folder)


def fit_image(pixels: np.ndarray, size: int) -> np.ndarray:
  """The router's view of an image: all of it, resized to size x size.

  Training and routing both go through here, so the model always sees
  images prepared the same way. Not cropped (a document's margins or a
  screenshot's title bar are what tell them apart); Pillow's bilinear
  filter is antialiased when it shrinks.
  """
  if pixels.shape[0] == size and pixels.shape[1] == size:
    return pixels
  im = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(im, dtype=np.uint8)


def verify_fingerprint(folder: str, info: RouterInfo,
                       fingerprint: str) -> None:
  """The router's files still have the fingerprint the launch took.

  Raises:
    RouterError: they changed since.
  """
  from transforms.identity import check_unchanged
  check_unchanged(f'router {folder!r}', router_files(folder, info),
                  fingerprint, RouterError)


class Router:
  """A loaded router: classify(images) -> (label, probability) per image."""

  def __init__(self, folder: str, fingerprint: Optional[str] = None):
    """Loads the router (copied to the local cache first if remote).

    fingerprint: the content fingerprint the launch took
    (transforms/identity.py); a router whose files changed since is refused.

    Raises:
      RouterError: not a router, its SavedModel will not load, or it
        changed since the launch.
    """
    from transforms.models import cache
    from transforms.native_logs import import_tensorflow
    tf = import_tensorflow()
    self.folder = folder
    self.info = read_router_info(folder)
    if fingerprint:
      verify_fingerprint(folder, self.info, fingerprint)
    local = cache.localize(folder)
    model_dir = paths.join(local, self.info.saved_model)
    try:
      self._model = tf.saved_model.load(model_dir)
      self._fn = self._model.signatures[SIGNATURE]
    except Exception as e:  # pylint: disable=broad-except
      detail = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise RouterError(
          f'router {folder!r}: its {self.info.saved_model}/ does not load as a '
          f'SavedModel with a {SIGNATURE!r} signature: {type(e).__name__}: '
          f'{detail}. Retrain it with stylize-train.') from e
    self._tf = tf

  @property
  def labels(self) -> Tuple[str, ...]:
    return self.info.labels

  def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
    """float32 [N, classes] for uint8 HxWx3 images of any sizes."""
    size = self.info.image_size
    for p in images:
      # Checked here: TensorFlow 2.21 aborts the process (not an exception)
      # on a signature input of the wrong rank, which would kill a worker.
      if p.ndim != 3 or p.shape[-1] != 3 or p.dtype != np.uint8:
        raise ValueError(f'the router takes uint8 HxWx3 images, not '
                         f'{p.dtype} {tuple(p.shape)}')
    batch = np.stack([fit_image(p, size) for p in images])
    out = self._fn(**{INPUT_NAME: self._tf.constant(batch)})
    return out[OUTPUT_NAME].numpy()

  def classify(self, images: Sequence[np.ndarray]
               ) -> List[Tuple[str, float]]:
    """(label, probability of that label) for each image."""
    probs = self.probabilities(images)
    best = probs.argmax(axis=1)
    return [(self.labels[i], float(probs[n, i])) for n, i in enumerate(best)]


def load_router(folder: str, threads: int = 0,
                fingerprint: Optional[str] = None) -> Router:
  """A Router, with TF's threads capped first (see configure_tf_threads).
  With a fingerprint, loaded once per local run on Beam's in-process runner
  (the launch's check and the workers: transforms/models/sharing.py)."""
  from transforms.models import sharing
  from transforms.stylize import configure_tf_threads

  if fingerprint:
    # Checked on every call, before a shared load is looked at; a load
    # checks again what it loads (router.json may be swapped in between).
    verify_fingerprint(folder, read_router_info(folder), fingerprint)

  def load() -> Router:
    configure_tf_threads(threads)
    return Router(folder, fingerprint)
  return sharing.shared_load(
      ('router', folder, fingerprint, threads) if fingerprint else None, load)
