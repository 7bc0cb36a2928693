"""Prompt learning on Llama-family, Gemma 3 and BLOOM checkpoints through the CLI, with no size
macro in gin."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli
from prompt_tuning.checkpoints import tree
from prompt_tuning.data import file_tasks, tokenizer_vocab
from prompt_tuning.train import __main__ as train_main
from tiny_llms import write_tiny

TASK = "llm_training_test_sentiment"


_WORKSPACES: dict = {}


def _workspace(tmp_path_factory, family: str):
  """A tiny `family` directory and a sentiment task tokenized with its own tokenizer (made once
  per session)."""
  if family not in _WORKSPACES:
    _WORKSPACES[family] = _make_workspace(tmp_path_factory, family)
  return _WORKSPACES[family]


def _make_workspace(tmp_path_factory, family: str):
  folder = tmp_path_factory.mktemp(f"llm_training_{family}")
  model_dir = write_tiny(folder / family, family, seed=1)
  train, dev = write_sentiment_tsvs(folder)
  file_tasks.register_file_task(
      f"{TASK}_{family}", train_path=train, validation_path=dev,
      input_template="Review: {text} Sentiment:", label_names=("negative", "positive"),
      metrics=("accuracy",), vocabulary=tokenizer_vocab.model_vocabulary(model_dir))
  return folder, model_dir, f"{TASK}_{family}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  return _workspace(tmp_path_factory, "llama")


@pytest.fixture(scope="module", params=["llama", "gemma3", "bloom"])
def family_workspace(request, tmp_path_factory):
  return _workspace(tmp_path_factory, request.param)


def _train(workspace, run_dir, *extra, gin_file="architectures/prompt_tuning.gin"):
  _, model_dir, task = workspace
  argv = ["train", f"--gin_file={gin_file}", "--gin_file=runs/prompt_finetune.gin",
          f"--gin.MODEL_DIR='{run_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{model_dir}'", "--gin.BATCH_SIZE=8",
          "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=None", *extra]
  return cli.execute(train_main._command, argv)


def _losses(run_dir) -> list[float]:
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r["loss"] for r in records if r["split"] == "train"]


def test_prompt_tuning_lowers_the_loss(family_workspace, tmp_path):
  """Llama (RoPE), Gemma 3 (local / global layers) and BLOOM (ALiBi, embedding LayerNorm)
  directories, sizes from config.json."""
  _, model_dir, _ = family_workspace
  result = _train(family_workspace, tmp_path / "run", "--gin.TRAIN_STEPS=8",
                  "--gin.LEARNING_RATE=1.0", "--gin.PROMPT_LENGTH=4")
  losses = _losses(tmp_path / "run")
  assert len(losses) == 8 and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  width = api.load_model(checkpoint=model_dir).config.emb_dim
  assert result.trainable["decoder"]["prompt"]["prompt"]["prompt"].shape == (4, width)
  frozen = api.load_model(checkpoint=model_dir).params
  for path, value in tree.flatten_params(frozen).items():
    np.testing.assert_array_equal(np.asarray(tree.flatten_params(result.frozen)[path]),
                                  np.asarray(value), err_msg=path)


def test_prefix_tuning_a_llama_directory_runs(workspace, tmp_path):
  result = _train(workspace, tmp_path / "run", "--gin.TRAIN_STEPS=2",
                  "--gin.PREFIX_LENGTH=3", gin_file="architectures/prefix_tuning.gin")
  assert all(np.isfinite(_losses(tmp_path / "run")))
  key_value = result.trainable["decoder"]["prefix"]["self_attention"]["key_value"]
  assert key_value.shape == (3, 2, 2, 2, 8)  # [P, layers, k/v, kv_heads, head_dim]


def test_own_files_from_the_command_line_with_the_models_tokenizer(workspace, tmp_path):
  """TRAIN_FILE / VALIDATION_FILE / INPUT_TEMPLATE / CLASS_LABELS: no Python task module; the
  vocabulary is the checkpoint's; evaluation scores the labels (rank classification)."""
  folder, model_dir, _ = workspace
  argv = ["train", "--gin_file=architectures/prompt_tuning.gin",
          "--gin_file=runs/prompt_finetune.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
          f"--gin.TRAIN_FILE='{folder / 'train.tsv'}'",
          f"--gin.VALIDATION_FILE='{folder / 'dev.tsv'}'",
          "--gin.INPUT_TEMPLATE='Review: {text} Sentiment:'",
          "--gin.CLASS_LABELS=['negative', 'positive']",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{model_dir}'", "--gin.BATCH_SIZE=8",
          "--gin.TRAIN_STEPS=2", "--gin.EVAL_PERIOD=2", "--gin.PROMPT_LENGTH=4"]
  result = cli.execute(train_main._command, argv)
  assert set(result.eval_metrics[2]) == {"file_task_rank_classification"}
  assert 0.0 <= result.eval_metrics[2]["file_task_rank_classification"]["accuracy"] <= 100.0
  vocabulary = tokenizer_vocab.model_vocabulary(model_dir)
  assert file_tasks.default_target_template(vocabulary) == " {label}"
  assert file_tasks.file_task_label_names("file_task") == (" negative", " positive")
