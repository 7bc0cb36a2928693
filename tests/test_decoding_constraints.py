"""Per-step decoding constraints (Hugging Face's logits processors) and Hugging Face beam scoring."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.inference import constraints as constraints_lib
from prompt_tuning.inference import decoding


def _banned_reference(sequence: list[int], n: int) -> set[int]:
  """Tokens that would repeat an n-gram of `sequence` (transformers' dictionary algorithm)."""
  if len(sequence) < n:
    return set()
  seen: dict[tuple[int, ...], list[int]] = {}
  for start in range(len(sequence) - n + 1):
    gram = tuple(sequence[start:start + n])
    seen.setdefault(gram[:-1], []).append(gram[-1])
  return set(seen.get(tuple(sequence[len(sequence) - n + 1:]), []))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_banned_ngram_tokens_equal_the_dictionary_algorithm(n):
  rng = np.random.default_rng(n)
  vocab, history = 5, 12
  sequences = rng.integers(0, vocab, size=(16, history)).astype(np.int32)
  for length in range(history + 1):
    banned = np.asarray(constraints_lib.banned_ngram_tokens(jnp.asarray(sequences), length, n,
                                                            vocab))
    for row in range(len(sequences)):
      expected = _banned_reference(sequences[row, :length].tolist(), n)
      assert set(np.flatnonzero(banned[row]).tolist()) == expected, (row, length)


def test_forced_tokens_min_length_and_order():
  scores = jnp.zeros((2, 6))
  sequence = jnp.asarray([[2, 0, 3, 4], [2, 0, 3, 5]])
  eos = (2,)
  forced = constraints_lib.Constraints(forced_bos_id=0, forced_eos_id=2)
  first = np.asarray(constraints_lib.apply(forced, scores, sequence, 1, 0, 5, eos))
  assert (first[:, 0] == 0).all() and np.isinf(first[:, 1:]).all()
  last = np.asarray(constraints_lib.apply(forced, scores, sequence, 4, 4, 5, eos))
  assert (last[:, 2] == 0).all() and np.isinf(np.delete(last, 2, axis=1)).all()
  middle = np.asarray(constraints_lib.apply(forced, scores, sequence, 3, 2, 5, eos))
  np.testing.assert_array_equal(middle, 0)
  short = constraints_lib.Constraints(min_new_tokens=2)
  early = np.asarray(constraints_lib.apply(short, scores, sequence, 2, 1, 5, eos))
  assert np.isinf(early[:, 2]).all() and np.isfinite(np.delete(early, 2, axis=1)).all()
  late = np.asarray(constraints_lib.apply(short, scores, sequence, 3, 2, 5, eos))
  assert np.isfinite(late).all()
  # The forced last token wins over a ban (transformers applies it after the n-gram ban).
  both = constraints_lib.Constraints(no_repeat_ngram_size=1, forced_eos_id=2)
  out = np.asarray(constraints_lib.apply(both, scores, sequence, 4, 4, 5, eos))
  assert (out[:, 2] == 0).all()


def test_constraints_reject_negative_sizes():
  with pytest.raises(ValueError, match="no_repeat_ngram_size=-1"):
    constraints_lib.Constraints(no_repeat_ngram_size=-1)


def _bigram_lm(vocab: int, seed: int):
  """A step function whose logits depend on the last token only (no cache)."""
  table = np.random.default_rng(seed).normal(size=(vocab, vocab)).astype(np.float32) * 2

  def step(tokens_B1, cache, index):
    del index
    return jnp.asarray(table)[tokens_B1[:, 0]], cache

  return step, table


def test_greedy_never_repeats_an_ngram_and_forces_its_ends():
  step, _ = _bigram_lm(7, 0)
  start = jnp.asarray([3, 4], jnp.int32)
  cache = {"dummy": jnp.zeros((2, 1))}
  plain = np.asarray(decoding.greedy_decode(step, cache, start, 12, eos_id=-1).tokens_BL)
  assert any(len(set(zip(r, r[1:]))) < len(r) - 1 for r in plain.tolist())  # loops
  rules = constraints_lib.Constraints(no_repeat_ngram_size=2, forced_bos_id=6, forced_eos_id=5)
  out = np.asarray(decoding.greedy_decode(step, cache, start, 12, eos_id=5,
                                          constraints=rules).tokens_BL)
  for row, first in zip(out.tolist(), [3, 4]):
    assert row[0] == 6 and 5 in row  # EOS by choice, or forced at the last position
    full = [first] + row[:row.index(5) + 1]
    bigrams = list(zip(full, full[1:]))
    assert len(set(bigrams)) == len(bigrams), full


def test_hf_length_penalty_scores_and_one_beam_early_stop():
  step, table = _bigram_lm(6, 1)
  start = jnp.asarray([1], jnp.int32)
  cache = {"dummy": jnp.zeros((1, 1))}
  out = decoding.beam_search(step, cache, start, 6, num_beams=3, eos_id=2, length_penalty=2.0,
                             early_stopping=True)
  tokens, scores = np.asarray(out.tokens_BKL)[0], np.asarray(out.scores_BK)[0]
  logp = table - np.log(np.exp(table).sum(-1, keepdims=True))
  for row, score in zip(tokens.tolist(), scores.tolist()):
    length = row.index(2) + 1 if 2 in row else len(row)
    sequence = [1] + row[:length]
    total = sum(logp[a, b] for a, b in zip(sequence, sequence[1:]))
    np.testing.assert_allclose(score, total / length ** 2.0, rtol=1e-5)
  assert list(scores) == sorted(scores, reverse=True)
  with pytest.raises(ValueError, match="early_stopping='sometimes'"):
    decoding.beam_search(step, cache, start, 6, num_beams=3, early_stopping="sometimes")
