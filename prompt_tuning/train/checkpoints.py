"""Checkpoints of a training run: the trained parameters, optimizer state, step and data position.

Written with orbax under MODEL_DIR (see `prompt_tuning.checkpoints.orbax` for the layout), one
`checkpoint_<step>` folder per save, each complete or absent (orbax writes a temporary folder and
renames it). Frozen weights are never re-saved: they come from INITIAL_CHECKPOINT_PATH. Each trained
parameter is also written as `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/<path with dots>.npy`
(e.g. `encoder.prompt.prompt.prompt.npy`), the prompt file users ship.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.checkpoints import tree

NUMPY_DIR = "numpy_checkpoints"


def numpy_checkpoint_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, NUMPY_DIR, f"{orbax_format.STEP_PREFIX}_{step}")


def numpy_file_name(path: str) -> str:
  """File name of a parameter path: 'encoder/prompt/prompt/prompt' -> 'encoder.prompt.prompt.prompt.npy'."""
  return path.replace(tree.SEPARATOR, ".") + ".npy"


def write_npy_atomically(path: str, array: np.ndarray) -> None:
  """Writes any-shaped `array` to `path` through a temporary file renamed into place.

  (`prompt_files.save_prompt_file` is the validated [P, D] variant; trained parameters of other
  methods, e.g. prefixes or P-tuning encoders, have other ranks.)
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "wb") as f:
    np.save(f, array)
  os.replace(temporary, path)


def export_numpy(model_dir: str, step: int, trainable: Any) -> list[str]:
  """Writes every trained parameter as `.npy` under numpy_checkpoints/; returns the file paths."""
  written = []
  folder = numpy_checkpoint_dir(model_dir, step)
  for path, value in tree.flatten_params(trainable).items():
    array = np.asarray(jax.device_get(value), np.float32)
    target = os.path.join(folder, numpy_file_name(path))
    if jax.process_index() == 0:
      write_npy_atomically(target, array)
    written.append(target)
  return written


def inference_exports(trainable: Any, prompt_config: Any, config: Any) -> dict[str, np.ndarray]:
  """Arrays that make a trained reparameterised method usable without its training-time network.

  P-tuning: the [P, D] prompt its encoder produces, under the plain prompt's path (so the file
  `<stack>.prompt.prompt.prompt.npy` is a prompt file for the `*_prompt.gin` model). Prefix tuning
  with a projection MLP: the final per-layer key/value prefixes. Other methods: nothing.
  """
  from prompt_tuning.methods import p_tuning, prefix_tuning  # Local: methods are optional here.
  host = jax.device_get(trainable)
  if isinstance(prompt_config, p_tuning.PTuningConfig):
    return {f"{stack}/prompt/prompt/prompt": p_tuning.export_prompt(host[stack]["prompt"]["prompt"])
            for stack in ("encoder", "decoder") if stack in host and "prompt" in host[stack]}
  if isinstance(prompt_config, prefix_tuning.PrefixConfig) and prompt_config.projection:
    return prefix_tuning.export_prefixes(host, config)
  return {}


def export_for_inference(model_dir: str, step: int, trainable: Any, prompt_config: Any,
                         config: Any) -> list[str]:
  """Writes `inference_exports` as `.npy` files next to the step's numpy checkpoint."""
  written = []
  folder = os.path.join(numpy_checkpoint_dir(model_dir, step), "for_inference")
  for path, array in inference_exports(trainable, prompt_config, config).items():
    target = os.path.join(folder, numpy_file_name(path))
    if jax.process_index() == 0:
      write_npy_atomically(target, array)
    written.append(target)
  return written


class ModelDirError(OSError):
  """MODEL_DIR cannot be created or written."""


def check_writable(model_dir: str) -> None:
  """Raises ModelDirError naming MODEL_DIR when it cannot be created or written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as error:
    raise ModelDirError(
        f"MODEL_DIR={model_dir!r} is not writable ({error.strerror or error}): pass "
        "--gin.MODEL_DIR=\"'/a/writable/folder'\".") from error


class TrainCheckpointer:
  """Saves and restores the trained state of a run under `model_dir`, keeping the last `keep`."""

  def __init__(self, model_dir: str, keep: Optional[int] = 1):
    self.model_dir = os.path.abspath(model_dir)
    self._manager = orbax_format.manager(self.model_dir, keep=keep)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, trainable: Any, opt_state: Any, meta: dict[str, Any]) -> list[str]:
    """Writes checkpoint_<step> (params, opt_state, meta) and the `.npy` files; returns the latter."""
    items = {orbax_format.PARAMS: ocp.args.StandardSave(trainable),
             orbax_format.OPT_STATE: ocp.args.StandardSave(opt_state),
             orbax_format.META: ocp.args.JsonSave({"step": int(step), **meta})}
    self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()
    return export_numpy(self.model_dir, int(step), trainable)

  def restore(self, step: int, trainable_target: Any,
              opt_state_target: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(trainable, opt_state, meta) of checkpoint_<step>, placed like the given targets.

    Targets are trees of arrays or `jax.ShapeDtypeStruct`s with shardings.
    """
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    items = {orbax_format.PARAMS: ocp.args.StandardRestore(jax.tree_util.tree_map(
                 abstract, trainable_target)),
             orbax_format.OPT_STATE: ocp.args.StandardRestore(jax.tree_util.tree_map(
                 abstract, opt_state_target)),
             orbax_format.META: ocp.args.JsonRestore()}
    restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
    return (restored[orbax_format.PARAMS], restored[orbax_format.OPT_STATE],
            dict(restored[orbax_format.META]))

  def close(self) -> None:
    self._manager.close()
