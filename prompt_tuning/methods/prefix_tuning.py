"""Prefix tuning (Li & Liang 2021): learned per-layer key/value prefixes on a frozen model.

Every selected attention layer attends to P extra key/value positions before its own keys:
encoder self-attention, decoder self-attention and decoder cross-attention (encoder-decoder),
or decoder self-attention (decoder-only). In cross-attention the prefix is *prepended to* the
encoder's keys/values; the encoder output is always attended as well (past_key_values-based
implementations that put the prefix in the cross-attention cache replace the encoder keys).

Masks and positions: prefix keys are visible to every query (also beyond a sliding window).
`position_bias` says where the prefix sits relative to the tokens in decoder self-attention;
None (the default) picks the model family's natural choice:
  - T5 (relative position bias): "zero" by default: prefix keys get a zero bias (they sit outside
    the sequence, so outputs do not depend on padding). "shifted" places the prefix at positions
    0..P-1 and the tokens after it, which is what Hugging Face T5 computes for
    `past_key_values` (hence PEFT's prefix tuning of T5's decoder); it depends on left padding
    and is meant for parity checks.
  - Every other family (RoPE: Llama, Mistral, Qwen2; learned positions: GPT-2; ALiBi: BLOOM):
    "shifted" by default, PEFT's semantics: the tokens' positions start at P, as Hugging Face
    computes after a P-long `past_key_values`. Prefix keys are used as stored (never rotated
    with RoPE, no position embedding added with learned positions); with ALiBi they are biased
    as keys at positions 0..P-1 (Hugging Face builds BLOOM's ALiBi from the attention mask
    [1] * P + mask). "zero" keeps the tokens at positions 0.. (prefix keys unrotated / unbiased).
  - Learned positions (GPT-2, BART's decoder): "shifted" looks the tokens up at P.., as Hugging
    Face does after a P-long cache; `PrefixConfig.peft_seq2seq` is PEFT 0.21's encoder-decoder
    mode (decoder self-attention only: PEFT drops its cross-attention half).
Encoder and cross-attention prefixes never get a position bias (T5 cross-attention has none);
encoder tokens keep their positions.
With grouped-query attention the prefixes are per key/value head (PEFT's layout).

Parameters live under `encoder/prefix/attention/...` and `decoder/prefix/{self_attention,
encoder_decoder_attention}/...`, so the trainable regex is `PREFIX_PARAMS_REGEX` (`.*/prefix/.*`)
and every other parameter keeps its T5X path and stays frozen. Per attention kind:
  - direct (PEFT `prefix_projection=False`): `key_value` [P, layers, 2, kv_heads, head_dim]
    (axes "prompt", "layers", "prefix_kv", "heads", "kv"); PEFT's `embedding.weight`
    [P, layers * 2 * kv_heads * head_dim] is the same array reshaped.
  - projected (PEFT `prefix_projection=True`): `embedding` [P, D] (D: the model width, or
    kv_heads * head_dim with GQA, as PEFT), `transform_0` (D -> hidden, tanh), `transform_1` (hidden -> layers * 2 * kv_heads * head_dim), kernels [in, out] + biases.
`export_prefixes` turns either into the final `key_value` arrays for projection-free inference.

Cached decoding: the decoder's `init_cache` computes the prefixes once and keeps them in the
`DecoderCache` (batch-major, so beam search carries them); each step attends to them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.methods.p_tuning import Linear
from prompt_tuning.models.attention import KVPrefix
from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.decoder_only import DecoderOnly
from prompt_tuning.models.layers import Embed, param_with_axes
from prompt_tuning.models.t5 import EncoderDecoder
from prompt_tuning.models.transformer import Decoder, Encoder

PREFIX_PARAMS_REGEX = r".*/prefix/.*"
KEY_VALUE_AXES = ("prompt", "layers", "prefix_kv", "heads", "kv")


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
  """What prefix tuning adds to a model.

  Attributes:
    length: P, prefix positions per attention layer (0 adds nothing).
    encoder: prefixes for encoder self-attention (encoder-decoder models).
    decoder_self: prefixes for decoder self-attention (both architectures).
    decoder_cross: prefixes for decoder cross-attention (encoder-decoder models).
    projection: PEFT's `prefix_projection`: produce the prefixes with an MLP from P learned
      embeddings instead of learning them directly.
    hidden_dim: the projection MLP's hidden size (PEFT `encoder_hidden_size`).
    position_bias: "zero", "shifted" or None (the family's default; see the module docstring).
    init_stddev: standard deviation of the normal initializer of `key_value` / `embedding`
      (PEFT / torch's Embedding default is 1.0).
  """

  length: int = 10
  encoder: bool = True
  decoder_self: bool = True
  decoder_cross: bool = True
  projection: bool = False
  hidden_dim: int = 512
  position_bias: Optional[Literal["zero", "shifted"]] = None
  init_stddev: float = 1.0

  def __post_init__(self):
    if self.length < 0:
      raise ValueError(f"PrefixConfig.length={self.length}; use a length >= 0.")
    if self.position_bias not in (None, "zero", "shifted"):
      raise ValueError(f"PrefixConfig.position_bias={self.position_bias!r}; use 'zero', "
                       "'shifted' or None (the model family's default).")

  def position_bias_for(self, config: ModelConfig) -> str:
    """The prefix position semantics used with `config` (None -> the family's default)."""
    if self.position_bias is not None:
      return self.position_bias
    return "zero" if config.position_embedding == "relative" else "shifted"

  def replace(self, **changes) -> "PrefixConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def peft_seq2seq(cls, length: int, **changes) -> "PrefixConfig":
    """PEFT 0.21's prefix tuning of an encoder-decoder as it runs with transformers 5: decoder
    self-attention only (PEFT drops the cross-attention half of its cache, and the encoder gets
    none), the decoder's tokens placed after the P-long prefix ("shifted"). In gin:
    PREFIX_ENCODER = False, PREFIX_DECODER_CROSS = False, PREFIX_POSITION_BIAS = 'shifted'."""
    return cls(length=length, encoder=False, decoder_cross=False, position_bias="shifted",
               **changes)

  def build_model(self, config: ModelConfig) -> nn.Module:
    """The prefix-tuning model of `config.architecture` (what `load_model` builds for it)."""
    return build_prefix_tuning_model(config, self)


def prefix_config(config: Optional[PrefixConfig] = None) -> Optional[PrefixConfig]:
  """The prefix-tuning setup gin selects (None: none). Gin binds `prefix_config.config`."""
  return config


def projection_width(config: ModelConfig) -> int:
  """Width of the projected prefix's learned embeddings (PEFT's `token_dim`): the model width,
  or kv_heads * head_dim with grouped-query attention (what PEFT 0.21 uses there)."""
  if config.kv_heads == config.num_heads:
    return config.emb_dim
  return config.kv_heads * config.head_dim


class AttentionPrefix(nn.Module):
  """Key/value prefixes [batch, P, kv_heads, head_dim] for `num_layers` layers of one attention
  kind."""

  config: ModelConfig
  prefix: PrefixConfig
  num_layers: int

  @nn.compact
  def key_value(self) -> jax.Array:
    """All prefixes as one float32 array [P, layers, 2 (key, value), kv_heads, head_dim]."""
    config, prefix = self.config, self.prefix
    shape = (prefix.length, self.num_layers, 2, config.kv_heads, config.head_dim)
    init = nn.initializers.normal(stddev=prefix.init_stddev)
    if not prefix.projection:
      return param_with_axes(self, "key_value", init, shape, KEY_VALUE_AXES)
    embedding_PD = param_with_axes(self, "embedding", init,
                                   (prefix.length, projection_width(config)),
                                   ("prompt", "prompt_embed"))
    hidden_PH = jnp.tanh(Linear(prefix.hidden_dim, name="transform_0")(embedding_PD))
    flat_PW = Linear(int(np.prod(shape[1:])), ("prompt_hidden", "prefix_kv"),
                     name="transform_1")(hidden_PH)
    return flat_PW.reshape(shape)

  def __call__(self, batch: int) -> tuple[KVPrefix, ...]:
    kv_PL2NH = self.key_value().astype(self.config.activation_dtype)
    expand = lambda x_PNH: jnp.broadcast_to(x_PNH[None], (batch,) + x_PNH.shape)
    return tuple(KVPrefix(expand(kv_PL2NH[:, layer, 0]), expand(kv_PL2NH[:, layer, 1]))
                 for layer in range(self.num_layers))


class StackPrefixes(nn.Module):
  """The prefix hook of one stack: `prefix(batch)` -> {attention name: per-layer KVPrefix}.

  `kinds` names the attention modules that get prefixes ("attention" in the encoder,
  "self_attention" / "encoder_decoder_attention" in the decoder); each is a submodule.
  """

  config: ModelConfig
  prefix: PrefixConfig
  kinds: tuple[str, ...]
  num_layers: int

  @nn.compact
  def __call__(self, batch: int) -> dict[str, tuple[KVPrefix, ...]]:
    return {kind: AttentionPrefix(self.config, self.prefix, self.num_layers, name=kind)(batch)
            for kind in self.kinds}


def _hook(config: ModelConfig, prefix: PrefixConfig, kinds: tuple[str, ...],
          num_layers: int) -> Optional[StackPrefixes]:
  return StackPrefixes(config, prefix, kinds, num_layers) if kinds else None


class PrefixTuningEncoderDecoder(EncoderDecoder):
  """T5 encoder-decoder with prefix tuning; same call signature, seams and frozen param paths.

  Only the stacks differ from `EncoderDecoder` (through its `_make_encoder` / `_make_decoder`
  hooks): they get a prefix hook, so `__call__`, `encode`, `decode`, `init_decode_cache` and
  `decode_step` (hence `prompt_tuning.api.LoadedModel.generate`) work unchanged.
  """

  prefix: PrefixConfig = PrefixConfig()

  def _make_encoder(self) -> nn.Module:
    kinds = ("attention",) if self.prefix.encoder else ()
    return Encoder(self.config,
                   prefix=_hook(self.config, self.prefix, kinds, self.config.num_encoder_layers))

  def _make_decoder(self) -> nn.Module:
    return _prefixed_decoder(self.config, self.prefix, self.token_embedder)


class PrefixTuningDecoderOnly(DecoderOnly):
  """Decoder-only LM with decoder self-attention prefixes; same signature and seams as DecoderOnly."""

  prefix: PrefixConfig = PrefixConfig()

  def _make_decoder(self) -> nn.Module:
    return _prefixed_decoder(self.config, self.prefix, None)


def _prefixed_decoder(config: ModelConfig, prefix: PrefixConfig,
                      shared_embedding: Optional[Embed]) -> Decoder:
  cross_attention = shared_embedding is not None
  kinds = ("self_attention",) if prefix.decoder_self else ()
  if cross_attention and prefix.decoder_cross:
    kinds += ("encoder_decoder_attention",)
  return Decoder(config, shared_embedding=shared_embedding, cross_attention=cross_attention,
                 prefix=_hook(config, prefix, kinds, config.num_decoder_layers),
                 prefix_position_bias=prefix.position_bias_for(config))


def build_prefix_tuning_model(config: ModelConfig, prefix: PrefixConfig) -> nn.Module:
  """The prefix-tuning module for `config.architecture` (constructs only; no I/O)."""
  if config.architecture == "decoder_only":
    return PrefixTuningDecoderOnly(config, prefix)
  return PrefixTuningEncoderDecoder(config, prefix)


def prefix_params(params: Mapping[str, Any]) -> dict[str, Any]:
  """The prefix subtrees of a full parameter tree: {"encoder": {"prefix": ...}, ...}."""
  return {stack: {"prefix": params[stack]["prefix"]} for stack in ("encoder", "decoder")
          if stack in params and "prefix" in params[stack]}


def export_prefixes(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
  """Final per-layer prefixes of a (possibly projected) model, keyed by their direct-param path.

  Returns {"encoder/prefix/attention/key_value": float32 [P, layers, 2, heads, head_dim], ...}
  (also for decoder `self_attention` / `encoder_decoder_attention`): exactly the parameters of
  the same model with `projection=False`, so inference needs no projection MLP.
  """
  exported = {}
  for stack, subtree in prefix_params(params).items():
    num_layers = config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers
    for kind, kind_params in subtree["prefix"].items():
      if "key_value" in kind_params:
        key_value = kind_params["key_value"]
      else:
        length = kind_params["embedding"].shape[0]
        hidden = kind_params["transform_0"]["kernel"].shape[1]
        module = AttentionPrefix(config, PrefixConfig(length, projection=True, hidden_dim=hidden),
                                 num_layers)
        key_value = module.apply({"params": kind_params}, method=AttentionPrefix.key_value)
      exported[f"{stack}/prefix/{kind}/key_value"] = np.asarray(key_value, np.float32)
  return exported
