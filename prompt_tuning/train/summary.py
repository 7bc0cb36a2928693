"""The end of a training run in a few lines: what ran, the figures, where the outputs are, and
the `prompt_tuning.eval` / `infer` commands that reuse the prompt.

The reuse commands are derived from the run's own command line: its model gin files (run files,
`runs/*` or any file binding `runner.train`, and `prompts/*` initialisation files are left out),
`runs/prompt_eval.gin` / `runs/prompt_infer.gin`, the command-line bindings those stacks read, and
the training stack's value of every macro they read that it set otherwise (e.g. the task of
runs/demo.gin; the generic training defaults of runs/prompt_finetune.gin are not carried).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any, Mapping, Optional, Sequence

from prompt_tuning import cli_help, gin_stack

PLOT_COMMAND = "python -m prompt_tuning.scripts.plot_metrics"
# Training defaults (e.g. DROPOUT_RATE 0.1) that the eval / infer stacks set for themselves.
_GENERIC_RUN = "runs/prompt_finetune.gin"


@dataclasses.dataclass
class Outcome:
  """What one invocation of `train` did."""

  model_dir: str
  total_steps: int
  first_step: int                # the step this invocation started from.
  last_step: int                 # the step it ended at.
  wall_seconds: float
  eval_metrics: Mapping[int, Mapping[str, Mapping[str, float]]]  # step -> task -> metric.
  prompt_files: Sequence[str]    # the last checkpoint's exported files.
  best: Any = None               # best.BestRecord, when BEST_METRIC is set.
  stopped_early_at: Optional[int] = None
  already_done: bool = False
  first_step_seconds: Optional[float] = None


def _format_duration(seconds: float) -> str:
  seconds = int(round(max(seconds, 0)))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours:d}:{minutes:02d}:{seconds:02d}"


def _metrics_text(results: Mapping[str, Mapping[str, float]]) -> str:
  return "; ".join(f"{task} " + ", ".join(f"{name} {value:.2f}" for name, value in metrics.items())
                   for task, metrics in results.items())


def prompt_file_of(files: Sequence[str]) -> Optional[str]:
  """The [P, D] prompt file among a checkpoint's exported files (P-tuning's plain prompt first)."""
  prompts = [f for f in files if os.path.basename(f).endswith("prompt.prompt.prompt.npy")]
  plain = [f for f in prompts if f"{os.sep}for_inference{os.sep}" in f]
  return (plain or prompts or [None])[0]


def _is_model_file(name: str, paths: Sequence[str]) -> bool:
  """Whether a user gin file describes the model (not the run or the prompt initialisation)."""
  stack = gin_stack.read_stack([name], (), paths)
  shown = stack.files[0] if stack.files else name
  if shown.startswith(("runs/", "prompts/")):
    return False
  return not any(b.selector.endswith("runner.train") for b in stack.bindings)


def _flag(name: str, value: str) -> str:
  """`--gin.NAME="VALUE"` as T5X users write it (shell-quoted when double quotes would break)."""
  if any(c in value for c in '"$`\\'):
    return shlex.quote(f"--gin.{name}={value}")
  return f'--gin.{name}="{value}"'


def reuse_command(command_line: Any, kind: str, overrides: Mapping[str, str]) -> str:
  """The `python -m prompt_tuning.<kind>` command (kind 'eval' / 'infer') with `overrides`
  (macro -> gin value text) and whatever else of the training command line its stack reads."""
  paths = list(command_line.gin_search_paths)
  train_stack = gin_stack.read_stack(command_line.gin_files, command_line.bindings, paths)
  files = [f for f in command_line.gin_files if _is_model_file(f, paths)]
  files.append(cli_help.COMMANDS[kind].run_gin)
  probe = gin_stack.read_stack(files, [f"{k}={v}" for k, v in overrides.items()], paths)
  bound_selectors = {b.selector for b in probe.bindings}
  carried = []
  for binding in command_line.bindings:
    key = binding.split("=", 1)[0].strip()
    name = key.rsplit("/", 1)[-1]
    if "." not in name:
      if name in probe.uses and name not in overrides:
        carried.append(binding)
    elif name.rsplit(".", 1)[0] in bound_selectors:
      carried.append(binding)
  stack = gin_stack.read_stack(files, carried + [f"{k}={v}" for k, v in overrides.items()],
                               paths)
  trained, evaluated = train_stack.final_settings(), stack.final_settings()
  carried_names = {b.split("=", 1)[0].strip() for b in carried} | set(overrides)
  for name in stack.uses:
    setting = trained.get(name)
    if name in carried_names or setting is None or setting.source.startswith(_GENERIC_RUN):
      continue
    value = gin_stack.format_value(setting.value)
    if name not in evaluated or gin_stack.format_value(evaluated[name].value) != value:
      carried.append(f"{name}={value}")
  args = ["python", "-m", f"prompt_tuning.{kind}"] + [f"--gin_file={f}" for f in files]
  for binding in carried + [f"{k}={v}" for k, v in overrides.items()]:
    name, value = binding.split("=", 1)
    args.append(_flag(name.strip(), value.strip()))
  if command_line.gin_search_paths:
    args.append(f"--gin_search_paths={','.join(command_line.gin_search_paths)}")
  if command_line.tfds_data_dir:
    args.append(f"--tfds_data_dir={shlex.quote(command_line.tfds_data_dir)}")
  return " ".join(args)


def summary_lines(outcome: Outcome, command_line: Any = None,
                  prompt_method: bool = True) -> list[str]:
  """The end-of-run summary (see the module docstring)."""
  model_dir = outcome.model_dir
  lines = [""]
  if outcome.already_done:
    lines.append(f"Nothing to train: {model_dir} already holds step {outcome.last_step} "
                 f"(TRAIN_STEPS={outcome.total_steps}); raise TRAIN_STEPS to train on.")
  elif outcome.stopped_early_at is not None:
    record = outcome.best
    lines.append(f"Stopped early at step {outcome.stopped_early_at}: no better {record.metric} in "
                 f"{record.patience} evaluations (EARLY_STOPPING_PATIENCE); "
                 f"{_format_duration(outcome.wall_seconds)} in this run.")
  else:
    trained = outcome.last_step - outcome.first_step
    compiled = (f"; first step {outcome.first_step_seconds:.1f} s, compiling"
                if outcome.first_step_seconds is not None else "")
    lines.append(f"Training done: step {outcome.last_step} of {outcome.total_steps} ({trained} "
                 f"steps in {_format_duration(outcome.wall_seconds)}{compiled}).")
  if outcome.eval_metrics:
    step = max(outcome.eval_metrics)
    lines.append(f"Final evaluation (step {step}): {_metrics_text(outcome.eval_metrics[step])}")
  record = outcome.best
  best_prompt = None
  if record is not None and record.best_step is not None:
    best_prompt = prompt_file_of(record.files)
    where = f" -> {best_prompt or os.path.dirname(record.files[0])}" if record.files else ""
    lines.append(f"Best evaluation: {record.metric} {record.best_value:.2f} at step "
                 f"{record.best_step}{where}")
  last_prompt = prompt_file_of(outcome.prompt_files)
  if last_prompt:
    lines.append(f"Prompt file (step {outcome.last_step}): {last_prompt}")
  elif outcome.prompt_files:
    lines.append(f"Trained parameters (step {outcome.last_step}): "
                 f"{os.path.dirname(outcome.prompt_files[0])}")
  lines.append(f"Metrics: {os.path.join(model_dir, 'metrics.jsonl')}; TensorBoard: "
               f"tensorboard --logdir {model_dir}")
  lines.append(f"Plot: {PLOT_COMMAND} {model_dir}")
  if command_line is None:
    return lines
  use = best_prompt or last_prompt
  which = "best" if best_prompt else "last"
  if prompt_method and use:
    overrides = {"PROMPT_FILE": repr(use)}
  else:  # Other methods: the trained parameters of the last orbax checkpoint.
    overrides = {"PROMPT_FILE": "None", "TRAINED_CHECKPOINT_PATH": repr(model_dir)}
    which = "last"
  try:
    evaluate = reuse_command(command_line, "eval", dict(
        overrides, EVAL_OUTPUT_DIR=repr(os.path.join(model_dir, "eval"))))
    infer = reuse_command(command_line, "infer", dict(
        overrides, INFER_OUTPUT_DIR=repr(os.path.join(model_dir, "infer"))))
  except Exception:  # pylint: disable=broad-except  # The summary never fails the run.
    return lines
  lines += [f"Evaluate the {which} prompt:", "  " + evaluate, "Predict with it:", "  " + infer]
  if use and (prompt_method or "for_inference" in use):
    paths = list(command_line.gin_search_paths)
    models = [f"--gin_file={f}" for f in command_line.gin_files if _is_model_file(f, paths)]
    lines += ["Export it for PyTorch (a PEFT prompt-tuning adapter):",
              " ".join(["  python -m prompt_tuning.scripts.export_peft_adapter",
                        f"--prompt_file={shlex.quote(use)}",
                        f"--output_dir={shlex.quote(os.path.join(model_dir, 'peft_adapter'))}"]
                       + models)]
  return lines
