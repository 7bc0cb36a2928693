"""BLOOM / BLOOMZ (Hugging Face `BloomForCausalLM`): ALiBi positions, a LayerNorm on the token
embeddings, LayerNorm with bias, a fused query/key/value projection with heads interleaved, a
non-gated GELU (tanh) MLP with biases, tied head.

`self_attention.query_key_value.weight` [3D, D] (torch [out, in]) holds, per head, that head's
query, key and value rows: viewed as [heads, 3, head_dim, D], entry 0/1/2 of axis 1 is the
query/key/value projection (not [q; k; v] blocks, which is how llama.cpp re-lays it out in GGUF
files; `checkpoints.gguf` restores the Hugging Face order).

Tree mapping (our T5X-style names <- Hugging Face; `transformer.` is optional, as checkpoints
saved from `BloomModel` omit it):
  decoder/token_embedder/embedding        <- transformer.word_embeddings.weight
  decoder/embedding_norm/{scale,bias}     <- transformer.word_embeddings_layernorm.{weight,bias}
  decoder/layers_i/pre_self_attention_layer_norm/{scale,bias} <- h.i.input_layernorm
  decoder/layers_i/self_attention/{query,key,value}/{kernel,bias} <- h.i.self_attention.
                                             query_key_value (split per head)
  decoder/layers_i/self_attention/out/{kernel,bias} <- h.i.self_attention.dense (weight^T)
  decoder/layers_i/pre_mlp_layer_norm/{scale,bias} <- h.i.post_attention_layernorm
  decoder/layers_i/mlp/{wi,wo}/{kernel,bias} <- h.i.mlp.{dense_h_to_4h,dense_4h_to_h} (weight^T)
  decoder/decoder_norm/{scale,bias}       <- transformer.ln_f
  decoder/logits_dense/kernel             <- lm_head.weight^T (untied heads only)

Positions (ALiBi, `models.alibi`): each key is biased by its rank among the row's real tokens,
as Hugging Face computes from the attention mask. A prompt placed before the tokens takes ranks
0..P-1 (PEFT's prompt tuning, whose mask is [1] * P + mask); prefix tuning's default ("shifted")
biases the prefix keys as positions 0..P-1 and the tokens from P, as Hugging Face does with a
P-long `past_key_values` and the mask [1] * P + mask.
"""

from __future__ import annotations

from typing import Any, Mapping

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import Family, TensorName, gpt2, llama, register
from prompt_tuning.models.families.gpt2 import fused_qkv, layer_norm, linear, named


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  """`ModelConfig` of a BLOOM config.json dict (or the GGUF reader's generic names)."""
  if hf.get("apply_residual_connection_post_layernorm"):
    raise ValueError("this BLOOM config sets apply_residual_connection_post_layernorm=true, "
                     "which is not supported; the released BLOOM / BLOOMZ models keep it off.")
  hidden = int(gpt2.hf_value(hf, "hidden_size", "n_embed", "n_embd"))
  heads = int(gpt2.hf_value(hf, "n_head", "num_attention_heads"))
  eos = llama._ids(hf.get("eos_token_id"))  # pylint: disable=protected-access
  return ModelConfig(
      family="bloom",
      architecture="decoder_only",
      vocab_size=int(hf["vocab_size"]),
      emb_dim=hidden,
      num_heads=heads,
      head_dim=hidden // heads,
      mlp_dim=int(gpt2.hf_value(hf, "intermediate_size", default=4 * hidden)),
      num_encoder_layers=0,
      num_decoder_layers=int(gpt2.hf_value(hf, "n_layer", "num_hidden_layers")),
      mlp_activations=(gpt2.activation(hf, "hidden_act", default="gelu_pytorch_tanh"),),
      mlp_bias=True,
      attention_bias=True,
      attention_out_bias=True,
      scale_attention=True,
      logits_via_embedding=bool(hf.get("tie_word_embeddings", True)),
      rescale_tied_logits=False,
      position_embedding="alibi",
      embedding_norm=True,
      norm_kind="layer",
      layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
      dropout_rate=float(hf.get("hidden_dropout", 0.0) or 0.0),
      zero_is_padding=False,
      bos_token_id=hf.get("bos_token_id"),
      eos_token_ids=eos or (2,),
      pad_token_id=hf.get("pad_token_id"),
      max_position_embeddings=gpt2.hf_value(hf, "seq_length", "max_position_embeddings"))


PREFIX = "transformer."


def tensor_names(config: ModelConfig) -> list[TensorName]:
  """Every variable of a BLOOM model with `config`, with its Hugging Face name."""
  d, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
  heads, head_dim = config.num_heads, config.head_dim
  out = [named("decoder/token_embedder/embedding", PREFIX, "word_embeddings.weight", (v, d))]
  out += layer_norm("decoder/embedding_norm", PREFIX, "word_embeddings_layernorm", d)
  # query_key_value: weight [3D, D] = [(heads, q|k|v, head_dim) out, in], bias [3D].
  qkv = {"weight": ((3 * d, d), (heads, 3, head_dim, d), 1),
         "bias": ((3 * d,), (heads, 3, head_dim), 1)}
  for i in range(config.num_decoder_layers):
    ours, theirs = f"decoder/layers_{i}", f"h.{i}"
    out += layer_norm(f"{ours}/pre_self_attention_layer_norm", PREFIX,
                      f"{theirs}.input_layernorm", d)
    out += fused_qkv(f"{ours}/self_attention", PREFIX, f"{theirs}.self_attention.query_key_value",
                     qkv, True)
    out += linear(f"{ours}/self_attention/out", PREFIX, f"{theirs}.self_attention.dense", (d, d),
                  True)
    out += layer_norm(f"{ours}/pre_mlp_layer_norm", PREFIX, f"{theirs}.post_attention_layernorm",
                      d)
    out += linear(f"{ours}/mlp/wi", PREFIX, f"{theirs}.mlp.dense_h_to_4h", (d, f), True)
    out += linear(f"{ours}/mlp/wo", PREFIX, f"{theirs}.mlp.dense_4h_to_h", (f, d), True)
  out += layer_norm("decoder/decoder_norm", PREFIX, "ln_f", d)
  return out + gpt2.head(config)


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  """The config.json contents of the `BloomForCausalLM` equal to a BLOOM `config`."""
  if config.mlp_dim != 4 * config.emb_dim or config.mlp_activations != ("gelu",):
    raise ValueError("a Hugging Face BLOOM has a 4 x hidden GELU (tanh) MLP; this config's "
                     f"mlp_dim={config.mlp_dim}, activations={config.mlp_activations} has no "
                     "BLOOM equivalent.")
  eos = list(config.eos_token_ids)
  return {
      "architectures": ["BloomForCausalLM"], "model_type": "bloom",
      "vocab_size": config.vocab_size, "hidden_size": config.emb_dim,
      "n_head": config.num_heads, "n_layer": config.num_decoder_layers,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "hidden_dropout": config.dropout_rate, "attention_dropout": config.dropout_rate,
      "apply_residual_connection_post_layernorm": False,
      "tie_word_embeddings": config.logits_via_embedding,
      "bos_token_id": config.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
      "pad_token_id": config.pad_token_id,
  }


FAMILY = register(Family(name="bloom", model_types=("bloom",), config_from_hf=config_from_hf,
                         tensor_names=tensor_names, tied_head_name="lm_head.weight",
                         hf_config_from_config=hf_config_from_config))
