"""Resolves a --model value to the adapter that loads it."""

import logging
import os
from typing import Optional

from transforms import paths
from transforms.models.base import ModelLoadError, Stylizer
from transforms.models import builtin, cache, embedded, sharing, tfhub

logger = logging.getLogger(__name__)

DEFAULT_MODEL = ('https://tfhub.dev/google/magenta/'
                 'arbitrary-image-stylization-v1-256/2')


def describe_model(handle: str) -> str:
  """What a handle names: 'builtin', 'tflite', 'savedmodel' or 'hub'."""
  if handle == builtin.BUILTIN_NAME:
    return 'builtin'
  if embedded.is_embedded(handle):
    return 'tflite'
  if paths.has_scheme(handle) and not handle.startswith(
      ('http://', 'https://', 'file://')):
    # gs:// and other FileSystems schemes: what the files are is known once
    # they are in the local cache.
    return describe_model(cache.localize(handle))
  if handle.endswith('.tflite') or ('.tflite,' in handle) or (
      os.path.isdir(handle) and any(f.endswith('.tflite')
                                    for f in os.listdir(handle))):
    return 'tflite'
  if '://' in handle and not handle.startswith('file://'):
    return 'hub'
  return 'savedmodel'


def load_stylizer(handle: str, threads: int = 0,
                  expected_sha256: Optional[str] = None,
                  expected_fingerprint: Optional[str] = None,
                  engine: str = 'auto', precision: str = 'auto',
                  max_shapes: int = 8, exact_buckets: bool = True
                  ) -> Stylizer:
  """Loads the model named by handle (copied to the local cache if remote)
  on an execution engine.

  The model comes from where it comes from (a TF Hub handle through
  tensorflow_hub, fetched from $TFHUB_MIRROR when that is set; a local or
  gs:// SavedModel or .tar.gz; TF Lite files; 'magenta-lite'; 'builtin');
  then it runs on the engine (transforms/models/engine):
  - SavedModel / TF Hub / builtin: split at the style vector where it has
    one (split_model), on OpenVINO or TensorFlow; otherwise its full call
    on OpenVINO where it converts, else on TensorFlow (HubStylizer).
    Fallbacks are logged once.
  - TF Lite pair: BatchedLiteStylizer (tiles batched; a float transfer
    file on OpenVINO, int8 ones on LiteRT unless engine is 'openvino').
  The stylizer's .engine and .precision say what actually runs.

  Args:
    handle: the --model value.
    threads: threads per process (0: all cores), as --tf_threads.
    expected_sha256: --model_sha256, checked on the local copy (for a TF
      Hub handle, on the downloaded folder).
    expected_fingerprint: the content fingerprint the launch took
      (transforms/identity.py); a model whose files changed since is
      refused.
    engine, precision: --engine, --precision ('auto' resolved for this
      CPU: engine.capabilities).
    max_shapes: compiled bucket shapes kept per network (OpenVINO).
    exact_buckets: pad each size only as the TF engine does (the default:
      outputs match the TF engine's at every size); False pads sizes
      between the photo formats up to the next format (fewer compiled
      shapes, but the padding shows along those images' edges:
      engine/buckets.py).

  Raises:
    ModelLoadError: with a message that says what to fix.
  """
  from transforms.models.engine import buckets, capabilities
  verify_fingerprint(handle, expected_fingerprint)
  try:
    resolved, resolved_precision = capabilities.resolve(engine, precision)
  except ValueError as e:
    raise ModelLoadError(str(e)) from None
  # The digest is not in the key: the launch checked --model_sha256 on the
  # files whose fingerprint this is.
  key = (handle, expected_fingerprint, threads, resolved, resolved_precision,
         max_shapes, exact_buckets)
  return sharing.shared_load(
      ('stylizer',) + key if expected_fingerprint else None,
      lambda: _load(handle, threads, expected_sha256, engine, resolved,
                    resolved_precision, max_shapes, exact_buckets,
                    expected_fingerprint))


def _load(handle: str, threads: int, expected_sha256: Optional[str],
          engine: str, resolved: str, resolved_precision: str,
          max_shapes: int, exact_buckets: bool,
          fingerprint: Optional[str] = None) -> Stylizer:
  """load_stylizer's work, on the resolved engine and precision."""
  from transforms.models.engine import buckets
  original = handle
  handle = cache.localize(tfhub.mirrored(embedded.resolve(handle)))
  kind = describe_model(handle)
  folder = None  # The SavedModel folder OpenVINO converts (engine.ov_ir).
  if kind == 'hub':
    # Downloaded (once) into tensorflow_hub's cache; the folder is checked
    # against the digest noted when it was first used, and --model_sha256.
    folder = tfhub.resolve(handle)
    cache.verify_hub_cache(folder, original)
    cache.verify_digest(folder, expected_sha256, original)

    def load_full():
      from transforms.models.hub_model import HubStylizer
      return HubStylizer(original, path=folder, kind='hub')
  else:
    cache.verify_digest(handle, expected_sha256, original)
    if kind == 'tflite':
      from transforms.models.lite_batched import BatchedLiteStylizer
      load_full = None
      stylizer = BatchedLiteStylizer(
          handle, threads, resolved, resolved_precision,
          int8_on_openvino=(engine == 'openvino'))
    else:
      if kind == 'savedmodel':
        folder = _savedmodel_path(handle)

      def load_full():
        return _load_local(handle, threads)  # HubStylizer: loads, checks.
  if load_full is not None:
    from transforms.models import split_model
    from transforms.models.engine import ov_ir
    converted, why = None, ''
    if resolved == 'openvino' and folder and os.path.isdir(folder):
      # Converted in a child process (once per machine): this process
      # need not import TensorFlow at all.
      converted, why = ov_ir.load(folder,
                                  _verified_digest(original, folder,
                                                   fingerprint))
      if why:
        logger.info('Converting %s for OpenVINO in a separate process '
                    'failed: %s', original, why)
    options = dict(threads=threads, max_shapes=max_shapes,
                   bucket=(buckets.exact_shape if exact_buckets
                           else buckets.bucket_shape), converted=converted)
    if converted is not None and not converted.unconvertible:
      stylizer = split_model.build(original, kind, None, resolved,
                                   resolved_precision, **options)
    else:
      full = load_full()
      if why:
        logger.warning('Model %s was converted for OpenVINO in this process '
                       '(in a separate one it failed: %s): this process '
                       'keeps TensorFlow loaded (about 500 MB more).',
                       original, why)
      stylizer = split_model.build(original, full.kind, full.model, resolved,
                                   resolved_precision, fallback=full,
                                   **options)
      del full  # Not kept unless it is the adapter (frees the TF model).
  stylizer.handle = original
  logger.info('Model %s: %s on %s %s.', original, type(stylizer).__name__,
              stylizer.engine, stylizer.precision)
  return stylizer


def load_full_call(handle: str, threads: int = 0) -> Stylizer:
  """The model as it is, unsplit: its whole model(content, style) call on
  TensorFlow (LiteStylizer for TF Lite files, one tile at a time): the
  reference the engines are measured against (tests, benchmarks)."""
  return _load_local(cache.localize(tfhub.mirrored(embedded.resolve(handle))),
                     threads)


def verify_fingerprint(handle: str, expected: Optional[str]) -> None:
  """The model's files still have the fingerprint the launch took (models
  in files: local, gs:// or embedded; a TF Hub handle and builtin are their
  names).

  Raises:
    ModelLoadError: they changed since the launch.
  """
  if not expected or not expected.startswith(('sha256:', 'gcs-md5:')):
    return
  from transforms.identity import check_unchanged
  check_unchanged(f'model {handle!r}', embedded.resolve(handle), expected,
                  ModelLoadError,
                  ': the outputs would not be what the run records')


def _load_local(handle: str, threads: int) -> Stylizer:
  from transforms.models.hub_model import HubStylizer
  kind = describe_model(handle)
  if kind == 'tflite':
    from transforms.models.lite import LiteStylizer
    return LiteStylizer(handle, threads=threads)
  if kind == 'builtin':
    return HubStylizer(handle, path=builtin.ensure_builtin(), kind='builtin')
  if kind == 'savedmodel':
    path = _savedmodel_path(handle)
    return HubStylizer(handle, path=path, kind='savedmodel')
  return HubStylizer(handle)


def _verified_digest(original: str, folder: str,
                     fingerprint: Optional[str]) -> Optional[str]:
  """The digest of `folder`'s files where the launch's fingerprint is of
  this very folder (a local SavedModel) and verify_fingerprint has just
  checked it, so it need not be read again; else None."""
  if not fingerprint or not fingerprint.startswith('sha256:'):
    return None
  local = embedded.resolve(original)
  local = local[len('file://'):] if local.startswith('file://') else local
  if ',' in local or os.path.realpath(local) != os.path.realpath(folder):
    return None
  return fingerprint[len('sha256:'):]


def _savedmodel_path(handle: str) -> str:
  """The local path of a SavedModel handle, checked to be one.

  Raises:
    ModelLoadError: nothing there, or a folder without saved_model.pb.
  """
  path = handle[len('file://'):] if handle.startswith('file://') else handle
  if not os.path.exists(path):
    raise ModelLoadError(
        f'model path {path!r} does not exist. Give a SavedModel folder, '
        'TF Lite files, a TF Hub handle (https://...), "magenta-lite" or '
        '"builtin".')
  if os.path.isdir(path) and not os.path.exists(
      os.path.join(path, 'saved_model.pb')):
    raise ModelLoadError(
        f'{path!r} is a directory without saved_model.pb, so it is not a '
        'TF SavedModel.')
  return path
