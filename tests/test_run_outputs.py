"""What a run tells its user: console figures, the end-of-run summary, the best checkpoint, early
stopping, a finished run rerun, eval step labels, quiet logs and the metrics plot."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import struct
import subprocess
import sys

import numpy as np
import pytest
import seqio

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli, log_noise
from prompt_tuning import eval as eval_main
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.scripts import plot_metrics
from prompt_tuning.train import __main__ as train_main

TASK = "run_outputs_sentiment"
FROZEN_STEP = 100
PROMPT = "encoder.prompt.prompt.prompt.npy"


def _flags(folder, model_dir, *extra):
  return ["train", "--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_finetune.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{folder / 'frozen'}'", "--gin.BATCH_SIZE=4",
          "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=1", "--gin.SAVING_PERIOD=1",
          "--gin.BEST_METRIC='accuracy'", *extra]


def _train(flags):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = cli.execute(train_main._command, flags)
  return result, out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One 3-step run evaluated at every step, tracking the best accuracy."""
  folder = tmp_path_factory.mktemp("run_outputs")
  train, dev = write_sentiment_tsvs(folder)
  file_tasks.register_file_task(TASK, train_path=train, validation_path=dev,
                                input_template="{text}", label_names=("negative", "positive"),
                                metrics=("accuracy",), vocabulary=seqio.ByteVocabulary())
  orbax_format.save_params(folder / "frozen", api.load_model(["test/t5_1_1_tiny.gin"],
                                                             seed=3).params, FROZEN_STEP)
  flags = _flags(folder, folder / "run", f"--gin.TRAIN_STEPS={FROZEN_STEP + 3}")
  result, console = _train(flags)
  return dict(folder=folder, model_dir=folder / "run", flags=flags, result=result,
              console=console)


def _records(model_dir, split):
  with open(model_dir / "metrics.jsonl") as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def test_console_shows_loss_per_token_and_names_each_accuracy(run):
  lines = run["console"].splitlines()
  train_lines = [line for line in lines if line.startswith("step ")]
  assert len(train_lines) == 3
  assert all("loss/token" in line and "token accuracy" in line for line in train_lines)
  # The first step compiles: its time is shown apart and kept out of the ETA.
  assert "first step" in train_lines[0] and "ETA" not in train_lines[0]
  assert "ETA" in train_lines[1] and "first step" not in train_lines[1]
  eval_lines = [line for line in lines if line.startswith("eval step")]
  assert eval_lines and all("per example" in line for line in eval_lines)


def test_metrics_jsonl_keeps_the_t5x_sum_and_names_the_token_accuracy(run):
  first, second = _records(run["model_dir"], "train")[:2]
  assert first["loss"] == pytest.approx(
      first["loss_per_nonpadding_target_token"] * first["nonpadding_target_tokens"], rel=1e-5)
  assert 0.0 <= first["token_accuracy"] <= 1.0 and "accuracy" not in first
  assert "first_step_seconds" in first and "examples_per_second" not in first
  assert second["examples_per_second"] > 0 and "first_step_seconds" not in second


def test_summary_names_the_outputs_and_the_commands(run):
  console, model_dir = run["console"], run["model_dir"]
  assert f"Training done: step {FROZEN_STEP + 3} of {FROZEN_STEP + 3}" in console
  assert "Best evaluation: accuracy" in console
  assert str(model_dir / "metrics.jsonl") in console
  assert f"python -m prompt_tuning.scripts.plot_metrics {model_dir}" in console
  assert "python -m prompt_tuning.eval" in console and "python -m prompt_tuning.infer" in console


def test_best_checkpoint_keeps_the_best_evaluations_prompt(run):
  model_dir = run["model_dir"]
  record = json.load(open(model_dir / "best" / "best.json"))
  values = {step: value for step, value in record["history"]}
  assert sorted(values) == [FROZEN_STEP + 1, FROZEN_STEP + 2, FROZEN_STEP + 3]
  assert record["best_value"] == max(values.values())
  best_step = min(s for s, v in values.items() if v == record["best_value"])
  assert record["best_step"] == best_step
  kept = model_dir / "best" / f"checkpoint_{best_step}" / PROMPT
  assert [str(kept)] == record["files"]
  np.testing.assert_array_equal(
      np.load(kept), np.load(model_dir / "numpy_checkpoints" / f"checkpoint_{best_step}" / PROMPT))
  assert sorted(p.name for p in (model_dir / "best").iterdir()) == [
      "best.json", f"checkpoint_{best_step}"]


def test_printed_eval_command_runs_and_labels_the_prompts_step(run, capsys):
  command = next(line.strip() for line in run["console"].splitlines()
                 if line.strip().startswith("python -m prompt_tuning.eval"))
  argv = ["eval"] + shlex.split(command)[3:]
  results = cli.execute(eval_main._command, argv)
  record = json.load(open(run["model_dir"] / "eval" / "metrics.json"))
  best = json.load(open(run["model_dir"] / "best" / "best.json"))
  assert record["step"] == best["best_step"] and record["frozen_checkpoint_step"] == FROZEN_STEP
  assert results[TASK]["accuracy"] == pytest.approx(best["best_value"])
  names = os.listdir(run["model_dir"] / "eval" / "inference_eval")
  assert f"{TASK}-{best['best_step']:06d}.jsonl" in names


def test_rerunning_a_finished_run_exits_0_quietly(run):
  result = subprocess.run([sys.executable, "-m", "prompt_tuning.train"] + run["flags"][1:],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert f"Nothing to train: {run['model_dir']} already holds step {FROZEN_STEP + 3}" in (
      result.stdout)
  for noise in ("cudart_stub", "cuInit", "absl::InitializeLog", "cpu_feature_guard"):
    assert noise not in result.stderr
  assert len(_records(run["model_dir"], "train")) == 3  # Nothing was trained again.


def test_early_stopping_stops_and_a_rerun_says_so(run):
  folder = run["folder"]
  flags = _flags(folder, folder / "early", f"--gin.TRAIN_STEPS={FROZEN_STEP + 6}",
                 "--gin.EARLY_STOPPING_PATIENCE=1", "--gin.SAVING_PERIOD=100",
                 # Learning rate 0: the accuracy never improves after the first evaluation.
                 "--gin.OPTIMIZER=@optim.adamw", "--gin.LEARNING_RATE=0.0")
  result, console = _train(flags)
  assert result.step == FROZEN_STEP + 2
  assert f"Stopped early at step {FROZEN_STEP + 2}" in console
  assert (folder / "early" / f"checkpoint_{FROZEN_STEP + 2}").is_dir()
  assert json.load(open(folder / "early" / "best" / "best.json"))["stopped_early_at"] == (
      FROZEN_STEP + 2)
  again, console = _train(flags)
  assert again.step == FROZEN_STEP + 2 and f"Stopped early at step {FROZEN_STEP + 2}" in console
  assert len(_records(folder / "early", "train")) == 2


def _png_size(path) -> tuple[int, int]:
  with open(path, "rb") as f:
    header = f.read(24)
  assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
  return struct.unpack(">II", header[16:24])


def test_plot_overlays_runs_in_a_png_of_the_expected_size(run, tmp_path, capsys):
  png = tmp_path / "runs.png"
  second = tmp_path / "second_run"
  second.mkdir()
  records = [{"step": 5, "split": "train", "loss_per_nonpadding_target_token": 2.0},
             {"step": 9, "split": "train", "loss_per_nonpadding_target_token": 1.5},
             {"step": 9, "split": "eval", "task": TASK, "accuracy": 70.0}]
  (second / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert plot_metrics.main(["plot_metrics", str(run["model_dir"]), str(second),
                            f"--output={png}", "--width=640", "--panel_height=200"]) == 0
  assert _png_size(png) == (640, 2 * 200)  # Train loss + the task's accuracy.
  curves = plot_metrics.read_curves([str(run["model_dir"]), str(second)])
  assert list(curves) == [plot_metrics.TRAIN_FIGURE, f"{TASK}/accuracy"]
  assert curves[f"{TASK}/accuracy"]["second_run"] == [(9, 70.0)]
  assert plot_metrics.main(["plot_metrics", str(tmp_path / "nothing")]) == 1
  assert "metrics.jsonl does not exist" in capsys.readouterr().err


def test_noise_filters_drop_only_the_listed_lines(capfd):
  with log_noise.native_stderr_filtered():
    os.write(2, b"I0000 00:00:1.0 123 cudart_stub.cc:31] Could not find cuda drivers\n"
                b"E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
                b"a line the user should see\n")
  err = capfd.readouterr().err
  assert "a line the user should see" in err and "cuInit" not in err and "cudart" not in err
  log_noise.drop_seqio_noise()
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logger = logging.getLogger("absl")
  logger.addHandler(handler)
  try:
    logger.warning("Using an uncached FunctionDataset for training is not recommended")
    logger.warning("Given sequence lengths are longer than necessary for some inputs")
    logger.warning("Task x: something to act on")
  finally:
    logger.removeHandler(handler)
  assert [r.getMessage() for r in records] == ["Task x: something to act on"]
