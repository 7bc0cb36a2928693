"""Real GGUF models through our loader, against transformers' GGUF loader: SmolLM2-135M-Instruct
(Q4_1, Llama) and Gemma-3-270m (Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0 tensors). Goldens:
tests/fixtures/{smollm2,gemma3}_gguf/golden.npz from tools/make_llm_golden.py.

Slow, and skipped unless the assets are fetched:
  python -m prompt_tuning.scripts.fetch_assets smollm2-135m gemma3-270m
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import prompt_tuning
from conftest import real_asset

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
pytestmark = pytest.mark.slow


# asset -> (golden folder, (prompt, expected start of the greedy continuation) or None,
# perplexity bound on the golden's four English sentences).
MODELS = {"smollm2-135m": ("smollm2_gguf", ("The capital of France is", "Paris"), 40.0),
          "gemma3-270m": ("gemma3_gguf", None, 40.0)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def loaded(request):
  """(asset name, loaded model, golden arrays)."""
  model = prompt_tuning.load_model(checkpoint=real_asset(request.param))
  with np.load(FIXTURES / MODELS[request.param][0] / "golden.npz") as data:
    return request.param, model, dict(data)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_logits_equal_transformers_gguf_loader(loaded):
  name, model, golden = loaded
  tokens, mask = golden["input_ids"], golden["attention_mask"]
  logits = np.asarray(model.logits(tokens, attention_mask=mask))
  last = logits[np.arange(len(tokens)), mask.sum(axis=1) - 1]
  if "last_logits" in golden:
    np.testing.assert_allclose(last, golden["last_logits"], atol=2e-3, rtol=2e-3)
  else:  # The largest logits and the normalizer (a 262k vocabulary).
    np.testing.assert_allclose(np.take_along_axis(last, golden["last_top_ids"], axis=-1),
                               golden["last_top_logits"], atol=2e-3, rtol=2e-3, err_msg=name)
    log_z = last.max(-1) + np.log(np.exp(last - last.max(-1, keepdims=True)).sum(-1))
    np.testing.assert_allclose(log_z, golden["last_logsumexp"], atol=2e-3, rtol=2e-4)
  real = mask.astype(bool)
  clear = real & (golden["argmax_margin"] > 1e-3)
  np.testing.assert_array_equal(logits.argmax(-1)[clear], golden["argmax"][clear])
  next_tokens = np.take_along_axis(_log_softmax(logits)[:, :-1], tokens[:, 1:, None],
                                   axis=-1)[..., 0]
  np.testing.assert_allclose(next_tokens[real[:, 1:]], golden["target_logprobs"][real[:, 1:]],
                             atol=2e-3, err_msg=name)


def test_perplexity_of_english_sentences_is_sane(loaded):
  """exp(mean next-token NLL) over the golden's four sentences: transformers' to 0.1%, and low
  (a tokenizer built wrong, e.g. SentencePiece BPE read as Unigram, sends it into the hundreds)."""
  name, model, golden = loaded
  ids, mask = model.encode(list(golden["sentences"]))
  logits = np.asarray(model.logits(ids, attention_mask=mask))
  next_tokens = np.take_along_axis(_log_softmax(logits)[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
  real = mask[:, 1:] > 0
  perplexity = float(np.exp(-next_tokens[real].mean()))
  reference = float(np.exp(-golden["target_logprobs"][golden["attention_mask"][:, 1:] > 0].mean()))
  assert perplexity == pytest.approx(reference, rel=1e-3), name
  assert perplexity < MODELS[name][2], (name, perplexity)


def test_tokenizer_and_greedy_generation(loaded):
  name, model, golden = loaded
  ids, _ = model.encode(list(golden["sentences"]))
  np.testing.assert_array_equal(ids[golden["attention_mask"] > 0],
                                golden["input_ids"][golden["attention_mask"] > 0])
  tokens = model.generate(golden["gen_input_ids"], golden["gen_tokens"].shape[1],
                          eos_id=int(golden["gen_eos_token_id"]))
  clear = int(np.argmax(golden["gen_margins"][0] < 1e-3)) if (
      golden["gen_margins"][0] < 1e-3).any() else tokens.shape[1]
  np.testing.assert_array_equal(tokens[0, :clear], golden["gen_tokens"][0, :clear])
  if MODELS[name][1] is not None:
    prompt, expected = MODELS[name][1]
    assert model.decode(model.generate([prompt], 3))[0].strip().startswith(expected)


@pytest.mark.parametrize("name, width", [("smollm2-135m", 576), ("gemma3-270m", 640)])
def test_a_few_prompt_tuning_steps_lower_the_loss(tmp_path, name, width):
  """`python -m prompt_tuning.train` on the GGUF file itself, no size macro (issue 12)."""
  import jax
  from prompt_tuning import cli
  from prompt_tuning.data import file_tasks, tokenizer_vocab
  from prompt_tuning.train import __main__ as train_main
  from conftest import write_sentiment_tsvs
  path = real_asset(name)
  task = f"{name.replace('-', '_')}_sentiment_test"
  train, dev = write_sentiment_tsvs(tmp_path)
  file_tasks.register_file_task(
      task, train_path=train, validation_path=dev,
      input_template="Review: {text} Sentiment:", label_names=("negative", "positive"),
      vocabulary=tokenizer_vocab.model_vocabulary(path))
  result = cli.execute(train_main._command, [
      "train", "--gin_file=architectures/prompt_tuning.gin", "--gin_file=runs/prompt_finetune.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'", f"--gin.MIXTURE_OR_TASK_NAME='{task}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
      f"--gin.INITIAL_CHECKPOINT_PATH='{path}'", "--gin.BATCH_SIZE=4", "--gin.TRAIN_STEPS=6",
      "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=None", "--gin.PROMPT_LENGTH=8",
      "--gin.SAVING_PERIOD=6"])
  import json
  losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")
            if json.loads(line)["split"] == "train"]
  assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2])
  assert jax.tree_util.tree_leaves(result.trainable)[0].shape == (8, width)
