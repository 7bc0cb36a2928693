"""Where per-step figures go: the console, TensorBoard (clu) and MODEL_DIR/metrics.jsonl.

The console shows what a person reads: the loss per target token, the token accuracy as a
percentage, throughput and an ETA that leaves out compilation; evaluation lines say their
metrics are per-example scores (0-100, as seqio computes them). metrics.jsonl and TensorBoard
keep every figure under its name, T5X's summed `loss` included.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping, Optional, TextIO

import jax

METRICS_FILE = "metrics.jsonl"
# Figures of each logged step in metrics.jsonl, in this order (then any others).
JSONL_FIELDS = ("loss", "loss_per_nonpadding_target_token", "token_accuracy", "learning_rate",
                "examples_per_second")


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours:d}:{minutes:02d}:{seconds:02d}"


def console_train_line(step: int, total_steps: int, figures: Mapping[str, float]) -> str:
  """One training progress line: per-token loss, token accuracy (%), throughput, ETA."""
  line = (f"step {step}/{total_steps}  loss/token {figures['loss_per_nonpadding_target_token']:.4f}"
          f"  token accuracy {100 * figures['token_accuracy']:.1f}%")
  if "seconds_per_step" in figures:
    eta = _format_eta((total_steps - step) * figures["seconds_per_step"])
    line += f"  {figures['examples_per_second']:.1f} examples/s  ETA {eta}"
  if "first_step_seconds" in figures:
    line += f"  (first step {figures['first_step_seconds']:.1f} s, compiling)"
  return line


class MetricsLog:
  """Writes training and evaluation figures (only process 0 writes files)."""

  def __init__(self, model_dir: str, total_steps: int, *, stream: Optional[TextIO] = None,
               tensorboard: bool = True, label: str = "train"):
    self.model_dir = model_dir
    self.total_steps = total_steps
    self.stream = stream or sys.stdout
    self.label = label
    self._is_writer = jax.process_index() == 0
    self._writer = None
    if tensorboard and self._is_writer:
      from clu import metric_writers  # Local: TensorBoard support is optional at import time.
      self._writer = metric_writers.create_default_writer(
          os.path.join(model_dir, label), asynchronous=False)

  def _append_jsonl(self, record: Mapping[str, Any]) -> None:
    if not self._is_writer:
      return
    with open(os.path.join(self.model_dir, METRICS_FILE), "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()

  def log_train(self, step: int, figures: Mapping[str, float]) -> None:
    """One logged training step: console line, TensorBoard scalars, a metrics.jsonl record."""
    if self._is_writer:
      print(console_train_line(step, self.total_steps, figures), file=self.stream, flush=True)
    ordered = {"step": int(step), "split": self.label}
    ordered.update({name: figures[name] for name in JSONL_FIELDS if name in figures})
    ordered.update({k: v for k, v in figures.items() if k not in ordered})
    self._append_jsonl(ordered)
    if self._writer is not None:
      self._writer.write_scalars(step, {k: v for k, v in figures.items()})
      self._writer.flush()

  def log_eval(self, step: int, task: str, metrics: Mapping[str, float]) -> None:
    """Evaluation figures of one task at `step`."""
    if self._is_writer:
      shown = "  ".join(f"{name} {value:.2f}" for name, value in metrics.items())
      print(f"eval step {step}  {task}: {shown}  (per example, 0-100)", file=self.stream,
            flush=True)
    self._append_jsonl({"step": int(step), "split": "eval", "task": task, **metrics})
    if self._writer is not None:
      self._writer.write_scalars(step, {f"eval/{task}/{k}": v for k, v in metrics.items()})
      self._writer.flush()

  def message(self, text: str) -> None:
    if self._is_writer:
      print(text, file=self.stream, flush=True)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
