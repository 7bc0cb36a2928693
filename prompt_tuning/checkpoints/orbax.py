"""Our own checkpoints: orbax step folders holding named items.

Layout (one folder per saved step, written atomically by orbax: a temporary folder renamed
into place once complete):

  DIR/checkpoint_<step>/params      nested parameter tree (the trained part while training;
                                    the whole model for converted checkpoints)
  DIR/checkpoint_<step>/opt_state   optimizer state of the trained part (training only)
  DIR/checkpoint_<step>/meta        JSON: step, data position, trainable regex, ...

`path` arguments accept either DIR (the newest step is used) or one `checkpoint_<step>` folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning import errors
from prompt_tuning.checkpoints.errors import CheckpointReadError

PathLike = str | os.PathLike
STEP_PREFIX = "checkpoint"
PARAMS = "params"
OPT_STATE = "opt_state"
META = "meta"
_STEP_FOLDER = re.compile(rf"^{STEP_PREFIX}_(\d+)$")


class _DropThreadFailureLogs(logging.Filter):
  """Drops orbax's logs of failed writer / reader threads (with their tracebacks).

  The same failure is raised to the thread that waits for the write or read, where it is
  reported once (as a one-line error for storage failures); the logged copy only repeats it.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and
                "_SignalingThread.run() raised an exception" in str(record.msg))


_THREAD_FAILURE_FILTER = _DropThreadFailureLogs()


def quiet_thread_failure_logs() -> None:
  """Installs `_DropThreadFailureLogs` on absl's logger (orbax logs through it); idempotent."""
  logger = logging.getLogger("absl")
  if _THREAD_FAILURE_FILTER not in logger.filters:
    logger.addFilter(_THREAD_FAILURE_FILTER)


def manager(directory: PathLike, *, keep: Optional[int] = None, create: bool = True,
            temporary_path_class: Optional[type] = None) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` with our step-folder names and items.

  `temporary_path_class` replaces orbax's atomic-rename commit (crash tests only).
  """
  quiet_thread_failure_logs()
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, step_prefix=STEP_PREFIX, create=create,
                                         enable_async_checkpointing=False,
                                         temporary_path_class=temporary_path_class)
  return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options,
                               item_names=(PARAMS, OPT_STATE, META))


def _steps(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  steps = []
  for name in os.listdir(directory):
    match = _STEP_FOLDER.match(name)
    if match and os.path.isdir(os.path.join(directory, name, PARAMS)):
      steps.append(int(match.group(1)))
  return sorted(steps)


def step_folder(path: PathLike) -> str:
  """The `checkpoint_<step>` folder `path` names, or the newest one under it.

  Raises:
    FileNotFoundError: `path` holds no orbax checkpoint of ours.
  """
  path = os.path.abspath(os.fspath(path))
  if _STEP_FOLDER.match(os.path.basename(path)) and os.path.isdir(os.path.join(path, PARAMS)):
    return path
  steps = _steps(path)
  if not steps:
    raise FileNotFoundError(
        f"{path} holds no orbax checkpoint: expected a '{STEP_PREFIX}_<step>/{PARAMS}' folder "
        "(written by `prompt_tuning.train` or `prompt_tuning.scripts.convert_checkpoint`).")
  return os.path.join(path, f"{STEP_PREFIX}_{steps[-1]}")


def is_orbax_checkpoint(path: PathLike) -> bool:
  """Whether `path` is one of our orbax checkpoint folders (or a directory of them)."""
  try:
    step_folder(path)
  except (FileNotFoundError, OSError):
    return False
  return True


def checkpoint_step(path: PathLike) -> int:
  """The step of the checkpoint `path` names (newest under a directory)."""
  return int(_STEP_FOLDER.match(os.path.basename(step_folder(path))).group(1))


def save_params(directory: PathLike, params: Mapping[str, Any], step: int,
                meta: Optional[Mapping[str, Any]] = None) -> str:
  """Writes `params` (and JSON `meta`) as `directory/checkpoint_<step>`; returns that folder."""
  mngr = manager(directory)
  items = {PARAMS: ocp.args.StandardSave(dict(params)),
           META: ocp.args.JsonSave({"step": int(step), **dict(meta or {})})}
  mngr.save(int(step), args=ocp.args.Composite(**items), force=True)
  mngr.wait_until_finished()
  mngr.close()
  return os.path.join(os.path.abspath(os.fspath(directory)), f"{STEP_PREFIX}_{int(step)}")


@contextlib.contextmanager
def reading(folder: str, advice: str = "it is damaged or was copied incompletely; copy it "
            "again"):
  """Turns storage failures while reading `folder` (TensorStore, files) into CheckpointReadError.

  Other errors pass unchanged (they may be bugs). `advice` is the fix the message ends with.
  """
  try:
    yield
  except (OSError, ValueError) as error:
    if isinstance(error, errors.UserInputError):
      raise
    problem = errors.storage_problem(error)
    if problem is None:
      raise
    raise CheckpointReadError(f"checkpoint {folder} cannot be read ({problem}): {advice}.") \
        from error


def _restore_item(folder: str, name: str, args: Any) -> Any:
  quiet_thread_failure_logs()
  checkpointer = ocp.Checkpointer(_handler_for(args))
  with reading(folder):
    return checkpointer.restore(os.path.join(folder, name), args=args)


def _handler_for(args: Any) -> Any:
  if isinstance(args, ocp.args.JsonRestore):
    return ocp.JsonCheckpointHandler()
  return ocp.StandardCheckpointHandler()


def read_meta(path: PathLike) -> dict:
  """The JSON `meta` item of a checkpoint ({} when it has none)."""
  folder = step_folder(path)
  if not os.path.isdir(os.path.join(folder, META)):
    return {}
  return dict(_restore_item(folder, META, ocp.args.JsonRestore()))


def load_params(path: PathLike, restore_dtype: Any = None,
                abstract: Optional[Mapping[str, Any]] = None) -> dict:
  """The `params` item as a nested dict of numpy arrays (cast to `restore_dtype` if given)."""
  folder = step_folder(path)
  if abstract is None:  # The saved shapes; never the saved sharding (it names the saving devices).
    with reading(folder):
      abstract = ocp.StandardCheckpointHandler().metadata(pathlib.Path(folder, PARAMS)).tree
  # Every process reads the whole tree onto one of its own CPU devices, whatever mesh or process
  # count wrote it (a saved NamedSharding would fail with "Topology mismatch" elsewhere).
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
  target = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype, sharding=cpu), dict(abstract))
  restored = _restore_item(folder, PARAMS, ocp.args.StandardRestore(target))

  def to_numpy(x):
    array = np.asarray(x)
    return array.astype(restore_dtype) if restore_dtype is not None else array

  return jax.tree_util.tree_map(to_numpy, restored)
