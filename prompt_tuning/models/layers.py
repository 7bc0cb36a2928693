"""Building blocks shared by every model family: embeddings, norms, dense kernels, (gated) MLP.

Every parameter carries T5X logical axis names through `nn.with_logical_partitioning`, so
`nn.get_partition_spec` / `flax.linen.logical_to_mesh_sharding` can shard it with one rules table.
Parameters are created in float32 (frozen ones may be held in bfloat16, see `weight_dot`);
computation runs in the configured activation dtype.
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
  """Embedding table `embedding` [vocab, embed], also usable as a tied output head.

  `axes` name its two axes: ("vocab", "embed") for tokens, ("abspos_buckets", "embed") for a
  learned position table.
  """

  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32
  embedding_init: Initializer = default_embed_init
  axes: tuple[str, str] = ("vocab", "embed")

  def setup(self):
    self.embedding = param_with_axes(self, "embedding", self.embedding_init,
                                     (self.num_embeddings, self.features), self.axes)

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
  """RMS norm (T5's layer norm, Llama's RMSNorm): scale only, no mean subtraction, no bias.

  Statistics and the scale multiplication run in float32, then the result is cast. With
  `scale_offset` the multiplier is (scale_offset + scale) (Gemma's (1 + w); `scale` then starts
  at 0). `axis_name` names the normalized axis ("embed"; "kv" for per-head query/key norms).
  """

  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  scale_offset: float = 0.0
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.zeros if self.scale_offset else nn.initializers.ones
    scale = param_with_axes(self, "scale", init, (x.shape[-1],), (self.axis_name,))
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    multiplier = scale.astype(jnp.float32)
    if self.scale_offset:
      multiplier = jnp.float32(self.scale_offset) + multiplier
    return (x32 * jax.lax.rsqrt(variance + self.epsilon) * multiplier).astype(self.dtype)


class LayerNorm(nn.Module):
  """LayerNorm with a learned `scale` and `bias` (GPT-2, BLOOM, BART).

  Mean and (biased) variance over the last axis in float32, then scale and bias; the result is
  cast to `dtype`.
  """

  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    scale = param_with_axes(self, "scale", nn.initializers.ones, features, ("embed",))
    bias = param_with_axes(self, "bias", nn.initializers.zeros, features, ("embed",))
    x32 = x.astype(jnp.float32)
    centered = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
    return (centered * jax.lax.rsqrt(variance + self.epsilon) * scale + bias).astype(self.dtype)


# `ModelConfig.norm_kind` -> the norm module (constructed with `epsilon` and `dtype`).
NORMS: dict[str, type[nn.Module]] = {"rms": RMSNorm, "layer": LayerNorm}


def _cast_dot(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype) -> jax.Array:
  return jnp.dot(x.astype(dtype), kernel.astype(dtype))


def _after(anchor: jax.Array, x: jax.Array) -> jax.Array:
  """`x` unchanged, but computed only once `anchor` exists.

  Adds an exact zero derived from one element of `anchor`, so XLA can neither run the work
  producing `x` early (e.g. every layer's at the start of the program, all held at once) nor
  merge it with an identical computation elsewhere (the forward pass's copy). XLA's CPU pipeline
  drops optimization barriers before scheduling, so they cannot do this there.
  """
  zero = jnp.nan_to_num(anchor.reshape(-1)[0].astype(jnp.float32)) * 0
  return x + zero.astype(x.dtype)


def _cast_when_ready(kernel: jax.Array, dtype: jnp.dtype, anchor: jax.Array) -> jax.Array:
  """`kernel` cast to `dtype` when `anchor` (the layer's input or incoming gradient) exists."""
  return _after(anchor, kernel.astype(dtype))


def _cast_when_used_dot(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype) -> jax.Array:
  return jnp.dot(x.astype(dtype), _cast_when_ready(kernel, dtype, x))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cast_dot_recast(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype) -> jax.Array:
  return _cast_when_used_dot(x, kernel, dtype)


def _cast_dot_recast_fwd(x, kernel, dtype):
  return _cast_when_used_dot(x, kernel, dtype), (x, kernel)


def _cast_dot_recast_bwd(dtype, residuals, grad_out):
  x_in, kernel = residuals
  kernel_cast = _cast_when_ready(kernel, dtype, grad_out)
  grad_x = jnp.einsum("...o,io->...i", grad_out, kernel_cast).astype(x_in.dtype)
  grad_kernel = jnp.einsum("...i,...o->io", x_in.astype(dtype), grad_out).astype(kernel.dtype)
  return grad_x, grad_kernel


_cast_dot_recast.defvjp(_cast_dot_recast_fwd, _cast_dot_recast_bwd)


def weight_dot(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """`x @ kernel` computed in `dtype`.

  A kernel stored in another dtype (bfloat16 frozen weights, float32 compute) is cast when the
  layer runs, and cast again for the backward pass rather than kept. Otherwise XLA casts every
  kernel up front and keeps the copies until the backward pass: the T5-small prompt-tuning step
  then needs 497 MB of temporaries instead of 259 MB with float32 weights; this way 317 MB, while
  the frozen weights themselves take 154 MB instead of 308 MB.
  """
  if kernel.dtype == jnp.dtype(dtype):
    return _cast_dot(x, kernel, dtype)
  return _cast_dot_recast(x, kernel, dtype)


class Dense(nn.Module):
  """Projection of the last axis with a 2-D `kernel` [in, out] (Flaxformer's layout).

  Bias-free unless `use_bias` (then `bias` [out], on the kernel's output axis), as T5 / Llama
  are bias-free and Qwen2's query/key/value projections are not.
  """

  features: int
  kernel_axes: tuple[str, str]
  dtype: jnp.dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = param_with_axes(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                             self.kernel_axes)
    y = weight_dot(x, kernel, self.dtype)
    if self.use_bias:
      bias = param_with_axes(self, "bias", nn.initializers.zeros, (self.features,),
                             self.kernel_axes[1:])
      y = y + bias.astype(y.dtype)
    return y


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda x: x,
    "relu": nn.relu,
    # T5 1.1's "gelu" is the tanh approximation (HF calls it gelu_new).
    "gelu": lambda x: nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),
    "silu": nn.silu,
}


def _apply_activations(activations: tuple[str, ...], *projected_BTF: jax.Array) -> jax.Array:
  """Product of each projection's activation, e.g. gelu(x wi_0) * (x wi_1) -> [batch, T, mlp]."""
  hidden_BTF = None
  for activation, x_BTF in zip(activations, projected_BTF):
    x_BTF = _ACTIVATIONS[activation](x_BTF)
    hidden_BTF = x_BTF if hidden_BTF is None else hidden_BTF * x_BTF
  return hidden_BTF


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gated_activation(activations: tuple[str, ...], *projected_BTF: jax.Array) -> jax.Array:
  """`_apply_activations` whose backward pass keeps only the projections [batch, T, mlp].

  The element-wise activations are recomputed from them when the gradient arrives, instead of
  also storing their results: for T5-small training this drops 2 of the 4 MLP-sized arrays kept
  per layer (~75 MB) and runs no slower (less memory traffic).
  """
  return _apply_activations(activations, *projected_BTF)


def _gated_activation_fwd(activations, *projected_BTF):
  return _apply_activations(activations, *projected_BTF), projected_BTF


def _gated_activation_bwd(activations, projected_BTF, grad_BTF):
  # Recomputed once the gradient arrives: done early, every layer's recomputed activations
  # would be held at once (~40 MB for T5-small).
  projected_BTF = tuple(_after(grad_BTF, x_BTF) for x_BTF in projected_BTF)
  _, vjp = jax.vjp(functools.partial(_apply_activations, activations), *projected_BTF)
  return vjp(grad_BTF)


_gated_activation.defvjp(_gated_activation_fwd, _gated_activation_bwd)


class MlpBlock(nn.Module):
  """Position-wise MLP: `wi` (one activation) or gated `wi_0`, `wi_1`, ... then `wo`.

  With activations ("gelu", "linear") this is T5 1.1's gated GELU: gelu(x wi_0) * (x wi_1).
  """

  intermediate_dim: int
  activations: Sequence[str] = ("gelu", "linear")
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  use_bias: bool = False

  @nn.compact
  def __call__(self, x_BTD: jax.Array, deterministic: bool = True) -> jax.Array:
    unknown = [a for a in self.activations if a not in _ACTIVATIONS]
    if unknown:
      raise ValueError(f"Unknown MLP activation(s) {unknown}; choose from {sorted(_ACTIVATIONS)}.")
    projected = [
        Dense(self.intermediate_dim, ("embed", "mlp"), self.dtype, use_bias=self.use_bias,
              name="wi" if len(self.activations) == 1 else f"wi_{index}")(x_BTD)
        for index in range(len(self.activations))]
    hidden_BTF = _gated_activation(tuple(self.activations), *projected)
    # Dropout on the hidden activations, broadcast over the length axis (T5X).
    hidden_BTF = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        hidden_BTF, deterministic=deterministic)
    return Dense(x_BTD.shape[-1], ("mlp", "embed"), self.dtype, use_bias=self.use_bias,
                 name="wo")(hidden_BTF)
