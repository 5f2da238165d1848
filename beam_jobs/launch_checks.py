"""Launch-time checks that look at files: inputs, styles, output, model.

They run after the pure rules (beam_jobs/validation.py) and before any work,
and create nothing: the output folder is only probed (object stores: one
probe object, written and deleted), and a model is only loaded for local
runs that will use it.
"""

import contextlib
import os
import shutil
import uuid
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam_jobs.errors import ConfigError
from transforms import paths
from transforms.decode import DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS
from transforms.inputs import any_match, make_input_spec
from transforms.records import StyleRef
from transforms.layout import DONE_DIR, STATE_DIR, SUMMARY_NAME, TMP_DIR
from transforms.storage import ListingError, exists_literally, is_object_store


def check_readable_file(uri: str, what: str) -> None:
  # Literally: FileSystems.exists would read 'list[1].txt' as a glob.
  kind = exists_literally(uri)
  if kind is None:
    raise ConfigError(f'{what} {uri!r} does not exist.')
  if kind == 'folder':
    raise ConfigError(f'{what} {uri!r} is a folder; give a text file with '
                      'one image path or URI per line.')


def check_state_folder(output: str) -> None:
  """The job's own folder ({output}/.stylize, its done markers and its
  temporary files) must be real folders inside --output: a symbolic link
  there would take the job's writes and its clean-up of temporary files
  somewhere else."""
  if is_object_store(output):
    return
  for name in (STATE_DIR, DONE_DIR, TMP_DIR):
    path = os.path.join(output, name)
    if os.path.islink(path) or (os.path.lexists(path)
                                and not os.path.isdir(path)):
      raise ConfigError(
          f'{path!r} is {"a symbolic link" if os.path.islink(path) else "not a folder"}: '
          'the job keeps its done markers and temporary files there and '
          'writes nothing outside --output. Remove it (the next run '
          'recreates it; finished outputs are then redone once).')


def probe_output_writable(output: str) -> None:
  """Fails unless the output folder can be written, creating nothing.

  Local: the nearest existing folder must be a writable folder (the output
  folder is only created when the first file is written). Object stores: a
  probe object is written and deleted.
  """
  if not is_object_store(output):
    existing = output
    while not os.path.lexists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing,
                                                    os.W_OK | os.X_OK):
      what = 'not a folder' if not os.path.isdir(existing) else 'read-only'
      raise ConfigError(f'--output {output!r} is not writable: {existing!r} '
                        f'is {what}.')
    return
  probe = paths.join(output, f'.stylize-write-test-{uuid.uuid4().hex[:8]}')
  try:
    with FileSystems.create(probe) as f:
      f.write(b'ok')
    FileSystems.delete([probe])
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f'--output {output!r} is not writable: {type(e).__name__}: '
        f'{str(e).strip().splitlines()[0] if str(e).strip() else ""}') from None


def input_spec(arg: str, output: str) -> paths.InputSpec:
  """One --input -> InputSpec, refusing inputs and outputs that overlap.

  Paths are compared with symbolic links resolved, so a linked input
  folder cannot hide an output folder inside it.
  """
  try:
    spec = make_input_spec(arg)
  except FileNotFoundError:
    raise ConfigError(f'--input {arg!r} does not exist (and is no glob).') from None
  try:
    if spec.kind == paths.GLOB and not any_match(spec):
      raise ConfigError(f'--input {arg!r} matched no files.')
  except ListingError as e:
    raise ConfigError(f'--input {arg!r}: {e}') from None
  if spec.kind != paths.FILE and paths.is_within(output, spec.root):
    raise ConfigError(
        f'--output {output!r} is inside the input folder {spec.root!r}: a '
        'rerun would stylize the outputs. Choose an output folder outside '
        'the inputs.')
  if paths.is_within(spec.pattern if spec.kind == paths.FILE else spec.root,
                     output):
    raise ConfigError(
        f'--input {arg!r} is inside --output {output!r}: outputs could '
        'overwrite inputs. Choose an output folder apart from the inputs.')
  return spec


def load_styles(styles: List[StyleRef], style_size: int, flag: str,
                max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
                max_pixels: int = DEFAULT_MAX_PIXELS
                ) -> Tuple[List[StyleRef], List[np.ndarray]]:
  """Every style image read and prepared once, so a bad one fails now.

  Returns the styles with their images' digests and content fingerprints
  (transforms/identity.py), and the prepared pixels of every image.
  """
  from transforms.styles import read_style, with_digests
  pixels, done = [], []
  for style in styles:
    digests = []
    for uri, _ in style.parts:
      check_readable_file(uri, flag)
      try:
        image, digest = read_style(uri, style_size, max_bytes, max_pixels)
      except Exception as e:  # pylint: disable=broad-except
        raise ConfigError(f'{flag} {uri!r} is not a readable image: '
                          f'{e}') from None
      pixels.append(image)
      digests.append(digest)
    done.append(with_digests(style, digests))
  return done, pixels


def model_fingerprint(model: str, sha256: Optional[str] = None) -> str:
  """The model's content fingerprint, once per run (transforms/identity.py):
  from the files' bytes (local) or listed checksums (gs://); nothing is
  downloaded. For local files it is their SHA-256, checked here against
  --model_sha256 (sha256).

  Raises:
    ConfigError: the model's files cannot be read, or have another digest.
  """
  from transforms.identity import model_fingerprint as fingerprint
  from transforms.models import embedded
  from transforms.models.base import ModelLoadError
  from transforms.models.cache import check_digest
  try:
    found = fingerprint(model, resolved=embedded.resolve(model))
    if sha256 and found.startswith('sha256:'):
      check_digest(model, found[len('sha256:'):], sha256)
    return found
  except FileNotFoundError as e:
    raise ConfigError(f'--model: model {str(e)!r} does not exist (no file or '
                      'folder there). Give a SavedModel folder, TF Lite '
                      'files, a .tar.gz, a TF Hub handle, "magenta-lite" or '
                      '"builtin".') from None
  except ModelLoadError as e:
    raise ConfigError(f'--model: {e}') from None
  except OSError as e:
    raise ConfigError(f'--model {model!r}: cannot read its files to '
                      f'fingerprint them: {e}') from None


def model_cache_dirs() -> List[str]:
  """Folders a model check may create: this job's model cache and
  tensorflow_hub's download cache (its default, or $TFHUB_CACHE_DIR)."""
  from transforms.models.builtin import cache_dir
  from transforms.models.tfhub import hub_cache_dir
  return [cache_dir(), hub_cache_dir()]


def _holds_files(folder: str) -> bool:
  """Files other than the empty lock the OpenVINO conversion cache takes."""
  from transforms.models.engine.ov_ir import LOCK_FILE
  return any(f for _, _, files in os.walk(folder) for f in files
             if f != LOCK_FILE)


@contextlib.contextmanager
def no_new_empty_folders(folders: Sequence[str]) -> Iterator[None]:
  """On an error, removes those of folders that did not exist before and
  hold no file now (e.g. tensorflow_hub creates its cache folder before a
  download that fails), so a configuration error leaves nothing behind."""
  new = [f for f in folders if not paths.has_scheme(f) and
         not os.path.lexists(f)]
  try:
    yield
  except Exception:
    for folder in new:
      if os.path.isdir(folder) and not _holds_files(folder):
        shutil.rmtree(folder, ignore_errors=True)
    raise


def model_kind(source: str, sha256: Optional[str], light: bool) -> str:
  """The model's kind ('builtin', 'tflite', 'savedmodel', 'hub').

  light: check without TensorFlow and without downloading (remote launches,
  dry runs): the model exists, and its digest matches --model_sha256.
  Otherwise a remote model is fetched into the local cache here, once, and
  only its kind is read (try_model then loads it).
  """
  from transforms.models.base import ModelLoadError
  from transforms.models.checks import check_model
  from transforms.models.loader import describe_model
  try:
    return check_model(source, sha256) if light else describe_model(source)
  except ModelLoadError as e:
    raise ConfigError(f'--model: {e}') from None


def try_model(handle: str, style: np.ndarray, tf_threads: int,
              sha256: Optional[str] = None, engine: str = 'auto',
              precision: str = 'auto',
              fingerprint: Optional[str] = None) -> Tuple[str, str]:
  """Loads the model once, on the engine it will run on, and runs one tiny
  call, so a bad handle fails now; returns how it applies strength
  (models.base.STRENGTH_*) and what runs it ('openvino bf16').
  fingerprint: the model's content fingerprint (the key under which an
  in-process run's workers find this loaded model:
  transforms/models/sharing.py)."""
  from transforms.models.base import ModelLoadError
  from transforms.models.loader import load_stylizer
  from transforms.stylize import configure_tf_threads
  from transforms.stylize import try_model as try_stylizer
  configure_tf_threads(tf_threads)
  try:
    stylizer = load_stylizer(handle, threads=tf_threads,
                             expected_sha256=sha256,
                             expected_fingerprint=fingerprint, engine=engine,
                             precision=precision)
    try_stylizer(stylizer, stylizer.prepare_style(style), handle)
    return (stylizer.strength_mode(),
            f'{stylizer.engine} {stylizer.precision}')
  except ModelLoadError as e:
    message = str(e)
    raise ConfigError(message if message.startswith('--') else
                      f'--model: {message}') from None


def engine_check(engine: str, precision: str) -> None:
  """--engine and --precision possible on this machine (OpenVINO
  installed for --engine openvino).

  Raises:
    ConfigError: naming what to install or choose.
  """
  from transforms.models.engine import capabilities
  try:
    capabilities.resolve(engine, precision)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def naming_rule_note(output: str, style_args: Sequence[str],
                     styles: Sequence[StyleRef]) -> str:
  """A note for the first run under a new naming rule on an output folder
  that earlier versions wrote (README "The layout rule"), or ''.

  The job writes the rule it named outputs by ({output}/.stylize/
  naming-rule) at the end of every run, so the note is given once; a
  folder without summary.json has no finished run (a first run
  interrupted), so it gets no note. Outputs
  whose names change are written under their new names and the old files
  are left in place (they are then counted as orphaned in summary.json);
  style folders whose names change are named here.
  """
  from transforms.layout import NAMING_RULE, naming_rule_uri
  from transforms.styles import parse_styles
  try:
    if exists_literally(naming_rule_uri(output)) == 'file':
      with FileSystems.open(naming_rule_uri(output)) as f:
        if int(f.read().decode().strip() or 0) >= NAMING_RULE:
          return ''
    if (exists_literally(paths.join(output, DONE_DIR)) != 'folder' or
        exists_literally(paths.join(output, SUMMARY_NAME)) != 'file'):
      # A new output folder, or one no run has finished on (every rule
      # writes summary.json at the end; this rule's file too): nothing
      # named by an earlier rule.
      return ''
    moved = []
    if style_args:
      for old, new in zip(parse_styles(style_args, rule=1), styles):
        if old.label != new.label and exists_literally(
            paths.join(output, old.label)) == 'folder':
          moved.append(f"'{old.label}' -> '{new.label}'")
  except Exception:  # pylint: disable=broad-except
    return ''  # Only a note: never a reason to stop.
  note = (f'output names now follow naming rule {NAMING_RULE} (README "The '
          'layout rule": readable names; only characters unsafe on file '
          'systems or object stores are escaped). Outputs of earlier runs '
          'whose names change are made again under their new names; the old '
          'files are left in place (summary.json counts them as '
          'orphaned_outputs).')
  if moved:
    note += ' Style folders renamed: ' + ', '.join(moved) + '.'
  return note
