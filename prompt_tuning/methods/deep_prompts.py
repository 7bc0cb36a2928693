"""Deep (per-layer) prompts, P-tuning v2 style.

A learned prompt [P, D] per selected layer replaces the hidden states at the P prompt positions
of that layer's input; at layer 0 those positions hold the input-level prompt (placed by the
prompt model, like prompt tuning's). The stacks apply it through their `layer_inputs_fn` seam
(`Encoder`, `Decoder.__call__`, `Decoder.decode_step`): encoder-decoder models get deep prompts
in the encoder (the only stack with prompt positions), decoder-only models in the decoder.

`DeepPromptMethod` is the prompt method `prompt_tuning.layers` plugs in (built from
`DeepPromptConfig`, bound in configs/architectures/deep_prompts.gin). Its parameters live
inside the prompt model's method scope, so the trainable regex `.*/prompt/.*` selects both:
  `encoder/prompt/prompt/prompt` [P, D]: the input prompt, at prompt tuning's path (released
    prompts and `load_model(...).logits(prompt=...)` apply to it unchanged);
  `encoder/prompt/prompt/deep/prompt` [len(layers), P, D], axes ("layers", "prompt",
    "prompt_embed"): the per-layer prompts (decoder-only: `decoder/prompt/prompt/...`).

Cached decoding (decoder-only): the prompt positions are written by the prefill, which applies
the per-layer prompts; later steps sit after the prompt, where `replace_positions` changes
nothing, so the cache holds exactly the keys/values of the uncached forward.
"""

from __future__ import annotations

import dataclasses
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


def resolve_layers(layers: Optional[Sequence[int]], num_layers: int) -> tuple[int, ...]:
  """The selected layer indices: `layers`, or every layer after the first (1..L-1) when None."""
  if layers is None:
    return tuple(range(1, num_layers))
  resolved = tuple(int(layer) for layer in layers)
  bad = [layer for layer in resolved if not 0 <= layer < num_layers]
  if bad or len(set(resolved)) != len(resolved):
    raise ValueError(
        f"Deep prompt layers={resolved} must be distinct indices in [0, {num_layers}) (the stack "
        f"has {num_layers} layers); set DEEP_PROMPT_LAYERS / DeepPromptConfig.layers accordingly "
        "or None for every layer after the first.")
  return resolved


class DeepPromptMethod(nn.Module):
  """Prompt method with deep prompts: an input prompt [P, D] plus per-layer prompts.

  Satisfies `prompt_tuning.layers.PromptMethod` and adds the two optional members the prompt
  stacks look for: `for_stack(embed_dim, num_layers)` (fills in the stack's width and depth)
  and `layer_inputs_fn(start_B)` (the stack's per-layer seam).

  Attributes:
    length: prompt length P.
    layers: stack layers that receive a deep prompt (None: 1..L-1; see `DeepPrompt.layers`).
    initializer: `(rng, [P, D]) -> array` for the input prompt `prompt`.
    deep_initializer: `(rng, [len(layers), P, D]) -> array` for `deep/prompt`.
    embed_dim, num_layers: the stack's width D and depth L (set by `for_stack`).
  """

  length: int
  layers: Optional[tuple[int, ...]] = None
  initializer: Initializer = prompts.uniform()
  deep_initializer: Initializer = prompts.uniform()
  embed_dim: Optional[int] = None
  num_layers: Optional[int] = None

  def for_stack(self, embed_dim: int, num_layers: int) -> "DeepPromptMethod":
    """An unbound copy sized for a stack of `num_layers` layers of width `embed_dim`."""
    return self.clone(parent=None, embed_dim=int(embed_dim), num_layers=int(num_layers))

  def _check_sized(self) -> None:
    if self.embed_dim is None or self.num_layers is None:
      raise ValueError(
          "DeepPromptMethod needs the stack's embed_dim and num_layers: plug it into a prompt "
          "model (prompt_tuning.layers.build_prompt_model / PromptEncoderDecoder / "
          "PromptDecoderOnly), which calls for_stack, or call for_stack(embed_dim, num_layers).")

  def setup(self):
    if self.embed_dim is None or self.num_layers is None:
      return  # Not sized yet (a template the stacks copy); using it raises in _check_sized.
    init = self.initializer

    def prompt_init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
      value = jnp.asarray(init(rng, shape), dtype)
      if tuple(value.shape) != tuple(shape):
        raise ValueError(f"Input prompt initializer returned shape {tuple(value.shape)}, "
                         f"expected {tuple(shape)} = (length, embed_dim).")
      return value

    self.prompt_PD = param_with_axes(self, "prompt", prompt_init, (self.length, self.embed_dim),
                                     prompts.PROMPT_AXES)
    self.deep = DeepPrompt(self.length, self.embed_dim,
                           resolve_layers(self.layers, self.num_layers), self.deep_initializer)

  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array) -> jax.Array:
    """Tokens [B, T] and embeddings [B, T, D] -> the input prompt [B, P, D] (activation dtype)."""
    self._check_sized()
    if embedded_BTD.shape[-1] != self.embed_dim:
      raise ValueError(f"Embeddings of width {embedded_BTD.shape[-1]} do not fit a deep prompt "
                       f"of width embed_dim={self.embed_dim}; size it with the model's emb_dim.")
    batch = embedded_BTD.shape[0]
    return jnp.broadcast_to(self.prompt_PD.astype(embedded_BTD.dtype)[None],
                            (batch,) + self.prompt_PD.shape)

  def layer_inputs_fn(self, start_B: jax.Array | int = 0) -> LayerInputsFn:
    """The stack's seam: deep prompts over rows [start, start + P) of the selected layers."""
    self._check_sized()
    return self.deep.layer_inputs_fn(start_B)


@dataclasses.dataclass(frozen=True)
class DeepPromptConfig:
  """Deep prompts as a prompt method for `prompt_tuning.layers.build_prompt_model` / gin.

  Same contract as `prompt_tuning.prompts.PromptConfig` (length, placement,
  decoder_attends_to_prompt, `make_method()`). Bound in configs/architectures/deep_prompts.gin.

  Attributes:
    length: prompt length P (input prompt and every per-layer prompt).
    layers: layers of the prompted stack (the encoder; decoder-only: the decoder) that get a
      deep prompt; None = every layer after the first.
    initializer / deep_initializer: see `DeepPromptMethod`.
    placement: one of `prompts.PLACEMENTS` (encoder-decoder; decoder-only uses "prefix").
    decoder_attends_to_prompt: False hides the prompt positions from cross-attention.
  """

  method: str = "deep_prompts"
  length: int = 100
  layers: Optional[tuple[int, ...]] = None
  initializer: Initializer = prompts.uniform()
  deep_initializer: Initializer = prompts.uniform()
  placement: str = "prefix"
  decoder_attends_to_prompt: bool = True

  def __post_init__(self):
    if self.method != "deep_prompts":
      raise ValueError(f"DeepPromptConfig.method={self.method!r}; it describes 'deep_prompts' "
                       "only.")
    if self.placement not in prompts.PLACEMENTS:
      raise ValueError(f"DeepPromptConfig.placement={self.placement!r}; use one of "
                       f"{prompts.PLACEMENTS}.")
    if self.length < 0:
      raise ValueError(f"DeepPromptConfig.length={self.length} must be >= 0.")
    if self.layers is not None:  # Hashable (the module is a static jit argument).
      object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))

  def make_method(self) -> DeepPromptMethod:
    """The (unbound) prompt module; the prompt stack sizes it with `for_stack`."""
    return DeepPromptMethod(self.length, self.layers, self.initializer, self.deep_initializer)
