"""The real SmolLM2-135M-Instruct GGUF (Q4_1) through our loader, against transformers' GGUF
loader (golden: tests/fixtures/smollm2_gguf/golden.npz from tools/make_llm_golden.py).

Slow, and skipped unless the asset is fetched:
  python -m prompt_tuning.scripts.fetch_assets smollm2-135m
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import prompt_tuning
from conftest import real_asset

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
  return prompt_tuning.load_model(checkpoint=real_asset("smollm2-135m"))


@pytest.fixture(scope="module")
def golden():
  with np.load(FIXTURES / "smollm2_gguf" / "golden.npz") as data:
    return dict(data)


def test_logits_equal_transformers_gguf_loader(smollm2, golden):
  tokens, mask = golden["input_ids"], golden["attention_mask"]
  logits = np.asarray(smollm2.logits(tokens, attention_mask=mask))
  last = mask.sum(axis=1) - 1
  np.testing.assert_allclose(logits[np.arange(len(tokens)), last], golden["last_logits"],
                             atol=2e-3, rtol=2e-3)
  real = mask.astype(bool)
  clear = real & (golden["argmax_margin"] > 1e-3)
  np.testing.assert_array_equal(logits.argmax(-1)[clear], golden["argmax"][clear])
  log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  next_tokens = np.take_along_axis(log_probs[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
  np.testing.assert_allclose(next_tokens[real[:, 1:]], golden["target_logprobs"][real[:, 1:]],
                             atol=2e-3)


def test_tokenizer_and_greedy_generation(smollm2, golden):
  ids, _ = smollm2.encode(list(golden["sentences"]))
  np.testing.assert_array_equal(ids[golden["attention_mask"] > 0],
                                golden["input_ids"][golden["attention_mask"] > 0])
  tokens = smollm2.generate(golden["gen_input_ids"], golden["gen_tokens"].shape[1],
                            eos_id=int(golden["gen_eos_token_id"]))
  clear = int(np.argmax(golden["gen_margins"][0] < 1e-3)) if (
      golden["gen_margins"][0] < 1e-3).any() else tokens.shape[1]
  np.testing.assert_array_equal(tokens[0, :clear], golden["gen_tokens"][0, :clear])
  assert smollm2.decode(smollm2.generate(["The capital of France is"], 3))[0].strip().startswith(
      "Paris")


def test_a_few_prompt_tuning_steps_lower_the_loss(tmp_path):
  """`python -m prompt_tuning.train` on the GGUF file itself, no size macro (issue 12)."""
  import jax
  from prompt_tuning import cli
  from prompt_tuning.data import file_tasks, tokenizer_vocab
  from prompt_tuning.train import __main__ as train_main
  from conftest import write_sentiment_tsvs
  path = real_asset("smollm2-135m")
  train, dev = write_sentiment_tsvs(tmp_path)
  file_tasks.register_file_task(
      "smollm2_sentiment_test", train_path=train, validation_path=dev,
      input_template="Review: {text} Sentiment:", label_names=("negative", "positive"),
      vocabulary=tokenizer_vocab.model_vocabulary(path))
  result = cli.execute(train_main._command, [
      "train", "--gin_file=architectures/prompt_tuning.gin", "--gin_file=runs/prompt_finetune.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.MIXTURE_OR_TASK_NAME='smollm2_sentiment_test'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
      f"--gin.INITIAL_CHECKPOINT_PATH='{path}'", "--gin.BATCH_SIZE=4", "--gin.TRAIN_STEPS=6",
      "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=None", "--gin.PROMPT_LENGTH=8",
      "--gin.SAVING_PERIOD=6"])
  import json
  losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")
            if json.loads(line)["split"] == "train"]
  assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2])
  assert jax.tree_util.tree_leaves(result.trainable)[0].shape == (8, 576)
