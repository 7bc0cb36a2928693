"""Llama (Llama 2 / 3 / 3.x, SmolLM2, TinyLlama, ...) and the decoder-only LLMs built like it.

Hugging Face `LlamaForCausalLM`: RMSNorm pre-norm blocks, rotary positions (optionally scaled,
e.g. Llama 3.1's "llama3" scaling), grouped-query attention with logits scaled by
head_dim**-0.5, a SwiGLU MLP (gate, up, down), tied or untied head, no dropout by default.
Mistral (sliding window) and Qwen2 (query/key/value biases) reuse `decoder_config` and
`decoder_tensor_names` with their own switches.

Tree mapping (our T5X-style names <- Hugging Face):
  decoder/token_embedder/embedding            <- model.embed_tokens.weight
  decoder/layers_i/pre_self_attention_layer_norm/scale <- model.layers.i.input_layernorm.weight
  decoder/layers_i/self_attention/{query,key,value,out}/kernel <- self_attn.{q,k,v,o}_proj.weight^T
  decoder/layers_i/self_attention/{query,key,value}/bias <- self_attn.{q,k,v}_proj.bias (if any)
  decoder/layers_i/pre_mlp_layer_norm/scale   <- model.layers.i.post_attention_layernorm.weight
  decoder/layers_i/mlp/{wi_0,wi_1,wo}/kernel  <- mlp.{gate,up,down}_proj.weight^T
  decoder/decoder_norm/scale                  <- model.norm.weight
  decoder/logits_dense/kernel                 <- lm_head.weight^T (untied heads only)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import Family, TensorName, register

# Hugging Face `hidden_act` -> our activation name (gelu_pytorch_tanh is the tanh GELU).
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu_exact",
               "gelu_pytorch_tanh": "gelu", "gelu_new": "gelu", "relu": "relu"}


def _ids(value: Any) -> tuple[int, ...]:
  if value is None:
    return ()
  return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


def rope_settings(hf: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
  """(theta, scaling dict without theta) from transformers 5's `rope_parameters` or the older
  `rope_theta` + `rope_scaling` fields."""
  parameters = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  theta = parameters.pop("rope_theta", None) or scaling.pop("rope_theta", None) or hf.get(
      "rope_theta", 10000.0)
  scaling.update(parameters)
  if "type" in scaling and "rope_type" not in scaling:
    scaling["rope_type"] = scaling.pop("type")
  if scaling.get("rope_type", "default") == "default":
    scaling = {}
  return float(theta), scaling


def decoder_config(hf: Mapping[str, Any], family: str, *, attention_bias: Optional[bool] = None,
                   sliding_window: Optional[int] = None) -> ModelConfig:
  """`ModelConfig` of a Llama-style config.json dict (family-specific switches as arguments)."""
  hidden = int(hf["hidden_size"])
  heads = int(hf["num_attention_heads"])
  activation = hf.get("hidden_act", "silu")
  if activation not in ACTIVATIONS:
    raise ValueError(f"hidden_act={activation!r} is not supported; supported: "
                     f"{sorted(ACTIVATIONS)}.")
  theta, scaling = rope_settings(hf)
  eos = _ids(hf.get("eos_token_id"))
  bias = bool(hf.get("attention_bias", False)) if attention_bias is None else attention_bias
  return ModelConfig(
      family=family,
      architecture="decoder_only",
      vocab_size=int(hf["vocab_size"]),
      emb_dim=hidden,
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(hf.get("head_dim") or hidden // heads),
      mlp_dim=int(hf["intermediate_size"]),
      num_encoder_layers=0,
      num_decoder_layers=int(hf["num_hidden_layers"]),
      mlp_activations=(ACTIVATIONS[activation], "linear"),
      mlp_bias=bool(hf.get("mlp_bias", False)),
      logits_via_embedding=bool(hf.get("tie_word_embeddings", False)),
      rescale_tied_logits=False,
      position_embedding="rope",
      rope_theta=theta,
      rope_scaling=tuple(scaling.items()),
      attention_bias=bias,
      attention_out_bias=bool(hf.get("attention_bias", False)),
      scale_attention=True,
      sliding_window=sliding_window,
      layer_norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
      dropout_rate=float(hf.get("attention_dropout", 0.0) or 0.0),
      zero_is_padding=False,
      bos_token_id=hf.get("bos_token_id"),
      eos_token_ids=eos or (2,),
      pad_token_id=hf.get("pad_token_id"),
      max_position_embeddings=hf.get("max_position_embeddings"))


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  return decoder_config(hf, "llama")


def decoder_tensor_names(config: ModelConfig) -> list[TensorName]:
  """Every variable of a Llama-style decoder with `config`, with its Hugging Face name."""
  d, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
  q, kv = config.num_heads * config.head_dim, config.kv_heads * config.head_dim
  out = [TensorName("decoder/token_embedder/embedding", "model.embed_tokens.weight", (v, d))]
  for i in range(config.num_decoder_layers):
    ours, theirs = f"decoder/layers_{i}", f"model.layers.{i}"
    out.append(TensorName(f"{ours}/pre_self_attention_layer_norm/scale",
                          f"{theirs}.input_layernorm.weight", (d,)))
    for name, hf_name, width in (("query", "q_proj", q), ("key", "k_proj", kv),
                                 ("value", "v_proj", kv)):
      out.append(TensorName(f"{ours}/self_attention/{name}/kernel",
                            f"{theirs}.self_attn.{hf_name}.weight", (d, width), True))
      if config.attention_bias:
        out.append(TensorName(f"{ours}/self_attention/{name}/bias",
                              f"{theirs}.self_attn.{hf_name}.bias", (width,)))
    out.append(TensorName(f"{ours}/self_attention/out/kernel", f"{theirs}.self_attn.o_proj.weight",
                          (q, d), True))
    if config.attention_out_bias:
      out.append(TensorName(f"{ours}/self_attention/out/bias", f"{theirs}.self_attn.o_proj.bias",
                            (d,)))
    out.append(TensorName(f"{ours}/pre_mlp_layer_norm/scale",
                          f"{theirs}.post_attention_layernorm.weight", (d,)))
    for name, hf_name, shape in (("wi_0", "gate_proj", (d, f)), ("wi_1", "up_proj", (d, f)),
                                 ("wo", "down_proj", (f, d))):
      out.append(TensorName(f"{ours}/mlp/{name}/kernel", f"{theirs}.mlp.{hf_name}.weight", shape,
                            True))
      if config.mlp_bias:
        out.append(TensorName(f"{ours}/mlp/{name}/bias", f"{theirs}.mlp.{hf_name}.bias",
                              shape[1:]))
  out.append(TensorName("decoder/decoder_norm/scale", "model.norm.weight", (d,)))
  if not config.logits_via_embedding:
    out.append(TensorName("decoder/logits_dense/kernel", "lm_head.weight", (d, v), True))
  return out


def hf_config(config: ModelConfig, model_type: str, architecture: str) -> dict[str, Any]:
  """The config.json contents of the Hugging Face model equal to a Llama-style `config`."""
  activation = {ours: theirs for theirs, ours in reversed(list(ACTIVATIONS.items()))}
  rope = dict(config.rope_scaling_dict, rope_theta=config.rope_theta)
  rope.setdefault("rope_type", "default")
  eos = list(config.eos_token_ids)
  hf = {
      "architectures": [architecture], "model_type": model_type,
      "vocab_size": config.vocab_size, "hidden_size": config.emb_dim,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_decoder_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.kv_heads,
      "head_dim": config.head_dim, "hidden_act": activation[config.mlp_activations[0]],
      "rms_norm_eps": config.layer_norm_epsilon, "rope_theta": config.rope_theta,
      "rope_parameters": rope, "tie_word_embeddings": config.logits_via_embedding,
      "attention_bias": config.attention_out_bias, "mlp_bias": config.mlp_bias,
      "attention_dropout": config.dropout_rate,
      "max_position_embeddings": config.max_position_embeddings or 2048,
      "bos_token_id": config.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
      "pad_token_id": config.pad_token_id,
  }
  if config.sliding_window is not None:
    hf["sliding_window"] = config.sliding_window
  return hf


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  return hf_config(config, "llama", "LlamaForCausalLM")


def register_variant(name: str, architecture: str,
                     config_from_hf: Callable[[Mapping[str, Any]], ModelConfig]) -> Family:
  """Registers a family with Llama's tensor layout and its own config mapping (Mistral, Qwen2)."""
  return register(Family(name=name, model_types=(name,), config_from_hf=config_from_hf,
                         tensor_names=decoder_tensor_names, ignored=IGNORED,
                         tied_head_name="lm_head.weight",
                         hf_config_from_config=lambda c: hf_config(c, name, architecture)))


# Rotary frequencies some older checkpoints store per layer (recomputed here).
IGNORED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

FAMILY = register(Family(name="llama", model_types=("llama",), config_from_hf=config_from_hf,
                         tensor_names=decoder_tensor_names, ignored=IGNORED,
                         tied_head_name="lm_head.weight",
                         hf_config_from_config=hf_config_from_config))
