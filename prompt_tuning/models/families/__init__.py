"""Model families: what maps a checkpoint's own config and tensor names onto `ModelConfig` and
our parameter tree.

A family holds data only: `config_from_hf` (a Hugging Face config.json dict -> `ModelConfig`)
and `tensor_names` (our parameter paths <-> the family's Hugging Face tensor names, with the
shape, whether torch's [out, in] layout is transposed, and, for a fused checkpoint tensor such
as GPT-2's `c_attn` or BLOOM's `query_key_value`, which part of it a variable is: `FusedPart`). GGUF files are read into Hugging
Face names and config first (`prompt_tuning.checkpoints.gguf`), so every family loads from
both formats through the same table. The transformer itself is shared (`models.transformer`).

Adding a family: a module here that defines its two functions and calls `register(Family(...))`,
imported at the bottom of this file.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from prompt_tuning.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class FusedPart:
  """Where one variable sits inside a fused checkpoint tensor (e.g. query of a fused QKV).

  The checkpoint tensor [*hf_shape] is viewed as `view` (a reshape), and the variable is entry
  `index` of axis `axis` of that view, reshaped to the variable's shape (in the checkpoint's
  layout, i.e. before `TensorName.transpose`). E.g. GPT-2's `c_attn.weight` [D, 3D] viewed as
  (D, 3, D), axis 1, index 0/1/2 = query/key/value; BLOOM's `query_key_value.weight` [3D, D]
  viewed as (heads, 3, head_dim, D), axis 1 (heads interleaved).
  """

  hf_shape: tuple[int, ...]
  view: tuple[int, ...]
  axis: int
  index: int

  def take(self, fused: np.ndarray) -> np.ndarray:
    """This part of the fused tensor [*hf_shape] (axis `axis` of the view removed)."""
    return np.take(fused.reshape(self.view), self.index, axis=self.axis)

  def put(self, fused_view: np.ndarray, part: np.ndarray) -> None:
    """Writes `part` into a fused tensor held as its view [*view] (the inverse of `take`)."""
    part_shape = self.view[:self.axis] + self.view[self.axis + 1:]
    np.moveaxis(fused_view, self.axis, 0)[self.index] = part.reshape(part_shape)


@dataclasses.dataclass(frozen=True)
class TensorName:
  """One variable: our path and shape, its Hugging Face name, and whether it is transposed.

  `aliases` are other names some writers store the same tensor under (tried in order).
  `fused` says which part of a fused Hugging Face tensor the variable is (None: all of it).
  `hf_dims`: the Hugging Face shape when it differs from ours by a reshape (BART's
  `final_logits_bias` [1, vocab] is our [vocab]).
  """

  path: str
  hf_name: str
  shape: tuple[int, ...]
  transpose: bool = False
  aliases: tuple[str, ...] = ()
  fused: Optional[FusedPart] = None
  hf_dims: Optional[tuple[int, ...]] = None

  @property
  def hf_shape(self) -> tuple[int, ...]:
    """Shape of the Hugging Face tensor (the whole fused tensor for a part)."""
    if self.fused is not None:
      return self.fused.hf_shape
    if self.hf_dims is not None:
      return self.hf_dims
    return self.shape[::-1] if self.transpose else self.shape

  @property
  def layout_shape(self) -> tuple[int, ...]:
    """The variable's shape in the checkpoint's layout (before the transpose)."""
    return self.shape[::-1] if self.transpose else self.shape

  def from_hf(self, value: np.ndarray) -> np.ndarray:
    """Our variable from the Hugging Face tensor [*hf_shape]."""
    if self.fused is not None:
      value = self.fused.take(value).reshape(self.layout_shape)
    elif self.hf_dims is not None:
      value = value.reshape(self.layout_shape)
    return value.T if self.transpose else value


def fused_parts(paths: Sequence[str], hf_name: str, shape: tuple[int, ...],
                hf_shape: tuple[int, ...], view: tuple[int, ...], axis: int,
                transpose: bool = False, aliases: tuple[str, ...] = ()) -> list[TensorName]:
  """One `TensorName` per variable in `paths`, each of `shape`, taken from part i (its index)
  of axis `axis` of the fused tensor `hf_name` [*hf_shape] viewed as `view`."""
  if view[axis] != len(paths):
    raise ValueError(f"fused tensor {hf_name}: view {view} has {view[axis]} parts on axis "
                     f"{axis}, but {len(paths)} variables are mapped to it.")
  return [TensorName(path, hf_name, shape, transpose, aliases,
                     FusedPart(tuple(hf_shape), tuple(view), axis, index))
          for index, path in enumerate(paths)]


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
from prompt_tuning.models.families import (  # noqa: E402,F401
    t5, llama, mistral, qwen2, gemma3, gpt2, bloom, bart)
