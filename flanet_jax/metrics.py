"""Confusion-matrix segmentation metrics: mIoU, per-class IoU, pixel accuracy."""

import jax.numpy as jnp
import numpy as np

from flanet_jax.labels import IGNORE_INDEX


def confusion_matrix(predictions, labels, num_classes: int):
  """(K, K) int32 counts [true, predicted] over pixels whose label is not 255."""
  valid = labels != IGNORE_INDEX
  index = jnp.where(valid, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def scores(confusion: np.ndarray) -> dict:
  """mIoU over classes that occur in the labels or predictions; pixel accuracy."""
  confusion = np.asarray(confusion, np.int64)
  true_positive = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  with np.errstate(invalid='ignore', divide='ignore'):
    iou = np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)
  total = confusion.sum()
  return {'miou': float(np.nanmean(iou)) if np.any(union > 0) else float('nan'),
          'iou': iou,
          'pixel_accuracy': float(true_positive.sum() / total) if total else float('nan'),
          'num_pixels': int(total),
          'confusion': confusion}


def format_table(result: dict, class_names) -> str:
  lines = [f'{"class":<16} {"IoU":>7}']
  for name, value in zip(class_names, result['iou']):
    lines.append(f'{name:<16} {"n/a" if np.isnan(value) else f"{100 * value:6.2f}":>7}')
  lines.append(f'{"mIoU":<16} {100 * result["miou"]:7.2f}')
  lines.append(f'{"pixel accuracy":<16} {100 * result["pixel_accuracy"]:7.2f}')
  return '\n'.join(lines)
