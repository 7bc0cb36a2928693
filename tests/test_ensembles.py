"""Prompt ensembles in one forward pass: equal to single-prompt calls, majority vote, scoring."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import ensembles
from tiny_llms import write_tiny_llama

ENCODER_TOKENS = np.array([[5, 9, 13, 2, 1], [7, 3, 1, 0, 0]], np.int32)


@pytest.fixture(scope="module")
def t5():
  return prompt_tuning.load_model(["test/t5_1_1_tiny_prompt.gin"], seed=2)


def _prompts(model, count, seed=0):
  shape = np.shape(model.prompt_params["encoder"]["prompt"]["prompt"]["prompt"]) if (
      not model.is_decoder_only) else np.shape(
          model.prompt_params["decoder"]["prompt"]["prompt"]["prompt"])
  return np.random.default_rng(seed).uniform(-2, 2, (count,) + shape).astype(np.float32)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_per_prompt_rows_equal_single_prompt_calls(t5, method):
  prompts = _prompts(t5, 3)
  combined, per_prompt = t5.generate_ensemble(ENCODER_TOKENS, prompts, 6, method=method)
  assert per_prompt.shape == (3, 2, 6) and combined.shape == (2, 6)
  for n, prompt in enumerate(prompts):
    np.testing.assert_array_equal(per_prompt[n], t5.generate(ENCODER_TOKENS, 6, method=method,
                                                             prompt=prompt))


def test_copies_of_one_prompt_equal_that_prompt(t5, tmp_path):
  prompt = _prompts(t5, 1)[0]
  np.save(tmp_path / "p.npy", prompt)
  combined, per_prompt = t5.generate_ensemble(ENCODER_TOKENS, [tmp_path / "p.npy"] * 4, 6)
  single = t5.generate(ENCODER_TOKENS, 6, prompt=prompt)
  np.testing.assert_array_equal(combined, single)
  assert all((per_prompt[n] == single).all() for n in range(4))


def test_majority_vote_and_tie_break():
  eos = 1
  per_prompt = np.array([
      [[5, 6, 1, 0], [7, 1, 0, 0]],
      [[5, 6, 1, 9], [8, 1, 0, 0]],   # same answer as prompt 0 for example 0 (after EOS ignored)
      [[4, 1, 0, 0], [9, 1, 0, 0]],
  ])
  combined = ensembles.majority_vote(per_prompt, [eos])
  np.testing.assert_array_equal(combined[0], [5, 6, 1, 0])  # 2 votes of 3.
  np.testing.assert_array_equal(combined[1], [7, 1, 0, 0])  # all differ: the lowest prompt index.
  tie = np.array([[[3, 1]], [[4, 1]], [[4, 1]], [[3, 1]]])
  np.testing.assert_array_equal(ensembles.majority_vote(tie, [eos])[0], [3, 1])  # 2-2: prompt 0.


def test_wrong_prompts_are_one_clear_error(t5):
  with pytest.raises(ValueError, match="non-empty list"):
    t5.generate_ensemble(ENCODER_TOKENS, [], 4)
  plain = prompt_tuning.load_model(["test/t5_1_1_tiny.gin"])
  with pytest.raises(ValueError, match="input-prompt model"):
    plain.generate_ensemble(ENCODER_TOKENS, _prompts(t5, 2), 4)


def test_decoder_only_ensembles_generation_and_scoring(tmp_path):
  checkpoint = write_tiny_llama(tmp_path / "llama", seed=3)
  model = prompt_tuning.load_model(["architectures/prompt_tuning.gin"], ["PROMPT_LENGTH=3"],
                                   checkpoint=checkpoint)
  prompts = np.random.default_rng(1).uniform(-1, 1, (3, 3, 32)).astype(np.float32)
  texts = ["a good film", "bad"]
  combined, per_prompt = model.generate_ensemble(texts, prompts, 4)
  for n in range(3):
    np.testing.assert_array_equal(per_prompt[n], model.generate(texts, 4, prompt=prompts[n]))
  mean, per = model.score_ensemble(["Review: fine. Sentiment:"], [" good", " bad"], prompts)
  for n in range(3):
    np.testing.assert_allclose(per[n], model.score(["Review: fine. Sentiment:"], [" good", " bad"],
                                                   prompt=prompts[n]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mean, per.mean(axis=0))
  # Against the full logits: each label's tokens' log-probabilities read after the input.
  head = model.encode(["Review: fine. Sentiment:"])[0][0].tolist()
  for label, score in zip([" good", " bad"], per[1]):
    tail = list(model.vocabulary.encode(label))
    log_probs = jax.nn.log_softmax(np.asarray(model.logits(np.asarray([head + tail]),
                                                          prompt=prompts[1]))[0])
    expected = sum(float(log_probs[len(head) - 1 + i, token]) for i, token in enumerate(tail))
    assert score == pytest.approx(expected, abs=1e-4)


def test_decoder_only_ensemble_reuses_one_n_prompt_cache(tmp_path):
  """The N prompts' keys/values are computed once (N cache rows) and reused by later calls;
  cached decoding equals recomputing the prompts in the prefill."""
  from prompt_tuning import api, prompt_cache
  checkpoint = write_tiny_llama(tmp_path / "llama", seed=5)
  model = prompt_tuning.load_model(["architectures/prompt_tuning.gin"], ["PROMPT_LENGTH=2"],
                                   checkpoint=checkpoint)
  prompts = np.random.default_rng(2).uniform(-1, 1, (4, 2, 32)).astype(np.float32)
  first, per_first = model.generate_ensemble(["a film", "it was"], prompts, 3)
  cache = model._prompt_caches["cache"]  # pylint: disable=protected-access
  assert cache.num_prompts == 4 and cache.length == 2
  second, _ = model.generate_ensemble(["so bad", "fine"], prompts, 3)
  assert model._prompt_caches["cache"] is cache  # pylint: disable=protected-access
  module, params, _ = model._ensemble(prompts)  # pylint: disable=protected-access
  tokens, mask = model.encode(["a film", "it was"], left_pad=True)
  tiled, tiled_mask = ensembles.tile_rows(tokens, 4), ensembles.tile_rows(mask, 4)
  options = dict(method="greedy", max_decode_length=3, num_beams=1, alpha=0.0, temperature=1.0,
                 top_k=0, top_p=1.0, eos_id=-1)
  rng = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(
      prompt_cache.generate_from_cache(module, params, cache, tiled, rng, tiled_mask, **options),
      api.generate_decoder_only(module, params, tiled, rng, tiled_mask, **options))
  model.generate_ensemble(["a film"], prompts[:2], 3)  # Other prompts: a new cache.
  assert model._prompt_caches["cache"].num_prompts == 2  # pylint: disable=protected-access
