"""Checkpoints of a training run: the trained parameters, optimizer state, step and data position.

Written with orbax under MODEL_DIR (see `prompt_tuning.checkpoints.orbax` for the layout), one
`checkpoint_<step>` folder per save, each complete or absent (orbax writes a temporary folder and
renames it). Frozen weights are never re-saved: they come from INITIAL_CHECKPOINT_PATH. Each trained
parameter is also written as `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/<path with dots>.npy`
(e.g. `encoder.prompt.prompt.prompt.npy`), the prompt file users ship, and reparameterised methods
add `for_inference/` files there (`inference_exports`).

Crash safety: a step's `.npy` files are written (each atomically) *before* orbax commits
`checkpoint_<step>`, so whenever a process dies, every committed checkpoint has its files;
`prompt_tuning.train.recovery` re-creates any that are missing (e.g. written by older versions)
and removes what interrupted writes left behind.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning import errors
from prompt_tuning.checkpoints import CheckpointMismatchError, CheckpointReadError
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.checkpoints import tree
from prompt_tuning.train import kill_points

NUMPY_DIR = "numpy_checkpoints"
INFERENCE_DIR = "for_inference"
# Files every complete training checkpoint folder holds (orbax writes them before its commit).
_COMPLETE_MARKERS = ("_CHECKPOINT_METADATA", f"{orbax_format.PARAMS}/_METADATA",
                     f"{orbax_format.OPT_STATE}/_METADATA", f"{orbax_format.META}/metadata")
ORBAX_TEMPORARY = re.compile(r"\.orbax-checkpoint-tmp")

# (model_dir, step, trainable) -> the paths of the step's exported files.
Exporter = Callable[[str, int, Any], list[str]]


class CheckpointWriteError(errors.UserInputError, OSError):
  """A checkpoint or prompt file could not be written (disk full, permissions, ...)."""


def numpy_checkpoint_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, NUMPY_DIR, f"{orbax_format.STEP_PREFIX}_{step}")


def numpy_file_name(path: str) -> str:
  """File name of a parameter path: 'encoder/prompt/prompt/prompt' -> 'encoder.prompt.prompt.prompt.npy'."""
  return path.replace(tree.SEPARATOR, ".") + ".npy"


def temporary_npy_name(path: str) -> str:
  return f"{path}.tmp-{os.getpid()}"


def write_npy_atomically(path: str, array: np.ndarray, step: Optional[int] = None) -> None:
  """Writes any-shaped `array` to `path` through a temporary file renamed into place.

  (`prompt_files.save_prompt_file` is the validated [P, D] variant; trained parameters of other
  methods, e.g. prefixes or P-tuning encoders, have other ranks.) `step` only feeds the
  crash tests' kill point between the write and the rename.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = temporary_npy_name(path)
  with open(temporary, "wb") as f:
    np.save(f, array)
  kill_points.reached("npy_tmp_written", step)
  os.replace(temporary, path)


def inference_exports(trainable: Any, prompt_config: Any, config: Any) -> dict[str, np.ndarray]:
  """Arrays that make a trained reparameterised method usable without its training-time network.

  P-tuning: the [P, D] prompt its encoder produces, under the plain prompt's path (so the file
  `<stack>.prompt.prompt.prompt.npy` is a prompt file for the `*_prompt.gin` model). Prefix tuning
  with a projection MLP: the final per-layer key/value prefixes. Other methods: nothing.
  """
  from prompt_tuning.methods import p_tuning, prefix_tuning  # Local: methods are optional here.
  if not (isinstance(prompt_config, p_tuning.PTuningConfig) or (
      isinstance(prompt_config, prefix_tuning.PrefixConfig) and prompt_config.projection)):
    return {}
  host = jax.device_get(trainable)
  if isinstance(prompt_config, p_tuning.PTuningConfig):
    return {f"{stack}/prompt/prompt/prompt": p_tuning.export_prompt(host[stack]["prompt"]["prompt"])
            for stack in ("encoder", "decoder") if stack in host and "prompt" in host[stack]}
  if isinstance(prompt_config, prefix_tuning.PrefixConfig) and prompt_config.projection:
    return prefix_tuning.export_prefixes(host, config)
  return {}


def export_arrays(trainable: Any, prompt_config: Any = None,
                  model_config: Any = None) -> dict[str, np.ndarray]:
  """{path relative to the step's numpy folder: array} of everything a checkpoint exports.

  Every trained parameter as float32 (`encoder.prompt.prompt.prompt.npy`), then the method's
  `inference_exports` under `for_inference/`.
  """
  host = jax.device_get(trainable)
  arrays = {numpy_file_name(path): np.asarray(value, np.float32)
            for path, value in tree.flatten_params(host).items()}
  if prompt_config is not None:
    for path, array in inference_exports(host, prompt_config, model_config).items():
      arrays[os.path.join(INFERENCE_DIR, numpy_file_name(path))] = np.asarray(array)
  return arrays


def export_names(trainable: Any, prompt_config: Any = None, model_config: Any = None) -> list[str]:
  """The keys of `export_arrays` (only reparameterised methods copy parameters to the host)."""
  names = [numpy_file_name(path) for path in tree.flatten_params(trainable)]
  names += [os.path.join(INFERENCE_DIR, numpy_file_name(path))
            for path in inference_exports(trainable, prompt_config, model_config)]
  return names


def export_step_files(model_dir: str, step: int, trainable: Any, prompt_config: Any = None,
                      model_config: Any = None, folder: Optional[str] = None) -> list[str]:
  """Writes the step's exported `.npy` files (`export_arrays`), each atomically; returns paths.

  The files go to `folder` (default: `numpy_checkpoint_dir(model_dir, step)`). Process 0
  writes; every process returns the same paths. Call it before committing the step's
  checkpoint (as `TrainCheckpointer.save` does), or to re-create missing files from a restored
  state (`recovery.repair_exports`). Other checkpoints of a run (e.g. the best one, into its own
  folder) export the same way.

  Raises:
    CheckpointWriteError: a file could not be written (the message says why and what to do).
  """
  folder = folder or numpy_checkpoint_dir(model_dir, step)
  written = []
  for relative, array in export_arrays(trainable, prompt_config, model_config).items():
    target = os.path.join(folder, relative)
    if jax.process_index() == 0:
      try:
        write_npy_atomically(target, array, step)
      except OSError as error:
        _remove_quietly(temporary_npy_name(target))
        raise write_error(f"prompt file {target}", step, error) from error
    written.append(target)
  return written


def _remove_quietly(path: str) -> None:
  with contextlib.suppress(OSError):
    os.remove(path)


def write_error(what: str, step: int, error: BaseException) -> CheckpointWriteError:
  """The one-line error for a failed write of `what` at `step` (the cause and the fix)."""
  problem = errors.storage_problem(error) or errors.one_line(str(error))
  fix = ("free space on that disk" if errors.is_disk_full(error) else
         "make MODEL_DIR writable")
  return CheckpointWriteError(
      f"could not write {what} (step {step}): {problem}. Checkpoints written before are "
      f"intact: {fix} and rerun the same command to resume from the newest one.")


class ModelDirError(OSError):
  """MODEL_DIR (or another output folder) cannot be created or written."""


def check_writable(model_dir: str, macro: str = "MODEL_DIR") -> None:
  """Raises ModelDirError naming the folder (set by gin macro `macro`) when it cannot be
  created or written."""
  fix = f"pass --gin.{macro}=\"'/a/writable/folder'\"."
  if not isinstance(model_dir, (str, os.PathLike)) or not os.fspath(model_dir):
    raise ModelDirError(f"{macro}={model_dir!r} is not a folder path: {fix}")
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as error:
    raise ModelDirError(
        f"{macro}={os.fspath(model_dir)!r} is not writable ({error.strerror or error}): "
        f"{fix}") from error


def is_complete(folder: str) -> bool:
  """Whether a `checkpoint_<step>` folder of a run holds every item (not half-deleted)."""
  return all(os.path.exists(os.path.join(folder, marker)) for marker in _COMPLETE_MARKERS)


class TrainCheckpointer:
  """Saves and restores the trained state of a run under `model_dir`, keeping the last `keep`.

  `exporter(model_dir, step, trainable)` writes the step's `.npy` files before each commit
  (default: `export_step_files` of the trained parameters).
  """

  def __init__(self, model_dir: str, keep: Optional[int] = 1,
               exporter: Optional[Exporter] = None):
    self.model_dir = os.path.abspath(model_dir)
    self.exporter = exporter or export_step_files
    self._manager = orbax_format.manager(
        self.model_dir, keep=keep, temporary_path_class=kill_points.temporary_path_class())

  def step_folder(self, step: int) -> str:
    return os.path.join(self.model_dir, f"{orbax_format.STEP_PREFIX}_{int(step)}")

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    """The newest checkpoint's step (None: none yet).

    Raises:
      CheckpointReadError: the newest `checkpoint_<step>` folder is incomplete (damaged outside
        training; orbax only ever commits whole folders).
    """
    step = self._manager.latest_step()
    if step is not None and not is_complete(self.step_folder(step)):
      older = [s for s in self.all_steps() if s < step]
      then = (f"it resumes from checkpoint_{older[-1]}" if older else "it starts from scratch")
      raise CheckpointReadError(
          f"{self.step_folder(step)}, the newest checkpoint in MODEL_DIR, is incomplete (it lacks "
          f"some of {', '.join(_COMPLETE_MARKERS)}): delete that folder and rerun the command "
          f"({then}), or use a new MODEL_DIR.")
    return step

  def save(self, step: int, trainable: Any, opt_state: Any, meta: dict[str, Any]) -> list[str]:
    """Writes the step's `.npy` files, then commits checkpoint_<step>; returns the file paths.

    Raises:
      CheckpointWriteError: a storage failure (e.g. disk full); earlier checkpoints are intact.
    """
    step = int(step)
    kill_points.reached("checkpoint_start", step)
    written = self.exporter(self.model_dir, step, trainable)
    kill_points.reached("exports_written", step)
    items = {orbax_format.PARAMS: ocp.args.StandardSave(trainable),
             orbax_format.OPT_STATE: ocp.args.StandardSave(opt_state),
             orbax_format.META: ocp.args.JsonSave({"step": step, **meta})}
    try:
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
      self._manager.wait_until_finished()
    except (OSError, ValueError) as error:
      if errors.storage_problem(error) is None:
        raise
      self._remove_temporaries(step)
      raise write_error(f"checkpoint_{step} in MODEL_DIR={self.model_dir}", step, error) \
          from error
    kill_points.reached("checkpoint_committed", step)
    return written

  def _remove_temporaries(self, step: int) -> None:
    """Removes what a failed save of `step` left (frees the space it took)."""
    if jax.process_index() != 0:
      return
    prefix = os.path.basename(self.step_folder(step))
    for name in os.listdir(self.model_dir):
      if name.startswith(prefix + ".") and ORBAX_TEMPORARY.search(name):
        shutil.rmtree(os.path.join(self.model_dir, name), ignore_errors=True)

  def _check_matches(self, step: int, trainable_target: Any) -> None:
    """Raises CheckpointMismatchError when checkpoint_<step> holds other trained parameters."""
    folder = self.step_folder(step)
    with orbax_format.reading(folder, _delete_advice(folder)):
      saved = ocp.StandardCheckpointHandler().metadata(
          pathlib.Path(folder, orbax_format.PARAMS)).tree
    saved_shapes = {p: tuple(getattr(m, "shape", ())) for p, m in tree.flatten_params(saved).items()}
    wanted = {p: tuple(x.shape) for p, x in tree.flatten_params(trainable_target).items()}
    if saved_shapes == wanted:
      return
    differing = sorted(set(saved_shapes) ^ set(wanted)) or sorted(
        p for p in wanted if saved_shapes[p] != wanted[p])
    path = differing[0]
    raise CheckpointMismatchError(
        f"{folder} holds trained parameters of another configuration ({path}: "
        f"{list(saved_shapes[path]) if path in saved_shapes else 'absent'} in the checkpoint, "
        f"{list(wanted[path]) if path in wanted else 'absent'} in this run's model): rerun with "
        "the gin configuration MODEL_DIR was trained with (see its config.gin), or use a new "
        "MODEL_DIR.")

  def restore(self, step: int, trainable_target: Any,
              opt_state_target: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(trainable, opt_state, meta) of checkpoint_<step>, placed like the given targets.

    Targets are trees of arrays or `jax.ShapeDtypeStruct`s with shardings.

    Raises:
      CheckpointMismatchError: the checkpoint holds other parameters than the targets.
      CheckpointReadError: the checkpoint's files cannot be read (damaged).
    """
    self._check_matches(step, trainable_target)
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    items = {orbax_format.PARAMS: ocp.args.StandardRestore(jax.tree_util.tree_map(
                 abstract, trainable_target)),
             orbax_format.OPT_STATE: ocp.args.StandardRestore(jax.tree_util.tree_map(
                 abstract, opt_state_target)),
             orbax_format.META: ocp.args.JsonRestore()}
    folder = self.step_folder(step)
    with orbax_format.reading(folder, _delete_advice(folder)):
      restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
    return (restored[orbax_format.PARAMS], restored[orbax_format.OPT_STATE],
            dict(restored[orbax_format.META]))

  def restore_trainable(self, step: int, trainable_target: Any) -> Any:
    """The trained parameters of checkpoint_<step> only (e.g. to re-export its files)."""
    self._check_matches(step, trainable_target)
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    args = ocp.args.Composite(**{orbax_format.PARAMS: ocp.args.StandardRestore(
        jax.tree_util.tree_map(abstract, trainable_target))})
    folder = self.step_folder(step)
    with orbax_format.reading(folder, _delete_advice(folder)):
      return self._manager.restore(int(step), args=args)[orbax_format.PARAMS]

  def close(self) -> None:
    self._manager.close()


def _delete_advice(folder: str) -> str:
  return (f"delete that folder (rm -r {folder}) and rerun the command to resume from the "
          "checkpoint before it, or use a new MODEL_DIR")
