"""Multi-head dot-product attention with an optional key/value cache and key/value prefix.

One module serves every family: T5 attention has no bias terms and no 1/sqrt(head_dim) logit
scaling (it is folded into the query initialisation); Llama-family attention scales the logits,
rotates queries and keys (RoPE, `models.rope`) and may group query heads over fewer key/value
heads (GQA: `num_kv_heads`); Qwen2 adds query/key/value biases. Kernels are 2-D as in
Flaxformer: query [embed, heads*head_dim], key/value [embed, kv_heads*head_dim] (axes "embed",
"joined_kv"), out [heads*head_dim, embed] (axes "joined_kv", "embed").

Keys, values and queries are attended heads-major, [batch, heads, S, head_dim]: a layout XLA's
batched matmuls read as it is. Projections are moved to it once (one transpose each), which on
CPU makes the score and context matmuls about twice as fast as reading the [batch, S, heads,
head_dim] projections in place (T5-small attention layer, batch 8 x 148 tokens: 26 -> 15 ms
forward). Decoding keeps its caches (`KVCache`, precomputed cross-attention keys/values) in the
same layout, so a decoding step never transposes the whole cache.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from prompt_tuning.models import rope
from prompt_tuning.models.layers import Dense, RMSNorm, default_kernel_init

# Additive bias for masked positions: large but finite, so fully masked rows stay NaN-free.
NEG_INF = -1e10


@flax.struct.dataclass
class KVCache:
  """Keys and values of one attention layer for decoding; every leaf is batch-major.

  key_BNSH / value_BNSH: [batch, kv_heads, max_length, head_dim] (heads-major); keys are
  stored rotated to their positions when the model uses RoPE.
  """

  key_BNSH: jax.Array
  value_BNSH: jax.Array

  @classmethod
  def zeros(cls, batch: int, max_length: int, num_heads: int, head_dim: int,
            dtype: jnp.dtype) -> "KVCache":
    shape = (batch, num_heads, max_length, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def heads_major(x_BSNH: jax.Array) -> jax.Array:
  """[batch, S, heads, head_dim] -> [batch, heads, S, head_dim] (the attention layout)."""
  return jnp.swapaxes(x_BSNH, 1, 2)


def sequence_major(x_BNSH: jax.Array) -> jax.Array:
  """[batch, heads, S, head_dim] -> [batch, S, heads, head_dim] (inverse of `heads_major`)."""
  return jnp.swapaxes(x_BNSH, 1, 2)


@flax.struct.dataclass
class KVPrefix:
  """Learned keys/values prepended to every example's keys/values (prefix tuning).

  key_BPNH / value_BPNH: [batch, prefix_length, kv_heads, head_dim]; never rotated (RoPE
  models attend to them as stored, as Hugging Face does with a `past_key_values` prefix).
  """

  key_BPNH: jax.Array
  value_BPNH: jax.Array


@jax.custom_vjp
def softmax_last(logits: jax.Array) -> jax.Array:
  """`jax.nn.softmax` over the last axis whose backward pass keeps only its output.

  Same values and gradient (g -> y * (g - sum(g * y))); differentiating `jax.nn.softmax` lets
  XLA keep the exponentials and a broadcast denominator as well, two more [batch, heads, T, S]
  arrays per attention layer for the backward pass.
  """
  return jax.nn.softmax(logits, axis=-1)


def _softmax_last_fwd(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  weights = jax.nn.softmax(logits, axis=-1)
  return weights, weights


def _softmax_last_bwd(weights: jax.Array, grad: jax.Array) -> tuple[jax.Array]:
  return (weights * (grad - jnp.sum(grad * weights, axis=-1, keepdims=True)),)


softmax_last.defvjp(_softmax_last_fwd, _softmax_last_bwd)


def mask_to_bias(mask: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """Converts a 0/1 (or bool) attention mask into an additive bias (0 or NEG_INF)."""
  return jnp.where(mask > 0, 0.0, NEG_INF).astype(dtype)


def attention_mask(query_valid_BT: jax.Array, key_valid_BS: jax.Array) -> jax.Array:
  """Mask [batch, 1, T, S]: query t may attend to key s iff both are valid."""
  return (query_valid_BT[:, None, :, None] > 0) & (key_valid_BS[:, None, None, :] > 0)


def causal_mask(query_positions_T: jax.Array, key_positions_S: jax.Array) -> jax.Array:
  """Mask [1, 1, T, S]: key position <= query position."""
  return (key_positions_S[None, :] <= query_positions_T[:, None])[None, None]


def _write(cached_BNSH: jax.Array, new_BNTH: jax.Array, index: jax.Array | int,
           mask_BT: Optional[jax.Array]) -> jax.Array:
  """`cached` with `new` written at positions index..index+T-1 (only where `mask_BT`, if given)."""
  start = (0, 0, index, 0)
  new_BNTH = new_BNTH.astype(cached_BNSH.dtype)
  if mask_BT is not None:
    old_BNTH = jax.lax.dynamic_slice(cached_BNSH, start, new_BNTH.shape)
    new_BNTH = jnp.where((mask_BT > 0)[:, None, :, None], new_BNTH, old_BNTH)
  return jax.lax.dynamic_update_slice(cached_BNSH, new_BNTH, start)


class MultiHeadAttention(nn.Module):
  """Multi-head attention over `inputs_kv` (self-attention when it is `inputs_q`).

  `num_kv_heads` < `num_heads` shares each key/value head among num_heads / num_kv_heads query
  heads; `use_bias` adds query/key/value biases, `out_bias` an output bias; `scale_logits` multiplies the logits by
  head_dim**-0.5 (query_pre_attn_scalar**-0.5 when that is given); `rope_theta` (with
  `rope_scaling` pairs) rotates queries and the new keys to the token positions passed to
  `__call__`; `qk_norm` RMS-normalizes each query and key head before the rotation (params
  `query_norm/scale`, `key_norm/scale` [head_dim], multiplier `norm_scale_offset` + scale).
  """

  num_heads: int
  head_dim: int
  out_features: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  num_kv_heads: Optional[int] = None
  use_bias: bool = False
  out_bias: bool = False
  scale_logits: bool = False
  rope_theta: Optional[float] = None
  rope_scaling: tuple = ()
  query_pre_attn_scalar: Optional[float] = None
  qk_norm: bool = False
  norm_epsilon: float = 1e-6
  norm_scale_offset: float = 0.0

  @property
  def kv_heads(self) -> int:
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  def setup(self):
    depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)

    def query_init(*args):
      return default_kernel_init(*args) / depth_scaling

    self.query = Dense(self.num_heads * self.head_dim, ("embed", "joined_kv"), self.dtype,
                       query_init, use_bias=self.use_bias)
    self.key = Dense(self.kv_heads * self.head_dim, ("embed", "joined_kv"), self.dtype,
                     use_bias=self.use_bias)
    self.value = Dense(self.kv_heads * self.head_dim, ("embed", "joined_kv"), self.dtype,
                       use_bias=self.use_bias)
    self.out = Dense(self.out_features, ("joined_kv", "embed"), self.dtype,
                     use_bias=self.out_bias)
    # Dropout on attention weights, broadcast over the query axis (T5X).
    self.weights_dropout = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))
    if self.qk_norm:
      norm = dict(epsilon=self.norm_epsilon, dtype=self.dtype, scale_offset=self.norm_scale_offset,
                  axis_name="kv")
      self.query_norm = RMSNorm(**norm)
      self.key_norm = RMSNorm(**norm)

  @property
  def logit_scale(self) -> float:
    """What `scale_logits` multiplies the logits by."""
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def project_query(self, inputs_q_BTD: jax.Array) -> jax.Array:
    """Queries [batch, T, heads, head_dim] of the given inputs (normalized, not rotated)."""
    query_BTNH = self._split_heads(self.query(inputs_q_BTD))
    return self.query_norm(query_BTNH) if self.qk_norm else query_BTNH

  def _split_heads(self, x_BTJ: jax.Array) -> jax.Array:
    return x_BTJ.reshape(x_BTJ.shape[:-1] + (-1, self.head_dim))

  def _rotate(self, x_BNTH: jax.Array, positions_BT: Optional[jax.Array]) -> jax.Array:
    """Queries / new keys rotated to `positions_BT` (RoPE models; others unchanged)."""
    if self.rope_theta is None:
      return x_BNTH
    if positions_BT is None:
      raise ValueError("a RoPE attention layer needs the token positions [batch, T].")
    inv_freq = rope.inverse_frequencies(self.head_dim, self.rope_theta, dict(self.rope_scaling))
    return rope.rotate(x_BNTH, positions_BT, inv_freq)

  def _drop_values(self, weights_shape: tuple[int, ...], value_BNSH: jax.Array,
                   prefix_value_BPNH: Optional[jax.Array]
                   ) -> tuple[jax.Array, Optional[jax.Array]]:
    """Dropout of the attention weights, applied to the values it multiplies.

    The weights' dropout mask is shared by all queries (broadcast over T, as T5X), so dropping
    weight column s equals dropping value row s: context = (weights * keep_s) @ values =
    weights @ (keep_s * values). Scaling the values keeps the same random mask (the same
    `weights_dropout` draw, of shape [batch, heads, 1, S_total]) while the training step neither
    computes nor stores a second [batch, heads, T, S] array. (Needs one key/value head per query
    head; grouped heads drop the weights themselves.)
    """
    batch, heads, _, total = weights_shape
    keep_BN1S = self.weights_dropout(jnp.ones((batch, heads, 1, total), jnp.float32),
                                     deterministic=False)
    keep_BNS1 = jnp.swapaxes(keep_BN1S, 2, 3)

    def scale(x: jax.Array, keep: jax.Array) -> jax.Array:
      return (x.astype(jnp.float32) * keep).astype(x.dtype)

    num_prefix = 0 if prefix_value_BPNH is None else prefix_value_BPNH.shape[1]
    if prefix_value_BPNH is not None:
      prefix_value_BPNH = scale(prefix_value_BPNH, sequence_major(keep_BNS1[:, :, :num_prefix]))
    return scale(value_BNSH, keep_BNS1[:, :, num_prefix:]), prefix_value_BPNH

  def project_kv(self, inputs_kv_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values [batch, S, kv_heads, head_dim] of the given inputs (keys normalized when
    `qk_norm`, not rotated)."""
    key_BSKH = self._split_heads(self.key(inputs_kv_BSD))
    if self.qk_norm:
      key_BSKH = self.key_norm(key_BSKH)
    return key_BSKH, self._split_heads(self.value(inputs_kv_BSD))

  def _grouped(self, x_BNTX: jax.Array) -> jax.Array:
    """[batch, heads, T, X] -> [batch, kv_heads, heads / kv_heads, T, X] (query groups)."""
    batch, _, length, last = x_BNTX.shape
    return x_BNTX.reshape(batch, self.kv_heads, -1, length, last)

  def _ungrouped(self, x_BKGTX: jax.Array) -> jax.Array:
    batch, _, _, length, last = x_BKGTX.shape
    return x_BKGTX.reshape(batch, self.num_heads, length, last)

  def __call__(self,
               inputs_q_BTD: jax.Array,
               inputs_kv_BSD: Optional[jax.Array],
               bias_BNTS: Optional[jax.Array],
               *,
               deterministic: bool = True,
               cache: Optional[KVCache] = None,
               cache_index: jax.Array | int = 0,
               precomputed_kv: Optional[tuple[jax.Array, jax.Array]] = None,
               prefix: Optional[KVPrefix] = None,
               cache_write_mask_BT: Optional[jax.Array] = None,
               positions_BT: Optional[jax.Array] = None
               ) -> tuple[jax.Array, Optional[KVCache]]:
    """Attends queries to keys/values; returns ([batch, T, embed], updated cache or None).

    Args:
      inputs_q_BTD: queries' inputs [batch, T, embed].
      inputs_kv_BSD: keys'/values' inputs [batch, S, embed]; ignored with `precomputed_kv`.
      bias_BNTS: additive bias broadcastable to [batch, heads, T, S_total] (masks + position
        bias), where S_total counts prefix positions first, then cache or input positions.
      cache: when given, the new keys/values are written at `cache_index` and attention runs
        over the whole cache (its length is the key axis).
      precomputed_kv: keys/values [batch, kv_heads, S, head_dim] computed once (cross-attention
        during decoding; `heads_major` of `project_kv`).
      prefix: prefix keys/values attended before all others.
      cache_write_mask_BT: [batch, T], with `cache`: only positions where it is true are written;
        the others keep their cached keys/values (a prefill leaves a reused prompt in place).
      positions_BT: int [batch, T], RoPE models: the positions of the queries (and of the new
        keys in self-attention).
    """
    query_BNTH = self._rotate(heads_major(self.project_query(inputs_q_BTD)), positions_BT)
    if precomputed_kv is not None:
      key_BKSH, value_BKSH = precomputed_kv
    else:
      key_BKSH, value_BKSH = map(heads_major, self.project_kv(inputs_kv_BSD))
      key_BKSH = self._rotate(key_BKSH, positions_BT)
      if cache is not None:
        cache = KVCache(_write(cache.key_BNSH, key_BKSH, cache_index, cache_write_mask_BT),
                        _write(cache.value_BNSH, value_BKSH, cache_index, cache_write_mask_BT))
        key_BKSH, value_BKSH = cache.key_BNSH, cache.value_BNSH

    query_BKGTH = self._grouped(query_BNTH)
    logits_BNTS = self._ungrouped(jnp.einsum(
        "bkgth,bksh->bkgts", query_BKGTH, key_BKSH.astype(self.dtype),
        preferred_element_type=jnp.float32))
    num_prefix = 0
    if prefix is not None:  # Scored apart, so the (cached) keys are never copied.
      num_prefix = prefix.key_BPNH.shape[1]
      prefix_BNTP = self._ungrouped(jnp.einsum(
          "bkgth,bpkh->bkgtp", query_BKGTH, prefix.key_BPNH.astype(self.dtype),
          preferred_element_type=jnp.float32))
      logits_BNTS = jnp.concatenate([prefix_BNTP, logits_BNTS], axis=-1)
    if self.scale_logits:
      logits_BNTS = logits_BNTS * jnp.float32(self.logit_scale)
    if bias_BNTS is not None:
      logits_BNTS = logits_BNTS + bias_BNTS.astype(jnp.float32)
    weights_BNTS = softmax_last(logits_BNTS).astype(self.dtype)
    value_BKSH = value_BKSH.astype(self.dtype)
    prefix_value_BPKH = None if prefix is None else prefix.value_BPNH.astype(self.dtype)
    if not deterministic and self.dropout_rate > 0:
      if self.kv_heads == self.num_heads:
        value_BKSH, prefix_value_BPKH = self._drop_values(weights_BNTS.shape, value_BKSH,
                                                          prefix_value_BPKH)
      else:
        weights_BNTS = self.weights_dropout(weights_BNTS, deterministic=False)
    weights_BKGTS = self._grouped(weights_BNTS)
    context_BKGTH = jnp.einsum("bkgts,bksh->bkgth", weights_BKGTS[..., num_prefix:], value_BKSH)
    if prefix is not None:
      context_BKGTH = context_BKGTH + jnp.einsum(
          "bkgtp,bpkh->bkgth", weights_BKGTS[..., :num_prefix], prefix_value_BPKH)
    context_BTNH = sequence_major(self._ungrouped(context_BKGTH))
    context_BTJ = context_BTNH.reshape(context_BTNH.shape[:2] + (-1,))
    return self.out(context_BTJ), cache
