"""Per-class precision and recall on the validation split."""

from typing import Dict, List, Optional, Sequence

import numpy as np


def confusion(true: np.ndarray, predicted: np.ndarray,
              n_classes: int) -> np.ndarray:
  """[true class, predicted class] counts."""
  matrix = np.zeros((n_classes, n_classes), np.int64)
  np.add.at(matrix, (np.asarray(true, np.int64),
                     np.asarray(predicted, np.int64)), 1)
  return matrix


def _ratio(num: int, den: int) -> Optional[float]:
  return round(num / den, 4) if den else None


def per_class_metrics(true: np.ndarray, predicted: np.ndarray,
                      labels: Sequence[str]) -> Dict:
  """Accuracy, and precision, recall and support per class.

  Written out rather than taken from scikit-learn (not a dependency) or
  Keras metrics (one metric object per class and threshold): it is a
  confusion matrix and two divisions. Precision of a class never predicted
  is None (undefined), not 0.
  """
  matrix = confusion(true, predicted, len(labels))
  per_class = {}
  for i, name in enumerate(labels):
    tp = int(matrix[i, i])
    per_class[name] = {
        'precision': _ratio(tp, int(matrix[:, i].sum())),
        'recall': _ratio(tp, int(matrix[i, :].sum())),
        'support': int(matrix[i, :].sum()),
    }
  total = int(matrix.sum())
  return {
      'images': total,
      'accuracy': _ratio(int(np.trace(matrix)), total),
      'per_class': per_class,
      'confusion': matrix.tolist(),
  }


def format_metrics(metrics: Dict) -> str:
  """The validation table printed by stylize-train."""
  def show(v):
    return '  n/a' if v is None else f'{v:.3f}'
  names = list(metrics['per_class'])
  width = max([len('class')] + [len(n) for n in names])
  lines = [f"validation: {metrics['images']} images, accuracy "
           f"{show(metrics['accuracy'])}",
           f"  {'class':<{width}}  precision  recall  support"]
  for name in names:
    m = metrics['per_class'][name]
    lines.append(f"  {name:<{width}}  {show(m['precision']):>9}  "
                 f"{show(m['recall']):>6}  {m['support']:>7}")
  return '\n'.join(lines)


def misclassified(uris: Sequence[str], true: np.ndarray, probs: np.ndarray,
                  labels: Sequence[str], limit: int = 50) -> List[Dict]:
  """The validation images the model got wrong, most confident first."""
  predicted = probs.argmax(axis=1)
  wrong = [n for n in range(len(uris)) if predicted[n] != true[n]]
  wrong.sort(key=lambda n: -float(probs[n, predicted[n]]))
  return [{'uri': str(uris[n]), 'class': labels[int(true[n])],
           'predicted': labels[int(predicted[n])],
           'score': round(float(probs[n, predicted[n]]), 4)}
          for n in wrong[:limit]]
