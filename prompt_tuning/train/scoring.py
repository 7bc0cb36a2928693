"""Target log-likelihoods for ranking (rank classification): each row's summed log-probability
of its weighted target tokens, teacher forced.

Three ways to the same scores, cheapest first where they apply:
  * shared contexts (decoder-only causal-LM rows, `shared_context_rows`): rank classification
    repeats each example's input once per label, so the distinct inputs ("contexts") are
    prefilled once into a decoding cache and every row only feeds its own target tokens
    through its context's cache rows; two labels cost about one pass over the inputs instead
    of two;
  * a window (causal-LM rows, `score_window`): one full pass, but only the target positions
    are projected to logits, never the inputs' [B, S, V];
  * every position's logits (T5 features).
The first two agree with the third up to float rounding (cached decoding equals uncached).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np

from prompt_tuning.train import losses, models

Batch = Mapping[str, jax.Array]


def score_batch(module: nn.Module, params: Any, batch: Batch,
                window: Optional[int] = None) -> jax.Array:
  """Log-likelihood of each example's targets [B] (sum over weighted positions), for ranking.

  `window` (causal-LM rows, static; `score_window`): only that many positions per row, from its
  first weighted one, are projected to logits; the inputs' [B, S, V] logits are never made.
  """
  targets_BS, weights_BS = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  if window and "decoder_attention_mask" in batch:
    hidden_BWD, targets_BS, weights_BS = models.target_window(
        models.hidden_states(module, params, batch), targets_BS, weights_BS, window)
    logits_BSV = models.project_fn(module, params)(hidden_BWD)
  else:
    logits_BSV = models.logits(module, params, batch)
  return losses.target_log_likelihoods(logits_BSV, targets_BS, weights_BS)


def _power_of_two(count: int) -> int:
  return 1 << max(count - 1, 0).bit_length()


def score_window(batch: Mapping[str, Any]) -> Optional[int]:
  """The `score_batch` window of a host batch: its widest span of weighted positions, rounded
  up to a power of two (few compilations); None for batches that are not causal-LM rows."""
  if "decoder_attention_mask" not in batch:
    return None
  weighted_BS = np.asarray(batch["decoder_loss_weights"]) > 0
  if not weighted_BS.any():
    return 1
  positions_S = np.arange(weighted_BS.shape[1])
  last_B = np.where(weighted_BS, positions_S, -1).max(axis=1)
  first_B = np.where(weighted_BS, positions_S, weighted_BS.shape[1]).min(axis=1)
  span = int(np.max(last_B - first_B + 1))
  return min(_power_of_two(span), weighted_BS.shape[1])


def can_share_contexts(module: nn.Module) -> bool:
  """Whether `module` scores through `score_shared_contexts`: a decoder-only model (plain, or
  with a prompt placed before / after BOS, P-tuning, prefix tuning, deep or multi-task
  prompts) that decodes from a cache; template models (prompt slots among the inputs) and
  ensembles (rows that differ by prompt) score in one pass instead."""
  return (models.is_decoder_only(module) and hasattr(module, "prefill") and
          not getattr(module, "template", None) and
          getattr(getattr(module, "prompt_method", None), "num_prompts", 1) == 1)


def shared_context_rows(batch: Mapping[str, Any], window: int,
                        rows_multiple: int = 1) -> Optional[dict[str, np.ndarray]]:
  """A host batch of causal-LM rows as distinct contexts + per-row queries, or None when that
  would not save work (every row's context differs, or a row has targets but no context).

  Row b's context is its real tokens before its first weighted position f (BOS and the input
  but the last input token); its query is the `window` tokens from f (the last input token,
  then the targets but the last), which predict targets[f : f + window]. Returns
    context_UT / context_valid_UT: the U distinct contexts, left-padded to the batch's width
      (U rounded up to a power of two and to a multiple of `rows_multiple`, the data-parallel
      size; the extra rows empty);
    row_context_B: each row's context; query_BW / query_valid_BW / targets_BW / weights_BW.
  """
  tokens_BS = np.asarray(batch["decoder_input_tokens"])
  targets_BS = np.asarray(batch["decoder_target_tokens"])
  weights_BS = np.asarray(batch["decoder_loss_weights"])
  valid_BS = np.asarray(batch["decoder_attention_mask"]) > 0
  rows, length = tokens_BS.shape
  weighted_BS = weights_BS > 0
  first_B = np.argmax(weighted_BS, axis=1)
  has_targets_B = weighted_BS.any(axis=1)
  if np.any(has_targets_B & (first_B == 0)):
    return None
  contexts: dict[tuple[int, ...], int] = {}
  row_context_B = np.zeros(rows, np.int32)
  for b in range(rows):
    end = first_B[b] if has_targets_B[b] else 0
    context = tuple(int(t) for t in tokens_BS[b, :end][valid_BS[b, :end]])
    row_context_B[b] = contexts.setdefault(context, len(contexts))
  count = _power_of_two(len(contexts))
  count = -(-count // rows_multiple) * rows_multiple
  if count >= rows:
    return None
  width = max(length - 1, 1)
  context_UT = np.zeros((count, width), tokens_BS.dtype)
  context_valid_UT = np.zeros((count, width), np.int32)
  for context, index in contexts.items():
    if context:
      context_UT[index, width - len(context):] = context
      context_valid_UT[index, width - len(context):] = 1
  columns_BW = first_B[:, None] + np.arange(window)[None, :]
  inside_BW = columns_BW < length
  columns_BW = np.minimum(columns_BW, length - 1)
  take = lambda array: np.take_along_axis(array, columns_BW, axis=1)  # pylint: disable=unnecessary-lambda-assignment
  return {"context_UT": context_UT, "context_valid_UT": context_valid_UT,
          "row_context_B": row_context_B, "query_BW": take(tokens_BS),
          "query_valid_BW": (take(valid_BS) & inside_BW).astype(np.int32),
          "targets_BW": take(targets_BS),
          "weights_BW": (take(weights_BS) * inside_BW).astype(np.float32)}


def score_shared_contexts(module: nn.Module, params: Any,
                          rows: Mapping[str, jax.Array]) -> jax.Array:
  """[B] scores of `shared_context_rows`: the contexts prefill a decoding cache once (the
  prompt too), each row's query continues from its context's cache rows."""
  variables = {"params": params}
  context_UT = rows["context_UT"]
  width, window = context_UT.shape[1], rows["query_BW"].shape[1]
  cache = module.apply(variables, context_UT.shape[0], width + window,
                       method=module.init_decode_cache)
  cache = module.apply(variables, context_UT, cache, rows["context_valid_UT"],
                       method=module.prefill)
  cache = jax.tree_util.tree_map(lambda leaf: leaf[rows["row_context_B"]], cache)
  start = width + getattr(module, "prompt_length", 0)
  logits_BWV, _ = module.apply(variables, rows["query_BW"], cache, start,
                               rows["query_valid_BW"] > 0, method=module.decode_step)
  return losses.target_log_likelihoods(logits_BWV, rows["targets_BW"], rows["weights_BW"])


class Scorer:
  """Compiled scoring of host batches for one module: the cheapest applicable way above."""

  def __init__(self, module: nn.Module, place: Callable[[dict], dict], rows_multiple: int = 1,
               share_contexts: Optional[bool] = None):
    """`place`: host arrays -> device arrays (batch-sharded); `rows_multiple`: the data-
    parallel size every leading dimension must divide by."""
    self._place = place
    self._rows_multiple = rows_multiple
    self._share = can_share_contexts(module) if share_contexts is None else share_contexts
    self._windowed = jax.jit(functools.partial(score_batch, module), static_argnames="window")
    self._shared = jax.jit(functools.partial(score_shared_contexts, module))

  def __call__(self, params: Any, batch: Mapping[str, np.ndarray]) -> jax.Array:
    """Scores [B] of a host batch."""
    window = score_window(batch)
    shared = (shared_context_rows(batch, window, self._rows_multiple)
              if self._share and window else None)
    if shared is not None:
      return self._shared(params, self._place(shared))
    return self._windowed(params, self._place(dict(batch)), window=window)
