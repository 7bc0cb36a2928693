"""Gemma 3 text models (Hugging Face `Gemma3ForCausalLM`, model_type "gemma3_text"; also the text
part of a multimodal "gemma3" checkpoint, whose `text_config` describes it).

What Gemma 3 adds to Llama's block, as `ModelConfig` data: token embeddings times sqrt(d_model);
RMS norms that multiply by (1 + w) (our tree keeps Hugging Face's w; GGUF files store w + 1 and
`checkpoints.gguf` subtracts the 1); RMS norms of each query and key head before the rotation;
"sandwich" norms on the attention and MLP outputs; a GELU-tanh gated MLP; logits scaled by
query_pre_attn_scalar**-0.5; sliding-window ("sliding_attention") layers with their own rotary
base (rope_local_base_freq, unscaled) between full-attention layers (rope_theta, optionally
linearly scaled), by default every 6th layer full; a tied head; optional final logit softcapping.

Tree mapping (our names <- Hugging Face, inside `model.` / layer `model.layers.i.`):
  decoder/token_embedder/embedding                      <- embed_tokens.weight
  layers_i/pre_self_attention_layer_norm/scale          <- input_layernorm.weight
  layers_i/self_attention/{query,key,value,out}/kernel  <- self_attn.{q,k,v,o}_proj.weight^T
  layers_i/self_attention/{query,key}_norm/scale        <- self_attn.{q,k}_norm.weight
  layers_i/post_self_attention_layer_norm/scale         <- post_attention_layernorm.weight
  layers_i/pre_mlp_layer_norm/scale                     <- pre_feedforward_layernorm.weight
  layers_i/mlp/{wi_0,wi_1,wo}/kernel                    <- mlp.{gate,up,down}_proj.weight^T
  layers_i/post_mlp_layer_norm/scale                    <- post_feedforward_layernorm.weight
  decoder/decoder_norm/scale                            <- norm.weight
Multimodal checkpoints keep the same tensors under `language_model.model.` (transformers 4) or
`model.language_model.` (transformers 5); their vision tower and projector are not read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import Family, TensorName, llama, register

MODEL_TYPES = ("gemma3_text", "gemma3")
# Gemma3TextConfig's defaults, for keys a config.json leaves out (as transformers fills them).
DEFAULTS = {
    "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
    "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    "tie_word_embeddings": True, "attention_bias": False, "attention_dropout": 0.0,
    "query_pre_attn_scalar": 256, "sliding_window": 4096, "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6,
}
# The multimodal checkpoints' text tensors: prefixes tried after "model." / "lm_head.".
_MULTIMODAL_PREFIXES = {"model.": ("model.language_model.", "language_model.model."),
                        "lm_head.": ("language_model.lm_head.",)}
IGNORED = (r"(model\.)?(vision_tower|multi_modal_projector)\..*",)


def text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
  """The text model's config.json dict, defaults filled in (a multimodal config's text_config)."""
  hf = dict(hf)
  if hf.get("model_type") == "gemma3":
    text = dict(hf.get("text_config") or {})
    text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", True))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
      if key in hf:
        text.setdefault(key, hf[key])
    hf = text
  hf["model_type"] = "gemma3_text"
  return {**DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k not in DEFAULTS}}


def _rope(hf: Mapping[str, Any]) -> tuple[float, dict[str, Any], float]:
  """(global theta, global scaling dict, local theta) from transformers 5's per-layer-type
  `rope_parameters` or the Hub's `rope_theta` / `rope_scaling` / `rope_local_base_freq`."""
  parameters = dict(hf.get("rope_parameters") or {})
  full = dict(parameters.get("full_attention") or {})
  local = dict(parameters.get("sliding_attention") or {})
  if local.get("rope_type", "default") != "default":
    raise ValueError(f"Gemma 3 config scales the sliding-window layers' rotary embeddings "
                     f"({local}); only unscaled local layers are supported.")
  local_theta = float(local.get("rope_theta", hf["rope_local_base_freq"]))
  theta, scaling = llama.rope_settings({"rope_theta": full.pop("rope_theta", hf["rope_theta"]),
                                        "rope_scaling": full or hf.get("rope_scaling")})
  return theta, scaling, local_theta


def layer_types(hf: Mapping[str, Any]) -> tuple[str, ...]:
  """Per-layer "sliding_attention" / "full_attention": config.json's `layer_types`, else every
  `sliding_window_pattern`-th layer full (transformers' rule)."""
  if hf.get("layer_types"):
    return tuple(hf["layer_types"])
  pattern = int(hf.get("_sliding_window_pattern") or hf["sliding_window_pattern"])
  return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
               for i in range(int(hf["num_hidden_layers"])))


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  """Our config of a Gemma 3 config.json dict ("gemma3_text", or "gemma3" with text_config).

  Raises:
    ValueError: attention logit softcapping (transformers' Gemma 3 ignores it; none of the
      released models sets it), bidirectional attention, or scaled local rotary embeddings.
  """
  hf = text_config(hf)
  if hf.get("attn_logit_softcapping") is not None:
    raise ValueError(f"Gemma 3 config sets attn_logit_softcapping={hf['attn_logit_softcapping']},"
                     " which transformers' Gemma 3 does not apply and this library does not "
                     "support; set it to null (the released models do).")
  if hf.get("use_bidirectional_attention"):
    raise ValueError("Gemma 3 config sets use_bidirectional_attention=true (an encoder); only "
                     "causal Gemma 3 language models are supported.")
  theta, scaling, local_theta = _rope(hf)
  base = llama.decoder_config(
      dict(hf, hidden_act=hf.get("hidden_activation") or hf.get("hidden_act"),
           rope_theta=theta, rope_scaling=scaling or None, rope_parameters=None),
      "gemma3", sliding_window=int(hf["sliding_window"]))
  cap = hf.get("final_logit_softcapping")
  return base.replace(
      embedding_scale=float(hf["hidden_size"]) ** 0.5, norm_scale_offset=1.0, qk_norm=True,
      sandwich_norms=True, query_pre_attn_scalar=float(hf["query_pre_attn_scalar"]),
      layer_types=layer_types(hf), rope_local_theta=local_theta,
      final_logit_softcapping=None if cap is None else float(cap))


def _with_multimodal_aliases(name: TensorName) -> TensorName:
  for prefix, alternatives in _MULTIMODAL_PREFIXES.items():
    if name.hf_name.startswith(prefix):
      rest = name.hf_name[len(prefix):]
      return dataclasses.replace(name, aliases=tuple(p + rest for p in alternatives))
  return name


def tensor_names(config: ModelConfig) -> list[TensorName]:
  """Every variable of a Gemma 3 decoder with `config`: Llama's table, with Gemma's norms."""
  out = []
  for name in llama.decoder_tensor_names(config):
    if name.path.endswith("/pre_mlp_layer_norm/scale"):
      name = dataclasses.replace(name, hf_name=name.hf_name.replace(
          "post_attention_layernorm", "pre_feedforward_layernorm"))
    out.append(name)
  d, h = config.emb_dim, config.head_dim
  for i in range(config.num_decoder_layers):
    ours, theirs = f"decoder/layers_{i}", f"model.layers.{i}"
    out += [TensorName(f"{ours}/self_attention/query_norm/scale", f"{theirs}.self_attn.q_norm.weight", (h,)),
            TensorName(f"{ours}/self_attention/key_norm/scale", f"{theirs}.self_attn.k_norm.weight", (h,)),
            TensorName(f"{ours}/post_self_attention_layer_norm/scale",
                       f"{theirs}.post_attention_layernorm.weight", (d,)),
            TensorName(f"{ours}/post_mlp_layer_norm/scale",
                       f"{theirs}.post_feedforward_layernorm.weight", (d,))]
  return [_with_multimodal_aliases(name) for name in out]


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  """The config.json of the `Gemma3ForCausalLM` equal to `config` (transformers 5 layout)."""
  activation = {ours: theirs for theirs, ours in reversed(list(llama.ACTIVATIONS.items()))}
  full = dict(config.rope_scaling_dict, rope_theta=config.rope_theta)
  full.setdefault("rope_type", "default")
  local_theta = config.rope_theta if config.rope_local_theta is None else config.rope_local_theta
  eos = list(config.eos_token_ids)
  return {
      "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
      "vocab_size": config.vocab_size, "hidden_size": config.emb_dim,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_decoder_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.kv_heads,
      "head_dim": config.head_dim, "hidden_activation": activation[config.mlp_activations[0]],
      "rms_norm_eps": config.layer_norm_epsilon,
      "query_pre_attn_scalar": config.query_pre_attn_scalar or config.head_dim,
      "sliding_window": config.sliding_window,
      "layer_types": [("sliding_attention" if config.is_sliding_layer(i) else "full_attention")
                      for i in range(config.num_decoder_layers)],
      "rope_parameters": {"full_attention": full, "sliding_attention": {
          "rope_type": "default", "rope_theta": local_theta}},
      "final_logit_softcapping": config.final_logit_softcapping, "attn_logit_softcapping": None,
      "tie_word_embeddings": config.logits_via_embedding,
      "attention_bias": config.attention_bias, "attention_dropout": config.dropout_rate,
      "max_position_embeddings": config.max_position_embeddings or 2048,
      "bos_token_id": config.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
      "pad_token_id": config.pad_token_id,
  }


FAMILY = register(Family(name="gemma3", model_types=MODEL_TYPES, config_from_hf=config_from_hf,
                         tensor_names=tensor_names, ignored=IGNORED,
                         tied_head_name="lm_head.weight",
                         hf_config_from_config=hf_config_from_config))
