"""The embedded default job: prompt-tune the shipped frozen tiny T5 on a shipped task, offline.

  python -m prompt_tuning.demo [--model_dir DIR] [--steps N]

Runs `python -m prompt_tuning.train` in-process with `models/demo_tiny_prompt.gin` +
`runs/demo.gin`: the frozen model (prompt_tuning/assets/demo, made by tools/make_demo_assets.py)
copies bare letter strings; a 10-position prompt is trained to make it reverse them instead
(task `demo_reverse`). Prints exact match before and after training, the prompt file, and the
eval / infer commands that reuse it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from typing import Sequence

DEMO_FROZEN_STEP = 3000


def _train_argv(model_dir: str, checkpoint: str, steps: int) -> list[str]:
  return ["prompt_tuning.train", "--gin_file=models/demo_tiny_prompt.gin",
          "--gin_file=runs/demo.gin", f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{checkpoint}'",
          f"--gin.TRAIN_STEPS={DEMO_FROZEN_STEP + steps}"]


def _reuse_commands(checkpoint: str, prompt_file: str, model_dir: str) -> list[str]:
  common = ["--gin_file=models/demo_tiny_prompt.gin",
            f"--gin.INITIAL_CHECKPOINT_PATH='{checkpoint}'", f"--gin.PROMPT_FILE='{prompt_file}'",
            "--gin.MIXTURE_OR_TASK_NAME='demo_reverse'",
            "--gin.MIXTURE_OR_TASK_MODULE='prompt_tuning.data.demo_tasks'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 12}"]
  evaluate = (["python", "-m", "prompt_tuning.eval"] + common +
              ["--gin_file=runs/prompt_eval.gin", f"--gin.EVAL_OUTPUT_DIR='{model_dir}/eval'"])
  infer = (["python", "-m", "prompt_tuning.infer"] + common +
           ["--gin_file=runs/prompt_infer.gin", f"--gin.INFER_OUTPUT_DIR='{model_dir}/infer'"])
  return [" ".join(_shell(a) for a in cmd) for cmd in (evaluate, infer)]


def _shell(arg: str) -> str:
  """`--gin.NAME=VALUE` as T5X users write it (VALUE in double quotes); other args shell-quoted."""
  if arg.startswith("--gin.") and "=" in arg:
    name, value = arg.split("=", 1)
    return f'{name}="{value}"'
  return shlex.quote(arg)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", default=None,
                      help="where checkpoints, metrics and the prompt go (default: a new temp dir)")
  parser.add_argument("--steps", type=int, default=300, help="prompt-training steps")
  args = parser.parse_args(argv)
  model_dir = os.path.abspath(args.model_dir or tempfile.mkdtemp(prefix="prompt_tuning_demo_"))

  import logging
  logging.getLogger("absl").setLevel(logging.ERROR)  # seqio warns about uncached in-memory tasks.
  from prompt_tuning import cli
  from prompt_tuning.data import demo_tasks
  from prompt_tuning.train import __main__ as train_main

  checkpoint = str(demo_tasks.model_checkpoint_dir())
  argv_train = _train_argv(model_dir, checkpoint, args.steps)
  print("Prompt tuning the shipped frozen tiny T5 on `demo_reverse` (offline):")
  print("  python -m " + " ".join(_shell(a) for a in argv_train), flush=True)
  started = time.perf_counter()
  try:
    result = cli.execute(train_main._command, argv_train)
  except Exception as error:  # pylint: disable=broad-except
    message = cli.user_error_message(error)
    if message is None:
      raise
    print(message, file=sys.stderr)
    sys.exit(1)
  task = demo_tasks.DEMO_TASK
  steps = sorted(result.eval_metrics)
  before = result.eval_metrics[steps[0]][task]["exact_match"]
  after = result.eval_metrics[steps[-1]][task]["exact_match"]
  prompt_file = result.prompt_files[0]
  print()
  print(f"exact match on {task} validation: {before:.1f}% with the untrained prompt -> "
        f"{after:.1f}% after {result.step - steps[0]} steps "
        f"({time.perf_counter() - started:.0f} s in all)")
  print(f"prompt: {prompt_file}")
  print(f"metrics: {os.path.join(model_dir, 'metrics.jsonl')}")
  print("Reuse the prompt:")
  for command in _reuse_commands(checkpoint, prompt_file, model_dir):
    print("  " + command)
  return {"before": before, "after": after, "prompt_file": prompt_file}


if __name__ == "__main__":
  main()  # The returned figures are for tests and notebooks.
