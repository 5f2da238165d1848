"""OpenVINO models of a SavedModel, converted once per machine, in a child.

Converting needs TensorFlow: tensorflow_hub.load, then ov.convert_model on
the loaded function (ov_split). Importing TensorFlow costs a process about
500 MB of RSS here (162 MB of its own memory, 333 MB of library pages) that
OpenVINO never uses once the model is converted. So the conversion and the
cut at the style vector run in a child process (the interpreter running
this module's main(); by hand: `python -m transforms.models.engine.ov_ir
MODEL_FOLDER OUT_FOLDER`), which writes the models as OpenVINO IR (xml +
bin, weights uncompressed) into {STYLIZE_CACHE_DIR}/openvino/<key>/, and the
workers read them with OpenVINO alone: an `--engine openvino` worker never
imports TensorFlow for a SavedModel (local, gs:// or .tar.gz; a TF Hub
handle still does, to download it).

The key covers the model files' digest, OpenVINO's, TensorFlow's and
tensorflow_hub's versions and this converter's own source (this module,
ov_split, tf_split, bottleneck), so a model replaced in place, another
library or a changed converter converts again. A conversion is written in
a temporary folder and renamed into place while the cache folder is locked
(flock on its one LOCK_FILE: one conversion per machine at a time), and
its files' digest is noted and checked before each use
(cache.cached_copy_intact); a conversion that changed or cannot be read is
made again. A model that OpenVINO cannot convert (no conversion for one of
its operations, nothing callable as model(content, style)) is noted too
('unconvertible'), so later loads go straight to TensorFlow without trying
again. Where the child fails otherwise (the model does not load, no process
can be started, it takes over CHILD_TIMEOUT_S) or the cache cannot be
written, load() says why and the caller loads and converts in its own
process, as before (a model that does not load then fails with its error).
"""

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Optional, Tuple

logger = logging.getLogger(__name__)

#: Longest a conversion may take (the Magenta model: ~6 s here): a child
#: that hangs must not hold every worker of the machine at the lock.
CHILD_TIMEOUT_S = 1800

META = 'meta.json'
LOCK_FILE = '.stylize-lock'
PREDICTOR, TRANSFER, FULL = 'predictor.xml', 'transfer.xml', 'full.xml'


@dataclasses.dataclass
class Converted:
  """A Magenta-convention model under OpenVINO."""
  parts: Any = None  # ov_split.OVSplit: cut at the style vector.
  full: Any = None  # ov.Model of the whole call, where there is no vector.
  unconvertible: str = ''  # Why OpenVINO cannot convert it ('' if it can).
  lasting: bool = True  # The model's own refusal (noted), not this try's
  # trouble (memory, files: save() refuses to note it).


def convert_loaded(model: Any) -> Converted:
  """The loaded TF model (tensorflow_hub.load) converted and cut.

  What the child runs, and what a process that holds the TF model anyway
  runs itself. The converted models own their weights (ov_split.convert).
  """
  from transforms.models.engine import ov_split, tf_split  # pylint: disable=import-outside-toplevel
  try:
    fn = tf_split.concrete_function(model)
    content, style = tf_split.image_inputs(fn)
    converted = ov_split.convert(fn)
  except Exception as e:  # pylint: disable=broad-except
    lines = [l.strip(' -') for l in str(e).strip().splitlines()]
    refusal = next((l for l in lines if 'No conversion rule' in l), '')
    return Converted(
        unconvertible=refusal or (lines[0] if lines else type(e).__name__),
        lasting=bool(refusal) or isinstance(e, tf_split.NotSplittable) or
        type(e).__name__ == 'OpConversionFailure')
  parts = ov_split.cut(converted, None, content.name, style.name)
  return Converted(parts=parts, full=None if parts else converted)


def save(converted: Converted, folder: str) -> None:
  """Writes the models (IR, f32 weights as they are) and META, last."""
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  ov = import_openvino()
  if converted.unconvertible and not converted.lasting:
    raise RuntimeError(f'conversion failed: {converted.unconvertible}')
  meta = {'unconvertible': converted.unconvertible}
  if converted.parts is not None:
    ov.save_model(converted.parts.predictor, os.path.join(folder, PREDICTOR),
                  compress_to_fp16=False)
    ov.save_model(converted.parts.transfer, os.path.join(folder, TRANSFER),
                  compress_to_fp16=False)
    meta.update(vector_name=converted.parts.vector_name,
                vector_shape=list(converted.parts.vector_shape))
  elif converted.full is not None:
    ov.save_model(converted.full, os.path.join(folder, FULL),
                  compress_to_fp16=False)
  with open(os.path.join(folder, META), 'w', encoding='utf-8') as f:
    json.dump(meta, f)


def read(folder: str) -> Converted:
  """What save() wrote (the weights are read from the .bin files)."""
  from transforms.models.engine import ov_split  # pylint: disable=import-outside-toplevel
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  core = import_openvino().Core()
  with open(os.path.join(folder, META), encoding='utf-8') as f:
    meta = json.load(f)
  if meta['unconvertible']:
    return Converted(unconvertible=meta['unconvertible'])
  if 'vector_name' in meta:
    return Converted(parts=ov_split.OVSplit(
        core.read_model(os.path.join(folder, PREDICTOR)),
        core.read_model(os.path.join(folder, TRANSFER)),
        meta['vector_name'], tuple(meta['vector_shape'])))
  return Converted(full=core.read_model(os.path.join(folder, FULL)))


def _converter_sources() -> Tuple[str, ...]:
  from transforms.models.engine import bottleneck, ov_split, tf_split  # pylint: disable=import-outside-toplevel
  return tuple(m.__file__ for m in (sys.modules[__name__], ov_split,
                                    tf_split, bottleneck))


def cache_key(model_folder: str, digest: Optional[str] = None) -> str:
  """The model files' digest (computed unless given: the launch's
  fingerprint of this folder, just verified), the libraries' versions, the
  converter's source."""
  from transforms.identity import local_tree_digest  # pylint: disable=import-outside-toplevel
  from transforms.models.engine.openvino_import import import_openvino  # pylint: disable=import-outside-toplevel
  h = hashlib.sha256()
  h.update((digest or local_tree_digest([model_folder])).encode('ascii'))
  h.update(import_openvino().__version__.encode('utf-8'))
  for package in ('tensorflow', 'tensorflow-hub'):
    try:
      h.update(importlib.metadata.version(package).encode('utf-8'))
    except importlib.metadata.PackageNotFoundError:
      h.update(b'-')
  for source in _converter_sources():
    with open(source, 'rb') as f:
      h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()[:24]


def cache_root() -> str:
  from transforms.models.builtin import cache_dir  # pylint: disable=import-outside-toplevel
  return os.path.join(cache_dir(), 'openvino')


#: The child's program. `transforms` is found where this process found it:
#: its folder is appended to the child's path, after the interpreter's own
#: (put first, a site-packages folder would shadow the standard library),
#: and another copy found first (an older install) is refused.
#: The working folder is dropped from the path (`-c` puts it first; `-P`
#: needs Python 3.11).
_CHILD = ('import os, sys; r = sys.argv.pop(1); '
          'sys.path[:] = [p for p in sys.path if p not in ("", ".")] + [r]; '
          'import transforms; t = os.path.realpath(transforms.__file__); '
          'sys.exit(f"transforms imported from {t}, not from {r}") '
          'if os.path.dirname(t) != os.path.join(os.path.realpath(r), '
          '"transforms") else None; '
          'from transforms.models.engine.ov_ir import main; sys.exit(main())')


def _run_child(model_folder: str, out: str) -> str:
  """Runs the conversion in a child; '' on success, else why it failed."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))  # The folder holding `transforms`.
  try:
    done = subprocess.run(
        [sys.executable, '-c', _CHILD, root, model_folder, out],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        errors='replace', check=False, timeout=CHILD_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    return f'the conversion took over {CHILD_TIMEOUT_S} s and was stopped'
  except OSError as e:
    return f'{type(e).__name__}: {e}'
  if done.returncode == 0 and os.path.exists(os.path.join(out, META)):
    return ''
  lines = [l.strip() for l in (done.stderr or '').splitlines() if l.strip()]
  last = lines[-1][:300] if lines else 'no message'
  return f'{last} (exit status {done.returncode})'


def load(model_folder: str, digest: Optional[str] = None
         ) -> Tuple[Optional[Converted], str]:
  """(the model converted, '') from the cache, converted there first by a
  child where it is not; (None, why) where the child failed or the cache
  cannot be written."""
  try:
    return _load(model_folder, digest)
  except MemoryError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # The worker converts itself: slower to start and more memory, but
    # nothing about the cache can stop a job.
    return None, f'{type(e).__name__}: {e}'


def _load(model_folder: str, digest: Optional[str]
          ) -> Tuple[Optional[Converted], str]:
  from transforms.models import cache  # pylint: disable=import-outside-toplevel
  root = cache_root()
  os.makedirs(root, mode=0o700, exist_ok=True)
  target = os.path.join(root, cache_key(model_folder, digest))
  # One lock file for the folder, opened for writing (flock on NFS needs
  # that); left empty, and ignored where a launch cleans up after a config
  # error (beam_jobs/launch_checks.py).
  folder_lock = os.open(os.path.join(root, LOCK_FILE),
                        os.O_RDWR | os.O_CREAT, 0o600)
  try:
    fcntl.flock(folder_lock, fcntl.LOCK_EX)  # Released by close().
    for name in os.listdir(root):
      if name.startswith(('.convert-', '.stale-')):
        # Left by a process killed mid-conversion: none runs now (a
        # conversion holds the lock).
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if os.path.exists(target):
      problem = ('' if cache.cached_copy_intact(target)
                 else 'changed since it was made')
      if not problem:
        try:
          return read(target), ''
        except MemoryError:
          raise
        except Exception as e:  # pylint: disable=broad-except
          problem = f'cannot be read ({type(e).__name__}: {e})'
      logger.warning('The OpenVINO conversion of %s in %s %s; converting '
                     'it again.', model_folder, target, problem)
      stale = tempfile.mkdtemp(prefix='.stale-', dir=root)
      os.rename(target, os.path.join(stale, 'conversion'))
      shutil.rmtree(stale, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix='.convert-', dir=root)
    try:
      why = _run_child(model_folder, tmp)
      if why:
        return None, why
      cache.cached_copy_intact(tmp)  # Notes its digest.
      os.rename(tmp, target)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    logger.info('Converted %s to OpenVINO in %s', model_folder, target)
    return read(target), ''
  finally:
    os.close(folder_lock)


def main(argv=None) -> int:
  """The child: MODEL_FOLDER OUT_FOLDER (see the module doc)."""
  model_folder, out = (argv if argv is not None else sys.argv[1:])
  from transforms.models.hub_model import HubStylizer  # pylint: disable=import-outside-toplevel
  full = HubStylizer(model_folder, path=model_folder, kind='savedmodel')
  save(convert_loaded(full.model), out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
