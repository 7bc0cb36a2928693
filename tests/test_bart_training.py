"""Prefix tuning a BART directory from the command line on a summarization-style file task."""

from __future__ import annotations

import json
import os
import pathlib
import random

import numpy as np

from prompt_tuning import api, cli
from prompt_tuning.data import file_tasks, tokenizer_vocab
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import data as train_data

BART = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf_bart_tiny"
WORDS = ("city market news report growth year people water time summary article").split()


def _write_documents(folder: pathlib.Path) -> tuple[str, str]:
  """train.tsv (32 rows) and dev.tsv (8 rows): document -> its first three words."""
  rng = random.Random(0)
  rows = ["document\tsummary"]
  for _ in range(40):
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 10))]
    rows.append(f"{' '.join(words)}.\t{' '.join(words[:3])}")
  train, dev = folder / "train.tsv", folder / "dev.tsv"
  train.write_text("\n".join(rows[:33]) + "\n")
  dev.write_text("\n".join(rows[:1] + rows[33:]) + "\n")
  return str(train), str(dev)


def test_seq2seq_features_follow_the_model_tokenizer(tmp_path):
  """BART rows: `<s> text </s>` on both sides, pad id 1, decoder starting from `</s>`."""
  train, _ = _write_documents(tmp_path)
  vocabulary = tokenizer_vocab.model_vocabulary(BART)
  file_tasks.register_file_task("bart_features_test", train_path=train,
                                input_template="{document}", target_column="summary",
                                metrics=("exact_match",), vocabulary=vocabulary)
  config = api.checkpoint_model_config(str(BART))
  converter = train_data.feature_converter(config, task="bart_features_test")
  config_ds = train_data.DatasetConfig(mixture_or_task_name="bart_features_test",
                                       task_feature_lengths={"inputs": 16, "targets": 6},
                                       split="train", batch_size=2, shuffle=False)
  batch = next(train_data.get_dataset(config_ds, converter, repeat=False).as_numpy_iterator())
  inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
  assert inputs.shape == (2, 17) and targets.shape == (2, 7)
  assert (inputs[:, 0] == 0).all() and (targets[:, 0] == 0).all()
  assert (batch["decoder_input_tokens"][:, 0] == 2).all()
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:3], targets[:, :2])
  first = inputs[0][inputs[0] != 1].tolist()
  assert first[-1] == 2 and 1 not in first
  weights = batch["decoder_loss_weights"]
  np.testing.assert_array_equal(weights, (targets != 1).astype(weights.dtype))


def test_prefix_tuning_a_bart_directory_lowers_the_loss(tmp_path):
  train, dev = _write_documents(tmp_path)
  run_dir = tmp_path / "run"
  argv = ["train", "--gin_file=architectures/prefix_tuning.gin",
          "--gin_file=runs/prompt_finetune.gin", f"--gin.MODEL_DIR='{run_dir}'",
          f"--gin.TRAIN_FILE='{train}'", f"--gin.VALIDATION_FILE='{dev}'",
          "--gin.INPUT_TEMPLATE='{document}'", "--gin.TARGET_COLUMN='summary'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 6}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{BART}'", "--gin.BATCH_SIZE=8",
          "--gin.TRAIN_STEPS=8", "--gin.LEARNING_RATE=0.3", "--gin.PREFIX_LENGTH=3",
          "--gin.PREFIX_PROJECTION=True", "--gin.PREFIX_HIDDEN_DIM=16",
          "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=None"]
  result = cli.execute(train_main._command, argv)
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
  assert len(losses) == 8 and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  prefix = result.trainable["decoder"]["prefix"]
  assert set(prefix) == {"self_attention", "encoder_decoder_attention"}
  assert result.trainable["encoder"]["prefix"]["attention"]["embedding"].shape == (3, 32)
