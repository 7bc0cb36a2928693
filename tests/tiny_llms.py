"""Tiny random LLM checkpoints written at test time (Hugging Face layout + tokenizer), and
GPT-2 / BLOOM ones converted to GGUF the way llama.cpp does."""

from __future__ import annotations

import pathlib
import shutil

import jax

from prompt_tuning import api
from prompt_tuning.checkpoints import huggingface
from prompt_tuning.models import ModelConfig, build_model

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
# A 600-token byte-level BPE tokenizer (ids 0-2: <|pad|>, <|bos|>, <|eos|>), made by
# tools/make_tokenizer_golden.py.
BYTE_BPE = FIXTURES / "tokenizers" / "byte_bpe"


# Tokenizers of the tiny models, made by tools/make_tokenizer_golden.py: BYTE_BPE above; GPT-2's
# (601 ids, <|endoftext|> = 600 the last) and BLOOM's (600 ids; <unk>, <s>, </s>, <pad> = 0-3).
TOKENIZERS = {"llama": BYTE_BPE, "gemma3": BYTE_BPE, "gpt2": FIXTURES / "tokenizers" / "gpt2_bpe",
              "bloom": FIXTURES / "tokenizers" / "bloom_bpe"}

_COMMON = dict(architecture="decoder_only", emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
               num_encoder_layers=0, num_decoder_layers=2, logits_via_embedding=True,
               rescale_tied_logits=False, scale_attention=True, layer_norm_epsilon=1e-5,
               zero_is_padding=False, max_position_embeddings=256)
_TINY = {
    # 2-layer GQA Llama.
    "llama": dict(family="llama", vocab_size=600, num_kv_heads=2,
                  mlp_activations=("silu", "linear"), position_embedding="rope",
                  bos_token_id=1, eos_token_ids=(2,), pad_token_id=0),
    # 3-layer Gemma 3 (sliding, full, sliding; window 3) over the Llama's ids, with an untied
    # head (a tied one greedily repeats the last token of these random weights).
    "gemma3": dict(family="gemma3", vocab_size=600, num_kv_heads=2, num_decoder_layers=3,
                   mlp_activations=("gelu", "linear"), position_embedding="rope",
                   layer_norm_epsilon=1e-6, embedding_scale=32 ** 0.5, norm_scale_offset=1.0,
                   qk_norm=True, sandwich_norms=True, query_pre_attn_scalar=16.0,
                   sliding_window=3,
                   layer_types=("sliding_attention", "full_attention", "sliding_attention"),
                   rope_local_theta=100.0, logits_via_embedding=False,
                   bos_token_id=1, eos_token_ids=(2,), pad_token_id=0),
    # GPT-2: learned positions, LayerNorm, biases, GELU (tanh) MLP.
    "gpt2": dict(family="gpt2", vocab_size=601, mlp_activations=("gelu",), mlp_bias=True,
                 attention_bias=True, attention_out_bias=True, position_embedding="learned",
                 norm_kind="layer", bos_token_id=600, eos_token_ids=(600,), pad_token_id=None),
    # BLOOM: ALiBi over 6 heads (not a power of two), embedding LayerNorm, 4 x hidden MLP.
    "bloom": dict(family="bloom", vocab_size=600, emb_dim=48, num_heads=6, mlp_dim=192,
                  mlp_activations=("gelu",), mlp_bias=True, attention_bias=True,
                  attention_out_bias=True, position_embedding="alibi", embedding_norm=True,
                  norm_kind="layer", bos_token_id=1, eos_token_ids=(2,), pad_token_id=3),
}


def tiny_config(family: str = "llama", **changes) -> ModelConfig:
  """A tiny model of `family` ("llama", "gemma3", "gpt2", "bloom") over its tokenizer's ids."""
  return ModelConfig(**{**_COMMON, **_TINY[family]}).replace(**changes)


def tiny_llama_config(**changes) -> ModelConfig:
  """A 2-layer GQA Llama over the byte-BPE tokenizer's 600 ids."""
  return tiny_config("llama", **changes)


def write_tiny(folder: pathlib.Path, family: str = "llama", seed: int = 0,
               **changes) -> pathlib.Path:
  """A Hugging Face directory (config.json, model.safetensors, tokenizer) of random weights of
  the tiny model of `family` (a key of `_TINY`)."""
  config = tiny_config(family, **changes)
  params = api.init_params(build_model(config), config, jax.random.PRNGKey(seed))
  huggingface.save_hf_checkpoint(jax.device_get(params), config, folder)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(TOKENIZERS[family] / name, folder / name)
  return folder


def write_tiny_llama(folder: pathlib.Path, seed: int = 0, **changes) -> pathlib.Path:
  """`write_tiny` of the tiny Llama."""
  return write_tiny(folder, "llama", seed, **changes)


# Hugging Face -> llama.cpp tensor names of GPT-2 and BLOOM (gguf-py's tensor map), and what
# llama.cpp's converter does to each tensor: GPT-2's Conv1D weights are written transposed
# ([out, in]); BLOOM's fused QKV [heads, (q, k, v), head_dim, ...] as [q; k; v] blocks.
_LLAMA_CPP_NAMES = {
    "gpt2": {"wte": "token_embd", "wpe": "position_embd", "ln_f": "output_norm",
             "ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
             "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"},
    "bloom": {"word_embeddings": "token_embd", "word_embeddings_layernorm": "token_embd_norm",
              "ln_f": "output_norm", "input_layernorm": "attn_norm",
              "self_attention.query_key_value": "attn_qkv",
              "self_attention.dense": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"},
}


def write_llama_cpp_gguf(hf_dir: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
  """A float32 `.gguf` of a GPT-2 or BLOOM Hugging Face directory, as llama.cpp converts it."""
  import json
  import gguf
  import numpy as np
  import safetensors.numpy
  config = json.loads((hf_dir / "config.json").read_text())
  arch = config["model_type"]
  hidden = config.get("n_embd") or config["hidden_size"]
  heads = config["n_head"]
  writer = gguf.GGUFWriter(path, arch)
  writer.add_block_count(config["n_layer"])
  writer.add_context_length(config.get("n_positions") or 2048)
  writer.add_embedding_length(hidden)
  writer.add_feed_forward_length(config.get("n_inner") or 4 * hidden)
  writer.add_head_count(heads)
  writer.add_layer_norm_eps(config["layer_norm_epsilon"])
  writer.add_bos_token_id(config["bos_token_id"])
  writer.add_eos_token_id(config["eos_token_id"])
  for name, value in safetensors.numpy.load_file(str(hf_dir / "model.safetensors")).items():
    if name == "lm_head.weight":
      writer.add_tensor("output.weight", value)
      continue
    module, suffix = name.removeprefix("transformer.").rsplit(".", 1)
    layer = None
    if module.startswith("h."):
      _, layer, module = module.split(".", 2)
    gguf_name = _LLAMA_CPP_NAMES[arch][module] + "." + suffix
    if arch == "gpt2" and suffix == "weight" and module.startswith(("attn.", "mlp.")):
      value = value.T
    if arch == "bloom" and module.endswith("query_key_value"):
      value = value.reshape(heads, 3, -1, *value.shape[1:]).swapaxes(0, 1).reshape(value.shape)
    writer.add_tensor(gguf_name if layer is None else f"blk.{layer}.{gguf_name}",
                      np.ascontiguousarray(value, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path
