"""T5X's token-level loss: cross-entropy with label smoothing and z-loss, summed over weights.

Semantics (identical to `t5x.losses.compute_weighted_cross_entropy`):
  per token:  loss_t = logsumexp(z_t) - <soft_target_t, z_t> + z_loss * logsumexp(z_t)^2
                       - normalizing_constant(label_smoothing)
  total:      sum_t weight_t * loss_t, divided by `loss_normalizing_factor` when one is given
              (None: the plain weighted sum, T5X's default for fine-tuning).
Weights are 1 on real target tokens and 0 on padding (and on prompt positions).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class LossTerms(NamedTuple):
  """Summed loss pieces of one batch (scalars, float32)."""

  loss: jax.Array            # total loss as optimised (z-loss included, normalized if asked).
  z_loss: jax.Array          # the z-loss part of `loss`.
  weight_sum: jax.Array      # number of real target tokens.
  correct: jax.Array         # real target tokens whose argmax prediction is right.


def _smoothing_constants(vocab_size: int, label_smoothing: float) -> tuple[float, float, float]:
  confidence = 1.0 - label_smoothing
  low_confidence = (1.0 - confidence) / (vocab_size - 1)
  normalizing_constant = -(
      confidence * jnp.log(confidence) +
      (vocab_size - 1) * low_confidence * jnp.log(low_confidence + 1e-20))
  return confidence, low_confidence, normalizing_constant


def token_losses(logits_BTV: jax.Array, targets_BT: jax.Array, *, z_loss: float = 0.0,
                 label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Per-token (loss, z_loss), each [batch, length] float32; logits [batch, length, vocab]."""
  vocab_size = logits_BTV.shape[-1]
  logits_BTV = logits_BTV.astype(jnp.float32)
  log_z_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  if label_smoothing:
    confidence, low_confidence, constant = _smoothing_constants(vocab_size, label_smoothing)
    # <soft_target, z> with soft_target = low everywhere, confidence at the target.
    dot_BT = low_confidence * jnp.sum(logits_BTV, axis=-1) + (confidence -
                                                               low_confidence) * target_logit_BT
  else:
    constant, dot_BT = 0.0, target_logit_BT
  z_loss_BT = z_loss * jnp.square(log_z_BT)
  return log_z_BT - dot_BT + z_loss_BT - constant, z_loss_BT


def weighted_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, weights_BT: jax.Array, *,
                           z_loss: float = 0.0, label_smoothing: float = 0.0,
                           loss_normalizing_factor: Optional[float] = None) -> LossTerms:
  """T5X's loss of one batch; see the module docstring for the exact formula."""
  weights_BT = weights_BT.astype(jnp.float32)
  loss_BT, z_loss_BT = token_losses(logits_BTV, targets_BT, z_loss=z_loss,
                                    label_smoothing=label_smoothing)
  loss = jnp.sum(loss_BT * weights_BT)
  total_z_loss = jnp.sum(z_loss_BT * weights_BT)
  if loss_normalizing_factor is not None:
    loss = loss / loss_normalizing_factor
    total_z_loss = total_z_loss / loss_normalizing_factor
  correct = jnp.sum((jnp.argmax(logits_BTV, axis=-1) == targets_BT) * weights_BT)
  return LossTerms(loss=loss, z_loss=total_z_loss, weight_sum=jnp.sum(weights_BT), correct=correct)
