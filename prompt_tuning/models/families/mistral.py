"""Mistral (Hugging Face `MistralForCausalLM`): Llama's layout with sliding-window attention.

Keys more than `sliding_window` positions behind a query are hidden (None or absent: full
attention, as Mistral 7B v0.2+ configs say).
"""

from __future__ import annotations

from typing import Any, Mapping

from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import Family, register
from prompt_tuning.models.families import llama


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
  window = hf.get("sliding_window")
  return llama.decoder_config(hf, "mistral", sliding_window=int(window) if window else None)


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  return llama.hf_config(config, "mistral", "MistralForCausalLM")


FAMILY = register(Family(name="mistral", model_types=("mistral",), config_from_hf=config_from_hf,
                         tensor_names=llama.decoder_tensor_names, ignored=llama.IGNORED,
                         tied_head_name="lm_head.weight",
                         hf_config_from_config=hf_config_from_config))
