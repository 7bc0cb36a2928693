"""BART and mBART (Hugging Face `BartForConditionalGeneration`, `MBartForConditionalGeneration`).

Both are encoder-decoders with LayerNorm (scale and bias), learned absolute positions looked up
at position + 2, a `layernorm_embedding` on each stack's inputs, biased attention and non-gated
MLP projections (GELU by default), a head tied to the shared embedding plus a frozen
`final_logits_bias`, pad id 1 (token 0 is `<s>`). BART normalizes after each residual
("post"); mBART before each sublayer ("pre") and ends each stack with a `layer_norm`.
`scale_embedding` multiplies token embeddings by sqrt(d_model). Decoding starts from
`decoder_start_token_id` (2, `</s>`) and forces `forced_bos_token_id` / `forced_eos_token_id`;
generation_config.json's beam settings (length_penalty, early_stopping, no_repeat_ngram_size,
min_length, num_beams) become the model's `GenerationDefaults`, with Hugging Face's beam scoring.

Tree mapping (ours <- Hugging Face, S = encoder / decoder; kernels transposed):
  token_embedder/embedding                   <- model.shared.weight
  S/position_embedder/embedding              <- model.S.embed_positions.weight [max_pos + 2, d]
  S/embedding_norm/{scale,bias}              <- model.S.layernorm_embedding.{weight,bias}
  encoder/layers_i/attention/{query,key,value,out}/{kernel,bias}
                                             <- model.encoder.layers.i.self_attn.{q,k,v,out}_proj
  encoder/layers_i/pre_attention_layer_norm  <- ...self_attn_layer_norm
  decoder/layers_i/self_attention/...        <- model.decoder.layers.i.self_attn...
  decoder/layers_i/pre_self_attention_layer_norm <- ...self_attn_layer_norm
  decoder/layers_i/encoder_decoder_attention/... <- ...encoder_attn.{q,k,v,out}_proj
  decoder/layers_i/pre_cross_attention_layer_norm <- ...encoder_attn_layer_norm
  S/layers_i/mlp/{wi,wo}/{kernel,bias}       <- ...fc1, ...fc2
  S/layers_i/pre_mlp_layer_norm              <- ...final_layer_norm
  S/{encoder,decoder}_norm (mBART only)      <- model.S.layer_norm
  decoder/final_logits_bias [vocab]          <- final_logits_bias [1, vocab]
(With post-norm, a `pre_*_layer_norm` normalizes after its sublayer's residual sum.)
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

from prompt_tuning.models.config import GenerationDefaults, ModelConfig
from prompt_tuning.models.families import Family, TensorName, register
from prompt_tuning.models.families.llama import ACTIVATIONS

MODEL_TYPES = {"bart": "post", "mbart": "pre"}  # model_type -> norm position
ARCHITECTURES = {"bart": "BartForConditionalGeneration", "mbart": "MBartForConditionalGeneration"}
POSITION_OFFSET = 2
EMBEDDING_NAME = "model.shared.weight"
EMBEDDING_COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")
LM_HEAD_NAME = "lm_head.weight"


def _same(hf: Mapping[str, Any], encoder_key: str, decoder_key: str) -> int:
  """A size both stacks share (our config has one), or a clear error."""
  encoder, decoder = int(hf[encoder_key]), int(hf[decoder_key])
  if encoder != decoder:
    raise ValueError(f"this {hf.get('model_type')} config has {encoder_key}={encoder} but "
                     f"{decoder_key}={decoder}; only equal encoder / decoder sizes are supported.")
  return encoder


def generation_defaults(gen: Mapping[str, Any]) -> GenerationDefaults:
  """Hugging Face beam settings (transformers' defaults where unset) as GenerationDefaults."""
  num_beams = gen.get("num_beams")
  return GenerationDefaults(
      num_beams=int(num_beams) if num_beams and int(num_beams) > 1 else None,
      length_penalty=float(gen.get("length_penalty", 1.0)),
      early_stopping=gen.get("early_stopping", False),
      no_repeat_ngram_size=int(gen.get("no_repeat_ngram_size") or 0),
      # Hugging Face's min_length counts the decoder start token.
      min_new_tokens=max(int(gen.get("min_length") or 0) - 1, 0))


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  """Our config for a BART / mBART config.json dict (with its generation_config.json, when the
  directory has one, under "generation_config")."""
  model_type = hf.get("model_type")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type={model_type!r} is not BART; use one of {sorted(MODEL_TYPES)}.")
  activation = hf.get("activation_function", "gelu")
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation_function={activation!r} is not supported; supported: "
                     f"{sorted(ACTIVATIONS)}.")
  d_model = int(hf["d_model"])
  heads = _same(hf, "encoder_attention_heads", "decoder_attention_heads")
  gen = {**hf, **(hf.get("generation_config") or {})}  # generation_config.json wins
  scale = {"embedding_scale": math.sqrt(d_model)} if hf.get("scale_embedding") else {}
  eos = hf.get("eos_token_id", 2)
  return ModelConfig(
      family="bart", architecture="encoder_decoder",
      vocab_size=int(hf["vocab_size"]), emb_dim=d_model, num_heads=heads,
      head_dim=d_model // heads, mlp_dim=_same(hf, "encoder_ffn_dim", "decoder_ffn_dim"),
      num_encoder_layers=int(hf["encoder_layers"]), num_decoder_layers=int(hf["decoder_layers"]),
      mlp_activations=(ACTIVATIONS[activation],), mlp_bias=True,
      logits_via_embedding=bool(hf.get("tie_word_embeddings", True)), rescale_tied_logits=False,
      position_embedding="learned", position_offset=POSITION_OFFSET,
      max_position_embeddings=int(hf["max_position_embeddings"]),
      norm_kind="layer", layer_norm_epsilon=1e-5, embedding_norm=True,
      norm_position=MODEL_TYPES[model_type], final_logits_bias=True,
      attention_bias=True, attention_out_bias=True, scale_attention=True,
      dropout_rate=float(hf.get("dropout", 0.1) or 0.0),
      zero_is_padding=False, bos_token_id=hf.get("bos_token_id", 0),
      eos_token_ids=(int(eos),) if isinstance(eos, int) else tuple(eos),
      pad_token_id=hf.get("pad_token_id", 1),
      decoder_start_token_id=int(gen.get("decoder_start_token_id", 2)),
      forced_bos_token_id=gen.get("forced_bos_token_id"),
      forced_eos_token_id=gen.get("forced_eos_token_id"),
      generation_defaults=generation_defaults(gen), **scale)


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  """The config.json contents of the Hugging Face BART / mBART equal to `config`."""
  model_type = "bart" if config.norm_position == "post" else "mbart"
  activation = {ours: theirs for theirs, ours in reversed(list(ACTIVATIONS.items()))}
  defaults = config.generation_defaults
  scale = getattr(config, "embedding_scale", 1.0)
  return {
      "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
      "is_encoder_decoder": True, "vocab_size": config.vocab_size, "d_model": config.emb_dim,
      "encoder_layers": config.num_encoder_layers, "decoder_layers": config.num_decoder_layers,
      "encoder_attention_heads": config.num_heads, "decoder_attention_heads": config.num_heads,
      "encoder_ffn_dim": config.mlp_dim, "decoder_ffn_dim": config.mlp_dim,
      "activation_function": activation[config.mlp_activations[0]],
      "max_position_embeddings": config.max_position_embeddings,
      "scale_embedding": scale != 1.0, "tie_word_embeddings": config.logits_via_embedding,
      "dropout": config.dropout_rate, "attention_dropout": 0.0, "activation_dropout": 0.0,
      "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_id,
      "pad_token_id": config.pad_token_id,
      "decoder_start_token_id": config.decoder_start_token_id,
      "forced_bos_token_id": config.forced_bos_token_id,
      "forced_eos_token_id": config.forced_eos_token_id,
      "num_beams": defaults.num_beams or 1, "length_penalty": defaults.length_penalty or 1.0,
      "early_stopping": defaults.early_stopping or False,
      "no_repeat_ngram_size": defaults.no_repeat_ngram_size,
      "min_length": defaults.min_new_tokens + 1 if defaults.min_new_tokens else 0,
  }


def tensor_names(config: ModelConfig) -> list[TensorName]:
  """Every variable of a BART / mBART with `config`, with its Hugging Face name."""
  if config.architecture != "encoder_decoder":
    raise ValueError("BART weights are encoder-decoder weights; use architecture="
                     "'encoder_decoder'.")
  d, f, v, j = config.emb_dim, config.mlp_dim, config.vocab_size, config.joined_kv
  out = [TensorName("token_embedder/embedding", EMBEDDING_NAME, (v, d),
                    aliases=EMBEDDING_COPIES)]

  def norm(ours: str, theirs: str) -> Iterator[TensorName]:
    yield TensorName(f"{ours}/scale", f"{theirs}.weight", (d,))
    yield TensorName(f"{ours}/bias", f"{theirs}.bias", (d,))

  def linear(ours: str, theirs: str, shape: tuple[int, int]) -> Iterator[TensorName]:
    yield TensorName(f"{ours}/kernel", f"{theirs}.weight", shape, True)
    yield TensorName(f"{ours}/bias", f"{theirs}.bias", shape[1:])

  def attention(ours: str, theirs: str) -> Iterator[TensorName]:
    for name, hf_name, shape in (("query", "q_proj", (d, j)), ("key", "k_proj", (d, j)),
                                 ("value", "v_proj", (d, j)), ("out", "out_proj", (j, d))):
      yield from linear(f"{ours}/{name}", f"{theirs}.{hf_name}", shape)

  for stack, num_layers in (("encoder", config.num_encoder_layers),
                            ("decoder", config.num_decoder_layers)):
    theirs_stack = f"model.{stack}"
    out.append(TensorName(f"{stack}/position_embedder/embedding",
                          f"{theirs_stack}.embed_positions.weight",
                          (config.position_table_size, d)))
    out.extend(norm(f"{stack}/embedding_norm", f"{theirs_stack}.layernorm_embedding"))
    for i in range(num_layers):
      ours, theirs = f"{stack}/layers_{i}", f"{theirs_stack}.layers.{i}"
      if stack == "encoder":
        out.extend(attention(f"{ours}/attention", f"{theirs}.self_attn"))
        out.extend(norm(f"{ours}/pre_attention_layer_norm", f"{theirs}.self_attn_layer_norm"))
      else:
        out.extend(attention(f"{ours}/self_attention", f"{theirs}.self_attn"))
        out.extend(norm(f"{ours}/pre_self_attention_layer_norm",
                        f"{theirs}.self_attn_layer_norm"))
        out.extend(attention(f"{ours}/encoder_decoder_attention", f"{theirs}.encoder_attn"))
        out.extend(norm(f"{ours}/pre_cross_attention_layer_norm",
                        f"{theirs}.encoder_attn_layer_norm"))
      out.extend(linear(f"{ours}/mlp/wi", f"{theirs}.fc1", (d, f)))
      out.extend(linear(f"{ours}/mlp/wo", f"{theirs}.fc2", (f, d)))
      out.extend(norm(f"{ours}/pre_mlp_layer_norm", f"{theirs}.final_layer_norm"))
    if config.norm_position == "pre":
      out.extend(norm(f"{stack}/{stack}_norm", f"{theirs_stack}.layer_norm"))
  out.append(TensorName("decoder/final_logits_bias", "final_logits_bias", (v,), hf_dims=(1, v)))
  if not config.logits_via_embedding:
    out.append(TensorName("decoder/logits_dense/kernel", LM_HEAD_NAME, (d, v), True))
  return out


FAMILY = register(Family(
    name="bart", model_types=tuple(MODEL_TYPES), config_from_hf=config_from_hf,
    tensor_names=tensor_names,
    ignored=tuple(name.replace(".", r"\.") for name in EMBEDDING_COPIES),
    tied_head_name=LM_HEAD_NAME, hf_config_from_config=hf_config_from_config))
