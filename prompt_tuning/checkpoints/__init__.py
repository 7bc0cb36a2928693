"""Readers of frozen-weight checkpoints (T5X, Hugging Face, our orbax) into our parameter tree."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from prompt_tuning.checkpoints import gguf, huggingface, orbax, t5x
from prompt_tuning.checkpoints.restore import CheckpointMismatchError, match_params
from prompt_tuning.models.config import ModelConfig


def checkpoint_format(path: str | os.PathLike) -> str:
  """'t5x', 'huggingface', 'gguf' or 'orbax' for a checkpoint path; raises ValueError naming
  the expected files."""
  path = os.fspath(path)
  if huggingface.is_hf_checkpoint(path):
    return "huggingface"
  if gguf.is_gguf_checkpoint(path):
    return "gguf"
  if t5x.is_t5x_checkpoint(path):
    return "t5x"
  if orbax.is_orbax_checkpoint(path):
    return "orbax"
  raise ValueError(
      f"{path} is not a checkpoint this library reads: expected a T5X checkpoint directory "
      "(with a msgpack `checkpoint` file), a Hugging Face directory (config.json + "
      "model.safetensors), a .gguf file or one of our orbax checkpoints "
      "(checkpoint_<step>/params).")


def config_from_checkpoint(path: str | os.PathLike) -> Optional[ModelConfig]:
  """The model config a checkpoint carries: Hugging Face config.json or GGUF metadata; None for
  formats without one (T5X, orbax)."""
  kind = checkpoint_format(path)
  if kind == "huggingface":
    return huggingface.config_from_hf(path)
  if kind == "gguf":
    return huggingface.config_from_hf(gguf.gguf_config(path))
  return None


def load_params(path: str | os.PathLike, expected: Mapping[str, Any], config: Any = None, *,
                restore_dtype: Any = None, allow_missing: Optional[str] = None) -> dict:
  """Reads a checkpoint of any supported format and checks it against the `expected` tree.

  `expected` is the model's parameter tree of shapes (e.g. from `jax.eval_shape`); every leaf is
  checked and cast to its dtype. `allow_missing` is a regex of paths that may be absent (e.g.
  the prompt, initialized fresh).
  """
  kind = checkpoint_format(path)
  if kind == "huggingface":
    loaded = huggingface.load_hf_params(path, config=config, restore_dtype=restore_dtype)
  elif kind == "gguf":
    if config is None:
      config = huggingface.config_from_hf(gguf.gguf_config(path))
    tensors = gguf.gguf_tensors(path, restore_dtype=restore_dtype)
    loaded = huggingface.params_from_named_tensors(tensors, tensors.__getitem__, config, os.fspath(path),
                                                   restore_dtype=restore_dtype)
  elif kind == "orbax":
    loaded = orbax.load_params(path, restore_dtype=restore_dtype)
  else:
    loaded = t5x.load_t5x_params(path, restore_dtype=restore_dtype)
  return match_params(expected, loaded, source=os.fspath(path), allow_missing=allow_missing)


__all__ = ["CheckpointMismatchError", "checkpoint_format", "config_from_checkpoint", "load_params",
           "match_params"]
