"""Readers of frozen-weight checkpoints (T5X, Hugging Face, our orbax) into our parameter tree."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from prompt_tuning import errors as user_errors  # not `errors`: the package's submodule of that name
from prompt_tuning.checkpoints import gguf, huggingface, orbax, t5x
from prompt_tuning.checkpoints.errors import (CheckpointFormatError, CheckpointNotFoundError,
                                              CheckpointReadError)
from prompt_tuning.checkpoints.restore import CheckpointMismatchError, match_params
from prompt_tuning.models.config import ModelConfig

_LISTED = 6


def _contents(path: str) -> str:
  """A short listing of a folder, for messages about paths that are not checkpoints."""
  try:
    names = sorted(os.listdir(path))
  except OSError:
    return "it is not a folder"
  if not names:
    return "it is empty"
  shown = ", ".join(names[:_LISTED]) + (f", ... ({len(names) - _LISTED} more)"
                                        if len(names) > _LISTED else "")
  return f"it holds {shown}"


def checkpoint_format(path: str | os.PathLike) -> str:
  """'t5x', 'huggingface', 'gguf' or 'orbax' for a checkpoint path.

  Raises:
    CheckpointNotFoundError: nothing at `path`.
    CheckpointReadError: a T5X checkpoint whose msgpack `checkpoint` file cannot be read.
    CheckpointFormatError: `path` is no checkpoint of a supported format (the message names the
      expected files and what the folder holds).
  """
  path = os.fspath(path)
  exists = os.path.exists(path) if "://" not in path else t5x.remote_exists(path)
  if not exists:
    raise CheckpointNotFoundError(
        f"checkpoint {path} does not exist: pass an existing T5X checkpoint folder (e.g. "
        ".../checkpoint_1100000), Hugging Face model directory or orbax checkpoint of ours.")
  if huggingface.is_hf_checkpoint(path):
    return "huggingface"
  if gguf.is_gguf_checkpoint(path):
    return "gguf"
  if t5x.is_t5x_checkpoint(path):
    return "t5x"
  if t5x.has_checkpoint_file(path):
    t5x.t5x_variables(path)  # Raises CheckpointReadError naming what is wrong with the file.
  if orbax.is_orbax_checkpoint(path):
    return "orbax"
  raise CheckpointFormatError(
      f"{path} is not a checkpoint this library reads ({_contents(path)}): expected a T5X "
      "checkpoint directory (with a msgpack `checkpoint` file), a Hugging Face directory "
      "(config.json + model.safetensors), a .gguf file or one of our orbax checkpoints "
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
  the prompt, initialized fresh). Hugging Face and GGUF tensors are read straight into the
  dtype of the model's token embedding when `restore_dtype` is None (bfloat16 frozen weights
  never exist as a float32 tree: Gemma-3-270m's GGUF loads with a 1.8 GB instead of a 3.2 GB
  peak).
  """
  kind = checkpoint_format(path)
  if restore_dtype is None and kind in ("huggingface", "gguf"):
    restore_dtype = _embedding_dtype(expected)
  try:
    if kind == "huggingface":
      loaded = huggingface.load_hf_params(path, config=config, restore_dtype=restore_dtype)
    elif kind == "gguf":
      if config is None:
        config = huggingface.config_from_hf(gguf.gguf_config(path))
      tensors = gguf.gguf_tensors(path, restore_dtype=restore_dtype)
      loaded = huggingface.params_from_named_tensors(tensors, tensors.__getitem__, config,
                                                     os.fspath(path), restore_dtype=restore_dtype)
    elif kind == "orbax":
      loaded = orbax.load_params(path, restore_dtype=restore_dtype)
    else:
      loaded = t5x.load_t5x_params(path, restore_dtype=restore_dtype)
  except (user_errors.UserInputError, CheckpointMismatchError):
    raise
  except (OSError, ValueError) as error:
    problem = user_errors.storage_problem(error)
    if problem is None:
      raise
    raise CheckpointReadError(
        f"{kind} checkpoint {os.fspath(path)} cannot be read ({problem}): it is damaged or "
        "was copied incompletely; copy it again.") from error
  return match_params(expected, loaded, source=os.fspath(path), allow_missing=allow_missing)


def _embedding_dtype(expected: Mapping[str, Any]) -> Any:
  """The dtype of the expected tree's token embedding (the frozen weights'), or None."""
  from prompt_tuning.checkpoints import tree  # pylint: disable=g-import-not-at-top
  for leaf_path, leaf in tree.flatten_params(expected).items():
    if leaf_path.endswith("token_embedder/embedding"):
      leaf = getattr(leaf, "value", leaf)  # Boxed (logically partitioned) leaves.
      return getattr(leaf, "dtype", None)
  return None


__all__ = ["CheckpointFormatError", "CheckpointMismatchError", "CheckpointNotFoundError",
           "CheckpointReadError", "checkpoint_format", "config_from_checkpoint", "load_params",
           "match_params"]
