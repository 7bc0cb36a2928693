"""Model hyper-parameters: one frozen dataclass shared by every architecture."""

from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import jax.numpy as jnp

Architecture = Literal["encoder_decoder", "decoder_only"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# What each transformer layer keeps for the backward pass (T5X's `remat_policy` names):
# "none" everything; "minimal" only its weight matmuls' outputs (the rest is recomputed);
# "full" only its input (the whole layer is recomputed).
REMAT_POLICIES = ("none", "minimal", "full")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shape and recipe of a T5-family model (T5 1.0, T5 1.1, mT5, T5X decoder-only).

  Field names follow T5X's `network.T5Config`; gin binds them from the size macros
  (EMBED_DIM, NUM_HEADS, ...) in `configs/architectures/*.gin`.
  """

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  # ("gelu", "linear") is T5 1.1's gated GELU (`wi_0`, `wi_1`); ("relu",) is T5 1.0 (`wi`).
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

  def __post_init__(self):
    if self.dtype not in _DTYPES:
      raise ValueError(f"T5Config.dtype={self.dtype!r} is not supported; use one of {sorted(_DTYPES)}.")
    if self.architecture not in ("encoder_decoder", "decoder_only"):
      raise ValueError(
          f"T5Config.architecture={self.architecture!r}; use 'encoder_decoder' or 'decoder_only'.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"T5Config.remat_policy={self.remat_policy!r}; use one of {REMAT_POLICIES} "
                       "(REMAT_POLICY in gin).")
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))

  @property
  def activation_dtype(self) -> jnp.dtype:
    return _DTYPES[self.dtype]

  @property
  def joined_kv(self) -> int:
    return self.num_heads * self.head_dim

  def replace(self, **changes) -> "T5Config":
    return dataclasses.replace(self, **changes)
