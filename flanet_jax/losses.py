"""Segmentation losses with ignore index 255: cross-entropy and OHEM.

Losses are means over the kept pixels of the whole (global) batch. OHEM selection is per
image, so it never needs pixels from other devices and does not depend on how the batch is
split: an image's pixels whose true-class probability is <= `threshold` are kept, and at least
its `min_kept` hardest valid pixels (as in OCNet / mmsegmentation's OHEMPixelSampler).
"""

import jax
import jax.numpy as jnp

from flanet_jax import errors
from flanet_jax.labels import IGNORE_INDEX


def pixel_cross_entropy(logits, labels):
  """Per-pixel CE (0 where ignored) and the valid mask. logits (B,H,W,K), labels (B,H,W)."""
  valid = labels != IGNORE_INDEX
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)),
                                 axis=-1)
  ce = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  return jnp.where(valid, ce, 0.0), valid


def ohem_keep_mask(ce, valid, threshold: float, min_kept: int):
  """Per image: valid pixels with p_true <= max(threshold, min_kept-th smallest p_true)."""
  prob = jax.lax.stop_gradient(jnp.exp(-ce))

  def per_image(prob, valid):
    flat = jnp.where(valid, prob, jnp.inf).reshape(-1)
    k = min(min_kept, flat.size)
    # Fewer than k valid pixels: the k-th smallest is inf and every valid pixel is kept.
    kth = jnp.sort(flat)[k - 1] if k > 0 else -jnp.inf
    return valid & (prob <= jnp.maximum(threshold, kth))

  return jax.vmap(per_image)(prob, valid)


def masked_mean(values, mask):
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


def segmentation_loss(logits, labels, *, name: str = 'ce', ohem_threshold: float = 0.7,
                      ohem_min_kept: int = 100_000):
  ce, valid = pixel_cross_entropy(logits, labels)
  if name == 'ce':
    return masked_mean(ce, valid)
  if name == 'ohem':
    return masked_mean(ce, ohem_keep_mask(ce, valid, ohem_threshold, ohem_min_kept))
  raise errors.UserValueError(f"Unknown loss.name {name!r}; choose 'ce' or 'ohem'")


def flanet_loss(outputs, labels, loss_config):
  """main (config.loss.name) + aux_weights . CE(aux1, aux2); returns (total, parts)."""
  main, *aux = outputs
  if len(aux) != len(loss_config.aux_weights):
    raise errors.UserValueError(f'loss.aux_weights has {len(loss_config.aux_weights)} weights for '
                                f'{len(aux)} auxiliary outputs')
  main_loss = segmentation_loss(main, labels, name=loss_config.name,
                                ohem_threshold=loss_config.ohem_threshold,
                                ohem_min_kept=loss_config.ohem_min_kept)
  aux_losses = [segmentation_loss(a, labels) for a in aux]
  total = main_loss + sum(w * l for w, l in zip(loss_config.aux_weights, aux_losses))
  parts = {'loss_main': main_loss, **{f'loss_aux{i + 1}': l for i, l in enumerate(aux_losses)}}
  return total, parts
