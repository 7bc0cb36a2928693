"""Each user error of the train / eval commands gives one actionable line (no traceback)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import seqio

from prompt_tuning import api, cli
from prompt_tuning import eval as eval_main
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.train import __main__ as train_main

TASK = "cli_errors_sentiment"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  folder = tmp_path_factory.mktemp("cli_errors")
  rows = "text\tlabel\n" + "".join(f"film {i}\t{'positive' if i % 2 else 'negative'}\n"
                                   for i in range(16))
  (folder / "train.tsv").write_text(rows)
  file_tasks.register_file_task(TASK, train_path=str(folder / "train.tsv"),
                                validation_path=str(folder / "train.tsv"), input_template="{text}",
                                label_names=("negative", "positive"),
                                vocabulary=seqio.ByteVocabulary())
  orbax_format.save_params(folder / "frozen", api.load_model(["test/t5_1_1_tiny.gin"]).params, 10)
  return folder


def _train_flags(workspace, *extra, drop=()):
  flags = {"MODEL_DIR": f"'{workspace / 'run'}'", "MIXTURE_OR_TASK_NAME": f"'{TASK}'",
           "TASK_FEATURE_LENGTHS": "{'inputs': 16, 'targets': 4}", "TRAIN_STEPS": "12",
           "INITIAL_CHECKPOINT_PATH": f"'{workspace / 'frozen'}'", "BATCH_SIZE": "4",
           "EVAL_PERIOD": "None", "LOG_PERIOD": "1"}
  for name in drop:
    flags.pop(name)
  return (["train", "--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_finetune.gin"]
          + [f"--gin.{k}={v}" for k, v in flags.items()] + list(extra))


def _user_error(command, argv) -> str:
  with pytest.raises(Exception) as caught:
    cli.execute(command, argv)
  message = cli.user_error_message(caught.value)
  assert message is not None, f"not reported as a user error: {caught.value!r}"
  assert "\n" not in message
  return message


def test_missing_macro_is_named(workspace):
  message = _user_error(train_main._command, _train_flags(workspace, drop=("MODEL_DIR",)))
  assert "MODEL_DIR" in message and "--gin.MODEL_DIR" in message


def test_unknown_gin_file_lists_search_paths(workspace):
  message = _user_error(train_main._command,
                        _train_flags(workspace, "--gin_file=runs/no_such_file.gin"))
  assert "no_such_file.gin" in message and "Searched" in message


def test_unregistered_task_suggests_module(workspace):
  message = _user_error(train_main._command, _train_flags(
      workspace, "--gin.MIXTURE_OR_TASK_NAME='cli_errors_sentimen'"))
  assert "MIXTURE_OR_TASK_MODULE" in message and TASK in message  # close match suggested.


def test_checkpoint_that_does_not_match_the_model(workspace):
  message = _user_error(train_main._command, _train_flags(workspace, "--gin.EMBED_DIM=8"))
  assert "token_embedder/embedding" in message or "shape" in message


def test_train_steps_already_reached(workspace):
  message = _user_error(train_main._command, _train_flags(workspace, "--gin.TRAIN_STEPS=10"))
  assert "TRAIN_STEPS=10" in message and "absolute" in message


def test_model_dir_not_writable(workspace):
  blocker = workspace / "a_file"
  blocker.write_text("x")
  message = _user_error(train_main._command,
                        _train_flags(workspace, f"--gin.MODEL_DIR='{blocker / 'run'}'"))
  assert "MODEL_DIR" in message and "not writable" in message


def test_nan_loss_stops_and_keeps_last_good_checkpoint(workspace):
  model_dir = workspace / "nan_run"
  common = (f"--gin.MODEL_DIR='{model_dir}'", "--gin.SAVING_PERIOD=1")
  cli.execute(train_main._command, _train_flags(workspace, *common))  # steps 11, 12: fine.
  good = np.load(model_dir / "numpy_checkpoints" / "checkpoint_12" / "encoder.prompt.prompt.prompt.npy")
  message = _user_error(train_main._command, _train_flags(
      workspace, *common, "--gin.TRAIN_STEPS=14", "--gin.LEARNING_RATE=1e39"))
  assert "step 13" in message and "step 12" in message
  assert sorted(p.name for p in model_dir.glob("checkpoint_*")) == ["checkpoint_12"]
  np.testing.assert_array_equal(
      np.load(model_dir / "numpy_checkpoints" / "checkpoint_12" / "encoder.prompt.prompt.prompt.npy"),
      good)


def test_prompt_file_of_the_wrong_shape(workspace):
  bad = workspace / "bad_prompt.npy"
  np.save(bad, np.zeros((7, 3), np.float32))
  message = _user_error(eval_main._command, [
      "eval", "--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_eval.gin",
      f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'", f"--gin.PROMPT_FILE='{bad}'",
      f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
      f"--gin.EVAL_OUTPUT_DIR='{workspace / 'eval'}'"])
  assert "[7, 3]" in message and "[5, 4]" in message and "PROMPT_LENGTH" in message


def test_command_line_prints_one_line_without_traceback(workspace):
  result = subprocess.run(
      [sys.executable, "-m", "prompt_tuning.train", "--gin_file=test/t5_1_1_tiny_prompt.gin",
       "--gin_file=runs/prompt_finetune.gin"], capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "is used but never set" in errors[0]
