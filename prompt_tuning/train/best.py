"""The best evaluation of a run by a chosen metric: its trained parameters kept, early stopping.

With BEST_METRIC set (e.g. 'accuracy', the mean over the tasks that report it, or
'glue_sst2_v002/accuracy' for one task), every evaluation is compared with the best so far
(BEST_METRIC_MODE 'max' or 'min'). A new best writes the trained parameters as `.npy` files to
`MODEL_DIR/best/checkpoint_<step>/` (P-tuning's plain prompt under `for_inference/`), kept
whatever KEEP_CHECKPOINTS removes; `MODEL_DIR/best/best.json` records it only once those files are
on disk (each file and the record are written through a temporary file and renamed; the older
best folder is removed afterwards). With EARLY_STOPPING_PATIENCE = N, the run stops after N
evaluations in a row without a new best. The record holds every evaluation's value, so a resumed
run continues the count from the checkpoint it resumes at.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Mapping, Optional

import jax
import numpy as np

from prompt_tuning.checkpoints import tree
from prompt_tuning.train import checkpoints as train_checkpoints

BEST_DIR = "best"
RECORD_FILE = "best.json"
MODES = ("max", "min")


class BestMetricError(ValueError):
  """BEST_METRIC / BEST_METRIC_MODE / EARLY_STOPPING_PATIENCE that cannot be used."""


def metric_value(results: Mapping[str, Mapping[str, float]], metric: str) -> float:
  """The value of `metric` ('name': mean over tasks; 'task/name': one task) in eval results."""
  if "/" in metric:
    task, name = metric.rsplit("/", 1)
    if task in results and name in results[task]:
      return float(results[task][name])
  else:
    values = [float(m[metric]) for m in results.values() if metric in m]
    if values:
      return float(np.mean(values))
  available = sorted({f"{t}/{n}" for t, m in results.items() for n in m} |
                     {n for m in results.values() for n in m})
  raise BestMetricError(
      f"BEST_METRIC={metric!r} is not among the evaluation's metrics: use one of {available}.")


@dataclasses.dataclass
class BestRecord:
  """best.json: the chosen metric, every evaluation's value, the best step and its files."""

  metric: str
  mode: str
  history: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, value).
  best_step: Optional[int] = None
  best_value: Optional[float] = None
  files: list[str] = dataclasses.field(default_factory=list)
  patience: Optional[int] = None
  stopped_early_at: Optional[int] = None

  def evaluations_since_best(self) -> int:
    if self.best_step is None:
      return len(self.history)
    return sum(1 for step, _ in self.history if step > self.best_step)


class BestTracker:
  """Follows the best evaluation of a run under MODEL_DIR (see the module docstring)."""

  def __init__(self, model_dir: str, metric: str, mode: str = "max",
               patience: Optional[int] = None, resume_step: Optional[int] = None):
    if mode not in MODES:
      raise BestMetricError(f"BEST_METRIC_MODE={mode!r}: use 'max' or 'min'.")
    if patience is not None and int(patience) < 1:
      raise BestMetricError(f"EARLY_STOPPING_PATIENCE={patience}: use a number of evaluations "
                            ">= 1, or None to never stop early.")
    self.folder = os.path.join(model_dir, BEST_DIR)
    self.record = BestRecord(metric=metric, mode=mode, patience=patience)
    previous = read_record(model_dir)
    if previous is not None and previous.metric == metric and previous.mode == mode:
      self._continue_from(previous, resume_step)

  def _continue_from(self, previous: BestRecord, resume_step: Optional[int]) -> None:
    """Keeps the evaluations up to the step the run resumes at (later ones will be redone)."""
    limit = resume_step if resume_step is not None else -1
    for step, value in previous.history:
      if step <= limit:
        self.record.history.append((step, value))
        if self._better(value):
          self.record.best_step, self.record.best_value = step, value
    if self.record.best_step is not None and self.record.best_step == previous.best_step:
      self.record.files = previous.files
    if previous.stopped_early_at is not None and previous.stopped_early_at <= limit:
      self.record.stopped_early_at = previous.stopped_early_at

  def _better(self, value: float) -> bool:
    best = self.record.best_value
    if best is None:
      return bool(np.isfinite(value))
    return value > best if self.record.mode == "max" else value < best

  @property
  def stopped_early_at(self) -> Optional[int]:
    """The step an earlier run of this MODEL_DIR stopped early at, if the patience still holds."""
    stopped = self.record.stopped_early_at
    if stopped is None:
      return None
    if self.record.patience is None or self.record.evaluations_since_best() < self.record.patience:
      return None  # More patience (or none) than that run had: training goes on.
    return stopped

  def update(self, step: int, results: Mapping[str, Mapping[str, float]], trainable: Any,
             exports: Mapping[str, np.ndarray]) -> bool:
    """Records an evaluation; on a new best writes its files first. Returns whether it is best.

    `exports`: extra arrays for inference (e.g. P-tuning's plain prompt), by parameter path.
    """
    value = metric_value(results, self.record.metric)
    self.record.history = [(s, v) for s, v in self.record.history if s != step] + [(step, value)]
    improved = self._better(value)
    if improved:
      files = self._write_files(step, trainable, exports)
      old_step = self.record.best_step
      self.record.best_step, self.record.best_value, self.record.files = step, value, files
      self._write_record()
      if old_step is not None and old_step != step and jax.process_index() == 0:
        shutil.rmtree(os.path.join(self.folder, f"checkpoint_{old_step}"), ignore_errors=True)
    else:
      self._write_record()
    return improved

  def should_stop(self) -> bool:
    patience = self.record.patience
    return patience is not None and self.record.evaluations_since_best() >= patience

  def mark_stopped(self, step: int) -> None:
    self.record.stopped_early_at = int(step)
    self._write_record()

  def _write_files(self, step: int, trainable: Any,
                   exports: Mapping[str, np.ndarray]) -> list[str]:
    folder = os.path.join(self.folder, f"checkpoint_{step}")
    written = []
    arrays = [(os.path.join(folder, train_checkpoints.numpy_file_name(path)), value)
              for path, value in tree.flatten_params(trainable).items()]
    arrays += [(os.path.join(folder, "for_inference", train_checkpoints.numpy_file_name(path)),
                value) for path, value in exports.items()]
    for target, value in arrays:
      array = np.asarray(jax.device_get(value), np.float32)
      if jax.process_index() == 0:
        train_checkpoints.write_npy_atomically(target, array)
      written.append(target)
    return written

  def _write_record(self) -> None:
    if jax.process_index() != 0:
      return
    os.makedirs(self.folder, exist_ok=True)
    path = os.path.join(self.folder, RECORD_FILE)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
      json.dump(dataclasses.asdict(self.record), f, indent=2)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)


def read_record(model_dir: str) -> Optional[BestRecord]:
  """MODEL_DIR/best/best.json, or None when absent or unreadable."""
  path = os.path.join(model_dir, BEST_DIR, RECORD_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
    raw["history"] = [tuple(item) for item in raw.get("history", [])]
    return BestRecord(**raw)
  except (OSError, ValueError, TypeError):
    return None

