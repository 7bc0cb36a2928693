"""The embedded default job: prompt-tune the shipped frozen tiny T5 on a shipped task, offline.

  python -m prompt_tuning.demo [--model_dir DIR] [--steps N]

Runs `python -m prompt_tuning.train` in-process with `models/demo_tiny_prompt.gin` +
`runs/demo.gin`: the frozen model (prompt_tuning/assets/demo, made by tools/make_demo_assets.py)
copies bare letter strings; a 10-position prompt is trained to make it reverse them instead
(task `demo_reverse`). Prints exact match before and after training; the training run's summary
names the prompt file (the best evaluation's) and the eval / infer commands that reuse it.
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

  from prompt_tuning import cli, log_noise
  log_noise.import_tensorflow_quietly()
  log_noise.drop_seqio_noise()
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
  return {"before": before, "after": after, "prompt_file": prompt_file}


if __name__ == "__main__":
  main()  # The returned figures are for tests and notebooks.
