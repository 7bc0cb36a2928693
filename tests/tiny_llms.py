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


def write_tiny_llama(folder: pathlib.Path, seed: int = 0, **changes) -> pathlib.Path:
  """A Hugging Face directory (config.json, model.safetensors, tokenizer) of random weights."""
  config = tiny_llama_config(**changes)
  params = api.init_params(build_model(config), config, jax.random.PRNGKey(seed))
  huggingface.save_hf_checkpoint(jax.device_get(params), config, folder)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(BYTE_BPE / name, folder / name)
  return folder
