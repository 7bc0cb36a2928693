"""Readers of frozen-weight checkpoints (T5X, Hugging Face, our orbax) into our parameter tree."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from prompt_tuning.checkpoints import huggingface, orbax, t5x
from prompt_tuning.checkpoints.restore import CheckpointMismatchError, match_params


def checkpoint_format(path: str | os.PathLike) -> str:
  """'t5x', 'huggingface' or 'orbax' for a checkpoint path; raises ValueError naming the expected files."""
  path = os.fspath(path)
  if huggingface.is_hf_checkpoint(path):
    return "huggingface"
  if t5x.is_t5x_checkpoint(path):
    return "t5x"
  if orbax.is_orbax_checkpoint(path):
    return "orbax"
  raise ValueError(
      f"{path} is not a checkpoint this library reads: expected a T5X checkpoint directory "
      "(with a msgpack `checkpoint` file), a Hugging Face directory (config.json + "
      "model.safetensors) or one of our orbax checkpoints (checkpoint_<step>/params).")


def load_params(path: str | os.PathLike, expected: Mapping[str, Any], config: Any = None, *,
                restore_dtype: Any = None, allow_missing: Optional[str] = None) -> dict:
  """Reads a checkpoint of any supported format and checks it against the `expected` tree.

  `expected` is the model's parameter tree of shapes (e.g. from `jax.eval_shape`); every leaf is
  checked and cast to its dtype. `allow_missing` is a regex of paths that may be absent (e.g.
  the prompt, initialized fresh).
  """
  kind = checkpoint_format(path)
  if kind == "huggingface":
    loaded = huggingface.load_hf_t5_params(path, config=config, restore_dtype=restore_dtype)
  elif kind == "orbax":
    loaded = orbax.load_params(path, restore_dtype=restore_dtype)
  else:
    loaded = t5x.load_t5x_params(path, restore_dtype=restore_dtype)
  return match_params(expected, loaded, source=os.fspath(path), allow_missing=allow_missing)


__all__ = ["CheckpointMismatchError", "checkpoint_format", "load_params", "match_params"]
