"""Deep (per-layer) prompts, P-tuning v2 style.

A learned prompt [P, D] per selected layer replaces the hidden states at the P prompt positions
of that layer's input; at layer 0 those positions hold the input-level prompt (placed by the
prompt model), whose own parameter is separate. The stacks apply it through their
`layer_inputs_fn` seam (`Encoder`, `Decoder.__call__`, `Decoder.decode_step`).

Parameter: `prompt` [num selected layers, P, D], logical axes ("layers", "prompt",
"prompt_embed"), held by a module named `deep_prompt` (e.g. `encoder/deep_prompt/prompt`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning import prompts
from prompt_tuning.models.layers import param_with_axes

Initializer = prompts.Initializer
DEEP_PROMPT_AXES = ("layers",) + prompts.PROMPT_AXES
# `fn(layer_index, x_BTD, first_position)` -> x_BTD, the stacks' per-layer seam.
LayerInputsFn = Callable[[int, jax.Array, "jax.Array | int"], jax.Array]


def replace_positions(x_BTD: jax.Array, prompt_BPD: jax.Array, start_B: jax.Array | int,
                      first_position: jax.Array | int = 0) -> jax.Array:
  """Overwrites x at sequence positions [start, start + P) with the prompt rows.

  Args:
    x_BTD: hidden states [batch, T, D] holding sequence positions first_position + [0, T).
    prompt_BPD: [batch, P, D] or [P, D] (same for every example).
    start_B: where each example's prompt starts, int [batch] or a scalar (0 for a prefix
      prompt, 1 after BOS, ...).
    first_position: sequence position of x's first row (a decoding step's cache index).

  Returns:
    [batch, T, D]: x with row t replaced by prompt row (first_position + t - start) where that
    index is in [0, P); rows outside the prompt span are unchanged.
  """
  batch, length, width = x_BTD.shape
  given_shape = prompt_BPD.shape
  if prompt_BPD.ndim == 2:
    prompt_BPD = jnp.broadcast_to(prompt_BPD, (batch,) + prompt_BPD.shape)
  if prompt_BPD.ndim != 3 or prompt_BPD.shape[0] != batch or prompt_BPD.shape[2] != width:
    raise ValueError(
        f"Deep prompt of shape {given_shape} does not fit hidden states of shape "
        f"{x_BTD.shape}; the prompt must be [P, D] or [batch, P, D] with the same batch and D.")
  prompt_length = prompt_BPD.shape[1]
  start_B = jnp.broadcast_to(jnp.asarray(start_B, jnp.int32), (batch,))
  offset_BT = first_position + jnp.arange(length)[None, :] - start_B[:, None]
  inside_BT = (offset_BT >= 0) & (offset_BT < prompt_length)
  rows_BTD = jnp.take_along_axis(prompt_BPD, jnp.clip(offset_BT, 0, prompt_length - 1)[..., None],
                                 axis=1)
  return jnp.where(inside_BT[..., None], rows_BTD.astype(x_BTD.dtype), x_BTD)


def layer_inputs_fn(prompts_LPD: jax.Array, layers: Sequence[int],
                    start_B: jax.Array | int = 0) -> LayerInputsFn:
  """The stacks' seam that injects `prompts_LPD[k]` at the input of layer `layers[k]`.

  Args:
    prompts_LPD: [len(layers), P, D] or [len(layers), batch, P, D] per-layer prompts.
    layers: indices of the layers that receive a prompt, e.g. (1, 2, 3).
    start_B: where the prompt positions start in each example (see `replace_positions`).
  """
  layers = tuple(int(layer) for layer in layers)
  if len(layers) != prompts_LPD.shape[0]:
    raise ValueError(
        f"Deep prompts have {prompts_LPD.shape[0]} layers (shape {prompts_LPD.shape}) but "
        f"layers={layers} selects {len(layers)}; give one prompt per selected layer.")
  slot = {layer: k for k, layer in enumerate(layers)}

  def fn(layer_index: int, x_BTD: jax.Array, first_position: jax.Array | int) -> jax.Array:
    if layer_index not in slot:
      return x_BTD
    return replace_positions(x_BTD, prompts_LPD[slot[layer_index]], start_B, first_position)

  return fn


class DeepPrompt(nn.Module):
  """Per-layer prompts [len(layers), P, D] for the layers `layers` of one stack.

  Attributes:
    length: prompt length P (the input-level prompt's length).
    embed_dim: model width D.
    layers: stack layers that receive a prompt at their input. Layer 0's input already holds
      the input-level prompt, so P-tuning v2 selects layers 1..L-1 (layer 0 may be listed too;
      its deep prompt then overwrites the input-level prompt's rows).
    prompt_init: `(rng, shape) -> array` for the [len(layers), P, D] parameter.
    dtype: activation dtype the prompts are cast to.
  """

  length: int
  embed_dim: int
  layers: Sequence[int]
  prompt_init: Initializer = prompts.uniform(0.5)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    """The prompts [len(layers), P, D] in the activation dtype."""
    shape = (len(tuple(self.layers)), self.length, self.embed_dim)

    def init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
      value = jnp.asarray(self.prompt_init(rng, shape), dtype)
      if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"Deep prompt initializer returned shape {tuple(value.shape)}, expected "
            f"{tuple(shape)} = (len(layers), length, embed_dim).")
      return value

    prompts_LPD = param_with_axes(self, "prompt", init, shape, DEEP_PROMPT_AXES)
    return jnp.asarray(prompts_LPD, self.dtype)

  def layer_inputs_fn(self, start_B: jax.Array | int = 0) -> LayerInputsFn:
    """The stacks' seam injecting these prompts, whose span starts at `start_B`."""
    return layer_inputs_fn(self(), self.layers, start_B)


def encode_with_deep_prompts(model: nn.Module, embedded_BTD: jax.Array, mask_BT: jax.Array,
                             prompts_LPD: jax.Array, layers: Sequence[int],
                             start_B: jax.Array | int = 0, enable_dropout: bool = False,
                             **encoder_kwargs) -> jax.Array:
  """`model.encode_embedded` (an EncoderDecoder seam) with deep prompts injected.

  `embedded_BTD` must already hold the input-level prompt at positions [start, start + P).
  """
  return model.encode_embedded(embedded_BTD, mask_BT, enable_dropout,
                               layer_inputs_fn=layer_inputs_fn(prompts_LPD, layers, start_B),
                               **encoder_kwargs)


def maybe_layer_inputs_fn(deep_prompt: Optional[DeepPrompt],
                          start_B: jax.Array | int = 0) -> Optional[LayerInputsFn]:
  """`deep_prompt.layer_inputs_fn(start_B)`, or None when there is no deep prompt."""
  return None if deep_prompt is None else deep_prompt.layer_inputs_fn(start_B)
