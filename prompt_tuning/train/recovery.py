"""Making MODEL_DIR whole again after a run died (killed, preempted, out of disk).

A run that restarts in the same MODEL_DIR first calls `clean_model_dir` (before orbax looks at
the folder), then, after restoring the newest checkpoint, `repair_exports` and `trim_metrics`:

- orbax's temporary folders (`checkpoint_<N>.orbax-checkpoint-tmp*`) of uncommitted saves and
  checkpoint folders half-deleted when a kill interrupted the removal of an old checkpoint are
  removed, as are temporary `.npy` files of interrupted exports;
- every committed checkpoint gets back any `.npy` file it lacks (re-exported from its own
  restored parameters, so the files are exactly those the original save would have written);
- metrics.jsonl loses the records of steps after the resumed checkpoint (they are logged again,
  so the file ends up with one record per step, as after an uninterrupted run), and a last line
  cut by the kill.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.train import checkpoints as train_checkpoints
from prompt_tuning.train import metrics_log

_STEP_FOLDER = re.compile(rf"^{orbax_format.STEP_PREFIX}_(\d+)$")
_TEMPORARY_NPY = re.compile(r"\.npy\.tmp-\d+$")
_TEMPORARY_METRICS = re.compile(rf"^{re.escape(metrics_log.METRICS_FILE)}\.tmp-\d+$")


def _step_folders(model_dir: str) -> dict[int, str]:
  found = {}
  for name in os.listdir(model_dir):
    match = _STEP_FOLDER.match(name)
    if match and os.path.isdir(os.path.join(model_dir, name)):
      found[int(match.group(1))] = os.path.join(model_dir, name)
  return found


def leftovers(model_dir: str) -> list[str]:
  """Paths under `model_dir` that interrupted writes left behind (what `clean_model_dir` removes).

  Orbax temporary folders, incomplete `checkpoint_<N>` folders older than the newest complete one
  (a half-finished deletion), and temporary `.npy` files. An incomplete *newest* folder is kept:
  `TrainCheckpointer.latest_step` reports it (it cannot come from an interrupted write).
  """
  if not os.path.isdir(model_dir):
    return []
  found = [os.path.join(model_dir, name) for name in os.listdir(model_dir)
           if train_checkpoints.ORBAX_TEMPORARY.search(name) or _TEMPORARY_METRICS.match(name)]
  folders = _step_folders(model_dir)
  complete = [step for step, folder in folders.items() if train_checkpoints.is_complete(folder)]
  if complete:
    newest = max(complete)
    found += [folder for step, folder in folders.items()
              if step < newest and step not in complete]
  numpy_dir = os.path.join(model_dir, train_checkpoints.NUMPY_DIR)
  for root, _, files in os.walk(numpy_dir):
    found += [os.path.join(root, name) for name in files if _TEMPORARY_NPY.search(name)]
  return sorted(found)


def clean_model_dir(model_dir: str) -> list[str]:
  """Removes `leftovers(model_dir)` (process 0; all processes wait); returns what was removed."""
  removed = leftovers(model_dir) if jax.process_index() == 0 else []
  for path in removed:
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      try:
        os.remove(path)
      except FileNotFoundError:
        pass
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("prompt_tuning:clean_model_dir")
  return removed


def missing_exports(model_dir: str, step: int, names: list[str]) -> list[str]:
  """The files of `names` (relative to the step's numpy folder) that are absent."""
  folder = train_checkpoints.numpy_checkpoint_dir(model_dir, step)
  return [name for name in names if not os.path.isfile(os.path.join(folder, name))]


def repair_exports(checkpointer: train_checkpoints.TrainCheckpointer, trainable_target: Any,
                   export_names: list[str]) -> list[int]:
  """Re-exports the `.npy` files of every committed checkpoint that lacks some; returns the steps.

  `trainable_target` (arrays or ShapeDtypeStructs with shardings) says how to restore the trained
  parameters; `export_names` are the file names a step exports (`export_arrays` keys). The files
  are written by `checkpointer.exporter`, from the checkpoint's own parameters.
  """
  repaired = []
  for step in checkpointer.all_steps():
    missing = bool(missing_exports(checkpointer.model_dir, step, export_names))
    if jax.process_count() > 1:  # Every process restores (a collective), or none.
      missing = bool(np.any(multihost_utils.process_allgather(np.asarray(missing))))
    if not missing:
      continue
    trainable = checkpointer.restore_trainable(step, trainable_target)
    checkpointer.exporter(checkpointer.model_dir, step, trainable)
    repaired.append(step)
  return repaired


def trim_metrics(model_dir: str, step: Optional[int]) -> int:
  """Drops metrics.jsonl records after `step` (None: all) and unreadable lines; returns how many.

  Process 0 only; the file is replaced atomically.
  """
  path = os.path.join(model_dir, metrics_log.METRICS_FILE)
  if jax.process_index() != 0 or not os.path.isfile(path):
    return 0
  kept, dropped = [], 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        record = json.loads(line)
        keep = line.endswith("\n") and (step is not None and int(record["step"]) <= step)
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(temporary, path)
  return dropped
