"""Reading parameters from T5X checkpoints without T5X.

A T5X checkpoint folder (e.g. `.../checkpoint_1100000`) holds a msgpack file
named `checkpoint` (flax serialization) and one tensorstore zarr array per large
variable in sub-folders named `target.<dotted variable path>`. The msgpack holds
the parameters under `optimizer/target` (T5X before 2022) or `target` (newer
T5X and plain flax), the optimizer state under `optimizer/state` or `state`;
each parameter is either an inline numpy array or a tensorstore spec whose
kvstore (driver `gfile`, `file` or `gcs`) path is relative to the folder.

Variables are indexed lazily: `t5x_variables` parses the msgpack only, and each
`T5XVariable` reads its array when asked, so one variable (the embedding table,
a prompt) can be pulled without loading the model.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flax import serialization
import ml_dtypes
import numpy as np
import tensorstore as ts

from prompt_tuning import errors
from prompt_tuning.checkpoints import tree
from prompt_tuning.checkpoints.errors import CheckpointFormatError, CheckpointReadError

CHECKPOINT_FILE = "checkpoint"
# Format version 3 (T5X, June 2021) writes bfloat16 natively; earlier versions
# wrote bfloat16 arrays to tensorstore as their uint16 bit patterns.
_NATIVE_BFLOAT16_VERSION = 3
_GCS_PATH = re.compile(r"gs://([^/]+)/?(.*)", re.DOTALL)

PathLike = str | os.PathLike


class T5XVariableNotFoundError(KeyError):
  """A variable path that the checkpoint does not hold."""

  def __str__(self) -> str:
    # KeyError quotes its message; show it as written.
    return str(self.args[0]) if self.args else ""


def _is_remote(path: str) -> bool:
  return "://" in path


class _RemoteStorage:
  """tf.io.gfile (imported only when a non-local path needs it) with its errors made one-line
  CheckpointReadErrors: an unreachable bucket, missing credentials, no network."""

  def __getattr__(self, name: str) -> Any:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    call = getattr(tf.io.gfile, name)

    def checked(path: str, *args: Any, **kwargs: Any) -> Any:
      try:
        return call(path, *args, **kwargs)
      except tf.errors.OpError as error:
        raise CheckpointReadError(
            f"cannot read {path} ({errors.one_line(error.message)}): check the path, the network "
            "connection and your credentials, or copy the checkpoint to a local folder.") \
            from error

    return checked


def _gfile() -> Any:
  return _RemoteStorage()


def remote_exists(path: str) -> bool:
  """Whether a gs:// (or other tf.io.gfile) path exists; CheckpointReadError if unreachable."""
  return _gfile().exists(path)


def _isdir(path: str) -> bool:
  return _gfile().isdir(path) if _is_remote(path) else os.path.isdir(path)


def _isfile(path: str) -> bool:
  if _is_remote(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def _listdir(path: str) -> list[str]:
  names = _gfile().listdir(path) if _is_remote(path) else os.listdir(path)
  return sorted(name.rstrip("/") for name in names)


def _read_bytes(path: str) -> bytes:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()
    except tf.errors.OpError as error:
      raise CheckpointReadError(
          f"cannot read {path} ({errors.one_line(error.message)}): check the path, the network "
          "connection and your credentials, or copy the checkpoint to a local folder.") from error
  with open(path, "rb") as f:
    return f.read()


def _locate(checkpoint_path: PathLike) -> tuple[str, str]:
  """Returns (checkpoint folder, msgpack file) for a folder or file path."""
  path = os.fspath(checkpoint_path).rstrip("/")
  if not _is_remote(path):  # tensorstore's file driver needs absolute paths.
    path = os.path.abspath(path)
  if os.path.basename(path) == CHECKPOINT_FILE and _isfile(path):
    return os.path.dirname(path), path
  file = f"{path}/{CHECKPOINT_FILE}"
  if _isdir(path) and _isfile(file):
    return path, file
  hint = ""
  if _isdir(path):
    steps = [name for name in _listdir(path)
             if re.fullmatch(r"checkpoint_\d+", name)]
    if steps:
      hint = (f" It holds the step folders {', '.join(steps)}: pass one of "
              f"them, e.g. {path}/{steps[-1]}.")
  raise FileNotFoundError(
      f"No T5X checkpoint at {path}: expected a folder holding a "
      f"'{CHECKPOINT_FILE}' msgpack file (e.g. .../checkpoint_1100000) or "
      f"that file itself.{hint}")


def _read_contents(checkpoint_path: PathLike) -> tuple[str, dict[str, Any]]:
  """Returns (checkpoint folder, parsed msgpack contents)."""
  folder, file = _locate(checkpoint_path)
  try:
    contents = serialization.msgpack_restore(_read_bytes(file))
  except ValueError as e:
    if _looks_like_tensorflow_index(file):
      raise CheckpointFormatError(
          f"{file} is not a T5X checkpoint: it is not msgpack but TensorFlow's checkpoint "
          "index; a TensorFlow checkpoint (model.ckpt-* files) must be converted to T5X "
          "first.") from e
    raise CheckpointReadError(
        f"{file} cannot be read as a T5X checkpoint: its msgpack data is damaged ({e}; "
        f"{_size(file)}). The file is truncated or corrupt: copy the checkpoint again.") from e
  if not isinstance(contents, dict):
    raise CheckpointFormatError(
        f"{file} is not a T5X checkpoint: its msgpack holds a "
        f"{type(contents).__name__}, not a dict of 'target' and 'state'.")
  return folder, contents


def _size(file: str) -> str:
  try:
    return f"{_gfile().stat(file).length if _is_remote(file) else os.path.getsize(file)} bytes"
  except OSError:
    return "size unknown"


def _looks_like_tensorflow_index(file: str) -> bool:
  """Whether `file` is TensorFlow's text `checkpoint` index (model_checkpoint_path: ...)."""
  try:
    return _read_bytes(file)[:64].lstrip().startswith(b"model_checkpoint_path")
  except OSError:
    return False


def has_checkpoint_file(path: PathLike) -> bool:
  """Whether `path` is, or is a folder holding, a file named `checkpoint` (T5X's msgpack)."""
  path = os.fspath(path).rstrip("/")
  if os.path.basename(path) == CHECKPOINT_FILE and _isfile(path):
    return True
  return _isfile(f"{path}/{CHECKPOINT_FILE}")


def _section(contents: Mapping[str, Any], name: str, file: str) -> Any:
  """The 'target' or 'state' sub-tree in either checkpoint layout."""
  optimizer = contents.get("optimizer")
  if isinstance(optimizer, Mapping) and name in optimizer:
    return optimizer[name]
  if name in contents:
    return contents[name]
  raise CheckpointFormatError(
      f"{file} holds no '{name}': its top-level keys are "
      f"{sorted(contents)}; a T5X checkpoint has 'optimizer/{name}' (T5X "
      f"before 2022) or '{name}' (newer T5X).")


def _is_tensorstore_spec(value: Any) -> bool:
  return isinstance(value, Mapping) and "driver" in value and (
      "kvstore" in value or "path" in value)


def absolute_tensorstore_spec(spec: Mapping[str, Any],
                              checkpoint_dir: str) -> dict[str, Any]:
  """Returns a T5X tensorstore spec with its kvstore pointing at real files.

  The relative array path (in `kvstore.path`, or the top-level `path` written
  by tensorstore < 0.1.14) is joined to `checkpoint_dir`; the kvstore becomes
  `file` for local folders and `gcs` (bucket and path) for gs:// ones, whatever
  driver (`gfile`, `file`, `gcs`) wrote it. The metadata keeps only shape and
  dtype, so arrays written with other chunks or compression still open.

  Args:
    spec: a tensorstore spec dict as stored in the msgpack.
    checkpoint_dir: the checkpoint folder, local or gs://bucket/path.
  """
  spec = copy.deepcopy(dict(spec))
  kvstore = spec.get("kvstore")
  if isinstance(kvstore, Mapping) and "path" in kvstore:
    relative = kvstore["path"]
    spec.pop("path", None)
  elif "path" in spec:
    relative = spec.pop("path")
  else:
    raise ValueError(
        f"Tensorstore spec {spec} has no array path (expected 'kvstore.path' "
        "or 'path'): the checkpoint msgpack is malformed.")
  driver = kvstore.get("driver") if isinstance(kvstore, Mapping) else None
  if driver not in (None, "gfile", "file", "gcs"):
    raise ValueError(
        f"Tensorstore kvstore driver {driver!r} in {spec} is not one T5X "
        "writes; supported drivers are 'gfile', 'file' and 'gcs'.")
  gcs = _GCS_PATH.fullmatch(checkpoint_dir)
  if gcs:
    prefix = gcs.group(2).rstrip("/")
    path = f"{prefix}/{relative}" if prefix else relative
    spec["kvstore"] = {"driver": "gcs", "bucket": gcs.group(1), "path": path}
  elif _is_remote(checkpoint_dir):
    raise ValueError(
        f"Checkpoint folder {checkpoint_dir} is neither local nor gs://; "
        "tensorstore arrays can be read from local folders and gs:// only.")
  else:
    spec["kvstore"] = {"driver": "file",
                       "path": os.path.join(checkpoint_dir, relative)}
  metadata = spec.get("metadata")
  if isinstance(metadata, Mapping):
    spec["metadata"] = {k: v for k, v in metadata.items()
                        if k in ("shape", "dtype")}
  return spec


def _is_float(dtype: np.dtype) -> bool:
  try:
    ml_dtypes.finfo(dtype)
  except ValueError:
    return False
  return True


@dataclasses.dataclass(frozen=True, eq=False)
class T5XVariable:
  """One parameter of a T5X checkpoint, read on demand.

  Attributes:
    path: '/'-joined parameter path, e.g. 'token_embedder/embedding'.
    shape: the array's shape.
    dtype: the array's dtype as stored (bfloat16 as ml_dtypes.bfloat16).
    inline: the array when the msgpack holds it, else None.
    spec: the absolute tensorstore spec when the array lives in tensorstore.
    bfloat16_as_uint16: the tensorstore array holds bfloat16 bit patterns as
      uint16 (format versions before 3).
  """
  path: str
  shape: tuple[int, ...]
  dtype: np.dtype
  inline: np.ndarray | None = dataclasses.field(default=None, repr=False)
  spec: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
  bfloat16_as_uint16: bool = dataclasses.field(default=False, repr=False)

  @property
  def is_inline(self) -> bool:
    """Whether the array is stored in the msgpack itself (no tensorstore)."""
    return self.inline is not None

  def read(self, restore_dtype: Any = None) -> np.ndarray:
    """Reads the array; floating-point arrays are cast to `restore_dtype`."""
    return read_variables([self], restore_dtype)[self.path]


def _variable(path: str, value: Any, checkpoint_dir: str,
              version: int) -> T5XVariable:
  """Indexes one msgpack leaf of the target tree (no array read)."""
  if not _is_tensorstore_spec(value):
    array = np.asarray(value)
    return T5XVariable(path, tuple(array.shape), array.dtype, inline=array)
  spec = absolute_tensorstore_spec(value, checkpoint_dir)
  metadata = spec.get("metadata", {})
  if "shape" in metadata and "dtype" in metadata:
    shape, dtype = tuple(metadata["shape"]), np.dtype(metadata["dtype"])
  else:  # Older specs may omit metadata: ask the array itself.
    store = ts.open(spec, read=True).result()
    shape, dtype = tuple(store.shape), store.dtype.numpy_dtype
  as_uint16 = version < _NATIVE_BFLOAT16_VERSION and dtype == np.uint16
  if as_uint16:
    dtype = np.dtype(ml_dtypes.bfloat16)
  return T5XVariable(path, shape, dtype, spec=spec,
                     bfloat16_as_uint16=as_uint16)


def t5x_variables(checkpoint_path: PathLike) -> dict[str, T5XVariable]:
  """Indexes a checkpoint's parameters by '/'-joined path (no 'target/').

  Only the msgpack file is read; arrays stored in tensorstore are read by
  `T5XVariable.read` or `read_variables`.

  Args:
    checkpoint_path: the checkpoint folder (e.g. .../checkpoint_1100000) or
      its `checkpoint` file; local or gs://.
  """
  folder, contents = _read_contents(checkpoint_path)
  target = _section(contents, "target", f"{folder}/{CHECKPOINT_FILE}")
  version = int(contents.get("version", 0))
  index: dict[str, T5XVariable] = {}

  def visit(node: Any, path: str) -> None:
    if node is None or (isinstance(node, Mapping) and not node):
      return  # T5X stores absent (e.g. unused) entries as None or {}.
    if isinstance(node, Mapping) and not _is_tensorstore_spec(node):
      for key, value in node.items():
        visit(value, f"{path}/{key}" if path else str(key))
      return
    index[path] = _variable(path, node, folder, version)

  visit(target, "")
  return index


def _finish(array: np.ndarray, variable: T5XVariable,
            restore_dtype: np.dtype | None) -> np.ndarray:
  """Applies the uint16 -> bfloat16 view and the restore cast."""
  if variable.bfloat16_as_uint16:
    array = array.view(ml_dtypes.bfloat16)
  if restore_dtype is not None and _is_float(array.dtype):
    array = array.astype(restore_dtype, copy=False)
  return array


def read_variables(variables: Iterable[T5XVariable],
                   restore_dtype: Any = None) -> dict[str, np.ndarray]:
  """Reads many variables concurrently (tensorstore futures).

  Args:
    variables: variables from one or more `t5x_variables` indexes.
    restore_dtype: dtype (e.g. np.float32, "bfloat16") to cast floating-point
      arrays to; None keeps the stored dtype. Integer arrays are never cast.

  Returns:
    {variable path: numpy array}.
  """
  dtype = None if restore_dtype is None else np.dtype(restore_dtype)
  variables = list(variables)
  context = ts.Context()
  opened = {}
  for var in variables:
    if var.is_inline:
      continue
    spec = var.spec
    if dtype is not None and _is_float(var.dtype) and not var.bfloat16_as_uint16:
      spec = {"driver": "cast", "base": spec, "dtype": dtype.name}
    opened[var.path] = ts.open(spec, read=True, context=context)
  reads = {}
  for var in variables:
    if var.path in opened:
      try:
        reads[var.path] = opened[var.path].result().read()
      except ValueError as e:
        raise _read_error(var, e) from e
  arrays = {}
  for var in variables:
    if var.is_inline:
      array = np.array(var.inline)
    else:
      try:
        array = reads[var.path].result()
      except ValueError as e:
        raise _read_error(var, e) from e
    arrays[var.path] = _finish(array, var, dtype)
  return arrays


def _read_error(variable: T5XVariable, error: Exception) -> CheckpointReadError:
  location = variable.spec["kvstore"].get("path", variable.spec["kvstore"])
  return CheckpointReadError(
      f"Could not read T5X variable '{variable.path}' (shape "
      f"{list(variable.shape)}, {variable.dtype}) from {location}: "
      f"{errors.one_line(str(error))}. Each large variable lives in a 'target.<dotted path>' "
      "sub-folder of the checkpoint folder: the files there are missing or damaged; copy "
      "the checkpoint again.")


def _normalize_variable_path(variable_path: str) -> str:
  path = variable_path.strip().strip("/").replace(".", "/")
  for prefix in ("optimizer/target/", "target/"):
    if path.startswith(prefix):
      return path[len(prefix):]
  return path


def load_t5x_variable(checkpoint_path: PathLike, variable_path: str,
                      restore_dtype: Any = None) -> np.ndarray:
  """Reads one parameter of a checkpoint without loading the others.

  Args:
    checkpoint_path: the checkpoint folder or its `checkpoint` file.
    variable_path: e.g. 'token_embedder/embedding',
      'target.encoder.prompt.prompt.prompt' or
      'optimizer/target/encoder/encoder_norm/scale'.
    restore_dtype: dtype to cast a floating-point array to; None keeps it.

  Raises:
    T5XVariableNotFoundError: the checkpoint has no such parameter; the message
      lists the closest paths it does have.
  """
  index = t5x_variables(checkpoint_path)
  path = _normalize_variable_path(variable_path)
  if path not in index:
    close = difflib.get_close_matches(path, list(index), n=5, cutoff=0.5)
    suggestion = (f" Closest: {', '.join(close)}." if close else
                  f" It holds e.g. {', '.join(list(index)[:5])}.")
    raise T5XVariableNotFoundError(
        f"T5X checkpoint {os.fspath(checkpoint_path)} has no parameter "
        f"'{path}' (asked for {variable_path!r}; {len(index)} parameters)."
        f"{suggestion}")
  return index[path].read(restore_dtype)


def load_t5x_params(checkpoint_path: PathLike, restore_dtype: Any = None,
                    include: str | None = None) -> dict[str, Any]:
  """Reads a checkpoint's parameters as a nested dict of numpy arrays.

  Args:
    checkpoint_path: the checkpoint folder or its `checkpoint` file.
    restore_dtype: dtype to cast floating-point arrays to; None keeps them.
    include: optional regex; only parameters whose whole '/'-joined path
      matches it (re.fullmatch, e.g. '.*/prompt/.*') are read.

  Raises:
    ValueError: `include` matches no parameter.
  """
  index = t5x_variables(checkpoint_path)
  if include is not None:
    pattern = re.compile(include)
    index = {p: v for p, v in index.items() if pattern.fullmatch(p)}
    if not index:
      raise ValueError(
          f"include={include!r} matches no parameter of T5X checkpoint "
          f"{os.fspath(checkpoint_path)} (whole paths are matched, e.g. "
          "'.*/prompt/.*' or 'token_embedder/.*').")
  return tree.unflatten_params(read_variables(index.values(), restore_dtype))


def t5x_checkpoint_step(checkpoint_path: PathLike) -> int:
  """The training step recorded in a checkpoint's optimizer state."""
  folder, contents = _read_contents(checkpoint_path)
  file = f"{folder}/{CHECKPOINT_FILE}"
  state = _section(contents, "state", file)
  step = state.get("step") if isinstance(state, Mapping) else None
  if step is None or _is_tensorstore_spec(step):
    raise ValueError(f"{file} records no inline 'state/step'.")
  return int(np.asarray(step))


def is_t5x_checkpoint(path: PathLike) -> bool:
  """Whether `path` is a T5X checkpoint folder or `checkpoint` file."""
  try:
    folder, contents = _read_contents(path)
    _section(contents, "target", folder)
  except (OSError, ValueError):
    return False
  return True
