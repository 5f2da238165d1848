"""Router benchmark: stylize-train on made-up labelled images, then held out.

    python -m benchmarks.train_router                    # 40 per class, 256 px
    python -m benchmarks.train_router --per_class 10 --image_size 96
    python -m benchmarks.train_router --fine_tune

Makes documents, photos and screenshots (tests/labelled.py), trains a router
on the shared Magenta style-features model with stylize-train's own code,
prints the validation table, then classifies a held-out set made with
another seed (accuracy and per-class precision/recall, images/s). Results go
to benchmarks/results/router-<timestamp>.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks.run import SHARED, machine_info

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--per_class', type=int, default=40)
  parser.add_argument('--held_out', type=int, default=30)
  parser.add_argument('--image_size', type=int, default=0)
  parser.add_argument('--epochs', type=int, default=50)
  parser.add_argument('--fine_tune', action='store_true')
  parser.add_argument('--fine_tune_epochs', type=int, default=5)
  parser.add_argument('--feature_model', default=os.path.join(
      SHARED, 'models', 'magenta-style-features-v1-256'))
  parser.add_argument('--results', default=os.path.join(HERE, 'results'))
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from beam_jobs.train import run as train
  from tests.labelled import CLASSES, write_labelled_set
  from training.evaluate import format_metrics, per_class_metrics
  from transforms.models.router import Router

  photos = sorted(pathlib.Path(SHARED, 'images', 'content').glob('*.jpg'))
  with tempfile.TemporaryDirectory(prefix='router-bench-') as tmp:
    tmp = pathlib.Path(tmp)
    write_labelled_set(tmp / 'data', photos, args.per_class, seed=1)
    held = write_labelled_set(tmp / 'held', photos, args.held_out, seed=2)
    argv = ['--data', str(tmp / 'data'), '--output', str(tmp / 'router'),
            '--feature_model', args.feature_model, '--epochs',
            str(args.epochs), '--quiet']
    if args.image_size:
      argv += ['--image_size', str(args.image_size)]
    if args.fine_tune:
      argv += ['--fine_tune', '--fine_tune_epochs', str(args.fine_tune_epochs)]
    start = time.perf_counter()
    report = train(argv)
    train_s = time.perf_counter() - start

    router = Router(str(tmp / 'router'))
    images, truth = [], []
    for index, name in enumerate(CLASSES):
      for path in held[name]:
        images.append(np.asarray(Image.open(path).convert('RGB')))
        truth.append(index)
    router.classify(images[:2])  # Warm-up (first call traces).
    start = time.perf_counter()
    predicted = []
    for i in range(0, len(images), 16):
      probs = router.probabilities(images[i:i + 16])
      predicted += probs.argmax(axis=1).tolist()
    classify_s = time.perf_counter() - start
    held_metrics = per_class_metrics(np.array(truth), np.array(predicted),
                                     list(CLASSES))
  print('held out (another seed):')
  print(format_metrics(held_metrics))
  print(f'training run {train_s:.1f}s; classifying {len(images)} held-out '
        f'images {len(images) / classify_s:.1f} images/s')
  results = {
      'args': vars(args), 'machine': machine_info(),
      'train_wall_s': round(train_s, 2), 'report': report,
      'held_out': held_metrics,
      'classify_images_per_s': round(len(images) / classify_s, 2),
  }
  os.makedirs(args.results, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y%m%dT%H%M%S')
  path = os.path.join(args.results, f'router-{stamp}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2, sort_keys=True)
  print(f'results: {path}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
