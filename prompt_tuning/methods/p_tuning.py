"""P-tuning (Liu et al. 2021, "GPT Understands, Too"): a prompt produced by a small encoder.

`PTuningPromptEncoder` holds P learned input embeddings [P, D] and maps them through either an
MLP (Linear-ReLU-Linear-ReLU-Linear, hidden size configurable) or a bidirectional multi-layer
LSTM followed by an MLP head (Linear(2H, 2H)-ReLU-Linear(2H, D)) to the [P, D] prompt. It
follows Hugging Face PEFT 0.21's `PromptEncoder` in semantics and parameter shapes; weights
convert one to one (torch `Linear.weight` [out, in] is our `kernel` [in, out]; an LSTM
direction's torch `weight_ih` / `weight_hh` [4H, in] are our `kernel_input` / `kernel_hidden`
transposed, and our `bias` is torch's `bias_ih + bias_hh`; gate order i, f, g, o).

The module satisfies the pluggable prompt protocol of `prompt_tuning.layers`:
`__call__(tokens_BT, embedded_BTD) -> prompt_BPD`. After training, `export_prompt(params)`
returns the produced [P, D] prompt so inference needs only a plain prompt, not the encoder.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import templates
from prompt_tuning.models.layers import param_with_axes

Reparameterization = Literal["mlp", "lstm"]

# Logical axes of the encoder's parameters (small; the rules table should replicate them).
EMBED_AXIS = "prompt_embed"
HIDDEN_AXIS = "prompt_hidden"


def uniform_fan_in(fan_in: int):
  """Initializer U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear and LSTM."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(rng: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(rng, shape, dtype, -bound, bound)
  return init


class Linear(nn.Module):
  """Affine map of the last axis: `kernel` [in, out] and `bias` [out] (torch-style Linear).

  Initialised as torch does (U(+-1/sqrt(in)) for both) unless `kernel_init` / `bias_init` say
  otherwise. Computes in float32.
  """

  features: int
  axes: tuple[str, str] = (EMBED_AXIS, HIDDEN_AXIS)
  kernel_init: Any = None
  bias_init: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = param_with_axes(self, "kernel", self.kernel_init or uniform_fan_in(fan_in),
                             (fan_in, self.features), self.axes)
    bias = param_with_axes(self, "bias", self.bias_init or uniform_fan_in(fan_in),
                           (self.features,), self.axes[1:])
    return jnp.dot(x.astype(jnp.float32), kernel) + bias


class LSTMDirection(nn.Module):
  """One direction of one LSTM layer over a [P, in] sequence -> hidden states [P, H].

  Parameters: `kernel_input` [in, 4H], `kernel_hidden` [H, 4H], `bias` [4H]; gates i, f, g, o;
  zero initial state. `reverse` runs from the last position to the first.
  """

  hidden_dim: int
  reverse: bool = False

  @nn.compact
  def __call__(self, x_PI: jax.Array) -> jax.Array:
    hidden = self.hidden_dim
    init = uniform_fan_in(hidden)  # torch initialises every LSTM weight with U(+-1/sqrt(H)).
    kernel_input = param_with_axes(self, "kernel_input", init, (x_PI.shape[-1], 4 * hidden),
                                   (EMBED_AXIS, HIDDEN_AXIS))
    kernel_hidden = param_with_axes(self, "kernel_hidden", init, (hidden, 4 * hidden),
                                    (HIDDEN_AXIS, HIDDEN_AXIS))
    bias = param_with_axes(self, "bias", init, (4 * hidden,), (HIDDEN_AXIS,))
    gates_in_P4H = jnp.dot(x_PI.astype(jnp.float32), kernel_input) + bias

    def step(carry, gates_in_4H):
      h_H, c_H = carry
      gates_4H = gates_in_4H + jnp.dot(h_H, kernel_hidden)
      i_H, f_H, g_H, o_H = jnp.split(gates_4H, 4)
      c_H = jax.nn.sigmoid(f_H) * c_H + jax.nn.sigmoid(i_H) * jnp.tanh(g_H)
      h_H = jax.nn.sigmoid(o_H) * jnp.tanh(c_H)
      return (h_H, c_H), h_H

    zeros_H = jnp.zeros((hidden,), jnp.float32)
    _, h_PH = jax.lax.scan(step, (zeros_H, zeros_H), gates_in_P4H, reverse=self.reverse)
    return h_PH


class PTuningPromptEncoder(nn.Module):
  """P learned embeddings -> MLP or biLSTM + MLP -> prompt [batch, P, D] (PEFT's PromptEncoder).

  Attributes:
    length: P, the number of virtual tokens.
    hidden_dim: the encoder's hidden size (PEFT `encoder_hidden_size`).
    reparameterization: "mlp" (PEFT's recommended default) or "lstm".
    num_lstm_layers: stacked bidirectional LSTM layers (PEFT `encoder_num_layers`, default 2);
      ignored by "mlp", which always has three Linear layers (as in PEFT).
    embedding_init: initializer of `embedding` [P, D] (torch's Embedding default: N(0, 1)).

  Parameters: `embedding` [P, D] (axes "prompt", "prompt_embed"); "mlp": `mlp_0` [D, H],
  `mlp_1` [H, H], `mlp_2` [H, D]; "lstm": `lstm_{k}_forward` / `lstm_{k}_backward` per layer k,
  then `mlp_0` [2H, 2H], `mlp_1` [2H, D]. D is taken from `embedded_BTD` at initialisation.
  No dropout: the encoder is deterministic (PEFT's LSTM dropout only acts in training).
  """

  length: int
  hidden_dim: int
  reparameterization: Reparameterization = "mlp"
  num_lstm_layers: int = 2
  embedding_init: Any = nn.initializers.normal(stddev=1.0)

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array) -> jax.Array:
    """Returns the prompt [batch, P, D] in `embedded_BTD`'s dtype (batch from `tokens_BT`)."""
    embed_dim = embedded_BTD.shape[-1]
    embedding_PD = param_with_axes(self, "embedding", self.embedding_init,
                                   (self.length, embed_dim), ("prompt", EMBED_AXIS))
    hidden = self.hidden_dim
    if self.reparameterization == "mlp":
      h_PH = nn.relu(Linear(hidden, name="mlp_0")(embedding_PD))
      h_PH = nn.relu(Linear(hidden, (HIDDEN_AXIS, HIDDEN_AXIS), name="mlp_1")(h_PH))
      prompt_PD = Linear(embed_dim, (HIDDEN_AXIS, EMBED_AXIS), name="mlp_2")(h_PH)
    elif self.reparameterization == "lstm":
      if self.num_lstm_layers < 1:
        raise ValueError(f"PTuningPromptEncoder.num_lstm_layers={self.num_lstm_layers}; use >= 1.")
      h_PX = embedding_PD
      for layer in range(self.num_lstm_layers):
        forward_PH = LSTMDirection(hidden, name=f"lstm_{layer}_forward")(h_PX)
        backward_PH = LSTMDirection(hidden, reverse=True, name=f"lstm_{layer}_backward")(h_PX)
        h_PX = jnp.concatenate([forward_PH, backward_PH], axis=-1)
      h_PX = nn.relu(Linear(2 * hidden, (HIDDEN_AXIS, HIDDEN_AXIS), name="mlp_0")(h_PX))
      prompt_PD = Linear(embed_dim, (HIDDEN_AXIS, EMBED_AXIS), name="mlp_1")(h_PX)
    else:
      raise ValueError(f"PTuningPromptEncoder.reparameterization={self.reparameterization!r}; "
                       "use 'mlp' or 'lstm'.")
    batch = tokens_BT.shape[0]
    return jnp.broadcast_to(prompt_PD.astype(embedded_BTD.dtype)[None],
                            (batch,) + prompt_PD.shape)


@dataclasses.dataclass(frozen=True)
class PTuningConfig:
  """P-tuning as a prompt method for `prompt_tuning.layers.build_prompt_model` / gin.

  Same contract as `prompt_tuning.prompts.PromptConfig` (length, placement,
  decoder_attends_to_prompt, `make_method()`), with the encoder's settings instead of an
  initializer. Bound in configs/architectures/p_tuning.gin.
  """

  method: str = "p_tuning"
  length: int = 100
  hidden_dim: int = 512
  reparameterization: Reparameterization = "mlp"
  num_lstm_layers: int = 2
  placement: str = "prefix"
  decoder_attends_to_prompt: bool = True
  template: Optional[str] = None  # [P:n] slots among the text; replaces `length` (templates).

  def __post_init__(self):
    template_length = templates.config_length(self.template, self.placement, "PTuningConfig")
    if template_length is not None:
      object.__setattr__(self, "length", template_length)
    if self.method != "p_tuning":
      raise ValueError(f"PTuningConfig.method={self.method!r}; it describes 'p_tuning' only.")
    if self.reparameterization not in ("mlp", "lstm"):
      raise ValueError(f"PTuningConfig.reparameterization={self.reparameterization!r}; use "
                       "'mlp' or 'lstm'.")
    if self.length < 0 or self.hidden_dim < 1:
      raise ValueError(f"PTuningConfig needs length >= 0 and hidden_dim >= 1; got "
                       f"length={self.length}, hidden_dim={self.hidden_dim}.")

  def make_method(self) -> PTuningPromptEncoder:
    """The (unbound) prompt module of this method."""
    return PTuningPromptEncoder(self.length, self.hidden_dim, self.reparameterization,
                                self.num_lstm_layers)


def encoder_from_params(params: Mapping[str, Any]) -> PTuningPromptEncoder:
  """The `PTuningPromptEncoder` whose parameter tree is `params` (read from names and shapes)."""
  if "embedding" not in params:
    raise ValueError(f"P-tuning parameters need an `embedding` entry; got keys {sorted(params)}. "
                     "Pass the encoder's own subtree (e.g. params['encoder']['prompt']).")
  length = params["embedding"].shape[0]
  lstm_layers = sorted({int(m.group(1)) for key in params
                        if (m := re.fullmatch(r"lstm_(\d+)_forward", key))})
  if lstm_layers:
    hidden = params["lstm_0_forward"]["kernel_hidden"].shape[0]
    return PTuningPromptEncoder(length, hidden, "lstm", num_lstm_layers=len(lstm_layers))
  return PTuningPromptEncoder(length, params["mlp_0"]["kernel"].shape[1], "mlp")


def export_prompt(params: Mapping[str, Any]) -> np.ndarray:
  """The [P, D] float32 prompt that a trained encoder produces, for encoder-free inference.

  `params` is the encoder's parameter subtree; the result loads as a plain prompt
  (`prompt_tuning.prompts.from_array`) or saves as the usual `.npy` prompt file.
  """
  encoder = encoder_from_params(params)
  embed_dim = params["embedding"].shape[1]
  prompt_1PD = encoder.apply({"params": params}, jnp.zeros((1, 1), jnp.int32),
                             jnp.zeros((1, 1, embed_dim), jnp.float32))
  return np.asarray(prompt_1PD[0], np.float32)
