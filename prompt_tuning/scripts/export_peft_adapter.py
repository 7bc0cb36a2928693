r"""Writes a prompt as a Hugging Face PEFT prompt-tuning adapter folder (for PyTorch users).

  # A prompt file (the model's gin file sets the task type and checks the width):
  python -m prompt_tuning.scripts.export_peft_adapter \
    --prompt_file=/tmp/run/numpy_checkpoints/checkpoint_1150000/encoder.prompt.prompt.prompt.npy \
    --output_dir=/tmp/sst2_adapter --gin_file=models/t5_1_1_base_prompt.gin \
    --base_model_name_or_path=google/t5-base-lm-adapt
  # A training run's MODEL_DIR: its best prompt (BEST_METRIC), else its newest one; for P-tuning
  # the plain prompt its encoder produced (numpy_checkpoints/.../for_inference/).
  python -m prompt_tuning.scripts.export_peft_adapter --prompt_file=/tmp/run --output_dir=/tmp/a

The folder loads with `PeftModel.from_pretrained(base_model, folder)`; see
`prompt_tuning.peft_interchange` for the layout and the equivalence with our prompt tuning.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Optional, Sequence

from absl import flags

from prompt_tuning import peft_interchange
from prompt_tuning.scripts import _cli

PROG = "export_peft_adapter"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} --prompt_file=FILE.npy|MODEL_DIR \\
    --output_dir=DIR [--gin_file=MODEL.gin] [--task_type=SEQ_2_SEQ_LM|CAUSAL_LM] \\
    [--base_model_name_or_path=NAME] [--num_transformer_submodules=1|2]

Writes adapter_config.json + adapter_model.safetensors (PEFT prompt tuning) to DIR.
"""
_STEP = re.compile(r"^checkpoint_(\d+)$")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("prompt_file", None, "A `.npy` prompt [P, D], or the MODEL_DIR of a "
                      "training run (its best prompt, else its newest).", flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "The adapter folder to write (created).",
                      flag_values=flag_values)
  flags.DEFINE_enum("task_type", None, list(peft_interchange.TASK_TYPES), "PEFT task type; "
                    "default: from --gin_file's model, else SEQ_2_SEQ_LM (T5).",
                    flag_values=flag_values)
  flags.DEFINE_string("base_model_name_or_path", None, "The Hugging Face model the adapter is "
                      "for (recorded in adapter_config.json).", flag_values=flag_values)
  flags.DEFINE_integer("num_transformer_submodules", None, "PEFT's rows per virtual token "
                       "(default: PEFT's, 2 for seq2seq).", flag_values=flag_values)
  _cli.define_gin_flags(flag_values)
  for name in ("prompt_file", "output_dir"):
    flags.mark_flag_as_required(name, flag_values=flag_values)


def run_prompt_file(model_dir: str) -> str:
  """The prompt file of a training run: its best one (BEST_METRIC), else its newest."""
  from prompt_tuning.train import best, checkpoints, summary  # Local: training-side layout.
  record = best.read_record(model_dir)
  if record is not None and record.files:
    found = summary.prompt_file_of(record.files)
    if found and os.path.isfile(found):
      return found
  folder = os.path.join(model_dir, checkpoints.NUMPY_DIR)
  steps = sorted((int(m.group(1)), name) for name in (os.listdir(folder) if os.path.isdir(folder)
                                                      else []) if (m := _STEP.match(name)))
  for _, name in reversed(steps):
    files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(folder, name))
             for f in names]
    found = summary.prompt_file_of(files)
    if found:
      return found
  raise ValueError(f"{model_dir} holds no prompt file (numpy_checkpoints/checkpoint_<step>/"
                   "*.prompt.prompt.prompt.npy): pass --prompt_file=FILE.npy, or train with a "
                   "prompt-tuning or P-tuning model.")


def _model(flag_values: flags.FlagValues) -> tuple[Any, Any]:
  """(T5Config, prompt config) of the --gin_file model, or (None, None)."""
  if not flag_values.gin_file:
    return None, None
  from prompt_tuning import api  # pylint: disable=g-import-not-at-top  (entry point only)
  config = api._config_from_gin(  # pylint: disable=protected-access
      flag_values.gin_file, flag_values.gin_bindings, flag_values.gin_search_paths)
  return config, api._prompt_config_from_gin()  # pylint: disable=protected-access


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Exports the prompt."""
  if args:
    raise _cli.UsageError(f"unexpected arguments {args}: pass everything as --flags.")
  source = flag_values.prompt_file
  if os.path.isdir(source) and not os.path.isfile(
      os.path.join(source, peft_interchange.ADAPTER_CONFIG_FILE)):
    source = run_prompt_file(source)
  config, prompt_config = _model(flag_values)
  task_type = flag_values.task_type
  if config is None and task_type is None:
    task_type = peft_interchange.SEQ_2_SEQ_LM
  from prompt_tuning import prompt_files  # pylint: disable=g-import-not-at-top
  prompt = prompt_files.load_prompt_file(source, config)
  written = peft_interchange.export_peft_adapter(
      prompt, flag_values.output_dir, config, task_type=task_type,
      base_model_name_or_path=flag_values.base_model_name_or_path,
      num_transformer_submodules=flag_values.num_transformer_submodules,
      prompt_config=prompt_config if _is_plain_prompt(prompt_config) else None)
  print(f"Wrote a PEFT prompt-tuning adapter ({prompt.shape[0]} virtual tokens, width "
        f"{prompt.shape[1]}) from {source} to {written}")


def _is_plain_prompt(prompt_config: Any) -> bool:
  from prompt_tuning import prompts  # pylint: disable=g-import-not-at-top
  return isinstance(prompt_config, prompts.PromptConfig)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
