"""T5X's token-level loss: cross-entropy with label smoothing and z-loss, summed over weights.

Semantics (identical to `t5x.losses.compute_weighted_cross_entropy`):
  per token:  loss_t = logsumexp(z_t) - <soft_target_t, z_t> + z_loss * logsumexp(z_t)^2
                       - normalizing_constant(label_smoothing)
  total:      sum_t weight_t * loss_t, divided by `loss_normalizing_factor` when one is given
              (None: the plain weighted sum, T5X's default for fine-tuning).
Weights are 1 on real target tokens and 0 on padding (and on prompt positions).

`chunked_weighted_cross_entropy` computes the same terms from the output projection's inputs,
a chunk of positions at a time, so the [batch, length, vocab] float32 logits are never held
whole (forward or backward).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

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


def target_log_likelihoods(logits_BTV: jax.Array, targets_BT: jax.Array,
                           weights_BT: jax.Array) -> jax.Array:
  """[batch]: each row's summed log-probability of its weighted targets (ranking scores)."""
  loss_BT, _ = token_losses(logits_BTV, targets_BT)
  return -jnp.sum(loss_BT * weights_BT.astype(jnp.float32), axis=-1)


def _summed_terms(logits_BTV: jax.Array, targets_BT: jax.Array, weights_BT: jax.Array, *,
                  z_loss: float, label_smoothing: float) -> LossTerms:
  """Weighted sums of the per-token terms (before any normalizing factor); logits [B, T, V]."""
  weights_BT = weights_BT.astype(jnp.float32)
  loss_BT, z_loss_BT = token_losses(logits_BTV, targets_BT, z_loss=z_loss,
                                    label_smoothing=label_smoothing)
  loss = jnp.sum(loss_BT * weights_BT)
  total_z_loss = jnp.sum(z_loss_BT * weights_BT)
  correct = jnp.sum((jnp.argmax(logits_BTV, axis=-1) == targets_BT) * weights_BT)
  return LossTerms(loss=loss, z_loss=total_z_loss, weight_sum=jnp.sum(weights_BT), correct=correct)


def _normalized(terms: LossTerms, loss_normalizing_factor: Optional[float]) -> LossTerms:
  """`terms` with the loss and z-loss divided by the normalizing factor (None: unchanged)."""
  if loss_normalizing_factor is None:
    return terms
  return terms._replace(loss=terms.loss / loss_normalizing_factor,
                        z_loss=terms.z_loss / loss_normalizing_factor)


def weighted_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, weights_BT: jax.Array, *,
                           z_loss: float = 0.0, label_smoothing: float = 0.0,
                           loss_normalizing_factor: Optional[float] = None) -> LossTerms:
  """T5X's loss of one batch; see the module docstring for the exact formula."""
  terms = _summed_terms(logits_BTV, targets_BT, weights_BT, z_loss=z_loss,
                        label_smoothing=label_smoothing)
  return _normalized(terms, loss_normalizing_factor)


def _chunks(x_BS: jax.Array, chunk_size: int) -> jax.Array:
  """[B, S, ...] zero-padded to S' = n * chunk_size on axis 1 -> [n, B, chunk_size, ...]."""
  batch, length = x_BS.shape[:2]
  num_chunks = -(-length // chunk_size)
  padding = [(0, 0)] * x_BS.ndim
  padding[1] = (0, num_chunks * chunk_size - length)
  x_BS = jnp.pad(x_BS, padding)
  x_BNC = x_BS.reshape((batch, num_chunks, chunk_size) + x_BS.shape[2:])
  return jnp.swapaxes(x_BNC, 0, 1)


def chunked_weighted_cross_entropy(hidden_BSD: jax.Array,
                                   project_fn: Callable[[jax.Array], jax.Array],
                                   targets_BS: jax.Array, weights_BS: jax.Array, *,
                                   chunk_size: int, z_loss: float = 0.0,
                                   label_smoothing: float = 0.0,
                                   loss_normalizing_factor: Optional[float] = None) -> LossTerms:
  """`weighted_cross_entropy(project_fn(hidden_BSD), ...)` without all the logits at once.

  Args:
    hidden_BSD: the inputs of the output projection [batch, S, embed].
    project_fn: hidden [batch, C, embed] -> logits [batch, C, vocab] (e.g. the model's
      `project_hidden`); it must treat positions independently.
    targets_BS, weights_BS: target ids and loss weights [batch, S].
    chunk_size: positions per chunk C. S is padded up to a multiple of C with weight-0
      positions; a C >= S is one chunk of S.

  The positions are processed one chunk after another (`lax.scan`), each under `jax.checkpoint`,
  so neither the forward nor the backward pass holds more than one chunk's [batch, C, vocab]
  logits: the backward pass recomputes a chunk's logits from its hidden states.
  """
  if not isinstance(chunk_size, int) or chunk_size <= 0:
    raise ValueError(f"chunk_size={chunk_size!r}: the logits chunk size must be a positive "
                     "integer (number of target positions per chunk).")
  chunk_size = min(chunk_size, hidden_BSD.shape[1])

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def chunk_terms(hidden_BCD, targets_BC, weights_BC):
    return _summed_terms(project_fn(hidden_BCD), targets_BC, weights_BC, z_loss=z_loss,
                         label_smoothing=label_smoothing)

  def add_chunk(total: LossTerms, chunk):
    return jax.tree_util.tree_map(jnp.add, total, chunk_terms(*chunk)), None

  zero = LossTerms(*(jnp.zeros((), jnp.float32) for _ in LossTerms._fields))
  chunks = (_chunks(hidden_BSD, chunk_size), _chunks(targets_BS, chunk_size),
            _chunks(weights_BS, chunk_size))
  terms, _ = jax.lax.scan(add_chunk, zero, chunks)
  return _normalized(terms, loss_normalizing_factor)
