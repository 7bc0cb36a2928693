"""Per-step constraints on the next token, as Hugging Face's logits processors apply them.

`Constraints` is static (hashable) decoding data; `apply` rewrites one step's scores [N, V]
(logits for greedy / sampling, log-probabilities for beam search, as transformers does) given
the sequence so far. In Hugging Face's order:
  1. no_repeat_ngram_size n: a token that would complete an n-gram already present in the
     sequence (its context, e.g. the decoder start token, included) gets -inf;
  2. min_new_tokens m: EOS gets -inf while fewer than m tokens were generated (Hugging Face's
     `min_length` counts the decoder start token too: m = min_length - 1 for encoder-decoders);
  3. forced_bos_id: the first generated token is this one (every other gets -inf, it gets 0);
  4. forced_eos_id: the last token the length limit allows is this one.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Constraints:
  """What `apply` enforces (defaults: nothing)."""

  no_repeat_ngram_size: int = 0
  min_new_tokens: int = 0
  forced_bos_id: Optional[int] = None
  forced_eos_id: Optional[int] = None

  def __post_init__(self):
    for name in ("no_repeat_ngram_size", "min_new_tokens"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} must be an int >= 0 (0 turns it off).")

  @property
  def active(self) -> bool:
    return self != Constraints()


def banned_ngram_tokens(sequence_NH: jax.Array, length: jax.Array | int, ngram_size: int,
                        vocab: int) -> jax.Array:
  """bool [N, vocab]: tokens that would repeat an n-gram of `sequence_NH[:, :length]`.

  A window sequence[j : j + n - 1] equal to the last n - 1 tokens bans the token that followed
  it, sequence[j + n - 1], when that token lies before `length`.
  """
  rows, history = sequence_NH.shape
  n = ngram_size
  if n < 1 or history < n:
    return jnp.zeros((rows, vocab), bool)
  length = jnp.asarray(length, jnp.int32)
  num_windows = history - n + 1
  suffix_NK = jax.lax.dynamic_slice(sequence_NH, (0, jnp.maximum(length - (n - 1), 0)),
                                    (rows, n - 1))
  match_NJ = jnp.ones((rows, num_windows), bool)
  for k in range(n - 1):
    match_NJ = match_NJ & (sequence_NH[:, k:k + num_windows] == suffix_NK[:, k:k + 1])
  follower_NJ = sequence_NH[:, n - 1:n - 1 + num_windows]
  match_NJ = match_NJ & ((jnp.arange(num_windows) + n - 1) < length)[None, :] & (length >= n)
  # Non-matching windows write to a spare column past the vocabulary.
  column_NJ = jnp.where(match_NJ, jnp.clip(follower_NJ, 0, vocab - 1), vocab)
  banned = jnp.zeros((rows, vocab + 1), bool).at[jnp.arange(rows)[:, None], column_NJ].set(True)
  return banned[:, :vocab]


def _only(scores_NV: jax.Array, token_ids: Sequence[int]) -> jax.Array:
  """Scores with every entry -inf except `token_ids`, which get 0."""
  keep_V = jnp.zeros((scores_NV.shape[-1],), bool).at[jnp.asarray(token_ids)].set(True)
  return jnp.where(keep_V[None, :], 0.0, -jnp.inf).astype(scores_NV.dtype) + jnp.zeros_like(
      scores_NV)


def apply(constraints: Optional[Constraints], scores_NV: jax.Array, sequence_NH: jax.Array,
          length: jax.Array | int, generated: jax.Array | int, max_new_tokens: int,
          eos_ids: Sequence[int]) -> jax.Array:
  """One step's scores [N, V] with `constraints` enforced.

  Args:
    scores_NV: logits or log-probabilities of the next token.
    sequence_NH: int [N, H], the sequence so far (context then generated tokens) in its first
      `length` positions.
    length: number of valid positions in `sequence_NH` (int32 scalar).
    generated: tokens generated so far (the next one is generated token number `generated`).
    max_new_tokens: the generation length limit.
    eos_ids: the end-of-sequence ids.
  """
  if constraints is None or not constraints.active:
    return scores_NV
  generated = jnp.asarray(generated, jnp.int32)
  if constraints.no_repeat_ngram_size:
    banned_NV = banned_ngram_tokens(sequence_NH, length, constraints.no_repeat_ngram_size,
                                    scores_NV.shape[-1])
    scores_NV = jnp.where(banned_NV, -jnp.inf, scores_NV)
  if constraints.min_new_tokens:
    is_eos_V = jnp.zeros((scores_NV.shape[-1],), bool).at[jnp.asarray(eos_ids)].set(True)
    scores_NV = jnp.where(is_eos_V[None, :] & (generated < constraints.min_new_tokens), -jnp.inf,
                          scores_NV)
  if constraints.forced_bos_id is not None:
    scores_NV = jnp.where(generated == 0, _only(scores_NV, [constraints.forced_bos_id]),
                          scores_NV)
  if constraints.forced_eos_id is not None:
    scores_NV = jnp.where(generated == max_new_tokens - 1,
                          _only(scores_NV, [constraints.forced_eos_id]), scores_NV)
  return scores_NV
