"""Model hyper-parameters: one frozen dataclass shared by every family and architecture.

`ModelConfig` describes T5 (1.0, 1.1, mT5, the T5X decoder-only LM) and the decoder-only LLM
families (Llama, Mistral, Qwen2, GPT-2, BLOOM, ...) alike: what differs between families is data
here (norm kind, position scheme, embedding norm, grouped key/value heads, attention biases and
scaling, sliding window, MLP activations and biases, tied head, padding convention), never a copy
of the transformer. Field names of the T5 part
follow T5X's `network.T5Config`, which gin binds from the size macros (EMBED_DIM, NUM_HEADS, ...)
of `configs/architectures/*.gin`; LLM configs come from a checkpoint's config.json or GGUF
metadata (`prompt_tuning.models.families`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Optional, Sequence

import jax.numpy as jnp

Architecture = Literal["encoder_decoder", "decoder_only"]
# "relative": T5's bucketed relative position bias (`relpos_bias/rel_embedding`);
# "rope": rotary position embeddings applied to queries and keys (no parameters);
# "learned": a table of absolute position embeddings added to the inputs of each stack
#   (`position_embedder/embedding` [max_position_embeddings + position_offset, embed]; GPT-2, BART);
# "alibi": BLOOM's linear key-position biases in decoder self-attention (no parameters).
PositionEmbedding = Literal["relative", "rope", "learned", "alibi"]
# "rms": RMS norm, scale only (T5, Llama); "layer": LayerNorm with scale and bias (GPT-2, BLOOM).
NormKind = Literal["rms", "layer"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# What each transformer layer keeps for the backward pass (T5X's `remat_policy` names):
# "none" everything; "minimal" only its weight matmuls' outputs (the rest is recomputed);
# "full" only its input (the whole layer is recomputed).
REMAT_POLICIES = ("none", "minimal", "full")
POSITION_EMBEDDINGS = ("relative", "rope", "learned", "alibi")
NORM_KINDS = ("rms", "layer")
# Where each block's layer norms sit: "pre" normalizes a sublayer's input (T5, Llama, mBART;
# the stacks end with a final norm); "post" normalizes after each residual sum (BART, the
# original Transformer; no final norm).
NORM_POSITIONS = ("pre", "post")


@dataclasses.dataclass(frozen=True)
class GenerationDefaults:
  """Decoding settings a checkpoint ships (Hugging Face generation_config.json / config.json),
  used by `LoadedModel.generate` and evaluation where the caller sets none.

  num_beams: beams for method "beam" (None: the caller's default).
  length_penalty / early_stopping: Hugging Face's beam scoring and stopping
    (`inference.decoding.beam_search`); None: T5X's brevity penalty and exact bound.
  no_repeat_ngram_size / min_new_tokens: `inference.constraints.Constraints` (0: off).
  """

  num_beams: Optional[int] = None
  length_penalty: Optional[float] = None
  early_stopping: Any = None
  no_repeat_ngram_size: int = 0
  min_new_tokens: int = 0
# Rotary scaling schemes understood by `models.rope` (Hugging Face's `rope_type` names).
ROPE_TYPES = ("default", "linear", "llama3")
# Per-layer attention kinds (Hugging Face's `layer_types` names): "sliding_attention" layers hide
# keys `sliding_window` or more positions behind the query, "full_attention" layers see all.
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and recipe of a model.

  T5 fields (T5X names): vocab_size, emb_dim, num_heads, head_dim, mlp_dim, num_encoder_layers,
  num_decoder_layers, mlp_activations, logits_via_embedding, relpos_*, dropout_rate, dtype,
  layer_norm_epsilon, architecture, remat_policy. The defaults of every other field reproduce T5.

  Family fields:
    family: "t5", "llama", "mistral", "qwen2", ... (selects the checkpoint name mapping).
    num_kv_heads: key/value heads (grouped-query attention); None = num_heads.
    position_embedding: "relative" (T5), "rope", "learned" or "alibi" (see PositionEmbedding).
      Decoder-only token positions are ranks among a row's valid positions (prompts included),
      so left padding changes nothing; "learned" looks row position + position_offset up in the table
      (BART's offset is 2), "alibi" biases each key by -slope * (its position) per head.
    position_offset: added to positions before the learned-position lookup.
    norm_kind: "rms" (RMS norm, `scale`) or "layer" (LayerNorm, `scale` and `bias`), for every
      norm of the model (pre-attention, pre-MLP, final, embedding).
    embedding_norm: a norm (`embedding_norm`) on each stack's inputs, after the learned
      positions are added (BLOOM's word_embeddings_layernorm, BART's layernorm_embedding); it
      also normalizes prompt rows spliced in at the embedding seam, as Hugging Face does with
      `inputs_embeds`.
    rope_theta / rope_scaling: rotary base and Hugging Face-style scaling, as sorted
      (key, value) pairs, e.g. (("factor", 8.0), ..., ("rope_type", "llama3")); () = none.
    attention_bias: query/key/value projections have biases (Qwen2).
    attention_out_bias / mlp_bias: the attention output / MLP projections have biases.
    scale_attention: queries are scaled by head_dim**-0.5 at run time (T5 folds it into the
      query initialisation instead).
    sliding_window: keys more than this many positions behind a query are hidden (Mistral).
    rescale_tied_logits: a tied head (logits_via_embedding) divides by sqrt(emb_dim) (T5 1.0).
    zero_is_padding: token id 0 means padding (T5X's convention). False for the LLM families,
      whose id 0 is a real token: padding comes from an attention mask there.
    bos_token_id / eos_token_ids / pad_token_id: the checkpoint's special tokens (eos may be
      several ids; generation stops at any of them).
    max_position_embeddings: the context length the checkpoint was trained for (the learned
      position table's rows without position_offset; informational otherwise).
    norm_position: "pre" or "post" (see NORM_POSITIONS); the parameter names stay the same
      (a post-norm block's `pre_attention_layer_norm` normalizes after the attention residual).
    final_logits_bias: the output projection adds a frozen per-token bias
      `decoder/final_logits_bias` [vocab] (BART's buffer).
    decoder_start_token_id: the token an encoder-decoder's decoder starts from (T5: 0, BART: 2).
    forced_bos_token_id / forced_eos_token_id: generation forces this first / last token
      (BART); None: none.
    generation_defaults: the checkpoint's decoding settings (`GenerationDefaults`).

  Gemma-style fields (defaults: off, so T5 / Llama trees and numbers are unchanged):
    embedding_scale: token embeddings are multiplied by this (cast to the activation dtype, as
      Hugging Face does), e.g. sqrt(emb_dim) for Gemma; prompts spliced in after the lookup are
      not scaled. 1.0: no multiplication.
    norm_scale_offset: every RMS norm multiplies by (offset + scale); Gemma's norms store w and
      multiply by (1 + w), so its parameters keep Hugging Face's values (offset 1.0).
    qk_norm: queries and keys are RMS-normalized per head (over head_dim, params
      `query_norm/scale`, `key_norm/scale` [head_dim]) before the rotation.
    sandwich_norms: the attention and MLP outputs are normalized again before the residual add
      (`post_self_attention_layer_norm`, `post_mlp_layer_norm`).
    query_pre_attn_scalar: with scale_attention, logits are scaled by this**-0.5 instead of
      head_dim**-0.5.
    layer_types: per decoder layer, one of LAYER_TYPES; () = every layer "sliding_attention"
      when sliding_window is set (Mistral), else "full_attention".
    rope_local_theta: rotary base of the "sliding_attention" layers, which are then not scaled
      (Gemma 3's rope_local_base_freq); None = rope_theta / rope_scaling everywhere.
    final_logit_softcapping: logits become cap * tanh(logits / cap); None = off.
  """

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  # ("gelu", "linear") is T5 1.1's gated GELU (`wi_0`, `wi_1`); ("relu",) is T5 1.0 (`wi`);
  # ("silu", "linear") is Llama's SwiGLU (gate, up).
  mlp_activations: Sequence[str] = ("gelu", "linear")
  # T5 1.0 computes logits with the shared embedding (scaled by emb_dim**-0.5); 1.1 has `logits_dense`.
  logits_via_embedding: bool = False
  relpos_num_buckets: int = 32
  relpos_max_distance: int = 128
  dropout_rate: float = 0.0
  dtype: str = "float32"  # activation dtype; parameters stay float32.
  layer_norm_epsilon: float = 1e-6
  architecture: Architecture = "encoder_decoder"
  remat_policy: str = "none"  # Training memory vs. time; see REMAT_POLICIES.
  family: str = "t5"
  num_kv_heads: Optional[int] = None
  position_embedding: PositionEmbedding = "relative"
  rope_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, Any], ...] = ()
  attention_bias: bool = False
  attention_out_bias: bool = False
  mlp_bias: bool = False
  scale_attention: bool = False
  sliding_window: Optional[int] = None
  rescale_tied_logits: bool = True
  zero_is_padding: bool = True
  bos_token_id: Optional[int] = None
  eos_token_ids: tuple[int, ...] = (1,)
  pad_token_id: Optional[int] = 0
  max_position_embeddings: Optional[int] = None
  position_offset: int = 0
  norm_kind: NormKind = "rms"
  embedding_norm: bool = False
  norm_position: str = "pre"
  final_logits_bias: bool = False
  decoder_start_token_id: int = 0
  forced_bos_token_id: Optional[int] = None
  forced_eos_token_id: Optional[int] = None
  generation_defaults: GenerationDefaults = GenerationDefaults()
  embedding_scale: float = 1.0
  norm_scale_offset: float = 0.0
  qk_norm: bool = False
  sandwich_norms: bool = False
  query_pre_attn_scalar: Optional[float] = None
  layer_types: tuple[str, ...] = ()
  rope_local_theta: Optional[float] = None
  final_logit_softcapping: Optional[float] = None

  def __post_init__(self):
    if isinstance(self.generation_defaults, Mapping):  # As a saved config (JSON) holds it.
      object.__setattr__(self, "generation_defaults",
                         GenerationDefaults(**self.generation_defaults))
    if self.dtype not in _DTYPES:
      raise ValueError(f"ModelConfig.dtype={self.dtype!r} is not supported; use one of "
                       f"{sorted(_DTYPES)} (ACTIVATION_DTYPE in gin).")
    if self.architecture not in ("encoder_decoder", "decoder_only"):
      raise ValueError(
          f"ModelConfig.architecture={self.architecture!r}; use 'encoder_decoder' or "
          "'decoder_only'.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"ModelConfig.remat_policy={self.remat_policy!r}; use one of "
                       f"{REMAT_POLICIES} (REMAT_POLICY in gin).")
    if self.position_embedding not in POSITION_EMBEDDINGS:
      raise ValueError(f"ModelConfig.position_embedding={self.position_embedding!r}; use one of "
                       f"{POSITION_EMBEDDINGS}.")
    if self.norm_kind not in NORM_KINDS:
      raise ValueError(f"ModelConfig.norm_kind={self.norm_kind!r}; use one of {NORM_KINDS}.")
    if self.position_embedding == "learned" and not self.max_position_embeddings:
      raise ValueError("ModelConfig.position_embedding='learned' needs max_position_embeddings "
                       "(the rows of the position table, without position_offset).")
    if self.position_offset < 0:
      raise ValueError(f"ModelConfig.position_offset={self.position_offset}; use an offset >= 0.")
    if self.norm_position not in NORM_POSITIONS:
      raise ValueError(f"ModelConfig.norm_position={self.norm_position!r}; use one of "
                       f"{NORM_POSITIONS}.")
    kv_heads = self.kv_heads
    if kv_heads < 1 or self.num_heads % kv_heads:
      raise ValueError(f"ModelConfig: num_heads={self.num_heads} must be a multiple of "
                       f"num_kv_heads={self.num_kv_heads} (grouped-query attention).")
    if self.sliding_window is not None and self.sliding_window < 1:
      raise ValueError(f"ModelConfig.sliding_window={self.sliding_window}; use a positive "
                       "window or None.")
    object.__setattr__(self, "layer_types", tuple(self.layer_types))
    unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
    if unknown:
      raise ValueError(f"ModelConfig.layer_types has {unknown}; use {LAYER_TYPES}.")
    if self.layer_types and len(self.layer_types) != self.num_decoder_layers:
      raise ValueError(f"ModelConfig.layer_types lists {len(self.layer_types)} layers, but "
                       f"num_decoder_layers={self.num_decoder_layers}; give one per layer.")
    if "sliding_attention" in self.layer_types and self.sliding_window is None:
      raise ValueError("ModelConfig.layer_types has sliding_attention layers but "
                       "sliding_window is None; set the window.")
    if self.final_logit_softcapping is not None and self.final_logit_softcapping <= 0:
      raise ValueError(f"ModelConfig.final_logit_softcapping={self.final_logit_softcapping}; "
                       "use a positive cap or None.")
    eos = self.eos_token_ids
    eos = (eos,) if isinstance(eos, int) else tuple(int(e) for e in eos)
    object.__setattr__(self, "eos_token_ids", eos)
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    scaling = self.rope_scaling
    if isinstance(scaling, Mapping):
      scaling = scaling.items()
    object.__setattr__(self, "rope_scaling", tuple(sorted((str(k), v) for k, v in scaling)))
    rope_type = self.rope_scaling_dict.get("rope_type", "default")
    if rope_type not in ROPE_TYPES:
      raise ValueError(f"rope scaling type {rope_type!r} is not supported; supported: "
                       f"{ROPE_TYPES}.")

  @property
  def activation_dtype(self) -> jnp.dtype:
    return _DTYPES[self.dtype]

  @property
  def kv_heads(self) -> int:
    """Number of key/value heads (num_heads unless grouped-query attention)."""
    return self.num_heads if self.num_kv_heads is None else int(self.num_kv_heads)

  @property
  def joined_kv(self) -> int:
    return self.num_heads * self.head_dim

  def is_sliding_layer(self, index: int) -> bool:
    """Whether decoder layer `index` attends through the sliding window (see layer_types)."""
    if self.layer_types:
      return self.layer_types[index] == "sliding_attention"
    return self.sliding_window is not None

  @property
  def position_table_size(self) -> int:
    """Rows of the learned position table: max_position_embeddings + position_offset."""
    return int(self.max_position_embeddings or 0) + self.position_offset

  @property
  def rope_scaling_dict(self) -> dict[str, Any]:
    return dict(self.rope_scaling)

  @property
  def eos_id(self) -> int:
    """The first end-of-sequence id (the one appended to targets)."""
    return self.eos_token_ids[0]

  @property
  def output_pad_id(self) -> int:
    """Id written after EOS in generated outputs: the pad id, else the first EOS id."""
    return self.pad_token_id if self.pad_token_id is not None else self.eos_id

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)


# The name T5X users and gin files know (`model_config.T5Config` in configs/architectures).
T5Config = ModelConfig
