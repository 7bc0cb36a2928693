"""T5 / mT5 (Hugging Face `T5ForConditionalGeneration`, `MT5ForConditionalGeneration`).

Our tree keeps T5X / Flaxformer names; Hugging Face stores torch `Linear` weights [out, in]
and the relative position embedding [buckets, heads], so those are transposed. Whether a tied
head multiplies the decoder output by d_model**-0.5 (T5 1.0) is `tie_word_embeddings` in
configs written before transformers 5 and `scale_decoder_outputs` after.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import Family, TensorName, register

EMBEDDING_NAME = "shared.weight"
LM_HEAD_NAME = "lm_head.weight"
# Copies of `shared.weight` some writers keep (or keep instead of it).
EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# Hugging Face `feed_forward_proj` <-> our `mlp_activations`.
FEED_FORWARD = {"gated-gelu": ("gelu", "linear"), "relu": ("relu",)}
MODEL_TYPES = ("t5", "mt5")


def _scales_decoder_outputs(hf: Mapping[str, Any]) -> bool:
  """Whether Hugging Face multiplies the decoder output by d_model**-0.5 before the head."""
  return bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  """Our config for a Hugging Face T5 / mT5 config.json dict.

  Raises:
    ValueError: not an encoder-decoder T5 / mT5 config, or a `feed_forward_proj` other than
      'relu' (T5 1.0) or 'gated-gelu' (T5 1.1, mT5).
  """
  model_type = hf.get("model_type", "t5")
  if model_type not in MODEL_TYPES or not hf.get("is_encoder_decoder", True):
    raise ValueError(
        f"Hugging Face config has model_type={model_type!r}, is_encoder_decoder="
        f"{hf.get('is_encoder_decoder', True)}; only encoder-decoder {MODEL_TYPES} models "
        "(T5ForConditionalGeneration, MT5ForConditionalGeneration) are T5.")
  feed_forward = hf.get("feed_forward_proj", "relu")
  if feed_forward not in FEED_FORWARD:
    raise ValueError(
        f"Hugging Face config has feed_forward_proj={feed_forward!r}; supported are "
        f"{sorted(FEED_FORWARD)} (T5 1.0 and T5 1.1 / mT5).")
  num_layers = hf.get("num_layers", 6)
  num_decoder_layers = hf.get("num_decoder_layers")
  return ModelConfig(
      vocab_size=hf.get("vocab_size", 32128),
      emb_dim=hf.get("d_model", 512),
      num_heads=hf.get("num_heads", 8),
      head_dim=hf.get("d_kv", 64),
      mlp_dim=hf.get("d_ff", 2048),
      num_encoder_layers=num_layers,
      num_decoder_layers=num_layers if num_decoder_layers is None else num_decoder_layers,
      mlp_activations=FEED_FORWARD[feed_forward],
      logits_via_embedding=_scales_decoder_outputs(hf),
      relpos_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relpos_max_distance=hf.get("relative_attention_max_distance", 128),
      dropout_rate=float(hf.get("dropout_rate", 0.1)),
      layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
      architecture="encoder_decoder")


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  """The `config.json` contents of a `T5ForConditionalGeneration` equal to `config`."""
  tensor_names(config)  # Validates architecture and activations.
  feed_forward = next(k for k, v in FEED_FORWARD.items() if v == config.mlp_activations)
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "is_encoder_decoder": True,
      "vocab_size": config.vocab_size,
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "num_heads": config.num_heads,
      "d_ff": config.mlp_dim,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "feed_forward_proj": feed_forward,
      "tie_word_embeddings": config.logits_via_embedding,
      "relative_attention_num_buckets": config.relpos_num_buckets,
      "relative_attention_max_distance": config.relpos_max_distance,
      "dropout_rate": config.dropout_rate,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "initializer_factor": 1.0,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "decoder_start_token_id": 0,
  }


def tensor_names(config: ModelConfig) -> list[TensorName]:
  """Every variable of an encoder-decoder T5 with `config`, with its Hugging Face name."""
  if config.architecture != "encoder_decoder":
    raise ValueError(
        f"Hugging Face T5 weights are encoder-decoder weights, but ModelConfig.architecture="
        f"{config.architecture!r}; use architecture='encoder_decoder'.")
  if config.mlp_activations not in FEED_FORWARD.values():
    raise ValueError(
        f"ModelConfig.mlp_activations={config.mlp_activations!r} has no Hugging Face T5 "
        f"equivalent; use one of {sorted(FEED_FORWARD.values())}.")
  d, j, f, v = config.emb_dim, config.joined_kv, config.mlp_dim, config.vocab_size
  gated = len(config.mlp_activations) == 2
  out = [TensorName("token_embedder/embedding", EMBEDDING_NAME, (v, d), aliases=EMBEDDING_COPIES)]

  def attention(ours: str, theirs: str) -> Iterator[TensorName]:
    for our_name, hf_name in (("query", "q"), ("key", "k"), ("value", "v")):
      yield TensorName(f"{ours}/{our_name}/kernel", f"{theirs}.{hf_name}.weight", (d, j), True)
    yield TensorName(f"{ours}/out/kernel", f"{theirs}.o.weight", (j, d), True)

  def mlp(ours: str, theirs: str) -> Iterator[TensorName]:
    for name in ("wi_0", "wi_1") if gated else ("wi",):
      yield TensorName(f"{ours}/mlp/{name}/kernel", f"{theirs}.DenseReluDense.{name}.weight",
                       (d, f), True)
    yield TensorName(f"{ours}/mlp/wo/kernel", f"{theirs}.DenseReluDense.wo.weight", (f, d), True)

  def norm(ours: str, theirs: str) -> TensorName:
    return TensorName(f"{ours}/scale", f"{theirs}.weight", (d,))

  for stack, num_layers in (("encoder", config.num_encoder_layers),
                            ("decoder", config.num_decoder_layers)):
    out.append(
        TensorName(f"{stack}/relpos_bias/rel_embedding",
                   f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                   (config.num_heads, config.relpos_num_buckets), True))
    for i in range(num_layers):
      ours, theirs = f"{stack}/layers_{i}", f"{stack}.block.{i}.layer"
      if stack == "encoder":
        out.extend(attention(f"{ours}/attention", f"{theirs}.0.SelfAttention"))
        out.append(norm(f"{ours}/pre_attention_layer_norm", f"{theirs}.0.layer_norm"))
        mlp_index = 1
      else:
        out.extend(attention(f"{ours}/self_attention", f"{theirs}.0.SelfAttention"))
        out.append(norm(f"{ours}/pre_self_attention_layer_norm", f"{theirs}.0.layer_norm"))
        out.extend(attention(f"{ours}/encoder_decoder_attention", f"{theirs}.1.EncDecAttention"))
        out.append(norm(f"{ours}/pre_cross_attention_layer_norm", f"{theirs}.1.layer_norm"))
        mlp_index = 2
      out.extend(mlp(ours, f"{theirs}.{mlp_index}"))
      out.append(norm(f"{ours}/pre_mlp_layer_norm", f"{theirs}.{mlp_index}.layer_norm"))
    out.append(norm(f"{stack}/{stack}_norm", f"{stack}.final_layer_norm"))
  if not config.logits_via_embedding:
    out.append(TensorName("decoder/logits_dense/kernel", LM_HEAD_NAME, (d, v), True))
  return out


FAMILY = register(Family(
    name="t5", model_types=MODEL_TYPES, config_from_hf=config_from_hf, tensor_names=tensor_names,
    ignored=tuple(name.replace(".", r"\.") for name in EMBEDDING_COPIES) + (
        r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",),
    tied_head_name=LM_HEAD_NAME, hf_config_from_config=hf_config_from_config))
