"""Tiny random Llama-family checkpoints written at test time (Hugging Face layout + tokenizer)."""

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


def tiny_llama_config(**changes) -> ModelConfig:
  """A 2-layer GQA Llama over the byte-BPE tokenizer's 600 ids."""
  config = ModelConfig(
      family="llama", architecture="decoder_only", vocab_size=600, emb_dim=32, num_heads=4,
      num_kv_heads=2, head_dim=8, mlp_dim=64, num_encoder_layers=0, num_decoder_layers=2,
      mlp_activations=("silu", "linear"), logits_via_embedding=True, rescale_tied_logits=False,
      position_embedding="rope", scale_attention=True, layer_norm_epsilon=1e-5,
      zero_is_padding=False, bos_token_id=1, eos_token_ids=(2,), pad_token_id=0,
      max_position_embeddings=256)
  return config.replace(**changes)


def tiny_gemma3_config(**changes) -> ModelConfig:
  """A 3-layer Gemma 3 (sliding, full, sliding; window 3) over the same 600 ids, with an untied
  head (a tied one greedily repeats the last token of these random weights)."""
  config = tiny_llama_config(
      family="gemma3", num_decoder_layers=3, mlp_activations=("gelu", "linear"),
      layer_norm_epsilon=1e-6, embedding_scale=32 ** 0.5, norm_scale_offset=1.0, qk_norm=True,
      sandwich_norms=True, query_pre_attn_scalar=16.0, sliding_window=3,
      layer_types=("sliding_attention", "full_attention", "sliding_attention"),
      rope_local_theta=100.0, logits_via_embedding=False)
  return config.replace(**changes)


TINY_CONFIGS = {"llama": tiny_llama_config, "gemma3": tiny_gemma3_config}


def write_tiny_llm(folder: pathlib.Path, family: str = "llama", seed: int = 0,
                   **changes) -> pathlib.Path:
  """A Hugging Face directory (config.json, model.safetensors, tokenizer) of random weights of
  one of TINY_CONFIGS' families."""
  config = TINY_CONFIGS[family](**changes)
  params = api.init_params(build_model(config), config, jax.random.PRNGKey(seed))
  huggingface.save_hf_checkpoint(jax.device_get(params), config, folder)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(BYTE_BPE / name, folder / name)
  return folder


def write_tiny_llama(folder: pathlib.Path, seed: int = 0, **changes) -> pathlib.Path:
  """`write_tiny_llm` of the tiny Llama."""
  return write_tiny_llm(folder, "llama", seed, **changes)
