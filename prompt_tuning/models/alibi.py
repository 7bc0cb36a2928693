"""ALiBi (Press et al. 2022) as BLOOM uses it: a per-head linear bias on each key's position.

Head n adds slope_n * (key position) to its attention logits. Per query row this equals the
paper's -slope_n * (query - key) up to a constant, which softmax ignores, so the bias depends on
the keys only: [batch, heads, 1, S]. Positions are ranks among a row's valid positions (as
Hugging Face's BLOOM computes them from the attention mask, `cumsum(mask) - 1`), so left padding
and prompts placed before the tokens shift nothing, and a KV-cached step scores its keys exactly
as a full forward pass does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def slopes(num_heads: int) -> np.ndarray:
  """float32 [heads]: each head's slope.

  With 2^k heads: 2^(-8/2^k * (1..2^k)). Otherwise the 2^k slopes of the largest power of two
  below num_heads, then every other slope of 2^(k+1) heads (odd powers) for the rest, as the
  paper's reference code and BLOOM do.
  """
  if num_heads < 1:
    raise ValueError(f"ALiBi needs at least one head, got {num_heads}.")
  closest = 2 ** math.floor(math.log2(num_heads))
  base = np.float32(2.0 ** (-(2.0 ** -(math.log2(closest) - 3))))
  out = base ** np.arange(1, closest + 1, dtype=np.float32)
  if closest != num_heads:
    extra_base = np.float32(2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3))))
    remaining = min(closest, num_heads - closest)
    out = np.concatenate([out, extra_base ** np.arange(1, 2 * remaining, 2, dtype=np.float32)])
  return out.astype(np.float32)


def key_bias(key_positions_BS: jax.Array, slopes_N: np.ndarray) -> jax.Array:
  """float32 [batch, heads, 1, S]: slope of each head times each key's position [batch, S]."""
  return (jnp.asarray(slopes_N, jnp.float32)[None, :, None, None]
          * key_positions_BS.astype(jnp.float32)[:, None, None, :])
