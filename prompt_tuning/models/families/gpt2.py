"""GPT-2 (Hugging Face `GPT2LMHeadModel`): learned absolute positions, LayerNorm with bias,
a fused query/key/value `Conv1D`, a non-gated GELU (tanh) MLP with biases, tied head.

Hugging Face's `Conv1D` stores its weight [in, out], our kernels' layout, so nothing is
transposed; `attn.c_attn` [D, 3D] holds query, key and value side by side (columns 0..D-1,
D..2D-1, 2D..3D-1) and is split into our three kernels (and its bias likewise).

Tree mapping (our T5X-style names <- Hugging Face; `transformer.` is optional, as the original
checkpoints omit it):
  decoder/token_embedder/embedding             <- transformer.wte.weight
  decoder/position_embedder/embedding          <- transformer.wpe.weight [n_positions, D]
  decoder/layers_i/pre_self_attention_layer_norm/{scale,bias} <- transformer.h.i.ln_1.{weight,bias}
  decoder/layers_i/self_attention/{query,key,value}/{kernel,bias} <- h.i.attn.c_attn (split)
  decoder/layers_i/self_attention/out/{kernel,bias} <- h.i.attn.c_proj
  decoder/layers_i/pre_mlp_layer_norm/{scale,bias} <- h.i.ln_2
  decoder/layers_i/mlp/{wi,wo}/{kernel,bias}    <- h.i.mlp.{c_fc,c_proj}
  decoder/decoder_norm/{scale,bias}            <- transformer.ln_f
  decoder/logits_dense/kernel                  <- lm_head.weight^T (untied heads only)
`h.i.attn.bias` / `h.i.attn.masked_bias` (causal-mask buffers older checkpoints saved) are
ignored.

Positions: a token's position is its rank among the row's real tokens; a prompt placed before
the tokens takes positions 0..P-1 and the tokens follow (PEFT's prompt tuning on GPT-2, which
numbers `inputs_embeds` [prompt; tokens] 0..P+T-1); prefix tuning's default ("shifted") numbers
the tokens from P, as Hugging Face does after a P-long `past_key_values`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import Family, TensorName, fused_parts, llama, register


def hf_value(hf: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
  """The first of `keys` present (not None) in a config dict: Hugging Face configs name some
  fields per family (`n_embd`) and GGUF-derived ones generically (`hidden_size`)."""
  for key in keys:
    if hf.get(key) is not None:
      return hf[key]
  return default


def activation(hf: Mapping[str, Any], *keys: str, default: str) -> str:
  """Our MLP activation for a config's activation field."""
  name = hf_value(hf, *keys, default=default)
  if name not in llama.ACTIVATIONS:
    raise ValueError(f"{keys[0]}={name!r} is not supported; supported: "
                     f"{sorted(llama.ACTIVATIONS)}.")
  return llama.ACTIVATIONS[name]


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  """`ModelConfig` of a GPT-2 config.json dict (or the GGUF reader's generic names)."""
  for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
    if hf.get(key):
      raise ValueError(f"this GPT-2 config sets {key}=true, which is not supported; the "
                       "released GPT-2 checkpoints keep it off.")
  hidden = int(hf_value(hf, "n_embd", "hidden_size"))
  heads = int(hf_value(hf, "n_head", "num_attention_heads"))
  eos = llama._ids(hf.get("eos_token_id"))  # pylint: disable=protected-access
  return ModelConfig(
      family="gpt2",
      architecture="decoder_only",
      vocab_size=int(hf["vocab_size"]),
      emb_dim=hidden,
      num_heads=heads,
      head_dim=hidden // heads,
      mlp_dim=int(hf_value(hf, "n_inner", "intermediate_size", default=4 * hidden)),
      num_encoder_layers=0,
      num_decoder_layers=int(hf_value(hf, "n_layer", "num_hidden_layers")),
      mlp_activations=(activation(hf, "activation_function", "hidden_act", default="gelu_new"),),
      mlp_bias=True,
      attention_bias=True,
      attention_out_bias=True,
      scale_attention=bool(hf.get("scale_attn_weights", True)),
      logits_via_embedding=bool(hf.get("tie_word_embeddings", True)),
      rescale_tied_logits=False,
      position_embedding="learned",
      max_position_embeddings=int(hf_value(hf, "n_positions", "max_position_embeddings",
                                           "n_ctx")),
      norm_kind="layer",
      layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
      dropout_rate=float(hf_value(hf, "resid_pdrop", default=0.0)),
      zero_is_padding=False,
      bos_token_id=hf.get("bos_token_id"),
      eos_token_ids=eos or (50256,),
      pad_token_id=hf.get("pad_token_id"))


def named(path: str, prefix: str, name: str, shape: Sequence[int],
          transpose: bool = False) -> TensorName:
  """Variable `path` <- Hugging Face `prefix + name`, also found as `name` alone (checkpoints
  saved from the base model, such as the original GPT-2 and BLOOM ones, omit the prefix)."""
  return TensorName(path, prefix + name, tuple(shape), transpose, aliases=(name,))


def layer_norm(path: str, prefix: str, name: str, d: int) -> list[TensorName]:
  """A LayerNorm's scale and bias [D]."""
  return [named(f"{path}/scale", prefix, f"{name}.weight", (d,)),
          named(f"{path}/bias", prefix, f"{name}.bias", (d,))]


def linear(path: str, prefix: str, name: str, shape: Sequence[int],
           transpose: bool) -> list[TensorName]:
  """A projection's kernel [in, out] (`transpose`: stored [out, in]) and bias [out]."""
  return [named(f"{path}/kernel", prefix, f"{name}.weight", shape, transpose),
          named(f"{path}/bias", prefix, f"{name}.bias", (shape[1],))]


def fused_qkv(path: str, prefix: str, name: str, shapes: Mapping[str, Sequence[Sequence[int]]],
              transpose: bool) -> list[TensorName]:
  """Query, key and value kernels and biases split from one fused projection `name`.

  `shapes`: {"weight": (hf_shape, view, axis), "bias": (...)}, as `fused_parts` takes them.
  """
  out = []
  for ours, theirs in (("kernel", "weight"), ("bias", "bias")):
    hf_shape, view, axis = shapes[theirs]
    part_shape = view[:axis] + view[axis + 1:]
    shape = (int(np.prod(part_shape)),) if ours == "bias" else _kernel_shape(part_shape, transpose)
    out += fused_parts([f"{path}/{part}/{ours}" for part in ("query", "key", "value")],
                       prefix + f"{name}.{theirs}", shape, tuple(hf_shape), tuple(view), axis,
                       transpose=transpose and ours == "kernel", aliases=(f"{name}.{theirs}",))
  return out


def _kernel_shape(part_shape: Sequence[int], transpose: bool) -> tuple[int, int]:
  """Our kernel's [in, out] shape for a part whose checkpoint layout is [*out, in] (transpose)
  or [in, *out]."""
  if transpose:
    return (part_shape[-1], int(np.prod(part_shape[:-1])))
  return (part_shape[0], int(np.prod(part_shape[1:])))


def head(config: ModelConfig) -> list[TensorName]:
  """The untied head, if any (`lm_head.weight` [vocab, D])."""
  if config.logits_via_embedding:
    return []
  return [TensorName("decoder/logits_dense/kernel", "lm_head.weight",
                     (config.emb_dim, config.vocab_size), True)]


PREFIX = "transformer."


def tensor_names(config: ModelConfig) -> list[TensorName]:
  """Every variable of a GPT-2 model with `config`, with its Hugging Face name."""
  d, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
  out = [named("decoder/token_embedder/embedding", PREFIX, "wte.weight", (v, d)),
         named("decoder/position_embedder/embedding", PREFIX, "wpe.weight",
               (config.position_table_size, d))]
  # c_attn: weight [D, 3D] = [in, (q|k|v) out], bias [3D].
  qkv = {"weight": ((d, 3 * d), (d, 3, d), 1), "bias": ((3 * d,), (3, d), 0)}
  for i in range(config.num_decoder_layers):
    ours, theirs = f"decoder/layers_{i}", f"h.{i}"
    out += layer_norm(f"{ours}/pre_self_attention_layer_norm", PREFIX, f"{theirs}.ln_1", d)
    out += fused_qkv(f"{ours}/self_attention", PREFIX, f"{theirs}.attn.c_attn", qkv, False)
    out += linear(f"{ours}/self_attention/out", PREFIX, f"{theirs}.attn.c_proj", (d, d), False)
    out += layer_norm(f"{ours}/pre_mlp_layer_norm", PREFIX, f"{theirs}.ln_2", d)
    out += linear(f"{ours}/mlp/wi", PREFIX, f"{theirs}.mlp.c_fc", (d, f), False)
    out += linear(f"{ours}/mlp/wo", PREFIX, f"{theirs}.mlp.c_proj", (f, d), False)
  out += layer_norm("decoder/decoder_norm", PREFIX, "ln_f", d)
  return out + head(config)


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  """The config.json contents of the `GPT2LMHeadModel` equal to a GPT-2 `config`."""
  names = {ours: theirs for theirs, ours in reversed(list(llama.ACTIVATIONS.items()))}
  names["gelu"] = "gelu_new"
  eos = list(config.eos_token_ids)
  return {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
      "vocab_size": config.vocab_size, "n_embd": config.emb_dim, "n_head": config.num_heads,
      "n_layer": config.num_decoder_layers, "n_inner": config.mlp_dim,
      "n_positions": config.max_position_embeddings,
      "activation_function": names[config.mlp_activations[0]],
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "resid_pdrop": config.dropout_rate, "embd_pdrop": config.dropout_rate,
      "attn_pdrop": config.dropout_rate, "scale_attn_weights": config.scale_attention,
      "tie_word_embeddings": config.logits_via_embedding,
      "bos_token_id": config.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
      "pad_token_id": config.pad_token_id,
  }


IGNORED = (r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias",)

FAMILY = register(Family(name="gpt2", model_types=("gpt2",), config_from_hf=config_from_hf,
                         tensor_names=tensor_names, ignored=IGNORED,
                         tied_head_name="lm_head.weight",
                         hf_config_from_config=hf_config_from_config))
