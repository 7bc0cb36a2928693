"""Encoder and decoder stacks: pre- or post-norm residual blocks, configured per family.

One stack serves T5, BART / mBART and the decoder-only LLMs; `ModelConfig` says what differs
(RMS norm or LayerNorm, post- or pre-norm blocks, relative position bias / RoPE / learned
positions / ALiBi, an embedding norm, grouped key/value heads, biases, logit scaling, sliding
window on all or some layers with a per-kind rotary base, q/k norms, sandwich norms, (1 + w)
norm weights, embedding scale, MLP activations, tied head, logit softcapping). Parameter names
match T5X/Flaxformer for every family: `layers_{i}`, `attention` / `self_attention` /
`encoder_decoder_attention`, `pre_*_layer_norm`, `mlp`, `relpos_bias` (T5 only),
`encoder_norm`, `decoder_norm`, `logits_dense`, plus `position_embedder` (learned positions)
and `embedding_norm`; checkpoint readers map each family's own names onto them
(`prompt_tuning.models.families`).

Positions: T5 scores cache / sequence indices with its relative bias; RoPE models rotate
queries and keys by each token's position, ALiBi models bias each key by its position, and
learned positions are added to each stack's inputs; a decoder-only token's position is its rank
among its row's valid positions (so left padding and a prompt placed after it change nothing).

Inputs of a stack: embedded tokens (with any prompt spliced in at the embedding seam) + learned
positions, then the embedding norm, then dropout (`_stack_inputs`). Prompt rows get positions and
the norm like tokens, as Hugging Face applies both to `inputs_embeds`.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.models import alibi
from prompt_tuning.models.attention import (KVCache, KVPrefix, MultiHeadAttention, causal_mask,
                                            heads_major, mask_to_bias)
from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.layers import NORMS, Dense, Embed, MlpBlock, param_with_axes
from prompt_tuning.models.relpos import RelativePositionBias

T5Config = ModelConfig  # Older name, kept for code written against it.


def _attention(config: ModelConfig, cross: bool = False,
               sliding: bool = False) -> MultiHeadAttention:
  """An attention layer of `config`'s family (cross-attention: never rotated; a sliding-window
  layer rotates with `rope_local_theta`, unscaled, when the config has one)."""
  rotary = config.position_embedding == "rope" and not cross
  theta, scaling = config.rope_theta, config.rope_scaling
  if sliding and config.rope_local_theta is not None:
    theta, scaling = config.rope_local_theta, ()
  return MultiHeadAttention(num_heads=config.num_heads, head_dim=config.head_dim,
                            out_features=config.emb_dim, dropout_rate=config.dropout_rate,
                            dtype=config.activation_dtype, num_kv_heads=config.num_kv_heads,
                            use_bias=config.attention_bias, out_bias=config.attention_out_bias,
                            scale_logits=config.scale_attention,
                            rope_theta=theta if rotary else None,
                            rope_scaling=scaling if rotary else (),
                            query_pre_attn_scalar=config.query_pre_attn_scalar,
                            qk_norm=config.qk_norm, norm_epsilon=config.layer_norm_epsilon,
                            norm_scale_offset=config.norm_scale_offset)


def token_positions(valid_BS: jax.Array) -> jax.Array:
  """int32 [B, S]: each valid position's rank among its row's valid positions; 0 elsewhere."""
  valid_BS = valid_BS > 0
  return jnp.where(valid_BS, jnp.cumsum(valid_BS, axis=1) - 1, 0).astype(jnp.int32)


def _window_mask(query_index_T: jax.Array, key_index_S: jax.Array,
                 window: Optional[int]) -> jax.Array | bool:
  """[1, 1, T, S]: keys fewer than `window` positions behind the query (True without window)."""
  if window is None:
    return True
  return ((query_index_T[:, None] - key_index_S[None, :]) < window)[None, None]


def _norm(config: ModelConfig) -> nn.Module:
  """A norm of `config`'s kind (`norm_kind`): RMS norm (with Gemma's (offset + w) multiplier when
  `norm_scale_offset` is set) or LayerNorm."""
  if config.norm_kind == "rms":
    return NORMS["rms"](epsilon=config.layer_norm_epsilon, dtype=config.activation_dtype,
                        scale_offset=config.norm_scale_offset)
  return NORMS[config.norm_kind](epsilon=config.layer_norm_epsilon,
                                 dtype=config.activation_dtype)


def scaled_embed(config: ModelConfig, embedder: Embed, tokens_BT: jax.Array) -> jax.Array:
  """Token ids [batch, T] -> embeddings [batch, T, embed] times `config.embedding_scale` (cast
  to the activation dtype first, as Hugging Face's scaled embeddings do: Gemma, mBART)."""
  embedded_BTD = embedder(tokens_BT)
  if config.embedding_scale != 1.0:
    scale = jnp.asarray(config.embedding_scale, jnp.float32).astype(embedded_BTD.dtype)
    embedded_BTD = embedded_BTD * scale
  return embedded_BTD


def real_tokens(config: ModelConfig, tokens_BT: jax.Array) -> jax.Array:
  """bool [B, T]: the real (non-padding) positions of encoder-decoder token ids: T5 pads with
  0; other families with their pad id (none: every position is real)."""
  if config.zero_is_padding:
    return tokens_BT > 0
  if config.pad_token_id is None:
    return jnp.ones(tokens_BT.shape, bool)
  return tokens_BT != config.pad_token_id


def _residual(config: ModelConfig, norm: nn.Module, x_BTD: jax.Array,
              sublayer: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """x + sublayer(norm(x)) (pre-norm), or norm(x + sublayer(x)) (post-norm, BART).

  `sublayer` includes the residual branch's dropout.
  """
  if config.norm_position == "post":
    return norm(x_BTD + sublayer(x_BTD))
  return x_BTD + sublayer(norm(x_BTD))


def _final_norm(config: ModelConfig) -> Optional[nn.Module]:
  """A stack's final norm; post-norm stacks have none (their last layer ends normalized)."""
  return _norm(config) if config.norm_position == "pre" else None


def _mlp(config: ModelConfig) -> MlpBlock:
  return MlpBlock(intermediate_dim=config.mlp_dim, activations=config.mlp_activations,
                  dropout_rate=config.dropout_rate, dtype=config.activation_dtype,
                  use_bias=config.mlp_bias)


def _dropout(config: ModelConfig) -> nn.Dropout:
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))


_SAVED_BY_POLICY = {
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def _rematerialized(layer_cls: type, config: ModelConfig, deterministic_argnum: int) -> type:
  """`layer_cls` whose backward pass recomputes what `config.remat_policy` does not keep.

  `deterministic_argnum`: position of the layer's Python-bool `deterministic` argument.
  """
  if config.remat_policy == "none":
    return layer_cls
  return nn.remat(layer_cls, policy=_SAVED_BY_POLICY[config.remat_policy],
                  static_argnums=(deterministic_argnum,))


def _prefix_length(prefixes: Optional[Sequence[Optional[KVPrefix]]]) -> int:
  """Length P of per-layer key/value prefixes (0 when there are none)."""
  for prefix in prefixes or ():
    if prefix is not None:
      return prefix.key_BPNH.shape[1]
  return 0


def _prepend_columns(bias_BNTS: jax.Array, num_columns: int) -> jax.Array:
  """Prepends `num_columns` zero-bias key columns (always-visible prefix keys) -> [.., P + S]."""
  zeros = jnp.zeros(bias_BNTS.shape[:-1] + (num_columns,), bias_BNTS.dtype)
  return jnp.concatenate([zeros, bias_BNTS], axis=-1)


# How decoder self-attention scores prefix keys with the relative position bias:
# "zero": prefix keys get no position bias (they sit outside the sequence);
# "shifted": prefix keys occupy positions 0..P-1 and the tokens follow at P.. (Hugging Face T5 with
# past_key_values, hence PEFT's prefix tuning on T5).
PrefixPositionBias = Literal["zero", "shifted"]

# Per-layer input hook (deep prompts): `fn(layer_index, x_BTD, first_position)` -> x_BTD, applied
# to each layer's input; `first_position` is the sequence position of x's first row.
LayerInputsFn = Callable[[int, jax.Array, "jax.Array | int"], jax.Array]


def _relpos(config: ModelConfig, bidirectional: bool) -> Optional[RelativePositionBias]:
  """T5's relative position bias of a stack, or None for models without one (RoPE)."""
  if config.position_embedding != "relative":
    return None
  return RelativePositionBias(num_buckets=config.relpos_num_buckets,
                              max_distance=config.relpos_max_distance,
                              num_heads=config.num_heads, bidirectional=bidirectional,
                              dtype=config.activation_dtype)


def _position_embedder(config: ModelConfig) -> Optional[Embed]:
  """The learned position table of a stack (`position_embedder/embedding`), or None."""
  if config.position_embedding != "learned":
    return None
  return Embed(config.position_table_size, config.emb_dim, config.activation_dtype,
               axes=("abspos_buckets", "embed"))


def _embedding_norm(config: ModelConfig) -> Optional[nn.Module]:
  """The norm on a stack's inputs (`embedding_norm`), or None."""
  return _norm(config) if config.embedding_norm else None


def _check_position_table(config: ModelConfig, num_positions: int) -> None:
  """A clear error when positions 0..num_positions-1 overrun the learned position table (a
  lookup past its end would give NaNs)."""
  if config.position_embedding == "learned" and num_positions > config.max_position_embeddings:
    raise ValueError(
        f"{num_positions} positions (prompt / prefix included) exceed the learned position "
        f"table of {config.max_position_embeddings} rows (max_position_embeddings); shorten the "
        "inputs / targets (TASK_FEATURE_LENGTHS), the prompt or the decode length.")


def _stack_inputs(stack: nn.Module, embedded_BTD: jax.Array, positions_BT: jax.Array,
                  deterministic: bool) -> jax.Array:
  """Layer-0 inputs of `stack` (an Encoder or Decoder) from its embedded inputs [batch, T, embed]
  at int positions [batch, T]: + learned positions, embedding norm, dropout (each if present)."""
  x_BTD = embedded_BTD
  if stack.position_embedder is not None:
    table_index_BT = positions_BT + stack.config.position_offset
    x_BTD = x_BTD + stack.position_embedder(table_index_BT).astype(x_BTD.dtype)
  if stack.embedding_norm is not None:
    x_BTD = stack.embedding_norm(x_BTD)
  return stack.dropout(x_BTD, deterministic=deterministic)


def _alibi_slopes(config: ModelConfig) -> Optional[np.ndarray]:
  """float32 [heads] ALiBi slopes of decoder self-attention, or None without ALiBi."""
  return alibi.slopes(config.num_heads) if config.position_embedding == "alibi" else None


class EncoderLayer(nn.Module):
  """Self-attention + MLP block of the encoder."""

  config: ModelConfig

  def setup(self):
    self.pre_attention_layer_norm = _norm(self.config)
    self.attention = _attention(self.config)
    self.pre_mlp_layer_norm = _norm(self.config)
    self.mlp = _mlp(self.config)
    self.dropout = _dropout(self.config)

  def __call__(self, x_BTD: jax.Array, bias_BNTT: jax.Array, deterministic: bool,
               prefix: Optional[KVPrefix] = None,
               positions_BT: Optional[jax.Array] = None) -> jax.Array:
    def attend(h_BTD):
      h_BTD, _ = self.attention(h_BTD, h_BTD, bias_BNTT, deterministic=deterministic,
                                prefix=prefix, positions_BT=positions_BT)
      return self.dropout(h_BTD, deterministic=deterministic)

    def mlp(h_BTD):
      return self.dropout(self.mlp(h_BTD, deterministic=deterministic),
                          deterministic=deterministic)

    x_BTD = _residual(self.config, self.pre_attention_layer_norm, x_BTD, attend)
    return _residual(self.config, self.pre_mlp_layer_norm, x_BTD, mlp)


class DecoderLayer(nn.Module):
  """Causal self-attention (+ cross-attention to the encoder when present) + MLP block.

  `sliding`: a sliding-window layer (its attention bias hides distant keys; its rotary base
  may differ, see `_attention`). With `config.sandwich_norms` the self-attention and MLP
  outputs are normalized again before their residual adds (Gemma).
  """

  config: ModelConfig
  cross_attention: bool = True
  sliding: bool = False

  def setup(self):
    self.pre_self_attention_layer_norm = _norm(self.config)
    self.self_attention = _attention(self.config, sliding=self.sliding)
    if self.cross_attention:
      self.pre_cross_attention_layer_norm = _norm(self.config)
      self.encoder_decoder_attention = _attention(self.config, cross=True)
    self.pre_mlp_layer_norm = _norm(self.config)
    self.mlp = _mlp(self.config)
    if self.config.sandwich_norms:
      self.post_self_attention_layer_norm = _norm(self.config)
      self.post_mlp_layer_norm = _norm(self.config)
    self.dropout = _dropout(self.config)

  def _post_norm(self, name: str, h_BSD: jax.Array) -> jax.Array:
    """A sublayer's output, normalized by `name` when the config has sandwich norms."""
    return getattr(self, name)(h_BSD) if self.config.sandwich_norms else h_BSD

  def cross_kv(self, encoded_BTD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-attention keys/values [batch, heads, T, head_dim], computed once per generation."""
    key_BTNH, value_BTNH = self.encoder_decoder_attention.project_kv(encoded_BTD)
    return heads_major(key_BTNH), heads_major(value_BTNH)

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
               cross_prefix: Optional[KVPrefix] = None,
               cache_write_mask_BS: Optional[jax.Array] = None,
               positions_BS: Optional[jax.Array] = None
               ) -> tuple[jax.Array, Optional[KVCache]]:
    new_cache = []

    def attend_self(h_BSD):
      h_BSD, updated = self.self_attention(
          h_BSD, h_BSD, self_bias_BNSS, deterministic=deterministic, cache=cache,
          cache_index=cache_index, prefix=self_prefix, cache_write_mask_BT=cache_write_mask_BS,
          positions_BT=positions_BS)
      new_cache.append(updated)
      h_BSD = self._post_norm("post_self_attention_layer_norm", h_BSD)
      return self.dropout(h_BSD, deterministic=deterministic)

    def attend_encoder(h_BSD):
      h_BSD, _ = self.encoder_decoder_attention(h_BSD, encoded_BTD, cross_bias_BNST,
                                                deterministic=deterministic,
                                                precomputed_kv=cross_kv, prefix=cross_prefix)
      return self.dropout(h_BSD, deterministic=deterministic)

    def mlp(h_BSD):
      h_BSD = self._post_norm("post_mlp_layer_norm", self.mlp(h_BSD, deterministic=deterministic))
      return self.dropout(h_BSD, deterministic=deterministic)

    y_BSD = _residual(self.config, self.pre_self_attention_layer_norm, y_BSD, attend_self)
    if self.cross_attention:
      y_BSD = _residual(self.config, self.pre_cross_attention_layer_norm, y_BSD, attend_encoder)
    return _residual(self.config, self.pre_mlp_layer_norm, y_BSD, mlp), new_cache[0]


class Encoder(nn.Module):
  """Bidirectional encoder stack over already-embedded inputs.

  `prefix` (optional, e.g. prefix tuning's generator; its parameters live under `encoder/prefix/`)
  is called as `prefix(batch)` -> {"attention": per-layer KVPrefix}; its keys get zero bias.
  """

  config: ModelConfig
  prefix: Optional[nn.Module] = None

  def setup(self):
    if self.config.position_embedding == "alibi":
      raise ValueError("ALiBi positions are causal (decoder self-attention only); an encoder "
                       "needs position_embedding 'relative', 'rope' or 'learned'.")
    self.relpos_bias = _relpos(self.config, bidirectional=True)
    self.position_embedder = _position_embedder(self.config)
    self.embedding_norm = _embedding_norm(self.config)
    layer_cls = _rematerialized(EncoderLayer, self.config, deterministic_argnum=3)
    self.layers = [layer_cls(self.config) for _ in range(self.config.num_encoder_layers)]
    self.encoder_norm = _final_norm(self.config)
    self.dropout = _dropout(self.config)

  def __call__(self, embedded_BTD: jax.Array, mask_BT: jax.Array, deterministic: bool = True,
               prefixes: Optional[Sequence[Optional[KVPrefix]]] = None,
               prefix_bias_BNTP: Optional[jax.Array] = None,
               layer_inputs_fn: Optional[LayerInputsFn] = None) -> jax.Array:
    """Encodes [batch, T, embed] with key/query validity `mask_BT` -> [batch, T, embed].

    `prefixes` (one per layer) add prefix keys/values; `prefix_bias_BNTP` is their bias.
    """
    length = embedded_BTD.shape[1]
    if prefixes is None and self.prefix is not None:
      prefixes = self.prefix(embedded_BTD.shape[0])["attention"]
      prefix_bias_BNTP = jnp.zeros((1, 1, 1, _prefix_length(prefixes)),
                                   self.config.activation_dtype)
    valid_BT = mask_BT > 0
    bias_BNTT = mask_to_bias(valid_BT[:, None, :, None] & valid_BT[:, None, None, :],
                             self.config.activation_dtype)
    if self.relpos_bias is not None:
      bias_BNTT = self.relpos_bias(length, length) + bias_BNTT
    positions_BT = token_positions(valid_BT)
    if prefix_bias_BNTP is not None:
      bias_BNTT = jnp.concatenate(
          [jnp.broadcast_to(prefix_bias_BNTP, bias_BNTT.shape[:3] + prefix_bias_BNTP.shape[3:]),
           bias_BNTT], axis=-1)
    _check_position_table(self.config, length)
    x_BTD = _stack_inputs(self, embedded_BTD, positions_BT, deterministic)
    for index, layer in enumerate(self.layers):
      if layer_inputs_fn is not None:
        x_BTD = layer_inputs_fn(index, x_BTD, 0)
      prefix = prefixes[index] if prefixes is not None else None
      x_BTD = layer(x_BTD, bias_BNTT, deterministic, prefix, positions_BT)
    if self.encoder_norm is not None:
      x_BTD = self.encoder_norm(x_BTD)
    return self.dropout(x_BTD, deterministic=deterministic)


@flax.struct.dataclass
class DecoderCache:
  """Decoding state of a decoder stack; every leaf is batch-major (beam search gathers rows).

  self_attention: per-layer KVCache of length max_length.
  cross_kv: per-layer precomputed encoder keys/values [batch, heads, T, head_dim], or None
    (decoder-only).
  key_valid_BS: int32 [batch, max_length], 1 where a cached position holds a real token.
  encoder_valid_BT: int32 [batch, encoder length] or None.
  self_prefix / cross_prefix: per-layer KVPrefix [batch, P, kv_heads, head_dim] (prefix tuning),
    computed once by `init_cache` and attended before the cached / encoder keys, or None.
  """

  self_attention: tuple[KVCache, ...]
  cross_kv: Optional[tuple[tuple[jax.Array, jax.Array], ...]]
  key_valid_BS: jax.Array
  encoder_valid_BT: Optional[jax.Array]
  self_prefix: Optional[tuple[KVPrefix, ...]] = None
  cross_prefix: Optional[tuple[KVPrefix, ...]] = None


class Decoder(nn.Module):
  """Causal decoder stack with output logits; cross-attends to an encoder when given one.

  With `shared_embedding` (encoder-decoder) the token table lives at the model's top level;
  without it (decoder-only) the decoder owns `token_embedder`.

  `prefix` (optional; parameters under `decoder/prefix/`) is called as `prefix(batch)` ->
  {"self_attention": per-layer KVPrefix, "encoder_decoder_attention": per-layer KVPrefix or
  absent}. Prefix keys are always visible; `prefix_position_bias` says how self-attention
  scores them (see PrefixPositionBias); cross-attention has no position bias. With "shifted" the
  tokens' positions start at P (what Hugging Face computes after a P-long `past_key_values`,
  hence PEFT's prefix tuning), with "zero" at 0: RoPE models rotate tokens to those positions
  and never rotate prefix keys; learned positions look the tokens' positions up; ALiBi biases
  prefix keys as positions 0..P-1 ("shifted") or not at all ("zero").
  """

  config: ModelConfig
  shared_embedding: Optional[Embed] = None
  cross_attention: bool = True
  prefix: Optional[nn.Module] = None
  prefix_position_bias: PrefixPositionBias = "zero"

  def setup(self):
    config = self.config
    if self.shared_embedding is None:
      self.token_embedder = Embed(config.vocab_size, config.emb_dim, config.activation_dtype)
    self.relpos_bias = _relpos(config, bidirectional=False)
    self.position_embedder = _position_embedder(config)
    self.embedding_norm = _embedding_norm(config)
    layer_cls = _rematerialized(DecoderLayer, config, deterministic_argnum=5)
    self.layers = [layer_cls(config, cross_attention=self.cross_attention,
                             sliding=config.is_sliding_layer(index))
                   for index in range(config.num_decoder_layers)]
    self.decoder_norm = _final_norm(config)
    self.dropout = _dropout(config)
    if not config.logits_via_embedding:
      self.logits_dense = Dense(config.vocab_size, ("embed", "vocab"), config.activation_dtype)
    if config.final_logits_bias:
      self.final_logits_bias = param_with_axes(self, "final_logits_bias", nn.initializers.zeros,
                                               (config.vocab_size,), ("vocab",))

  @property
  def embedder(self) -> Embed:
    return self.shared_embedding if self.shared_embedding is not None else self.token_embedder

  def embed(self, tokens_BS: jax.Array) -> jax.Array:
    """Embeds decoder tokens [batch, S] -> [batch, S, embed] (`scaled_embed`)."""
    return scaled_embed(self.config, self.embedder, tokens_BS)

  def final_hidden(self, y_BSD: jax.Array, deterministic: bool) -> jax.Array:
    """Last layer's output [.., S, embed] -> final layer norm + dropout (the projection's input)."""
    if self.decoder_norm is not None:
      y_BSD = self.decoder_norm(y_BSD)
    return self.dropout(y_BSD, deterministic=deterministic)

  def project(self, hidden_BSD: jax.Array) -> jax.Array:
    """Output projection of final hidden states [.., embed] -> logits [.., vocab] float32.

    T5 1.1 / untied LLMs: the separate `logits_dense` kernel; tied heads: the shared embedding,
    scaled by 1/sqrt(embed) for T5 1.0 (`rescale_tied_logits`); BART adds `final_logits_bias`;
    then cap * tanh(logits / cap) with `config.final_logit_softcapping`.
    """
    if self.config.logits_via_embedding:
      logits = self.embedder.attend(hidden_BSD)
      if self.config.rescale_tied_logits:
        logits = logits / jnp.sqrt(jnp.float32(hidden_BSD.shape[-1]))
    else:
      logits = self.logits_dense(hidden_BSD).astype(jnp.float32)
    if self.config.final_logits_bias:
      logits = logits + self.final_logits_bias.astype(jnp.float32)
    cap = self.config.final_logit_softcapping
    if cap is not None:
      logits = jnp.tanh(logits / jnp.float32(cap)) * jnp.float32(cap)
    return logits

  def _logits(self, y_BSD: jax.Array, deterministic: bool) -> jax.Array:
    return self.project(self.final_hidden(y_BSD, deterministic))

  def _prefixes(self, batch: int) -> tuple[Optional[tuple[KVPrefix, ...]],
                                            Optional[tuple[KVPrefix, ...]]]:
    """(self-attention, cross-attention) per-layer prefixes from the `prefix` hook, or None."""
    if self.prefix is None:
      return None, None
    prefixes = self.prefix(batch)
    return prefixes.get("self_attention"), prefixes.get("encoder_decoder_attention")

  def _self_biases(self, num_queries: int, num_keys: int, query_offset: jax.Array | int,
                   mask_B1TS: jax.Array, prefix_length: int,
                   key_positions_BS: Optional[jax.Array] = None) -> list[jax.Array]:
    """Each layer's self-attention bias (see `_self_bias`): one array per kind of layer
    (sliding window or full attention), shared by the layers of that kind."""
    kinds = [self.config.is_sliding_layer(index) for index in range(len(self.layers))]
    window = self.config.sliding_window
    biases = {sliding: self._self_bias(num_queries, num_keys, query_offset, mask_B1TS,
                                       prefix_length, key_positions_BS,
                                       window=window if sliding else None)
              for sliding in sorted(set(kinds))}
    return [biases[sliding] for sliding in kinds]

  def _self_bias(self, num_queries: int, num_keys: int, query_offset: jax.Array | int,
                 mask_B1TS: jax.Array, prefix_length: int,
                 key_positions_BS: Optional[jax.Array] = None,
                 window: Optional[int] = None) -> jax.Array:
    """Self-attention bias [batch, heads, T, P + S]: position bias + mask, prefix columns first.

    A sliding `window` hides keys `window` or more indices behind the query; prefix keys stay
    visible. ALiBi models bias the keys by their positions `key_positions_BS` [batch, S]
    (already shifted past a "shifted" prefix, whose keys then sit at 0..P-1; "zero": prefix keys
    get no bias).
    """
    query_index_T = query_offset + jnp.arange(num_queries)
    mask_B1TS = mask_B1TS & _window_mask(query_index_T, jnp.arange(num_keys), window)
    mask_bias = mask_to_bias(mask_B1TS, self.config.activation_dtype)
    if self.relpos_bias is None:
      bias = _prepend_columns(mask_bias, prefix_length) if prefix_length else mask_bias
      slopes_N = _alibi_slopes(self.config)
      if slopes_N is None:
        return bias
      if key_positions_BS is None:
        raise ValueError("an ALiBi decoder needs the key positions [batch, S].")
      if prefix_length:
        prefix_positions_P = jnp.arange(prefix_length, dtype=jnp.int32)
        if self.prefix_position_bias == "zero":
          prefix_positions_P = jnp.zeros_like(prefix_positions_P)
        key_positions_BS = jnp.concatenate(
            [jnp.broadcast_to(prefix_positions_P, key_positions_BS.shape[:1] + (prefix_length,)),
             key_positions_BS], axis=-1)
      return bias + alibi.key_bias(key_positions_BS, slopes_N)  # float32, as positions grow.
    if not prefix_length:
      return self.relpos_bias(num_queries, num_keys, query_offset) + mask_bias
    if self.prefix_position_bias == "shifted":
      relpos = self.relpos_bias(num_queries, prefix_length + num_keys,
                                query_offset + prefix_length)
    elif self.prefix_position_bias == "zero":
      relpos = _prepend_columns(self.relpos_bias(num_queries, num_keys, query_offset),
                                prefix_length)
    else:
      raise ValueError(f"Decoder.prefix_position_bias={self.prefix_position_bias!r}; use 'zero' "
                       "or 'shifted'.")
    return relpos + _prepend_columns(mask_bias, prefix_length)

  def __call__(self,
               embedded_BSD: jax.Array,
               self_mask_B1SS: jax.Array,
               encoded_BTD: Optional[jax.Array] = None,
               cross_mask_B1ST: Optional[jax.Array] = None,
               deterministic: bool = True,
               self_prefixes: Optional[Sequence[Optional[KVPrefix]]] = None,
               cross_prefixes: Optional[Sequence[Optional[KVPrefix]]] = None,
               layer_inputs_fn: Optional[LayerInputsFn] = None,
               return_hidden: bool = False,
               positions_BS: Optional[jax.Array] = None) -> jax.Array:
    """Teacher-forced pass over embedded inputs -> logits [batch, S, vocab] float32.

    `self_prefixes` / `cross_prefixes` (one per layer; default: from the `prefix` hook) add
    always-visible key/value prefixes to self- / cross-attention. With `return_hidden` the pass
    stops before the output projection and returns the final hidden states [batch, S, embed]
    (`project` maps them to the logits). `positions_BS` (RoPE models) are the tokens'
    positions, by default 0..S-1.
    """
    dtype = self.config.activation_dtype
    batch, length = embedded_BSD.shape[:2]
    if self_prefixes is None and cross_prefixes is None:
      self_prefixes, cross_prefixes = self._prefixes(batch)
    if positions_BS is None:
      positions_BS = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    positions_BS = self._shift_positions(positions_BS, self_prefixes)
    self_biases = self._self_biases(length, length, 0, self_mask_B1SS,
                                    _prefix_length(self_prefixes), positions_BS)
    cross_bias = None
    if cross_mask_B1ST is not None:
      cross_bias = _prepend_columns(mask_to_bias(cross_mask_B1ST, dtype),
                                    _prefix_length(cross_prefixes))
    _check_position_table(self.config, length + (
        _prefix_length(self_prefixes) if self.prefix_position_bias == "shifted" else 0))
    y_BSD = _stack_inputs(self, embedded_BSD, positions_BS, deterministic)
    for index, layer in enumerate(self.layers):
      if layer_inputs_fn is not None:
        y_BSD = layer_inputs_fn(index, y_BSD, 0)
      y_BSD, _ = layer(y_BSD, self_biases[index], encoded_BTD, cross_bias, deterministic,
                       self_prefix=self_prefixes[index] if self_prefixes else None,
                       cross_prefix=cross_prefixes[index] if cross_prefixes else None,
                       positions_BS=positions_BS)
    hidden_BSD = self.final_hidden(y_BSD, deterministic)
    return hidden_BSD if return_hidden else self.project(hidden_BSD)

  def _shift_positions(self, positions_BS: jax.Array,
                       self_prefixes: Optional[Sequence[Optional[KVPrefix]]]) -> jax.Array:
    """Token positions after self-attention prefixes: +P when they are "shifted"."""
    if self.prefix_position_bias == "shifted":
      return positions_BS + _prefix_length(self_prefixes)
    return positions_BS

  def init_cache(self, batch: int, max_length: int, encoded_BTD: Optional[jax.Array] = None,
                 encoder_valid_BT: Optional[jax.Array] = None,
                 self_prefixes: Optional[Sequence[KVPrefix]] = None,
                 cross_prefixes: Optional[Sequence[KVPrefix]] = None) -> DecoderCache:
    """Empty self-attention caches; cross-attention keys/values computed once from `encoded`.

    Key/value prefixes (given, or from the `prefix` hook) are computed here once and kept in the
    cache; every `decode_step` attends to them before the cached / encoder keys.
    """
    if self_prefixes is None and cross_prefixes is None:
      self_prefixes, cross_prefixes = self._prefixes(batch)
    config = self.config
    self_attention = tuple(
        KVCache.zeros(batch, max_length, config.kv_heads, config.head_dim,
                      config.activation_dtype) for _ in self.layers)
    cross_kv = None
    if self.cross_attention:
      cross_kv = tuple(layer.cross_kv(encoded_BTD) for layer in self.layers)
      encoder_valid_BT = encoder_valid_BT.astype(jnp.int32)
    return DecoderCache(self_attention, cross_kv, jnp.zeros((batch, max_length), jnp.int32),
                        encoder_valid_BT,
                        None if self_prefixes is None else tuple(self_prefixes),
                        None if cross_prefixes is None else tuple(cross_prefixes))

  def decode_step(self, embedded_BQD: jax.Array, cache: DecoderCache, index: jax.Array | int,
                  valid_BQ: Optional[jax.Array] = None,
                  layer_inputs_fn: Optional[LayerInputsFn] = None
                  ) -> tuple[jax.Array, DecoderCache]:
    """Runs Q new positions starting at cache position `index` -> (logits [batch, Q, vocab], cache).

    One mechanism serves prefill (Q = prompt length, index 0) and generation (Q = 1).
    `valid_BQ` marks real tokens among the new positions (default: all real); positions it marks
    invalid are not written, so cache entries already there (a reused prompt) stay in place.
    """
    dtype = self.config.activation_dtype
    batch, num_new = embedded_BQD.shape[:2]
    max_length = cache.key_valid_BS.shape[1]
    write_mask_BQ = None if valid_BQ is None else valid_BQ > 0
    if write_mask_BQ is None:
      new_valid_BQ = jnp.ones((batch, num_new), jnp.int32)
    else:
      old_valid_BQ = jax.lax.dynamic_slice(cache.key_valid_BS, (0, index), (batch, num_new))
      new_valid_BQ = jnp.where(write_mask_BQ, 1, old_valid_BQ)
    key_valid_BS = jax.lax.dynamic_update_slice(cache.key_valid_BS, new_valid_BQ, (0, index))
    # Each cached token's position: its rank among the row's valid cache entries.
    key_positions_BS = self._shift_positions(token_positions(key_valid_BS), cache.self_prefix)
    positions_BQ = jax.lax.dynamic_slice(key_positions_BS, (0, index), (batch, num_new))
    query_positions_Q = index + jnp.arange(num_new)
    mask_B1QS = causal_mask(query_positions_Q, jnp.arange(max_length)) & (
        key_valid_BS[:, None, None, :] > 0)
    self_biases = self._self_biases(num_new, max_length, index, mask_B1QS,
                                    _prefix_length(cache.self_prefix), key_positions_BS)
    cross_bias = None
    if cache.cross_kv is not None:
      cross_bias = _prepend_columns(mask_to_bias(cache.encoder_valid_BT[:, None, None, :], dtype),
                                    _prefix_length(cache.cross_prefix))
    _check_position_table(self.config, max_length + (
        _prefix_length(cache.self_prefix) if self.prefix_position_bias == "shifted" else 0))
    y_BQD = _stack_inputs(self, embedded_BQD, positions_BQ, True)
    new_self = []
    for index_layer, layer in enumerate(self.layers):
      if layer_inputs_fn is not None:
        y_BQD = layer_inputs_fn(index_layer, y_BQD, index)
      cross_kv = cache.cross_kv[index_layer] if cache.cross_kv is not None else None
      y_BQD, layer_cache = layer(
          y_BQD, self_biases[index_layer], None, cross_bias, True,
          cache=cache.self_attention[index_layer],
          cache_index=index, cross_kv=cross_kv,
          self_prefix=cache.self_prefix[index_layer] if cache.self_prefix else None,
          cross_prefix=cache.cross_prefix[index_layer] if cache.cross_prefix else None,
          cache_write_mask_BS=write_mask_BQ, positions_BS=positions_BQ)
      new_self.append(layer_cache)
    cache = cache.replace(self_attention=tuple(new_self), key_valid_BS=key_valid_BS)
    return self._logits(y_BQD, True), cache
