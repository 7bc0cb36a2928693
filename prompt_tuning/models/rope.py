"""Rotary position embeddings (RoPE) with the scalings Llama-family checkpoints use.

Queries and keys are rotated in pairs of features (i, i + head_dim / 2) by the angle
position * inv_freq[i] (Hugging Face's "rotate half" layout, the layout of every Hugging Face
checkpoint; GGUF files store Llama's Q/K rows interleaved and the reader undoes that).
Positions are per token ([batch, T]), so left padding and prompts shift nothing: each real
token's position is its rank among its row's real positions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, theta: float,
                        scaling: Mapping[str, Any] | None = None) -> np.ndarray:
  """float32 [head_dim / 2]: the rotation speed of each feature pair.

  `scaling` is a Hugging Face `rope_scaling` dict: {"rope_type": "linear", "factor": f}
  divides every frequency by f; "llama3" (Llama 3.1+) divides only the low frequencies
  (wavelengths longer than original_max_position_embeddings / low_freq_factor) by `factor`
  and blends smoothly up to the high-frequency band, which keeps its speed.
  """
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}.")
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
  inv_freq = 1.0 / (theta ** exponents)
  scaling = dict(scaling or {})
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type == "default":
    return inv_freq.astype(np.float32)
  factor = float(scaling["factor"])
  if rope_type == "linear":
    return (inv_freq / factor).astype(np.float32)
  if rope_type == "llama3":
    low_freq_factor = float(scaling["low_freq_factor"])
    high_freq_factor = float(scaling["high_freq_factor"])
    context = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * math.pi / inv_freq
    low_freq_wavelength = context / low_freq_factor
    high_freq_wavelength = context / high_freq_factor
    scaled = np.where(wavelength > low_freq_wavelength, inv_freq / factor, inv_freq)
    smooth = (context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength)
    return np.where(is_medium, blended, scaled).astype(np.float32)
  raise ValueError(f"rope scaling type {rope_type!r} is not supported; use 'default', "
                   "'linear' or 'llama3'.")


def rotate(x_BNTH: jax.Array, positions_BT: jax.Array, inv_freq_F: np.ndarray) -> jax.Array:
  """Rotates heads-major queries or keys [batch, heads, T, head_dim] to their positions [B, T].

  Angles are computed in float32; the result has x's dtype.
  """
  angles_BTF = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_F)
  cos_B1TF = jnp.cos(angles_BTF)[:, None]
  sin_B1TF = jnp.sin(angles_BTF)[:, None]
  x32 = x_BNTH.astype(jnp.float32)
  half = x32.shape[-1] // 2
  first, second = x32[..., :half], x32[..., half:]
  rotated = jnp.concatenate([first * cos_B1TF - second * sin_B1TF,
                             second * cos_B1TF + first * sin_B1TF], axis=-1)
  return rotated.astype(x_BNTH.dtype)
