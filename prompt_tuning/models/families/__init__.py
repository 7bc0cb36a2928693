"""Model families: what maps a checkpoint's own config and tensor names onto `ModelConfig` and
our parameter tree.

A family holds data only: `config_from_hf` (a Hugging Face config.json dict -> `ModelConfig`)
and `tensor_names` (our parameter paths <-> the family's Hugging Face tensor names, with the
shape and whether torch's [out, in] layout is transposed). GGUF files are read into Hugging
Face names and config first (`prompt_tuning.checkpoints.gguf`), so every family loads from
both formats through the same table. The transformer itself is shared (`models.transformer`).

Adding a family: a module here that defines its two functions and calls `register(Family(...))`,
imported at the bottom of this file.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional

from prompt_tuning.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class TensorName:
  """One variable: our path and shape, its Hugging Face name, and whether it is transposed.

  `aliases` are other names some writers store the same tensor under (tried in order).
  `hf_dims`: the Hugging Face shape when it differs from ours by a reshape (BART's
  `final_logits_bias` [1, vocab] is our [vocab]).
  """

  path: str
  hf_name: str
  shape: tuple[int, ...]
  transpose: bool = False
  aliases: tuple[str, ...] = ()
  hf_dims: Optional[tuple[int, ...]] = None

  @property
  def hf_shape(self) -> tuple[int, ...]:
    if self.hf_dims is not None:
      return self.hf_dims
    return self.shape[::-1] if self.transpose else self.shape


@dataclasses.dataclass(frozen=True)
class Family:
  """A checkpoint family (see the module docstring).

  model_types: Hugging Face `model_type` values it reads.
  ignored: regexes of Hugging Face tensors a checkpoint may hold that are not model weights
    (e.g. cached rotary frequencies); anything else unused is an error.
  tied_head_name: the head tensor a tied checkpoint may still write out (equal to the
    embedding); tolerated when equal.
  hf_config_from_config: the inverse of `config_from_hf`, for exporting (optional).
  """

  name: str
  model_types: tuple[str, ...]
  config_from_hf: Callable[[Mapping[str, Any]], ModelConfig]
  tensor_names: Callable[[ModelConfig], list[TensorName]]
  ignored: tuple[str, ...] = ()
  tied_head_name: Optional[str] = None
  hf_config_from_config: Optional[Callable[[ModelConfig], dict[str, Any]]] = None

  def is_ignored(self, hf_name: str) -> bool:
    return any(re.fullmatch(pattern, hf_name) for pattern in self.ignored)


_FAMILIES: dict[str, Family] = {}
_BY_MODEL_TYPE: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Makes `family` known by its name and model types; returns it."""
  _FAMILIES[family.name] = family
  for model_type in family.model_types:
    _BY_MODEL_TYPE[model_type] = family
  return family


def supported_model_types() -> list[str]:
  return sorted(_BY_MODEL_TYPE)


def for_model_type(model_type: Optional[str]) -> Family:
  """The family reading Hugging Face `model_type`; a clear error for unsupported ones."""
  if model_type not in _BY_MODEL_TYPE:
    raise ValueError(f"Hugging Face config has model_type={model_type!r}, which is not supported; "
                     f"supported: "
                     f"{', '.join(supported_model_types())}.")
  return _BY_MODEL_TYPE[model_type]


def for_config(config: ModelConfig) -> Family:
  """The family of a `ModelConfig` (its `family` field)."""
  if config.family not in _FAMILIES:
    raise ValueError(f"ModelConfig.family={config.family!r} is not a known family; known: "
                     f"{', '.join(sorted(_FAMILIES))}.")
  return _FAMILIES[config.family]


def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
  """`ModelConfig` of a Hugging Face config.json dict, by its `model_type`."""
  return for_model_type(hf_config.get("model_type")).config_from_hf(hf_config)


# Families, registered on import (explicitly, in one place).
from prompt_tuning.models.families import t5, llama, mistral, qwen2, gemma3, bart  # noqa: E402,F401
