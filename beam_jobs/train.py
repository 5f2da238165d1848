"""stylize-train: transfer learning on a TF Hub feature model -> a router.

The TF Hub guide's second half: Sequential([hub.KerasLayer(feature vector),
Dense(classes, softmax)]) trained on your own labelled folders, saved whole
so that `stylize --route_model` can send each kind of image to its styles.
"""

import argparse
import dataclasses
import logging
import os
import sys
import time
import uuid
from typing import Callable, Dict, List, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.errors import ConfigError
from beam_jobs.launch_checks import probe_output_writable
from transforms import paths
from transforms.models.router import (MODELS_DIR, REPORT_FILE, ROUTER_FILE,
                                      SAVED_MODEL_DIR)

logger = logging.getLogger(__name__)

PROG = 'stylize-train'
FEATURES_DIR = '.stylize-train/features'


def build_parser() -> argparse.ArgumentParser:
  from transforms.models.features import DEFAULT_FEATURE_MODEL
  parser = argparse.ArgumentParser(
      prog=PROG, allow_abbrev=False,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      description='Train a router (image classifier) on labelled '
      'folders with a TF Hub feature model. Beam flags (--runner, ...) pass '
      'through to the feature-extraction job.')
  parser.add_argument('--data', help='Folder (local or gs://) with one '
                      'subfolder of images per class.')
  parser.add_argument('--output', help='Folder (local or gs://) the router '
                      'is written to.')
  parser.add_argument('--feature_model', default=DEFAULT_FEATURE_MODEL,
                      help='TF Hub handle, SavedModel folder (local or gs://) '
                      'or .tar.gz of a TF2 image feature-vector model.')
  parser.add_argument('--image_size', type=int, default=0,
                      help='Side of the square images the model sees; 0: the '
                      'feature model\'s (declared, named by its handle, '
                      'else 256).')
  parser.add_argument('--epochs', type=int, default=50,
                      help='Most epochs for the classifier head (cheap: it '
                      'trains on precomputed features); early stopping '
                      'usually ends sooner.')
  parser.add_argument('--batch_size', type=int, default=32,
                      help='Images per training step.')
  parser.add_argument('--learning_rate', type=float, default=1e-3,
                      help='Adam learning rate for the classifier head.')
  parser.add_argument('--fine_tune', nargs='?', const=True, default=False,
                      type=_boolean, help='Also train the feature model\'s '
                      'weights (trainable=True), after the head, at '
                      '--fine_tune_learning_rate.')
  parser.add_argument('--fine_tune_learning_rate', type=float, default=1e-5)
  parser.add_argument('--fine_tune_epochs', type=int, default=5,
                      help='Most epochs of fine-tuning (each decodes every '
                      'training image and runs the whole network).')
  parser.add_argument('--validation_split', type=float, default=0.2,
                      help='Share of each class held out for validation and '
                      'early stopping (at least one image per class).')
  parser.add_argument('--patience', type=int, default=5,
                      help='Epochs without a better validation loss before '
                      'training stops; the best epoch\'s weights are kept.')
  parser.add_argument('--dropout', type=float, default=0.2,
                      help='Dropout before the classifier layer.')
  parser.add_argument('--seed', type=int, default=0,
                      help='Seeds the split and the weight initialisation.')
  parser.add_argument('--tfhub_mirror', default=None,
                      help='Fetch tfhub.dev handles from this mirror, e.g. '
                      'https://hub.tensorflow.google.cn (default: '
                      '$TFHUB_MIRROR).')
  parser.add_argument('--tf_threads', type=int, default=0,
                      help='TF intra-op threads in extraction worker processes '
                      '(0: TF default).')
  parser.add_argument('--quiet', nargs='?', const=True, default=False,
                      type=_boolean, help='No per-epoch lines.')
  return parser


def _boolean(text) -> bool:
  from beam_jobs.flags import boolean
  return boolean(text)


@dataclasses.dataclass
class TrainConfig:
  """Validated settings of one training run."""
  data: str
  output: str
  feature_model: str
  feature_source: str  # what is fetched (mirror applied)
  feature_path: str    # the local folder it was resolved to
  feature_dim: int
  image_size: int
  image_size_from: str
  labels: List[str]
  images: list
  ignored: List[str]
  epochs: int
  batch_size: int
  learning_rate: float
  fine_tune: bool
  fine_tune_learning_rate: float
  fine_tune_epochs: int
  validation_split: float
  patience: int
  dropout: float
  seed: int
  tf_threads: int
  verbose: bool


def split_args(argv: Sequence[str]):
  """(our args, Beam's argv). Anything that is neither is an error (a
  typo must not be dropped silently, as Beam would) naming the nearest
  real flag."""
  from beam_jobs.flags import beam_flag_names, unknown_flag_message
  parser = build_parser()
  args, rest = parser.parse_known_args(list(argv))
  known = beam_flag_names()
  own = {a.dest for a in parser._actions}  # pylint: disable=protected-access
  for arg in rest:
    if arg.startswith('-'):
      name = arg.lstrip('-').split('=', 1)[0]
      if name not in known:
        raise ConfigError(unknown_flag_message(arg, own, known, PROG))
  return args, rest


def validate(args: argparse.Namespace) -> TrainConfig:
  """Checks every setting, lists --data and loads the feature model once.

  Raises:
    ConfigError: the first problem found, with what to do about it.
  """
  from transforms.models import tfhub
  from transforms.models.base import ModelLoadError
  from transforms.models.features import load_feature_model
  from training import data as labelled
  if not args.data:
    raise ConfigError('no --data folder given (one subfolder per class).')
  if not args.output:
    raise ConfigError('no --output folder given for the router.')
  if args.epochs < 1 or args.fine_tune_epochs < 1:
    raise ConfigError(f'--epochs and --fine_tune_epochs must be at least 1, '
                      f'got {args.epochs} and {args.fine_tune_epochs}.')
  if not 1 <= args.batch_size <= 1024:
    raise ConfigError(f'--batch_size must be between 1 and 1024, got '
                      f'{args.batch_size}.')
  if args.image_size and not 32 <= args.image_size <= 1024:
    raise ConfigError(f'--image_size must be 0 (the feature model\'s) or '
                      f'between 32 and 1024, got {args.image_size}.')
  if not 0.0 < args.validation_split <= 0.5:
    raise ConfigError(f'--validation_split must be above 0 and at most 0.5, '
                      f'got {args.validation_split}.')
  if args.learning_rate <= 0 or args.fine_tune_learning_rate <= 0:
    raise ConfigError('--learning_rate and --fine_tune_learning_rate must be '
                      'positive.')
  if args.patience < 1:
    raise ConfigError(f'--patience must be at least 1, got {args.patience}.')
  if not 0.0 <= args.dropout < 1.0:
    raise ConfigError(f'--dropout must be in [0, 1), got {args.dropout}.')
  try:
    tfhub.mirror_from(args.tfhub_mirror)
  except ValueError as e:
    raise ConfigError(f'--tfhub_mirror: {e}') from None

  data = paths.absolute(paths.join(args.data))
  output = paths.absolute(paths.join(args.output))
  if paths.is_within(output, data):
    raise ConfigError(f'--output {args.output!r} is inside --data '
                      f'{args.data!r}: it would become a class. Write the '
                      'router elsewhere.')
  from transforms.storage import exists_literally
  kind = exists_literally(data)
  if kind != 'folder':
    raise ConfigError(f'--data {args.data!r} ' + (
        'is a file; give the folder holding one subfolder per class.'
        if kind == 'file' else 'does not exist.'))
  try:
    listing = labelled.list_labelled(data)
  except ValueError as e:  # A listed path outside --data (relative_name).
    raise ConfigError(f'--data {args.data!r}: {e}') from None
  if not listing.classes:
    raise ConfigError(f'--data {args.data!r} has no images in class '
                      'subfolders: expected DATA/<class>/<image>, e.g. '
                      'DATA/photo/a.jpg and DATA/document/b.png.')
  bad = [c for c in listing.classes if '=' in c or ',' in c]
  if bad:
    raise ConfigError(f'class folder names may not contain "=" or "," '
                      f'(they would clash with --route CLASS=STYLE): {bad}.')
  if len(listing.classes) < 2:
    raise ConfigError(f'--data {args.data!r} has one class '
                      f'({list(listing.classes)}); a router needs at least '
                      'two class subfolders.')
  small = {c: len(u) for c, u in listing.classes.items() if len(u) < 2}
  if small:
    raise ConfigError(f'each class needs at least 2 images (one to train on, '
                      f'one to validate with); too few in {small}.')
  feature_local = paths.absolute(args.feature_model) if (
      args.feature_model and os.path.exists(
          os.path.expanduser(args.feature_model))) else None
  if feature_local and (paths.is_within(feature_local, output)
                        or paths.is_within(output, feature_local)):
    raise ConfigError(f'--output {args.output!r} and --feature_model '
                      f'{args.feature_model!r} overlap: the router is '
                      'written over its folder. Write it elsewhere.')
  if paths.is_within(data, output):
    raise ConfigError(f'--data {args.data!r} is inside --output '
                      f'{args.output!r}: write the router elsewhere.')
  check_router_output(output)
  probe_output_writable(output)

  # The launcher's TF is not capped by --tf_threads (the extraction
  # workers' setting): head training and --fine_tune run here.
  try:
    feature = load_feature_model(args.feature_model, args.tfhub_mirror)
  except ModelLoadError as e:
    raise ConfigError(f'--feature_model: {e}') from None
  except OSError as e:
    raise ConfigError(f'--feature_model {args.feature_model!r}: {e}'
                      ) from None
  size, size_from = feature.default_image_size()
  if args.image_size:
    size, size_from = args.image_size, '--image_size'
  try:
    import numpy as np
    probe = feature.features(np.zeros((1, size, size, 3), np.uint8))
  except ModelLoadError as e:
    raise ConfigError(f'--feature_model: {e}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f'--feature_model {args.feature_model!r} loaded but failed on a '
        f'{size}x{size} test image: {type(e).__name__}: {e}. Is it an image '
        'feature-vector model (float32 [B, H, W, 3] in [0, 1] -> [B, D])?'
    ) from None

  labels, images = labelled.labelled_images(listing.classes)
  return TrainConfig(
      data=data, output=output, feature_model=args.feature_model,
      feature_source=feature.source, feature_path=feature.path,
      feature_dim=int(probe.shape[1]), image_size=size,
      image_size_from=size_from, labels=labels, images=images,
      ignored=listing.ignored, epochs=args.epochs, batch_size=args.batch_size,
      learning_rate=args.learning_rate, fine_tune=bool(args.fine_tune),
      fine_tune_learning_rate=args.fine_tune_learning_rate,
      fine_tune_epochs=args.fine_tune_epochs,
      validation_split=args.validation_split, patience=args.patience,
      dropout=args.dropout, seed=args.seed, tf_threads=args.tf_threads,
      verbose=not args.quiet)


def _versions() -> Dict[str, str]:
  import tensorflow as tf
  import tensorflow_hub as hub
  import tf_keras
  return {'tensorflow': tf.__version__, 'tensorflow_hub': hub.__version__,
          'tf_keras': tf_keras.__version__}


def train(cfg: TrainConfig, beam_argv: Sequence[str] = (),
          out: Callable[[str], None] = print) -> Dict:
  """Extracts features (a Beam job), trains, evaluates, saves the router.

  Returns:
    The training report (also written to {output}/report.json).
  """
  import numpy as np
  from beam_jobs.stylize import with_local_defaults
  from transforms.models.router import RouterInfo
  from training import evaluate, extract, model as keras_model
  from training.data import TRAIN, VALIDATION, split
  _keras_seed(cfg.seed)
  started = time.perf_counter()
  timings = {}
  out(f'{PROG}: {len(cfg.labels)} classes, {len(cfg.images)} images from '
      f'{cfg.data}')
  out(f'feature model: {cfg.feature_model} ({cfg.feature_dim} features, '
      f'input {cfg.image_size}x{cfg.image_size} from {cfg.image_size_from})')

  # 1. Features: one pass of every image through the frozen feature model.
  folder = paths.join(cfg.output, FEATURES_DIR)
  _remove_features(folder)
  start = time.perf_counter()
  options = PipelineOptions(with_local_defaults(list(beam_argv)))
  extract.run_extraction(cfg.images, cfg.feature_source, cfg.image_size,
                         folder, cfg.batch_size, options, cfg.tf_threads)
  feats = extract.read_features(folder)
  failures = extract.read_failures(folder)
  timings['extract_s'] = time.perf_counter() - start
  out(f'extracted features of {len(feats["uris"])} images in '
      f'{timings["extract_s"]:.1f}s' +
      (f'; {len(failures)} unreadable, left out' if failures else ''))

  # The split is made among the images that could be read, so a broken
  # file never leaves a class without validation images.
  readable = {name: [] for name in cfg.labels}
  for uri, label in zip(feats['uris'], feats['labels']):
    readable[cfg.labels[int(label)]].append(str(uri))
  short = {c: len(u) for c, u in readable.items() if len(u) < 2}
  if short:
    raise ConfigError(f'each class needs at least 2 readable images; too few '
                      f'in {short} (unreadable: {failures[:3]}).')
  _, split_images = split(cfg.data, readable, cfg.validation_split,
                          cfg.seed)
  split_of = {i.uri: i.split for i in split_images}
  splits = np.array([split_of[str(u)] for u in feats['uris']])
  is_train = splits == TRAIN
  is_val = splits == VALIDATION
  counts = {name: {TRAIN: 0, VALIDATION: 0} for name in cfg.labels}
  for image in split_images:
    counts[cfg.labels[image.label]][image.split] += 1
  for name, c in counts.items():
    out(f'  {name}: {c[TRAIN]} train, {c[VALIDATION]} validation')

  # 2. The head on the vectors (the feature layer frozen, as in the guide).
  verbose = 2 if cfg.verbose else 0
  head = keras_model.build_head(feats['features'][is_train], len(cfg.labels),
                               cfg.dropout)
  head_fit = keras_model.train_head(
      head, feats['features'][is_train], feats['labels'][is_train],
      feats['features'][is_val], feats['labels'][is_val], cfg.epochs,
      cfg.batch_size, cfg.learning_rate, cfg.patience, verbose)
  timings['train_head_s'] = head_fit.seconds
  # The feature model validate and the extraction loaded (when this process
  # was their worker), not a third load; --fine_tune changes its weights
  # below, its last use.
  from transforms.models.features import load_feature_model
  model = keras_model.build_model(
      load_feature_model(cfg.feature_source).module,
      cfg.image_size, len(cfg.labels), cfg.dropout, trainable=False)
  keras_model.copy_head(head, model)
  val_uris = feats['uris'][is_val]
  val_true = feats['labels'][is_val]
  probs = head.predict(feats['features'][is_val], verbose=0)

  # 3. Optionally, the whole network at a low learning rate.
  tune_fit = None
  if cfg.fine_tune:
    from training.data import LabelledImage
    train_images = [i for i in split_images if i.split == TRAIN]
    val_images = [LabelledImage(str(u), int(l), VALIDATION)
                  for u, l in zip(val_uris, val_true)]
    out(f'fine-tuning the feature model (learning rate '
        f'{cfg.fine_tune_learning_rate:g})')
    tune_fit = keras_model.fine_tune(
        model, train_images, val_images, cfg.image_size, cfg.fine_tune_epochs,
        cfg.batch_size, cfg.fine_tune_learning_rate, cfg.patience, cfg.seed,
        verbose)
    timings['fine_tune_s'] = tune_fit.seconds
    probs = keras_model.predict_images(model, val_images, cfg.image_size,
                                       cfg.batch_size)

  model.summary(print_fn=out)
  metrics = evaluate.per_class_metrics(val_true, probs.argmax(axis=1),
                                       cfg.labels)
  metrics['misclassified'] = evaluate.misclassified(val_uris, val_true, probs,
                                                    cfg.labels)
  out(evaluate.format_metrics(metrics))

  router_id = uuid.uuid4().hex
  created = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
  info = RouterInfo(labels=tuple(cfg.labels), image_size=cfg.image_size,
                    feature_model=cfg.feature_model, router_id=router_id,
                    created=created, fine_tuned=cfg.fine_tune,
                    saved_model=f'{MODELS_DIR}/{router_id}')
  report = {
      'router_id': router_id, 'created': created, 'data': cfg.data,
      'output': cfg.output, 'feature_model': cfg.feature_model,
      'feature_model_source': cfg.feature_source,
      'feature_dim': cfg.feature_dim, 'image_size': cfg.image_size,
      'image_size_from': cfg.image_size_from, 'labels': cfg.labels,
      'classes': counts, 'files_ignored': len(cfg.ignored),
      'unreadable': failures,
      'settings': {
          'epochs': cfg.epochs, 'batch_size': cfg.batch_size,
          'learning_rate': cfg.learning_rate, 'fine_tune': cfg.fine_tune,
          'fine_tune_learning_rate': cfg.fine_tune_learning_rate,
          'fine_tune_epochs': cfg.fine_tune_epochs,
          'validation_split': cfg.validation_split,
          'patience': cfg.patience, 'dropout': cfg.dropout,
          'seed': cfg.seed},
      'training': {'head': dataclasses.asdict(head_fit)},
      'validation': metrics,
      'versions': _versions(),
  }
  if tune_fit:
    report['training']['fine_tune'] = dataclasses.asdict(tune_fit)
  start = time.perf_counter()
  # The new model goes beside the old router's, which stays in use until
  # router.json names the new one (one atomic write); then the old goes.
  megabytes = keras_model.save_model(model, cfg.image_size, cfg.output,
                                     info.saved_model)
  timings['save_s'] = time.perf_counter() - start
  timings['total_s'] = time.perf_counter() - started
  report['timings'] = {k: round(v, 3) for k, v in timings.items()}
  report['size_mb'] = round(megabytes, 1)
  keras_model.write_router_files(info, report, cfg.output)
  keras_model.remove_other_models(cfg.output, info.saved_model)
  _remove_features(folder)
  out(f'router saved to {cfg.output} ({megabytes:.1f} MB; '
      f'{timings["total_s"]:.1f}s in all)')
  return report


# What a router folder holds (training replaces these on every run).
ROUTER_ENTRIES = (ROUTER_FILE, REPORT_FILE, SAVED_MODEL_DIR, MODELS_DIR,
                  FEATURES_DIR.split('/')[0])


def check_router_output(output: str) -> None:
  """--output must be new, empty or an earlier router: training replaces
  its model and features (once the new router is whole), so a folder
  holding anything else (a photo folder, another model) is refused rather
  than changed."""
  from transforms.storage import ListingError, iter_files
  try:
    for entry in iter_files(output):
      top = entry.path[len(paths.join(output)) + 1:].split('/', 1)[0]
      if top not in ROUTER_ENTRIES and not is_temporary_name(top):
        raise ConfigError(
            f'--output {output!r} holds files that are not a router\'s '
            f'(e.g. {entry.path!r}); training replaces the folder\'s '
            'contents. Give a new or empty folder, or an earlier router.')
  except ListingError as e:
    raise ConfigError(f'--output: {e}') from None


def is_temporary_name(name: str) -> bool:
  """A file storage.durable_write was writing when a run was killed."""
  from transforms.storage import TEMPORARY_NAME
  return bool(TEMPORARY_NAME.match(name))


def _remove_features(folder: str) -> None:
  """Deletes the feature shards (and, locally, their folders)."""
  from transforms.storage import delete_below
  delete_below(folder)
  if not paths.has_scheme(folder):
    import shutil
    shutil.rmtree(paths.dirname(folder), ignore_errors=True)


def _keras_seed(seed: int) -> None:
  import tf_keras
  tf_keras.utils.set_random_seed(seed)


def run(argv: Optional[Sequence[str]] = None,
        out: Callable[[str], None] = print) -> Dict:
  """Parses, validates and trains; returns the training report.

  Raises:
    ConfigError: a configuration mistake, before any work.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  args, beam_argv = split_args(argv)
  from apache_beam.io.filesystems import FileSystems
  from transforms.models.sharing import sharing_loaded_models
  FileSystems.set_options(PipelineOptions(beam_argv))
  # The feature model validate loads is the one the model around the
  # feature layer uses, and on Beam's in-process runner the extraction's
  # workers (this process) too. Worker processes of other runners are
  # other processes: they load their own.
  with sharing_loaded_models():
    return train(validate(args), beam_argv, out)


def main(argv: Optional[List[str]] = None) -> int:
  from transforms.native_logs import quiet_start
  quiet_start()
  logging.basicConfig(level=logging.WARNING,
                      format='%(levelname)s %(name)s: %(message)s')
  try:
    run(argv)
  except ConfigError as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
