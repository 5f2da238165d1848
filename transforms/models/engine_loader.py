"""loader.load_stylizer with an execution engine: --engine and --precision.

    stylizer = load_stylizer(handle, engine='auto', precision='auto',
                             threads=tf_threads, expected_sha256=...)

The model is found, localized and checked exactly as loader.load_stylizer
does (TF Hub handle via tensorflow_hub.load, local or gs:// SavedModel,
.tar.gz, TF Lite files, 'magenta-lite', 'builtin'); then:

- SavedModel / TF Hub / builtin: split at the style vector where it has
  one (split_model), on TensorFlow or OpenVINO; otherwise the full call on
  OpenVINO where it converts, else on TensorFlow (HubStylizer, today's
  adapter). Fallbacks are logged once.
- TF Lite pair: BatchedLiteStylizer (tiles batched; the transfer file on
  OpenVINO where that is accurate, see lite_batched).

The returned Stylizer has .engine and .precision: what actually runs
(record those in the manifest, not the flags).
"""

import logging
from typing import Optional

from transforms.models import cache, embedded, tfhub
from transforms.models.base import ModelLoadError, Stylizer
from transforms.models.engine import capabilities
from transforms.models.loader import _load_local, describe_model

logger = logging.getLogger(__name__)


def load_stylizer(handle: str, engine: str = 'auto', precision: str = 'auto',
                  threads: int = 0, expected_sha256: Optional[str] = None,
                  max_shapes: int = 8, exact_buckets: bool = False
                  ) -> Stylizer:
  """Loads the model named by handle on the given engine.

  Args:
    handle: the --model value.
    engine: 'auto' (OpenVINO where installed), 'openvino' or 'tf'.
    precision: 'auto' (bf16 on OpenVINO where the CPU has AMX or AVX-512
      BF16), 'bf16' or 'f32'.
    threads: threads per process (0: all cores), as --tf_threads.
    expected_sha256: as loader.load_stylizer.
    max_shapes: compiled bucket shapes kept per network (OpenVINO).
    exact_buckets: pad each size only as the TF engine does (one compile
      per size) instead of to the few bucket shapes (engine.buckets).

  Raises:
    ModelLoadError: as loader.load_stylizer.
    ValueError: a bad engine/precision pair (e.g. --engine tf
      --precision bf16, or openvino not installed for --engine openvino).
  """
  original = handle
  handle = cache.localize(tfhub.mirrored(embedded.resolve(handle)))
  kind = describe_model(handle)
  if expected_sha256 and kind == 'hub':
    raise ModelLoadError(
        '--model_sha256 needs a model in files (local, gs:// or .tar.gz); a '
        'TF Hub handle is downloaded and cached by tensorflow_hub itself.')
  cache.verify_digest(handle, expected_sha256, original)
  resolved, resolved_precision = capabilities.resolve(engine, precision)
  if kind == 'tflite':
    from transforms.models.lite_batched import BatchedLiteStylizer  # pylint: disable=import-outside-toplevel
    stylizer: Stylizer = BatchedLiteStylizer(
        handle, threads, resolved, resolved_precision,
        int8_on_openvino=(engine == 'openvino'))
  else:
    from transforms.models import split_model  # pylint: disable=import-outside-toplevel
    from transforms.models.engine import buckets  # pylint: disable=import-outside-toplevel
    full = _load_local(handle, threads)  # HubStylizer: loads, checks.
    full.engine, full.precision = 'tf', 'f32'
    stylizer = split_model.build(original, full.kind, full._model, resolved,  # pylint: disable=protected-access
                                 resolved_precision, threads, fallback=full,
                                 max_shapes=max_shapes,
                                 bucket=(buckets.exact_shape if exact_buckets
                                         else buckets.bucket_shape))
    del full  # Not kept unless it is the adapter (frees the TF model).
  stylizer.handle = original
  logger.info('Model %s: %s on %s %s.', original, type(stylizer).__name__,
              stylizer.engine, stylizer.precision)
  return stylizer
