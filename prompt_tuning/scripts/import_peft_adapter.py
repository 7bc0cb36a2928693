r"""Reads a Hugging Face PEFT prompt-tuning adapter folder into a `.npy` prompt file.

  python -m prompt_tuning.scripts.import_peft_adapter --adapter_dir=/tmp/sst2_adapter \
    --output_path=/tmp/sst2_prompt.npy [--gin_file=models/t5_1_1_base_prompt.gin]

The adapter folder itself is also accepted wherever a prompt file is (PROMPT_FILE,
`load_model(...).logits(..., prompt=folder)`); this command makes a plain `.npy` of it.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from absl import flags

from prompt_tuning import peft_interchange, prompt_files
from prompt_tuning.scripts import _cli

PROG = "import_peft_adapter"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} --adapter_dir=DIR \\
    --output_path=FILE.npy [--gin_file=MODEL.gin] [--gin.NAME=VALUE]

Writes the adapter's [P, D] prompt (PEFT's first P rows of prompt_embeddings) as float32 .npy;
with --gin_file the width (and task type) is checked against that model.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("adapter_dir", None, "A PEFT prompt-tuning adapter folder "
                      "(adapter_config.json + adapter_model.safetensors).",
                      flag_values=flag_values)
  flags.DEFINE_string("output_path", None, "The .npy prompt file to write ('.npy' is appended "
                      "if missing).", flag_values=flag_values)
  _cli.define_gin_flags(flag_values)
  for name in ("adapter_dir", "output_path"):
    flags.mark_flag_as_required(name, flag_values=flag_values)


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Imports the adapter's prompt."""
  if args:
    raise _cli.UsageError(f"unexpected arguments {args}: pass everything as --flags.")
  config = None
  if flag_values.gin_file:
    from prompt_tuning import api  # pylint: disable=g-import-not-at-top  (entry point only)
    config = api._config_from_gin(  # pylint: disable=protected-access
        flag_values.gin_file, flag_values.gin_bindings, flag_values.gin_search_paths)
  prompt = peft_interchange.import_peft_adapter(flag_values.adapter_dir, config)
  written = prompt_files.save_prompt_file(flag_values.output_path, prompt)
  print(f"Wrote the adapter's prompt {list(prompt.shape)} from {flag_values.adapter_dir} to "
        f"{written}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
