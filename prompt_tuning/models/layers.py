"""Building blocks of the T5 layer family: embedding, RMS norm, dense kernels, gated MLP.

Every parameter carries T5X logical axis names through `nn.with_logical_partitioning`, so
`nn.get_partition_spec` / `flax.linen.logical_to_mesh_sharding` can shard it with one rules table.
Parameters are stored in float32; computation runs in the configured activation dtype.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

# T5X / Flaxformer defaults.
default_embed_init = nn.initializers.normal(stddev=1.0)
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def param_with_axes(module: nn.Module, name: str, init: Initializer, shape: Sequence[int],
                    axes: Sequence[str]) -> jax.Array:
  """Declares a float32 parameter annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape),
                      jnp.float32)


class Embed(nn.Module):
  """Token embedding table `embedding` [vocab, embed], also usable as a tied output head."""

  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32
  embedding_init: Initializer = default_embed_init

  def setup(self):
    self.embedding = param_with_axes(self, "embedding", self.embedding_init,
                                     (self.num_embeddings, self.features), ("vocab", "embed"))

  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    """Looks up token ids [batch, length] -> [batch, length, embed]."""
    if not jnp.issubdtype(tokens_BT.dtype, jnp.integer):
      raise ValueError(f"Embed expects integer token ids, got dtype {tokens_BT.dtype}.")
    return jnp.take(self.embedding, tokens_BT, axis=0).astype(self.dtype)

  def attend(self, x_BTD: jax.Array) -> jax.Array:
    """Scores [batch, length, embed] against every embedding row -> [batch, length, vocab] float32."""
    return jnp.einsum("btd,vd->btv", x_BTD, self.embedding.astype(self.dtype),
                      preferred_element_type=jnp.float32)


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction and no bias; statistics in float32."""

  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = param_with_axes(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    return (x32 * jax.lax.rsqrt(variance + self.epsilon) * scale).astype(self.dtype)


class Dense(nn.Module):
  """Bias-free projection of the last axis with a 2-D `kernel` [in, out] (Flaxformer's layout)."""

  features: int
  kernel_axes: tuple[str, str]
  dtype: jnp.dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = param_with_axes(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                             self.kernel_axes)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda x: x,
    "relu": nn.relu,
    # T5 1.1's "gelu" is the tanh approximation (HF calls it gelu_new).
    "gelu": lambda x: nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),
    "silu": nn.silu,
}


@functools.partial(jax.checkpoint, static_argnums=(0,))
def _gated_activation(activations: tuple[str, ...], *projected_BTF: jax.Array) -> jax.Array:
  """Product of each projection's activation, e.g. gelu(x wi_0) * (x wi_1) -> [batch, T, mlp].

  Rematerialised: the backward pass keeps only the projections and recomputes the cheap
  element-wise activations, instead of also storing their [batch, T, mlp] results (for T5-small
  training this saves 2 of the 4 MLP-sized buffers per layer, ~75 MB).
  """
  hidden_BTF = None
  for activation, x_BTF in zip(activations, projected_BTF):
    x_BTF = _ACTIVATIONS[activation](x_BTF)
    hidden_BTF = x_BTF if hidden_BTF is None else hidden_BTF * x_BTF
  return hidden_BTF


class MlpBlock(nn.Module):
  """Position-wise MLP: `wi` (one activation) or gated `wi_0`, `wi_1`, ... then `wo`.

  With activations ("gelu", "linear") this is T5 1.1's gated GELU: gelu(x wi_0) * (x wi_1).
  """

  intermediate_dim: int
  activations: Sequence[str] = ("gelu", "linear")
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD: jax.Array, deterministic: bool = True) -> jax.Array:
    unknown = [a for a in self.activations if a not in _ACTIVATIONS]
    if unknown:
      raise ValueError(f"Unknown MLP activation(s) {unknown}; choose from {sorted(_ACTIVATIONS)}.")
    projected = [
        Dense(self.intermediate_dim, ("embed", "mlp"), self.dtype,
              name="wi" if len(self.activations) == 1 else f"wi_{index}")(x_BTD)
        for index in range(len(self.activations))]
    hidden_BTF = _gated_activation(tuple(self.activations), *projected)
    # Dropout on the hidden activations, broadcast over the length axis (T5X).
    hidden_BTF = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        hidden_BTF, deterministic=deterministic)
    return Dense(x_BTD.shape[-1], ("mlp", "embed"), self.dtype, name="wo")(hidden_BTF)
