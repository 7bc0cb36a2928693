"""Mistral (Hugging Face `MistralForCausalLM`): Llama's layout with sliding-window attention.

Keys more than `sliding_window` positions behind a query are hidden (None or absent: full
attention, as Mistral 7B v0.2+ configs say).
"""

from __future__ import annotations

from typing import Any, Mapping

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import llama


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  window = hf.get("sliding_window")
  return llama.decoder_config(hf, "mistral", sliding_window=int(window) if window else None)


FAMILY = llama.register_variant("mistral", "MistralForCausalLM", config_from_hf)
