"""Matching a loaded parameter tree against the tree a model expects.

`match_params` checks every variable of a checkpoint against the model's
shapes (e.g. from `jax.eval_shape(model.init, ...)["params"]`) and raises one
`CheckpointMismatchError` that names the first problem (missing variable,
unexpected variable, wrong shape, wrong vocabulary size) and counts the others.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from flax.core import meta
import numpy as np

from prompt_tuning.checkpoints import tree

_MAX_LISTED = 8
# (model path suffix, checkpoint path suffix, advice) for MLPs of the other
# T5 version: T5 1.0 has one input kernel `wi`, T5 1.1 / mT5 gated `wi_0, wi_1`.
_MLP_VERSIONS = (
    ("mlp/wi_0/kernel", "mlp/wi/kernel",
     "the checkpoint has a T5 1.0 MLP ('mlp/wi') but the model a gated "
     "T5 1.1 MLP ('mlp/wi_0', 'mlp/wi_1'): use a T5 1.0 architecture for this "
     "checkpoint"),
    ("mlp/wi/kernel", "mlp/wi_0/kernel",
     "the checkpoint has a gated T5 1.1 MLP ('mlp/wi_0', 'mlp/wi_1') but the "
     "model a T5 1.0 MLP ('mlp/wi'): use a T5 1.1 / mT5 architecture for this "
     "checkpoint"),
)


class CheckpointMismatchError(ValueError):
  """Loaded parameters that do not fit the model's parameter tree."""


class _Problem(NamedTuple):
  kind: str  # "missing", "unexpected" or "shape".
  path: str
  message: str


def _unboxed(leaf: Any) -> Any:
  """The value inside flax partitioning metadata boxes (nn.Partitioned...)."""
  return leaf.unbox() if isinstance(leaf, meta.AxisMetadata) else leaf


def _shape(leaf: Any, path: str) -> tuple[int, ...]:
  leaf = _unboxed(leaf)
  if hasattr(leaf, "shape"):
    return tuple(leaf.shape)
  if isinstance(leaf, (tuple, list)) and all(isinstance(d, int) for d in leaf):
    return tuple(leaf)
  raise TypeError(
      f"Model parameter '{path}' is a {type(leaf).__name__}; expected an "
      "array, a jax.ShapeDtypeStruct or a shape tuple.")


def _vocab_message(path: str, loaded: tuple[int, ...],
                   expected: tuple[int, ...]) -> str | None:
  """Explains a shape mismatch that is a vocabulary-size mismatch."""
  if len(loaded) != 2 or len(expected) != 2:
    return None
  if path.endswith("token_embedder/embedding") and loaded[1] == expected[1]:
    axis, words = 0, "rows"
  elif path.endswith("logits_dense/kernel") and loaded[0] == expected[0]:
    axis, words = 1, "columns"
  else:
    return None
  have, want = loaded[axis], expected[axis]
  return (
      f"vocabulary size mismatch at '{path}': checkpoint vocabulary has "
      f"{have} {words}, model expects {want}: set NUM_EMBEDDINGS={have} "
      f"(e.g. --gin.NUM_EMBEDDINGS={have}) to build the model with the "
      f"checkpoint's vocabulary (checkpoint shape {list(loaded)}, model shape "
      f"{list(expected)}).")


def _mlp_hint(path: str, others: Mapping[str, Any], *, model_side: bool) -> str:
  """Advice when `path` is the other T5 version's MLP kernel of `others`."""
  for ours, theirs, advice in _MLP_VERSIONS:
    here, there = (ours, theirs) if model_side else (theirs, ours)
    if path.endswith(here) and path[:-len(here)] + there in others:
      return f" Note: {advice}."
  return ""


def _missing(path: str, shape: tuple[int, ...],
             loaded: Mapping[str, Any]) -> _Problem:
  hint = _mlp_hint(path, loaded, model_side=True)
  if not hint:
    close = difflib.get_close_matches(path, list(loaded), n=3, cutoff=0.6)
    if close:
      hint = f" Closest checkpoint variables: {', '.join(close)}."
  return _Problem(
      "missing", path,
      f"variable '{path}' (shape {list(shape)}) of the model is missing from "
      f"the checkpoint.{hint} If the model adds it on purpose (e.g. a "
      "prompt), pass allow_missing=<regex of such paths>.")


def _unexpected(path: str, value: Any, expected: Mapping[str, Any]) -> _Problem:
  hint = _mlp_hint(path, expected, model_side=False)
  shape = list(getattr(value, "shape", ()))
  return _Problem(
      "unexpected", path,
      f"the checkpoint has variable '{path}' (shape {shape}) that the model "
      f"does not define.{hint} To drop such variables, pass "
      "ignore_unexpected=<regex of their paths>.")


def _wrong_shape(path: str, loaded: tuple[int, ...],
                 expected: tuple[int, ...]) -> _Problem:
  message = _vocab_message(path, loaded, expected) or (
      f"variable '{path}' has shape {list(loaded)} in the checkpoint but the "
      f"model expects {list(expected)}: the checkpoint was written for "
      "another model size or configuration.")
  return _Problem("shape", path, message)


def _error(source: str, problems: list[_Problem]) -> CheckpointMismatchError:
  first, others = problems[0], problems[1:]
  message = f"Parameters from {source} do not fit the model: {first.message}"
  if others:
    listed = "; ".join(f"{p.kind} '{p.path}'" for p in others[:_MAX_LISTED])
    more = (f"; ... ({len(others) - _MAX_LISTED} more)"
            if len(others) > _MAX_LISTED else "")
    message += f"\n{len(others)} other problem(s): {listed}{more}."
  return CheckpointMismatchError(message)


def match_params(expected: Mapping[str, Any], loaded: Mapping[str, Any], *,
                 source: str, allow_missing: str | None = None,
                 ignore_unexpected: str | None = None) -> dict[str, Any]:
  """Checks loaded parameters against the model's and casts their dtypes.

  Every leaf is checked before anything is reported, so the error names the
  first problem (in the model's variable order, then unexpected variables)
  and counts the rest.

  Args:
    expected: the model's parameter tree; leaves are arrays,
      `jax.ShapeDtypeStruct`s (optionally in flax partitioning boxes) or shape
      tuples. Leaves with a dtype give the dtype to cast to.
    loaded: nested dict of arrays read from a checkpoint.
    source: where `loaded` came from (a path), for error messages.
    allow_missing: regex; model variables whose whole '/'-joined path matches
      (re.fullmatch, e.g. '.*/prompt/.*') may be absent from `loaded`.
    ignore_unexpected: regex; variables of `loaded` that the model does not
      define and whose whole path matches are dropped instead of raising.

  Returns:
    Nested dict with the loaded arrays of every model variable present in
    `loaded` (allowed-missing ones are absent), cast to the model's dtypes.

  Raises:
    CheckpointMismatchError: a variable is missing, unexpected or has the
      wrong shape.
  """
  expected_flat = tree.flatten_params(expected)
  loaded_flat = tree.flatten_params(loaded)
  may_miss = re.compile(allow_missing) if allow_missing is not None else None
  may_add = (re.compile(ignore_unexpected)
             if ignore_unexpected is not None else None)
  problems: list[_Problem] = []
  matched: dict[str, Any] = {}
  for path, leaf in expected_flat.items():
    want = _shape(leaf, path)
    if path not in loaded_flat:
      if not (may_miss and may_miss.fullmatch(path)):
        problems.append(_missing(path, want, loaded_flat))
      continue
    value = loaded_flat[path]
    have = tuple(getattr(value, "shape", ()))
    if have != want:
      problems.append(_wrong_shape(path, have, want))
      continue
    dtype = getattr(_unboxed(leaf), "dtype", None)
    if dtype is not None and getattr(value, "dtype", None) != dtype:
      value = np.asarray(value) if not hasattr(value, "astype") else value
      value = value.astype(dtype)
    matched[path] = value
  for path, value in loaded_flat.items():
    if path not in expected_flat and not (may_add and may_add.fullmatch(path)):
      problems.append(_unexpected(path, value, expected_flat))
  if problems:
    raise _error(source, problems)
  return tree.unflatten_params(matched)
