"""What `--help` and `--dry_run` print for the train / eval / infer commands.

The macro tables come from the gin files themselves (`gin_stack`): required macros are the ones
the stack reads but no file sets; optional ones are listed with their defaults and the comment
on their line. Nothing here imports JAX, TensorFlow or seqio.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from prompt_tuning import gin_stack, gin_utils

README_POINTER = ("README.md (section 'Training a prompt'); the shipped gin files are in "
                  "{config_dir}")


@dataclasses.dataclass(frozen=True)
class CommandInfo:
  """A command's name, what it does and the run gin file it is used with."""

  name: str
  summary: str
  run_gin: str


COMMANDS = {
    "train": CommandInfo("train", "Trains a prompt (or another prompt-learning method) of a "
                         "frozen model; T5X's flags and gin stack.", "runs/prompt_finetune.gin"),
    "eval": CommandInfo("eval", "Evaluates a prompt file on a frozen model: seqio metrics of a "
                        "task's split, written to EVAL_OUTPUT_DIR/metrics.json.",
                        "runs/prompt_eval.gin"),
    "infer": CommandInfo("infer", "Decodes predictions with a prompt file on a frozen model: "
                         "one JSONL per task in INFER_OUTPUT_DIR.", "runs/prompt_infer.gin"),
}


def _shipped(folder: str) -> list[str]:
  config_dir = gin_utils.default_config_dir()
  return sorted(str(p.relative_to(config_dir)) for p in (config_dir / folder).glob("*.gin"))


def _stack_order(command: CommandInfo) -> list[str]:
  prompts = ", ".join(_shipped("prompts")) or "none shipped"
  decoding = ", ".join(_shipped("models/decoding")) or "none shipped"
  lines = ["Gin stack: --gin_file, repeatable, in this order (later files win):",
           "  1. model + method: e.g. models/t5_1_1_base_prompt.gin (models/*_prompt.gin), or a "
           "model plus architectures/{p_tuning,prefix_tuning,deep_prompts}.gin",
           f"  2. prompt initialisation (optional): {prompts}",
           f"  3. decoding (optional): {decoding}",
           f"  4. the run: {command.run_gin}",
           "then --gin.NAME=VALUE bindings, which win over every file. Strings are quoted inside "
           "the flag: --gin.MODEL_DIR=\"'/tmp/run'\"."]
  if command.name == "train":
    lines[2] = lines[2] + " (class labels: prompts/from_class_labels.gin + CLASS_LABELS)"
  return lines


def _table(settings: Sequence[gin_stack.MacroSetting], show_source: bool) -> list[str]:
  if not settings:
    return ["  (none)"]
  rows = [(f"{s.name} = {gin_stack.format_value(s.value)}", s) for s in settings]
  width = min(max(len(left) for left, _ in rows), 44)
  lines = []
  for left, setting in rows:
    notes = []
    if show_source:
      notes.append(setting.source.split(":")[0])
    if setting.comment:
      notes.append(setting.comment)
    lines.append(f"  {left:<{width}}  {' | '.join(notes)}".rstrip())
  return lines


def help_text(command: CommandInfo, stack: gin_stack.GinStack, flag_lines: Sequence[str],
              user_files: Sequence[str]) -> str:
  """The `--help` page: usage, gin stack order, required / optional macros, flags, pointers."""
  module = f"prompt_tuning.{command.name}"
  described = ", ".join(user_files) if user_files else command.run_gin
  missing = stack.missing_macros()
  settings = list(stack.final_settings().values())
  file_settings = [s for s in settings if not s.from_command_line]
  lines = [f"usage: python -m {module} --gin_file=FILE [--gin_file=FILE ...] "
           "[--gin.NAME=VALUE ...] [flags]", "", command.summary, ""]
  lines += _stack_order(command)
  lines += ["", f"Required macros (read by {described}, set by no file"
                f"{' or flag' if user_files else ''}): pass each as --gin.NAME=VALUE"]
  lines += [f"  {name}" for name in missing] or ["  (none: everything is set)"]
  lines += ["", f"Optional macros, with their defaults from {described}:"]
  lines += _table(file_settings, show_source=bool(user_files))
  lines += ["", "Flags:"] + list(flag_lines)
  config_dir = gin_utils.default_config_dir()
  lines += ["", "Check a command line without running it: add --dry_run (prints every macro's "
            "final value and the model, reads no checkpoint or data).",
            "With --gin_file=... before --help, the macro tables describe that stack.",
            "More: " + README_POINTER.format(config_dir=config_dir)]
  return "\n".join(lines)


def dry_run_text(stack: gin_stack.GinStack, model_config: Any, prompt_config: Any,
                 config_str: str) -> str:
  """What `--dry_run` prints: files in order, final macro values with their source, the model."""
  final = stack.final_settings()
  rows = [(f"{name} = {gin_stack.format_value(s.value)}", s.source)
          for name, s in sorted(final.items())]
  width = min(max((len(left) for left, _ in rows), default=0), 60)
  lines = ["Gin files, in parse order: " + ", ".join(stack.files), "",
           "Macros (final values; where they were set):"]
  lines += [f"  {left:<{width}}  {source}" for left, source in rows]
  lines += ["", f"Model: {model_config}", f"Prompt method: {_describe(prompt_config)}", "",
            "Gin configuration as parsed:", config_str.rstrip(), "",
            "Dry run: the configuration parses and every macro is set; nothing was read, trained "
            "or written. Remove --dry_run to run it."]
  return "\n".join(lines)


def _describe(prompt_config: Any) -> str:
  if prompt_config is None:
    return "none (a plain model)"
  if dataclasses.is_dataclass(prompt_config):
    fields = []
    for field in dataclasses.fields(prompt_config):
      value = getattr(prompt_config, field.name)
      shown = getattr(value, "description", None) or (
          value.__qualname__ if callable(value) and hasattr(value, "__qualname__") else repr(value))
      fields.append(f"{field.name}={shown}")
    return f"{type(prompt_config).__name__}({', '.join(fields)})"
  return repr(prompt_config)
