"""Encoder-decoders (T5 1.0, T5 1.1, mT5; BART, mBART) with T5X's call signature and decoding
seams."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models.attention import attention_mask, causal_mask
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.layers import Embed
from prompt_tuning.models.transformer import (Decoder, DecoderCache, Encoder, real_tokens,
                                              scaled_embed)


def decoder_self_mask(decoder_target_tokens_BS: Optional[jax.Array], length: int,
                      config: Optional[T5Config] = None) -> jax.Array:
  """T5X decoder mask [batch|1, 1, S, S]: causal, and padding from the targets when given
  (token 0 for T5, else `config`'s pad id)."""
  positions = jnp.arange(length)
  mask = causal_mask(positions, positions)
  if decoder_target_tokens_BS is not None:
    valid_BS = (decoder_target_tokens_BS > 0 if config is None else
                real_tokens(config, decoder_target_tokens_BS))
    mask = mask & attention_mask(valid_BS, valid_BS)
  return mask


class EncoderDecoder(nn.Module):
  """Encoder-decoder (T5, BART, mBART). Parameters: `token_embedder`, `encoder/...`,
  `decoder/...`.

  Seams for prompt methods: `embed`, `encode_embedded`, `decode_embedded`, and cached decoding
  through `init_decode_cache` + `decode_step`. Padding: token id 0 for T5, the config's pad id
  for other families (`token_validity`).
  """

  config: T5Config

  def setup(self):
    config = self.config
    self.token_embedder = Embed(config.vocab_size, config.emb_dim, config.activation_dtype)
    self.encoder = self._make_encoder()
    self.decoder = self._make_decoder()

  def _make_encoder(self) -> nn.Module:
    """The encoder stack (a hook: prompt models return an encoder that owns the prompt)."""
    return Encoder(self.config)

  def _make_decoder(self) -> nn.Module:
    """The decoder stack, sharing `token_embedder` (a hook: prefix tuning adds its prefixes)."""
    return Decoder(self.config, shared_embedding=self.token_embedder)

  def embed(self, tokens_BT: jax.Array) -> jax.Array:
    """Token ids [batch, T] -> embeddings [batch, T, embed] (times `embedding_scale`)."""
    return scaled_embed(self.config, self.token_embedder, tokens_BT)

  def token_validity(self, tokens_BT: jax.Array) -> jax.Array:
    """bool [batch, T]: the real (non-padding) token positions."""
    return real_tokens(self.config, tokens_BT)

  def encode_embedded(self, embedded_BTD: jax.Array, mask_BT: jax.Array,
                      enable_dropout: bool = False, **encoder_kwargs) -> jax.Array:
    """Encodes embeddings [batch, T, embed] whose valid positions are `mask_BT` (1 = real)."""
    return self.encoder(embedded_BTD, mask_BT, deterministic=not enable_dropout, **encoder_kwargs)

  def encode(self, encoder_input_tokens: jax.Array, enable_dropout: bool = False) -> jax.Array:
    """Token ids [batch, T] (padding: `token_validity`) -> encoded [batch, T, embed]."""
    return self.encode_embedded(self.embed(encoder_input_tokens),
                                self.token_validity(encoder_input_tokens), enable_dropout)

  def encode_with_mask(self, encoder_input_tokens: jax.Array,
                       enable_dropout: bool = False) -> tuple[jax.Array, jax.Array]:
    """Token ids [batch, T] -> (encoded [batch, S, embed], mask [batch, S] the decoder attends to).

    S = T here; models that add positions (a prompt) return their longer encoding and mask.
    """
    return (self.encode(encoder_input_tokens, enable_dropout),
            self.token_validity(encoder_input_tokens))

  def decode_embedded(self, encoded_BTD: jax.Array, encoder_mask_BT: jax.Array,
                      decoder_embedded_BSD: jax.Array,
                      decoder_target_tokens: Optional[jax.Array] = None,
                      enable_dropout: bool = False, return_hidden: bool = False) -> jax.Array:
    """Teacher-forced decoder pass over embedded decoder inputs -> logits [batch, S, vocab].

    With `return_hidden`: the final hidden states [batch, S, embed] instead (see `project_hidden`).
    """
    length = decoder_embedded_BSD.shape[1]
    self_mask = decoder_self_mask(decoder_target_tokens, length, self.config)
    encoder_valid_BT = encoder_mask_BT > 0
    if decoder_target_tokens is None:
      query_valid_BS = jnp.ones(decoder_embedded_BSD.shape[:2], bool)
    else:
      query_valid_BS = self.token_validity(decoder_target_tokens)
    cross_mask = attention_mask(query_valid_BS, encoder_valid_BT)
    return self.decoder(decoder_embedded_BSD, self_mask, encoded_BTD, cross_mask,
                        deterministic=not enable_dropout, return_hidden=return_hidden)

  def decode(self, encoded_BTD: jax.Array, encoder_mask_BT: jax.Array,
             decoder_input_tokens: jax.Array, decoder_target_tokens: Optional[jax.Array] = None,
             enable_dropout: bool = False, return_hidden: bool = False) -> jax.Array:
    """Teacher-forced decoder pass over token ids [batch, S] -> logits [batch, S, vocab].

    With `return_hidden`: the final hidden states [batch, S, embed] instead.
    """
    return self.decode_embedded(encoded_BTD, encoder_mask_BT, self.embed(decoder_input_tokens),
                                decoder_target_tokens, enable_dropout, return_hidden)

  def __call__(self,
               encoder_input_tokens: jax.Array,
               decoder_input_tokens: jax.Array,
               decoder_target_tokens: Optional[jax.Array] = None,
               enable_dropout: bool = False,
               return_hidden: bool = False) -> jax.Array:
    """T5X signature: tokens [batch, T], [batch, S], targets [batch, S] | None -> logits [B, S, V].

    With `return_hidden`: the decoder's final hidden states [B, S, embed] (after the final layer
    norm and dropout), which `project_hidden` maps to the same logits.
    """
    encoded_BSD, encoder_mask_BS = self.encode_with_mask(encoder_input_tokens, enable_dropout)
    return self.decode(encoded_BSD, encoder_mask_BS, decoder_input_tokens,
                       decoder_target_tokens, enable_dropout, return_hidden)

  def project_hidden(self, hidden_BSD: jax.Array) -> jax.Array:
    """Final decoder hidden states [.., embed] -> logits [.., vocab] float32 (output projection)."""
    return self.decoder.project(hidden_BSD)

  def init_decode_cache(self, encoded_BTD: jax.Array, encoder_mask_BT: jax.Array,
                        max_decode_length: int) -> DecoderCache:
    """Decoding state for `max_decode_length` steps; cross keys/values computed here once."""
    return self.decoder.init_cache(encoded_BTD.shape[0], max_decode_length, encoded_BTD,
                                   encoder_mask_BT > 0)

  def decode_step(self, tokens_BQ: jax.Array, cache: DecoderCache,
                  index: jax.Array | int) -> tuple[jax.Array, DecoderCache]:
    """Feeds decoder tokens at positions index.. -> (logits [batch, Q, vocab], new cache)."""
    return self.decoder.decode_step(self.embed(tokens_BQ), cache, index)
