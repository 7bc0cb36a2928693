"""Qwen2 / Qwen2.5 (Hugging Face `Qwen2ForCausalLM`): Llama's layout with query/key/value
biases (the output projection has none).

Qwen2 configs may ask for sliding-window attention on their upper layers (`use_sliding_window`);
the released models keep it off, and a config that turns it on is refused rather than run with
full attention.
"""

from __future__ import annotations

from typing import Any, Mapping

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import llama


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  if hf.get("use_sliding_window"):
    raise ValueError("this Qwen2 config sets use_sliding_window=true (per-layer sliding windows), "
                     "which is not supported; the released Qwen2 / Qwen2.5 models keep it off.")
  hf = dict(hf, attention_bias=False)  # Only q/k/v carry biases.
  return llama.decoder_config(hf, "qwen2", attention_bias=True)


FAMILY = llama.register_variant("qwen2", "Qwen2ForCausalLM", config_from_hf)
