"""TF Hub handles: mirrors, resolving to local files, refusing the TF1 format.

Both --model (stylize) and --feature_model (stylize-train) go through here,
so a mirror and the TF1 Hub format check apply to every model a job loads.
"""

import logging
import os
import urllib.parse
from typing import Optional

from transforms.models.base import ModelLoadError

logger = logging.getLogger(__name__)

MIRROR_ENV = 'TFHUB_MIRROR'
CACHE_ENV = 'TFHUB_CACHE_DIR'
TFHUB_HOSTS = ('tfhub.dev', 'www.tfhub.dev')
# What a TF1 Hub module (the format of hub.Module, TF1's API) holds next to
# its saved_model.pb; TF2 SavedModels never have it. tensorflow_hub itself
# tests for the same file (module_v2._MODULE_PROTO_FILENAME_PB).
TF1_MODULE_FILE = 'tfhub_module.pb'


def mirror_from(flag: Optional[str]) -> Optional[str]:
  """The mirror to use: --tfhub_mirror, else $TFHUB_MIRROR, else None.

  Raises:
    ValueError: a mirror that is not an http(s) URL.
  """
  mirror = (flag or os.environ.get(MIRROR_ENV) or '').strip()
  if not mirror:
    return None
  parsed = urllib.parse.urlparse(mirror)
  if parsed.scheme not in ('http', 'https') or not parsed.netloc:
    raise ValueError(
        f'TF Hub mirror {mirror!r} is not an http(s) URL; give its root, e.g. '
        'https://hub.tensorflow.google.cn')
  return mirror.rstrip('/')


def is_tfhub_handle(handle: str) -> bool:
  parsed = urllib.parse.urlparse(handle)
  return (parsed.scheme in ('http', 'https') and
          parsed.netloc.lower() in TFHUB_HOSTS)


def apply_mirror(handle: str, mirror: Optional[str]) -> str:
  """https://tfhub.dev/google/x/1 -> {mirror}/google/x/1; others unchanged.

  A mirror serves the same paths as tfhub.dev, each as a .tar.gz of the
  SavedModel folder at `?tf-hub-format=compressed` (tensorflow_hub adds the
  query; for hub.tensorflow.google.cn it fetches the archive from that
  mirror's own storage).
  """
  if not mirror or not is_tfhub_handle(handle):
    return handle
  parsed = urllib.parse.urlparse(handle)
  path = parsed.path + (f'?{parsed.query}' if parsed.query else '')
  return mirror.rstrip('/') + path


def mirrored(handle: str, flag: Optional[str] = None) -> str:
  """handle rewritten to the mirror of --tfhub_mirror (flag) or $TFHUB_MIRROR.

  Raises:
    ModelLoadError: the mirror is not an http(s) URL.
  """
  try:
    return apply_mirror(handle, mirror_from(flag))
  except ValueError as e:
    raise ModelLoadError(str(e)) from None


def hub_cache_dir() -> str:
  """Where tensorflow_hub caches downloads: $TFHUB_CACHE_DIR, else a folder
  of this user's (the job's cache, ~/.cache/stylize/tfhub), not
  tensorflow_hub's own default under the shared temporary folder, where
  another user of the machine could plant a model before the first
  download."""
  from transforms.models.builtin import cache_dir
  return os.environ.get(CACHE_ENV) or os.path.join(cache_dir(), 'tfhub')


def use_private_hub_cache() -> str:
  """Points tensorflow_hub at hub_cache_dir() (in this process and the
  processes it starts) and returns it; a folder it creates is private to
  the user (mode 0700)."""
  folder = hub_cache_dir()
  os.environ.setdefault(CACHE_ENV, folder)
  return folder


def resolve(handle: str) -> str:
  """Local folder of a model: tensorflow_hub downloads and caches URLs
  (hub_cache_dir()); local paths come back unchanged.

  Raises:
    ModelLoadError: the download failed.
  """
  if not handle.startswith(('http://', 'https://')):
    return handle
  folder = use_private_hub_cache()
  if not folder.startswith(('gs://',)) and not os.path.isdir(folder):
    os.makedirs(folder, mode=0o700, exist_ok=True)
  from transforms.native_logs import import_tensorflow
  import_tensorflow()
  import tensorflow_hub as hub
  try:
    return hub.resolve(handle)
  except Exception as e:  # pylint: disable=broad-except
    detail = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise ModelLoadError(
        f'could not load model {handle!r}: tensorflow_hub could not download '
        f'it: {type(e).__name__}: {detail}. Without internet access, give a '
        f'local or gs:// copy of the model, or a mirror (--tfhub_mirror URL '
        f'or ${MIRROR_ENV}) for tfhub.dev handles.') from e


def is_tf1_hub_module(path: str) -> bool:
  from transforms.native_logs import import_tensorflow
  tf = import_tensorflow()
  return tf.io.gfile.exists(os.path.join(path, TF1_MODULE_FILE))


def check_not_tf1(path: str, handle: str) -> None:
  """Refuses a model in the TF1 Hub format, saying what to use instead.

  tensorflow_hub 0.16 no longer has hub.Module; hub.load still opens such a
  module as a bare TF1 SavedModel, but without the reusable __call__, so it
  fails later with an unrelated error (and hub.KerasLayer refuses
  trainable=True with it). Better to say so at once.

  Raises:
    ModelLoadError: path holds a TF1 Hub module (tfhub_module.pb).
  """
  if os.path.isdir(path) and is_tf1_hub_module(path):
    raise ModelLoadError(
        f'model {handle!r} is in the TF1 Hub format (hub.Module, from TF1: '
        f'it has {TF1_MODULE_FILE}), which TF2 and tensorflow_hub 0.16 cannot '
        'use as a callable model. Use the TF2 SavedModel version of the model '
        'instead (on tfhub.dev / Kaggle Models, the "TF2" variation, usually '
        'a later version of the same handle: e.g. Magenta\'s '
        'arbitrary-image-stylization-v1-256/2, not /1; '
        'google/tf2-preview/inception_v3/feature_vector/4 for image '
        'features), which loads with hub.load and hub.KerasLayer.')
