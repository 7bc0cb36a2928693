"""Placing a batched prompt among embedded tokens: prefix, prefix after BOS, suffix before EOS,
and templates (K segments of the prompt at per-example token positions).

Every named placement inserts the P prompt rows contiguously at a per-example index, so one
gather (`insert_prompt`) serves all of them; a template's segments go in with
`insert_segments`. The matching masks are in `prompt_tuning.masks`.
Token conventions: 0 is padding (at the end of a row unless said otherwise), 1 is EOS.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

PAD_ID = 0
EOS_ID = 1


def lengths(tokens_BT: jax.Array) -> jax.Array:
  """Number of non-padding tokens per example -> int32 [B]."""
  return jnp.sum(tokens_BT != PAD_ID, axis=1).astype(jnp.int32)


def prefix_index(tokens_BT: jax.Array) -> jax.Array:
  """Index [B] where a prefix prompt goes: 0."""
  return jnp.zeros(tokens_BT.shape[:1], jnp.int32)


def after_bos_index(tokens_BT: jax.Array) -> jax.Array:
  """Index [B] right after the first token (the BOS / task token): 1, or 0 for an empty row."""
  return jnp.minimum(lengths(tokens_BT), 1)


def before_eos_index(tokens_BT: jax.Array) -> jax.Array:
  """Index [B] before the row's final EOS (right after the last token when it is not EOS)."""
  length_B = lengths(tokens_BT)
  last_B = jnp.take_along_axis(tokens_BT, jnp.maximum(length_B - 1, 0)[:, None], axis=1)[:, 0]
  ends_with_eos_B = (length_B > 0) & (last_B == EOS_ID)
  return length_B - ends_with_eos_B.astype(jnp.int32)


def first_valid_index(valid_BT: jax.Array) -> jax.Array:
  """Index [B] of each row's first valid position (T for a row with none): left padding aware."""
  batch, length = valid_BT.shape
  if length == 0:
    return jnp.zeros((batch,), jnp.int32)
  valid_BT = valid_BT > 0
  return jnp.where(valid_BT.any(axis=1), jnp.argmax(valid_BT, axis=1), length).astype(jnp.int32)


def _source_index(index_B: jax.Array, length: int, prompt_length: int) -> tuple[jax.Array, ...]:
  """For each combined position [B, T+P]: whether it is a prompt row, and its source row."""
  positions_S = jnp.arange(length + prompt_length)
  offset_BS = positions_S[None, :] - index_B[:, None]
  is_prompt_BS = (offset_BS >= 0) & (offset_BS < prompt_length)
  token_row_BS = jnp.where(offset_BS < 0, positions_S[None, :],
                           positions_S[None, :] - prompt_length)
  prompt_row_BS = jnp.clip(offset_BS, 0, max(prompt_length - 1, 0))
  return is_prompt_BS, jnp.clip(token_row_BS, 0, max(length - 1, 0)), prompt_row_BS


def insert_prompt(prompt_BPD: jax.Array, embedded_BTD: jax.Array, index_B: jax.Array) -> jax.Array:
  """Embeddings [B, T+P, D]: row b = embedded[b, :i], prompt[b], embedded[b, i:]; i = index[b]."""
  batch, length = embedded_BTD.shape[:2]
  prompt_length = prompt_BPD.shape[1]
  if prompt_BPD.shape[0] != batch or prompt_BPD.shape[2] != embedded_BTD.shape[2]:
    raise ValueError(f"insert_prompt: prompt shape {list(prompt_BPD.shape)} does not fit the "
                     f"embedded inputs' shape {list(embedded_BTD.shape)}: batch and embedding "
                     "sizes must match ([B, P, D] and [B, T, D]).")
  if prompt_length == 0:
    return embedded_BTD
  if length == 0:
    return prompt_BPD.astype(embedded_BTD.dtype)
  is_prompt_BS, token_row_BS, prompt_row_BS = _source_index(index_B, length, prompt_length)
  tokens_BSD = jnp.take_along_axis(embedded_BTD, token_row_BS[..., None], axis=1)
  prompts_BSD = jnp.take_along_axis(prompt_BPD.astype(embedded_BTD.dtype), prompt_row_BS[..., None],
                                    axis=1)
  return jnp.where(is_prompt_BS[..., None], prompts_BSD, tokens_BSD)


def insert_value(values_BT: jax.Array, index_B: jax.Array, prompt_length: int,
                 fill: int | float | bool) -> jax.Array:
  """Per-position values [B, T] -> [B, T+P] with `fill` on the P prompt positions at `index`."""
  batch = values_BT.shape[0]
  prompt_BP1 = jnp.full((batch, prompt_length, 1), fill, values_BT.dtype)
  return insert_prompt(prompt_BP1, values_BT[..., None], index_B)[..., 0]


def remove_prompt(combined_BSX: jax.Array, index_B: jax.Array, prompt_length: int) -> jax.Array:
  """Inverse of `insert_prompt` on axis 1: [B, T+P, ...] -> [B, T, ...] without the prompt rows."""
  length = combined_BSX.shape[1] - prompt_length
  positions_T = jnp.arange(length)
  source_BT = jnp.where(positions_T[None, :] < index_B[:, None], positions_T[None, :],
                        positions_T[None, :] + prompt_length)
  source = source_BT.reshape(source_BT.shape + (1,) * (combined_BSX.ndim - 2))
  return jnp.take_along_axis(combined_BSX, source, axis=1)


def prefix_prompt(prompt_BPD: jax.Array, embedded_BTD: jax.Array,
                  tokens_BT: jax.Array) -> jax.Array:
  """[prompt, inputs] -> [B, T+P, D]."""
  return insert_prompt(prompt_BPD, embedded_BTD, prefix_index(tokens_BT))


def prefix_prompt_after_bos(prompt_BPD: jax.Array, embedded_BTD: jax.Array,
                            tokens_BT: jax.Array) -> jax.Array:
  """[first token, prompt, other inputs] -> [B, T+P, D]."""
  return insert_prompt(prompt_BPD, embedded_BTD, after_bos_index(tokens_BT))


def suffix_prompt_before_eos(prompt_BPD: jax.Array, embedded_BTD: jax.Array,
                             tokens_BT: jax.Array) -> jax.Array:
  """[inputs, prompt, EOS, padding] per example (ragged lengths) -> [B, T+P, D]."""
  return insert_prompt(prompt_BPD, embedded_BTD, before_eos_index(tokens_BT))


# --- Templates: K prompt segments at per-example positions (`prompt_tuning.templates`) ---------
# `slots_BK` [B, K] are non-decreasing token indices: segment k (lengths `slot_lengths`, rows
# offset_k .. offset_k + n_k - 1 of the prompt) goes right before token slots[b, k]. One
# segment at `index_B` is `insert_prompt`.


def _segment_source(slots_BK: jax.Array, slot_lengths: tuple[int, ...],
                    length: int) -> tuple[jax.Array, ...]:
  """For each combined position [B, T+P]: whether it is a prompt row, its token row and its
  prompt row."""
  lengths_K = jnp.asarray(slot_lengths, jnp.int32)
  offsets_K = jnp.cumsum(lengths_K) - lengths_K
  positions_S = jnp.arange(length + sum(slot_lengths))
  starts_BK = slots_BK.astype(jnp.int32) + offsets_K[None, :]
  relative_BSK = positions_S[None, :, None] - starts_BK[:, None, :]
  inside_BSK = (relative_BSK >= 0) & (relative_BSK < lengths_K)
  is_prompt_BS = inside_BSK.any(axis=-1)
  prompt_row_BS = jnp.sum(jnp.where(inside_BSK, offsets_K + relative_BSK, 0), axis=-1)
  before_BS = jnp.sum(jnp.clip(relative_BSK, 0, lengths_K), axis=-1)  # prompt rows before.
  token_row_BS = jnp.clip(positions_S[None, :] - before_BS, 0, max(length - 1, 0))
  return is_prompt_BS, token_row_BS, prompt_row_BS


def check_segments(slots_BK: jax.Array, slot_lengths: tuple[int, ...], batch: int) -> None:
  """A clear error when `slots_BK` does not fit the template's slots."""
  if slots_BK.ndim != 2 or slots_BK.shape != (batch, len(slot_lengths)):
    raise ValueError(f"prompt_slots has shape {list(slots_BK.shape)}; the template has "
                     f"{len(slot_lengths)} slots {list(slot_lengths)}, so it must be "
                     f"[{batch}, {len(slot_lengths)}] (one token index per slot and example).")


def insert_segments(prompt_BPD: jax.Array, embedded_BTD: jax.Array, slots_BK: jax.Array,
                    slot_lengths: tuple[int, ...]) -> jax.Array:
  """Embeddings [B, T+P, D] with prompt segment k placed before token slots[b, k]."""
  batch, length = embedded_BTD.shape[:2]
  check_segments(slots_BK, slot_lengths, batch)
  if prompt_BPD.shape[:2] != (batch, sum(slot_lengths)):
    raise ValueError(f"insert_segments: prompt shape {list(prompt_BPD.shape)} does not fit the "
                     f"template's slots {list(slot_lengths)} (P = {sum(slot_lengths)}) and "
                     f"batch {batch}.")
  if length == 0:
    return prompt_BPD.astype(embedded_BTD.dtype)
  is_prompt_BS, token_row_BS, prompt_row_BS = _segment_source(slots_BK, slot_lengths, length)
  tokens_BSD = jnp.take_along_axis(embedded_BTD, token_row_BS[..., None], axis=1)
  prompts_BSD = jnp.take_along_axis(prompt_BPD.astype(embedded_BTD.dtype),
                                    prompt_row_BS[..., None], axis=1)
  return jnp.where(is_prompt_BS[..., None], prompts_BSD, tokens_BSD)


def insert_segment_values(values_BT: jax.Array, slots_BK: jax.Array,
                          slot_lengths: tuple[int, ...], fill: int | float | bool) -> jax.Array:
  """Per-position values [B, T] -> [B, T+P] with `fill` on every prompt position."""
  batch = values_BT.shape[0]
  prompt_BP1 = jnp.full((batch, sum(slot_lengths), 1), fill, values_BT.dtype)
  return insert_segments(prompt_BP1, values_BT[..., None], slots_BK, slot_lengths)[..., 0]


def segment_positions(slots_BK: jax.Array, slot_lengths: tuple[int, ...],
                      length: int) -> jax.Array:
  """Where each token t lands among the combined positions: int32 [B, T+1] (entry T: T+P, the
  end), i.e. t plus the lengths of the segments placed before it."""
  lengths_K = jnp.asarray(slot_lengths, jnp.int32)
  tokens_T = jnp.arange(length + 1)
  before_BTK = slots_BK[:, None, :] <= tokens_T[None, :, None]
  shifted_BT = tokens_T[None, :] + jnp.sum(jnp.where(before_BTK, lengths_K, 0), axis=-1)
  return shifted_BT.at[:, length].set(length + sum(slot_lengths)).astype(jnp.int32)


def remove_segments(combined_BSX: jax.Array, slots_BK: jax.Array,
                    slot_lengths: tuple[int, ...]) -> jax.Array:
  """Inverse of `insert_segments` on axis 1: [B, T+P, ...] -> [B, T, ...] (the tokens' rows)."""
  length = combined_BSX.shape[1] - sum(slot_lengths)
  source_BT = segment_positions(slots_BK, slot_lengths, length)[:, :length]
  source = source_BT.reshape(source_BT.shape + (1,) * (combined_BSX.ndim - 2))
  return jnp.take_along_axis(combined_BSX, source, axis=1)


def remove_segments_causal(combined_BSX: jax.Array, slots_BK: jax.Array,
                           slot_lengths: tuple[int, ...]) -> jax.Array:
  """Next-token outputs of a causal model: [B, T+P, ...] -> [B, T, ...] where row t is the
  output of the position right before token t+1 (the last prompt row when a segment sits
  between them; the last position for t = T-1), so it predicts token t+1 having read every
  segment in front of it. With only leading segments this equals `remove_segments`."""
  length = combined_BSX.shape[1] - sum(slot_lengths)
  source_BT = segment_positions(slots_BK, slot_lengths, length)[:, 1:] - 1
  source = source_BT.reshape(source_BT.shape + (1,) * (combined_BSX.ndim - 2))
  return jnp.take_along_axis(combined_BSX, source, axis=1)


# Placement name -> the index [B] (from token ids [B, T]) where the prompt is inserted.
PLACEMENT_INDEX: dict[str, Callable[[jax.Array], jax.Array]] = {
    "prefix": prefix_index,
    "prefix_after_bos": after_bos_index,
    "suffix_before_eos": before_eos_index,
}


def placement_index(placement: str, tokens_BT: jax.Array) -> jax.Array:
  """Index [B] of the prompt for a placement name (see PLACEMENT_INDEX)."""
  if placement not in PLACEMENT_INDEX:
    raise ValueError(
        f"Unknown prompt placement {placement!r}; use one of {sorted(PLACEMENT_INDEX)}.")
  return PLACEMENT_INDEX[placement](tokens_BT)
