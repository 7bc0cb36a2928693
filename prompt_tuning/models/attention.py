"""Multi-head dot-product attention with an optional key/value cache and key/value prefix.

T5 attention has no bias terms and no 1/sqrt(head_dim) logit scaling (it is folded into the
query initialisation). Kernels are 2-D as in Flaxformer: query/key/value [embed, heads*head_dim]
(axes "embed", "joined_kv"), out [heads*head_dim, embed] (axes "joined_kv", "embed").
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from prompt_tuning.models.layers import Dense, default_kernel_init

# Additive bias for masked positions: large but finite, so fully masked rows stay NaN-free.
NEG_INF = -1e10


@flax.struct.dataclass
class KVCache:
  """Keys and values of one attention layer for decoding; every leaf is batch-major.

  key_BSNH / value_BSNH: [batch, max_length, heads, head_dim].
  """

  key_BSNH: jax.Array
  value_BSNH: jax.Array

  @classmethod
  def zeros(cls, batch: int, max_length: int, num_heads: int, head_dim: int,
            dtype: jnp.dtype) -> "KVCache":
    shape = (batch, max_length, num_heads, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


@flax.struct.dataclass
class KVPrefix:
  """Learned keys/values prepended to every example's keys/values (prefix tuning).

  key_BPNH / value_BPNH: [batch, prefix_length, heads, head_dim].
  """

  key_BPNH: jax.Array
  value_BPNH: jax.Array


def mask_to_bias(mask: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """Converts a 0/1 (or bool) attention mask into an additive bias (0 or NEG_INF)."""
  return jnp.where(mask > 0, 0.0, NEG_INF).astype(dtype)


def attention_mask(query_valid_BT: jax.Array, key_valid_BS: jax.Array) -> jax.Array:
  """Mask [batch, 1, T, S]: query t may attend to key s iff both are valid."""
  return (query_valid_BT[:, None, :, None] > 0) & (key_valid_BS[:, None, None, :] > 0)


def causal_mask(query_positions_T: jax.Array, key_positions_S: jax.Array) -> jax.Array:
  """Mask [1, 1, T, S]: key position <= query position."""
  return (key_positions_S[None, :] <= query_positions_T[:, None])[None, None]


class MultiHeadAttention(nn.Module):
  """Multi-head attention over `inputs_kv` (self-attention when it is `inputs_q`)."""

  num_heads: int
  head_dim: int
  out_features: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    joined_kv = self.num_heads * self.head_dim
    depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)

    def query_init(*args):
      return default_kernel_init(*args) / depth_scaling

    self.query = Dense(joined_kv, ("embed", "joined_kv"), self.dtype, query_init)
    self.key = Dense(joined_kv, ("embed", "joined_kv"), self.dtype)
    self.value = Dense(joined_kv, ("embed", "joined_kv"), self.dtype)
    self.out = Dense(self.out_features, ("joined_kv", "embed"), self.dtype)
    # Dropout on attention weights, broadcast over the query axis (T5X).
    self.weights_dropout = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))

  def _split_heads(self, x_BTJ: jax.Array) -> jax.Array:
    return x_BTJ.reshape(x_BTJ.shape[:-1] + (self.num_heads, self.head_dim))

  def project_kv(self, inputs_kv_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values [batch, S, heads, head_dim] of the given inputs."""
    return (self._split_heads(self.key(inputs_kv_BSD)),
            self._split_heads(self.value(inputs_kv_BSD)))

  def __call__(self,
               inputs_q_BTD: jax.Array,
               inputs_kv_BSD: Optional[jax.Array],
               bias_BNTS: Optional[jax.Array],
               *,
               deterministic: bool = True,
               cache: Optional[KVCache] = None,
               cache_index: jax.Array | int = 0,
               precomputed_kv: Optional[tuple[jax.Array, jax.Array]] = None,
               prefix: Optional[KVPrefix] = None) -> tuple[jax.Array, Optional[KVCache]]:
    """Attends queries to keys/values; returns ([batch, T, embed], updated cache or None).

    Args:
      inputs_q_BTD: queries' inputs [batch, T, embed].
      inputs_kv_BSD: keys'/values' inputs [batch, S, embed]; ignored with `precomputed_kv`.
      bias_BNTS: additive bias broadcastable to [batch, heads, T, S_total] (masks + position
        bias), where S_total counts prefix positions first, then cache or input positions.
      cache: when given, the new keys/values are written at `cache_index` and attention runs
        over the whole cache (its length is the key axis).
      precomputed_kv: keys/values [batch, S, heads, head_dim] computed once (cross-attention
        during decoding).
      prefix: prefix keys/values attended before all others.
    """
    query_BTNH = self._split_heads(self.query(inputs_q_BTD))
    if precomputed_kv is not None:
      key_BSNH, value_BSNH = precomputed_kv
    else:
      key_BSNH, value_BSNH = self.project_kv(inputs_kv_BSD)
    if cache is not None:
      start = (0, cache_index, 0, 0)
      cache = KVCache(
          jax.lax.dynamic_update_slice(cache.key_BSNH, key_BSNH.astype(cache.key_BSNH.dtype),
                                       start),
          jax.lax.dynamic_update_slice(cache.value_BSNH,
                                       value_BSNH.astype(cache.value_BSNH.dtype), start))
      key_BSNH, value_BSNH = cache.key_BSNH, cache.value_BSNH
    if prefix is not None:
      key_BSNH = jnp.concatenate([prefix.key_BPNH.astype(key_BSNH.dtype), key_BSNH], axis=1)
      value_BSNH = jnp.concatenate([prefix.value_BPNH.astype(value_BSNH.dtype), value_BSNH],
                                   axis=1)

    logits_BNTS = jnp.einsum("btnh,bsnh->bnts", query_BTNH, key_BSNH.astype(self.dtype),
                             preferred_element_type=jnp.float32)
    if bias_BNTS is not None:
      logits_BNTS = logits_BNTS + bias_BNTS.astype(jnp.float32)
    weights_BNTS = jax.nn.softmax(logits_BNTS, axis=-1).astype(self.dtype)
    weights_BNTS = self.weights_dropout(weights_BNTS, deterministic=deterministic)
    context_BTNH = jnp.einsum("bnts,bsnh->btnh", weights_BNTS, value_BSNH.astype(self.dtype))
    context_BTJ = context_BTNH.reshape(context_BTNH.shape[:2] + (-1,))
    return self.out(context_BTJ), cache
