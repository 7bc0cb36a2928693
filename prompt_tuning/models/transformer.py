"""Encoder and decoder stacks of the T5 layer family (pre-norm residual blocks, RMS norm).

Names match T5X/Flaxformer: `layers_{i}`, `attention` / `self_attention` /
`encoder_decoder_attention`, `pre_*_layer_norm`, `mlp`, `relpos_bias`, `encoder_norm`,
`decoder_norm`, `logits_dense`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from prompt_tuning.models.attention import (KVCache, KVPrefix, MultiHeadAttention, causal_mask,
                                            mask_to_bias)
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.layers import Dense, Embed, MlpBlock, RMSNorm
from prompt_tuning.models.relpos import RelativePositionBias


def _attention(config: T5Config) -> MultiHeadAttention:
  return MultiHeadAttention(num_heads=config.num_heads, head_dim=config.head_dim,
                            out_features=config.emb_dim, dropout_rate=config.dropout_rate,
                            dtype=config.activation_dtype)


def _norm(config: T5Config) -> RMSNorm:
  return RMSNorm(epsilon=config.layer_norm_epsilon, dtype=config.activation_dtype)


def _mlp(config: T5Config) -> MlpBlock:
  return MlpBlock(intermediate_dim=config.mlp_dim, activations=config.mlp_activations,
                  dropout_rate=config.dropout_rate, dtype=config.activation_dtype)


def _dropout(config: T5Config) -> nn.Dropout:
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))


def _relpos(config: T5Config, bidirectional: bool) -> RelativePositionBias:
  return RelativePositionBias(num_buckets=config.relpos_num_buckets,
                              max_distance=config.relpos_max_distance,
                              num_heads=config.num_heads, bidirectional=bidirectional,
                              dtype=config.activation_dtype)


class EncoderLayer(nn.Module):
  """Self-attention + MLP block of the encoder."""

  config: T5Config

  def setup(self):
    self.pre_attention_layer_norm = _norm(self.config)
    self.attention = _attention(self.config)
    self.pre_mlp_layer_norm = _norm(self.config)
    self.mlp = _mlp(self.config)
    self.dropout = _dropout(self.config)

  def __call__(self, x_BTD: jax.Array, bias_BNTT: jax.Array, deterministic: bool,
               prefix: Optional[KVPrefix] = None) -> jax.Array:
    h_BTD = self.pre_attention_layer_norm(x_BTD)
    h_BTD, _ = self.attention(h_BTD, h_BTD, bias_BNTT, deterministic=deterministic, prefix=prefix)
    x_BTD = x_BTD + self.dropout(h_BTD, deterministic=deterministic)
    h_BTD = self.mlp(self.pre_mlp_layer_norm(x_BTD), deterministic=deterministic)
    return x_BTD + self.dropout(h_BTD, deterministic=deterministic)


class DecoderLayer(nn.Module):
  """Causal self-attention (+ cross-attention to the encoder when present) + MLP block."""

  config: T5Config
  cross_attention: bool = True

  def setup(self):
    self.pre_self_attention_layer_norm = _norm(self.config)
    self.self_attention = _attention(self.config)
    if self.cross_attention:
      self.pre_cross_attention_layer_norm = _norm(self.config)
      self.encoder_decoder_attention = _attention(self.config)
    self.pre_mlp_layer_norm = _norm(self.config)
    self.mlp = _mlp(self.config)
    self.dropout = _dropout(self.config)

  def cross_kv(self, encoded_BTD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-attention keys/values [batch, T, heads, head_dim], computed once per generation."""
    return self.encoder_decoder_attention.project_kv(encoded_BTD)

  def __call__(self,
               y_BSD: jax.Array,
               self_bias_BNSS: jax.Array,
               encoded_BTD: Optional[jax.Array],
               cross_bias_BNST: Optional[jax.Array],
               deterministic: bool,
               *,
               cache: Optional[KVCache] = None,
               cache_index: jax.Array | int = 0,
               cross_kv: Optional[tuple[jax.Array, jax.Array]] = None,
               self_prefix: Optional[KVPrefix] = None,
               cross_prefix: Optional[KVPrefix] = None) -> tuple[jax.Array, Optional[KVCache]]:
    h_BSD = self.pre_self_attention_layer_norm(y_BSD)
    h_BSD, cache = self.self_attention(h_BSD, h_BSD, self_bias_BNSS, deterministic=deterministic,
                                       cache=cache, cache_index=cache_index, prefix=self_prefix)
    y_BSD = y_BSD + self.dropout(h_BSD, deterministic=deterministic)
    if self.cross_attention:
      h_BSD = self.pre_cross_attention_layer_norm(y_BSD)
      h_BSD, _ = self.encoder_decoder_attention(h_BSD, encoded_BTD, cross_bias_BNST,
                                                deterministic=deterministic,
                                                precomputed_kv=cross_kv, prefix=cross_prefix)
      y_BSD = y_BSD + self.dropout(h_BSD, deterministic=deterministic)
    h_BSD = self.mlp(self.pre_mlp_layer_norm(y_BSD), deterministic=deterministic)
    return y_BSD + self.dropout(h_BSD, deterministic=deterministic), cache


class Encoder(nn.Module):
  """Bidirectional encoder stack over already-embedded inputs."""

  config: T5Config

  def setup(self):
    self.relpos_bias = _relpos(self.config, bidirectional=True)
    self.layers = [EncoderLayer(self.config) for _ in range(self.config.num_encoder_layers)]
    self.encoder_norm = _norm(self.config)
    self.dropout = _dropout(self.config)

  def __call__(self, embedded_BTD: jax.Array, mask_BT: jax.Array, deterministic: bool = True,
               prefixes: Optional[Sequence[Optional[KVPrefix]]] = None,
               prefix_bias_BNTP: Optional[jax.Array] = None) -> jax.Array:
    """Encodes [batch, T, embed] with key/query validity `mask_BT` -> [batch, T, embed].

    `prefixes` (one per layer) add prefix keys/values; `prefix_bias_BNTP` is their bias.
    """
    length = embedded_BTD.shape[1]
    valid_BT = mask_BT > 0
    bias_BNTT = self.relpos_bias(length, length) + mask_to_bias(
        valid_BT[:, None, :, None] & valid_BT[:, None, None, :], self.config.activation_dtype)
    if prefix_bias_BNTP is not None:
      bias_BNTT = jnp.concatenate(
          [jnp.broadcast_to(prefix_bias_BNTP, bias_BNTT.shape[:3] + prefix_bias_BNTP.shape[3:]),
           bias_BNTT], axis=-1)
    x_BTD = self.dropout(embedded_BTD, deterministic=deterministic)
    for index, layer in enumerate(self.layers):
      prefix = prefixes[index] if prefixes is not None else None
      x_BTD = layer(x_BTD, bias_BNTT, deterministic, prefix=prefix)
    return self.dropout(self.encoder_norm(x_BTD), deterministic=deterministic)


@flax.struct.dataclass
class DecoderCache:
  """Decoding state of a decoder stack; every leaf is batch-major (beam search gathers rows).

  self_attention: per-layer KVCache of length max_length.
  cross_kv: per-layer precomputed encoder keys/values, or None (decoder-only).
  key_valid_BS: int32 [batch, max_length], 1 where a cached position holds a real token.
  encoder_valid_BT: int32 [batch, encoder length] or None.
  """

  self_attention: tuple[KVCache, ...]
  cross_kv: Optional[tuple[tuple[jax.Array, jax.Array], ...]]
  key_valid_BS: jax.Array
  encoder_valid_BT: Optional[jax.Array]


class Decoder(nn.Module):
  """Causal decoder stack with output logits; cross-attends to an encoder when given one.

  With `shared_embedding` (encoder-decoder) the token table lives at the model's top level;
  without it (decoder-only) the decoder owns `token_embedder`.
  """

  config: T5Config
  shared_embedding: Optional[Embed] = None
  cross_attention: bool = True

  def setup(self):
    config = self.config
    if self.shared_embedding is None:
      self.token_embedder = Embed(config.vocab_size, config.emb_dim, config.activation_dtype)
    self.relpos_bias = _relpos(config, bidirectional=False)
    self.layers = [DecoderLayer(config, cross_attention=self.cross_attention)
                   for _ in range(config.num_decoder_layers)]
    self.decoder_norm = _norm(config)
    self.dropout = _dropout(config)
    if not config.logits_via_embedding:
      self.logits_dense = Dense(config.vocab_size, ("embed", "vocab"), config.activation_dtype)

  @property
  def embedder(self) -> Embed:
    return self.shared_embedding if self.shared_embedding is not None else self.token_embedder

  def embed(self, tokens_BS: jax.Array) -> jax.Array:
    """Embeds decoder tokens [batch, S] -> [batch, S, embed]."""
    return self.embedder(tokens_BS)

  def _logits(self, y_BSD: jax.Array, deterministic: bool) -> jax.Array:
    y_BSD = self.dropout(self.decoder_norm(y_BSD), deterministic=deterministic)
    if self.config.logits_via_embedding:
      return self.embedder.attend(y_BSD) / jnp.sqrt(jnp.float32(y_BSD.shape[-1]))
    return self.logits_dense(y_BSD).astype(jnp.float32)

  def __call__(self,
               embedded_BSD: jax.Array,
               self_mask_B1SS: jax.Array,
               encoded_BTD: Optional[jax.Array] = None,
               cross_mask_B1ST: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    """Teacher-forced pass over embedded inputs -> logits [batch, S, vocab] float32."""
    dtype = self.config.activation_dtype
    length = embedded_BSD.shape[1]
    self_bias = self.relpos_bias(length, length) + mask_to_bias(self_mask_B1SS, dtype)
    cross_bias = None if cross_mask_B1ST is None else mask_to_bias(cross_mask_B1ST, dtype)
    y_BSD = self.dropout(embedded_BSD, deterministic=deterministic)
    for layer in self.layers:
      y_BSD, _ = layer(y_BSD, self_bias, encoded_BTD, cross_bias, deterministic)
    return self._logits(y_BSD, deterministic)

  def init_cache(self, batch: int, max_length: int, encoded_BTD: Optional[jax.Array] = None,
                 encoder_valid_BT: Optional[jax.Array] = None) -> DecoderCache:
    """Empty self-attention caches; cross-attention keys/values computed once from `encoded`."""
    config = self.config
    self_attention = tuple(
        KVCache.zeros(batch, max_length, config.num_heads, config.head_dim,
                      config.activation_dtype) for _ in self.layers)
    cross_kv = None
    if self.cross_attention:
      cross_kv = tuple(layer.cross_kv(encoded_BTD) for layer in self.layers)
      encoder_valid_BT = encoder_valid_BT.astype(jnp.int32)
    return DecoderCache(self_attention, cross_kv, jnp.zeros((batch, max_length), jnp.int32),
                        encoder_valid_BT)

  def decode_step(self, embedded_BQD: jax.Array, cache: DecoderCache, index: jax.Array | int,
                  valid_BQ: Optional[jax.Array] = None) -> tuple[jax.Array, DecoderCache]:
    """Runs Q new positions starting at cache position `index` -> (logits [batch, Q, vocab], cache).

    One mechanism serves prefill (Q = prompt length, index 0) and generation (Q = 1).
    `valid_BQ` marks real tokens among the new positions (default: all real).
    """
    dtype = self.config.activation_dtype
    batch, num_new = embedded_BQD.shape[:2]
    max_length = cache.key_valid_BS.shape[1]
    if valid_BQ is None:
      valid_BQ = jnp.ones((batch, num_new), jnp.int32)
    key_valid_BS = jax.lax.dynamic_update_slice(cache.key_valid_BS, valid_BQ.astype(jnp.int32),
                                                (0, index))
    query_positions_Q = index + jnp.arange(num_new)
    mask_B1QS = causal_mask(query_positions_Q, jnp.arange(max_length)) & (
        key_valid_BS[:, None, None, :] > 0)
    self_bias = self.relpos_bias(num_new, max_length, index) + mask_to_bias(mask_B1QS, dtype)
    cross_bias = None
    if cache.cross_kv is not None:
      cross_bias = mask_to_bias(cache.encoder_valid_BT[:, None, None, :], dtype)
    y_BQD = embedded_BQD
    new_self = []
    for index_layer, layer in enumerate(self.layers):
      cross_kv = cache.cross_kv[index_layer] if cache.cross_kv is not None else None
      y_BQD, layer_cache = layer(y_BQD, self_bias, None, cross_bias, True,
                                 cache=cache.self_attention[index_layer], cache_index=index,
                                 cross_kv=cross_kv)
      new_self.append(layer_cache)
    cache = cache.replace(self_attention=tuple(new_self), key_valid_BS=key_valid_BS)
    return self._logits(y_BQD, True), cache
