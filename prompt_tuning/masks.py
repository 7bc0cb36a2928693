"""Masks, positions, loss weights and targets that match a prompt placed by `combine`.

All functions take the per-example prompt index [B] (see `combine.PLACEMENT_INDEX`) and the
prompt length P, and return arrays over the combined length T+P.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from prompt_tuning import combine


def prompt_valid(valid_BT: jax.Array, index_B: jax.Array, prompt_length: int) -> jax.Array:
  """Validity [B, T] -> bool [B, T+P]: the prompt positions are valid."""
  return combine.insert_value(valid_BT > 0, index_B, prompt_length, True)


def is_prompt(index_B: jax.Array, length: int, prompt_length: int) -> jax.Array:
  """bool [B, T+P]: True exactly on the prompt positions."""
  positions_S = jnp.arange(length + prompt_length)
  offset_BS = positions_S[None, :] - index_B[:, None]
  return (offset_BS >= 0) & (offset_BS < prompt_length)


def placement_mask(placement: str, tokens_BT: jax.Array, prompt_length: int) -> jax.Array:
  """bool [B, T+P]: valid positions of inputs with the prompt placed by `placement`."""
  index_B = combine.placement_index(placement, tokens_BT)
  return prompt_valid(tokens_BT > 0, index_B, prompt_length)


def prefix_prompt_mask(tokens_BT: jax.Array, prompt_length: int) -> jax.Array:
  """Mask [B, T+P] matching `combine.prefix_prompt`."""
  return placement_mask("prefix", tokens_BT, prompt_length)


def prefix_prompt_after_bos_mask(tokens_BT: jax.Array, prompt_length: int) -> jax.Array:
  """Mask [B, T+P] matching `combine.prefix_prompt_after_bos`."""
  return placement_mask("prefix_after_bos", tokens_BT, prompt_length)


def suffix_prompt_before_eos_mask(tokens_BT: jax.Array, prompt_length: int) -> jax.Array:
  """Mask [B, T+P] matching `combine.suffix_prompt_before_eos`."""
  return placement_mask("suffix_before_eos", tokens_BT, prompt_length)


def cross_attention_valid(valid_BT: jax.Array, index_B: jax.Array, prompt_length: int,
                          decoder_attends_to_prompt: bool = True) -> jax.Array:
  """Encoder-output validity [B, T+P] for the decoder: prompt positions hidden when asked."""
  return combine.insert_value(valid_BT > 0, index_B, prompt_length, decoder_attends_to_prompt)


def causal_attention_with_prompt(decoder_causal_attention_BT: Optional[jax.Array],
                                 index_B: jax.Array, prompt_length: int) -> Optional[jax.Array]:
  """T5X `decoder_causal_attention` [B, T] -> [B, T+P]: the prompt joins the visible prefix.

  None (a plain causal LM) stays None.
  """
  if decoder_causal_attention_BT is None:
    return None
  return combine.insert_value(decoder_causal_attention_BT, index_B, prompt_length, 1)


def loss_weights_with_prompt(weights_BT: jax.Array, index_B: jax.Array,
                             prompt_length: int) -> jax.Array:
  """Loss weights [B, T] -> [B, T+P] with weight 0 on every prompt position."""
  return combine.insert_value(weights_BT, index_B, prompt_length, 0)


def targets_with_prompt(targets_BT: jax.Array, index_B: jax.Array,
                        prompt_length: int) -> jax.Array:
  """Decoder targets [B, T] -> [B, T+P] with padding (0: no target) on the prompt positions."""
  return combine.insert_value(targets_BT, index_B, prompt_length, 0)


def positions(valid_BS: jax.Array) -> jax.Array:
  """int32 [B, S]: each valid position's rank among its row's valid positions; 0 elsewhere."""
  valid_BS = valid_BS > 0
  return jnp.where(valid_BS, jnp.cumsum(valid_BS, axis=1) - 1, 0).astype(jnp.int32)


# --- Templates: K prompt segments at per-example token positions (`combine.insert_segments`) ---


def segments_valid(valid_BT: jax.Array, slots_BK: jax.Array,
                   slot_lengths: tuple[int, ...]) -> jax.Array:
  """Validity [B, T] -> bool [B, T+P]: every prompt segment's positions are valid."""
  return combine.insert_segment_values(valid_BT > 0, slots_BK, slot_lengths, True)


def cross_attention_valid_segments(valid_BT: jax.Array, slots_BK: jax.Array,
                                   slot_lengths: tuple[int, ...],
                                   decoder_attends_to_prompt: bool = True) -> jax.Array:
  """Encoder-output validity [B, T+P] for the decoder: prompt segments hidden when asked."""
  return combine.insert_segment_values(valid_BT > 0, slots_BK, slot_lengths,
                                       decoder_attends_to_prompt)


def causal_attention_with_segments(decoder_causal_attention_BT: Optional[jax.Array],
                                   slots_BK: jax.Array,
                                   slot_lengths: tuple[int, ...]) -> Optional[jax.Array]:
  """T5X `decoder_causal_attention` [B, T] -> [B, T+P]: the segments join the visible prefix
  (None stays None)."""
  if decoder_causal_attention_BT is None:
    return None
  return combine.insert_segment_values(decoder_causal_attention_BT, slots_BK, slot_lengths, 1)
