"""One view over T5X, orbax and Hugging Face checkpoints for the scripts: list, then read.

`open_checkpoint(path)` detects the format and returns a `CheckpointIndex`: the variables'
'/'-joined paths (our T5X names) with shape and dtype, read on demand. T5X arrays and our
orbax arrays are read one by one (the rest of the checkpoint is never loaded); Hugging Face
weights are converted as a whole when opened.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import os
import pathlib
import re
import sys
from typing import Any, Iterable, Optional

import numpy as np

from prompt_tuning import checkpoints
from prompt_tuning.checkpoints import huggingface, orbax, t5x, tree

PathLike = str | os.PathLike
_T5X_STEP = re.compile(r"^checkpoint_(\d+)$")


@dataclasses.dataclass(frozen=True)
class VariableInfo:
  """Shape and stored dtype of one checkpoint variable."""
  shape: tuple[int, ...]
  dtype: np.dtype


def _is_float(dtype: Any) -> bool:
  return np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16"


def cast_float(array: np.ndarray, restore_dtype: Any) -> np.ndarray:
  """`array` cast to `restore_dtype` if it is floating point (integers are kept)."""
  if restore_dtype is None or not _is_float(array.dtype):
    return np.asarray(array)
  return np.asarray(array).astype(restore_dtype, copy=False)


class CheckpointIndex(abc.ABC):
  """The variables of one checkpoint, by '/'-joined path, readable one at a time."""

  kind: str

  def __init__(self, path: str):
    self.path = path

  @property
  @abc.abstractmethod
  def variables(self) -> dict[str, VariableInfo]:
    """{path: VariableInfo} of every variable, in the checkpoint's order."""

  @abc.abstractmethod
  def _read(self, paths: list[str], restore_dtype: Any) -> dict[str, np.ndarray]:
    """The arrays of `paths` (all known to exist)."""

  def read(self, paths: Iterable[str], restore_dtype: Any = None) -> dict[str, np.ndarray]:
    """Reads variables; floating-point arrays are cast to `restore_dtype` (None keeps them)."""
    paths = list(paths)
    for path in paths:
      self.require(path)
    return self._read(paths, restore_dtype)

  def require(self, path: str) -> None:
    """Raises KeyError (with the closest names) when the checkpoint has no variable `path`."""
    if path in self.variables:
      return
    names = list(self.variables)
    close = difflib.get_close_matches(path, names, n=4, cutoff=0.5)
    hint = (f"closest: {', '.join(close)}" if close else f"it holds e.g. {', '.join(names[:4])}")
    raise KeyError(
        f"{self.kind} checkpoint {self.path} has no variable '{path}' ({len(names)} variables; "
        f"{hint}). Paths are '/'-joined, e.g. 'encoder/prompt/prompt/prompt'.")


class _T5XIndex(CheckpointIndex):
  kind = "t5x"

  def __init__(self, path: str):
    super().__init__(path)
    self._index = t5x.t5x_variables(path)
    self._variables = {p: VariableInfo(tuple(v.shape), np.dtype(v.dtype))
                       for p, v in self._index.items()}

  @property
  def variables(self) -> dict[str, VariableInfo]:
    return self._variables

  def _read(self, paths, restore_dtype):
    return t5x.read_variables([self._index[p] for p in paths], restore_dtype)


class _OrbaxIndex(CheckpointIndex):
  kind = "orbax"

  def __init__(self, path: str):
    super().__init__(path)
    self.folder = orbax.step_folder(path)
    self._params_dir = pathlib.Path(self.folder) / orbax.PARAMS
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    metadata = ocp.StandardCheckpointHandler().metadata(self._params_dir)
    metadata = getattr(metadata, "tree", metadata)
    self._variables = {
        p: VariableInfo(tuple(getattr(m, "shape", ())), np.dtype(getattr(m, "dtype", np.float32)))
        for p, m in tree.flatten_params(metadata).items()}

  @property
  def variables(self) -> dict[str, VariableInfo]:
    return self._variables

  @property
  def step(self) -> int:
    return orbax.checkpoint_step(self.folder)

  def meta(self) -> dict:
    return orbax.read_meta(self.folder)

  def _read(self, paths, restore_dtype):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    flat_item = {p: np.zeros((), self._variables[p].dtype) for p in paths}
    flat_args = {p: ocp.RestoreArgs(restore_type=np.ndarray) for p in paths}
    args = ocp.args.PyTreeRestore(item=tree.unflatten_params(flat_item),
                                  restore_args=tree.unflatten_params(flat_args),
                                  partial_restore=True)
    restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(self._params_dir, args=args)
    flat = tree.flatten_params(restored)
    return {p: cast_float(np.asarray(flat[p]), restore_dtype) for p in paths}


class _HuggingFaceIndex(CheckpointIndex):
  kind = "huggingface"

  def __init__(self, path: str, config: Any = None):
    super().__init__(path)
    self.config = config if config is not None else huggingface.config_from_hf(path)
    self._flat = tree.flatten_params(huggingface.load_hf_t5_params(path, config=self.config))
    self._variables = {p: VariableInfo(tuple(a.shape), a.dtype) for p, a in self._flat.items()}

  @property
  def variables(self) -> dict[str, VariableInfo]:
    return self._variables

  def _read(self, paths, restore_dtype):
    return {p: cast_float(self._flat[p], restore_dtype) for p in paths}


def _newest_t5x_step(path: str) -> Optional[str]:
  """The newest `checkpoint_<step>` T5X folder directly under `path`, if any."""
  if not os.path.isdir(path):
    return None
  steps = [(int(m.group(1)), name) for name in os.listdir(path)
           if (m := _T5X_STEP.match(name)) and t5x.is_t5x_checkpoint(os.path.join(path, name))]
  return os.path.join(path, max(steps)[1]) if steps else None


def open_checkpoint(path: PathLike, hf_config: Any = None) -> CheckpointIndex:
  """The checkpoint at `path` (T5X step folder, orbax folder, Hugging Face directory).

  A folder of T5X `checkpoint_<step>` folders means its newest step (said on stderr).

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is no checkpoint of a supported format.
  """
  path = os.fspath(path)
  if "://" not in path and not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: pass a checkpoint folder.")
  try:
    kind = checkpoints.checkpoint_format(path)
  except ValueError:
    newest = _newest_t5x_step(path)
    if newest is None:
      raise
    print(f"Using the newest T5X checkpoint under {path}: {newest}", file=sys.stderr)
    path, kind = newest, "t5x"
  if kind == "t5x":
    return _T5XIndex(path)
  if kind == "orbax":
    return _OrbaxIndex(path)
  return _HuggingFaceIndex(path, hf_config)


def normalize_variable_path(variable_path: str) -> str:
  """'optimizer/target/a/b', 'target/a/b', 'target.a.b' or '/a/b/' -> 'a/b'."""
  path = variable_path.strip().strip("/")
  if "/" not in path and "." in path:  # T5X's tensorstore folder names: target.a.b.
    path = path.replace(".", "/")
  for prefix in ("optimizer/target/", "target/", "params/"):
    if path.startswith(prefix):
      return path[len(prefix):]
  return path


def params_of(index: CheckpointIndex, restore_dtype: Any = None) -> dict[str, Any]:
  """Every variable of `index` as a nested dict of numpy arrays."""
  return tree.unflatten_params(index.read(index.variables, restore_dtype))


def select(names: Iterable[str], pattern: Optional[re.Pattern]) -> list[str]:
  """The names whose whole path matches `pattern` (all names when it is None)."""
  return [n for n in names if pattern is None or pattern.fullmatch(n)]
