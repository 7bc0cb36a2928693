"""Decoder-only language models: the T5X decoder-only LM (prefix-LM capable) and the LLM families.

Which input positions are real: an explicit `decoder_attention_mask` [B, S] (1 = real token)
wins; otherwise T5-family models read padding from token id 0 (T5X's convention) and the LLM
families (`ModelConfig.zero_is_padding` False, id 0 is a real token) treat every position as
real.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models.attention import attention_mask, causal_mask
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.transformer import Decoder, DecoderCache, LayerInputsFn, token_positions


def prefix_lm_mask(valid_BS: jax.Array,
                   decoder_causal_attention_BS: Optional[jax.Array] = None) -> jax.Array:
  """Mask [batch, 1, S, S]: causal, plus full attention among inputs-prefix positions.

  `decoder_causal_attention_BS` is T5X's feature: 1 on the inputs (visible prefix) positions.
  """
  length = valid_BS.shape[1]
  positions = jnp.arange(length)
  mask = causal_mask(positions, positions)
  if decoder_causal_attention_BS is not None:
    prefix_BS = decoder_causal_attention_BS > 0
    mask = mask | (prefix_BS[:, None, :, None] & prefix_BS[:, None, None, :])
  return mask & attention_mask(valid_BS, valid_BS)


class DecoderOnly(nn.Module):
  """Decoder-only LM. Parameters under `decoder/` (incl. `decoder/token_embedder/embedding`)."""

  config: T5Config

  def setup(self):
    self.decoder = self._make_decoder()

  def _make_decoder(self) -> nn.Module:
    """The decoder stack (a hook: prompt models return a decoder that owns the prompt)."""
    return Decoder(self.config, shared_embedding=None, cross_attention=False)

  def embed(self, tokens_BS: jax.Array) -> jax.Array:
    """Token ids [batch, S] -> embeddings [batch, S, embed]."""
    return self.decoder.embed(tokens_BS)

  def input_validity(self, tokens_BS: jax.Array, targets_BS: Optional[jax.Array] = None,
                     attention_mask_BS: Optional[jax.Array] = None) -> jax.Array:
    """bool [batch, S]: the real input positions (see the module docstring).

    T5 family without a mask: padding from `targets_BS > 0` when given (T5X), else from the
    inputs (token 0 at position 0 is the start token and stays valid).
    """
    if attention_mask_BS is not None:
      return attention_mask_BS > 0
    if not self.config.zero_is_padding:
      return jnp.ones(tokens_BS.shape, bool)
    if targets_BS is not None:
      return targets_BS > 0
    return (tokens_BS > 0).at[:, 0].set(True)

  def prefill_validity(self, tokens_BT: jax.Array,
                       valid_BT: Optional[jax.Array] = None) -> jax.Array:
    """bool [batch, T]: the real positions of (left-padded) prefill tokens."""
    if valid_BT is not None:
      return valid_BT > 0
    if not self.config.zero_is_padding:
      return jnp.ones(tokens_BT.shape, bool)
    return tokens_BT > 0

  def decode_embedded(self, embedded_BSD: jax.Array, valid_BS: jax.Array,
                      decoder_causal_attention: Optional[jax.Array] = None,
                      enable_dropout: bool = False,
                      layer_inputs_fn: Optional[LayerInputsFn] = None,
                      return_hidden: bool = False) -> jax.Array:
    """Full pass over embeddings [batch, S, embed] -> logits [batch, S, vocab].

    `layer_inputs_fn` (optional, e.g. deep prompts) rewrites each layer's input. With
    `return_hidden`: the final hidden states [batch, S, embed] instead (see `project_hidden`).
    RoPE positions are each valid position's rank among the row's valid positions.
    """
    mask = prefix_lm_mask(valid_BS, decoder_causal_attention)
    return self.decoder(embedded_BSD, mask, deterministic=not enable_dropout,
                        layer_inputs_fn=layer_inputs_fn, return_hidden=return_hidden,
                        positions_BS=token_positions(valid_BS))

  def __call__(self,
               decoder_input_tokens: jax.Array,
               decoder_target_tokens: Optional[jax.Array] = None,
               decoder_causal_attention: Optional[jax.Array] = None,
               enable_dropout: bool = False,
               return_hidden: bool = False,
               decoder_attention_mask: Optional[jax.Array] = None) -> jax.Array:
    """T5X decoder-only signature: tokens [batch, S] -> logits [batch, S, vocab].

    Real positions: `input_validity`. With `return_hidden`: the final hidden states
    [batch, S, embed] (after the final layer norm and dropout), which `project_hidden` maps to
    the same logits.
    """
    valid_BS = self.input_validity(decoder_input_tokens, decoder_target_tokens,
                                   decoder_attention_mask)
    return self.decode_embedded(self.embed(decoder_input_tokens), valid_BS,
                                decoder_causal_attention, enable_dropout,
                                return_hidden=return_hidden)

  def project_hidden(self, hidden_BSD: jax.Array) -> jax.Array:
    """Final hidden states [.., embed] -> logits [.., vocab] float32 (output projection)."""
    return self.decoder.project(hidden_BSD)

  def init_decode_cache(self, batch: int, max_decode_length: int) -> DecoderCache:
    """Empty decoding state for `max_decode_length` positions (prompt + generated)."""
    return self.decoder.init_cache(batch, max_decode_length)

  def prefill(self, tokens_BT: jax.Array, cache: DecoderCache,
              valid_BT: Optional[jax.Array] = None) -> DecoderCache:
    """Writes left-aligned tokens [batch, T] at cache positions 0..T-1 (only the real ones:
    `valid_BT`, by default `prefill_validity`)."""
    return self.decode_step(tokens_BT, cache, 0, self.prefill_validity(tokens_BT, valid_BT))[1]

  def decode_step(self, tokens_BQ: jax.Array, cache: DecoderCache, index: jax.Array | int,
                  valid_BQ: Optional[jax.Array] = None) -> tuple[jax.Array, DecoderCache]:
    """Feeds tokens at positions index.. (prefill or one step) -> (logits [B, Q, V], cache)."""
    return self.decoder.decode_step(self.embed(tokens_BQ), cache, index, valid_BQ)
