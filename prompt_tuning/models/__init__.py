"""Flax models (T5 family with T5X/Flaxformer parameter names, decoder-only LLM families)."""

from __future__ import annotations

import flax.linen as nn

from prompt_tuning.models.config import ModelConfig, T5Config
from prompt_tuning.models.decoder_only import DecoderOnly
from prompt_tuning.models.t5 import EncoderDecoder
from prompt_tuning.models.transformer import DecoderCache


def build_model(config: ModelConfig) -> nn.Module:
  """The Flax module for `config.architecture` (constructs only; no parameters, no I/O)."""
  if config.architecture == "decoder_only":
    return DecoderOnly(config)
  return EncoderDecoder(config)


__all__ = ["ModelConfig", "T5Config", "EncoderDecoder", "DecoderOnly", "DecoderCache",
           "build_model"]
