"""Tests for prompt_tuning.inference.decoding on small deterministic language models.

The toy model's next-token logits depend on the last token, on the sum of every token
fed so far (kept in the cache, so cache threading and beam gathering matter) and on
the position `step`. A numpy re-implementation computes the same logits from the full
prefix with no cache; the references below (greedy, brute-force search, nucleus sets)
are built on it.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.inference import decoding

EOS = 1
MAX_POSITIONS = 16


class ToyLM:
  """logits = trans[last token] + by_sum[sum of fed tokens % period] + by_pos[step]."""

  def __init__(self, trans_VV, by_sum_MV=None, by_pos_SV=None):
    self.trans_VV = np.asarray(trans_VV, np.float32)
    vocab = self.trans_VV.shape[0]
    self.by_sum_MV = np.zeros((1, vocab), np.float32) if by_sum_MV is None else by_sum_MV
    self.by_pos_SV = (np.zeros((MAX_POSITIONS, vocab), np.float32)
                      if by_pos_SV is None else by_pos_SV)

  @classmethod
  def random(cls, vocab: int, seed: int, period: int = 3) -> "ToyLM":
    rs = np.random.RandomState(seed)
    return cls(2.0 * rs.randn(vocab, vocab).astype(np.float32),
               rs.randn(period, vocab).astype(np.float32),
               0.5 * rs.randn(MAX_POSITIONS, vocab).astype(np.float32))

  @classmethod
  def from_probs(cls, probs_VV) -> "ToyLM":
    return cls(np.log(np.asarray(probs_VV, np.float64)).astype(np.float32))

  @property
  def vocab(self) -> int:
    return self.trans_VV.shape[0]

  def init_cache(self, prefix_BP) -> dict:
    """Cache after a 'prefill' of prefix_BP at positions 0 .. P-1."""
    prefix_BP = np.asarray(prefix_BP, np.int32)
    history_BS = np.zeros((prefix_BP.shape[0], MAX_POSITIONS), np.int32)
    history_BS[:, :prefix_BP.shape[1]] = prefix_BP
    return {"history": jnp.asarray(history_BS), "calls": jnp.zeros((), jnp.int32)}

  def __call__(self, tokens_B1, cache, step):
    return self.apply(jnp.asarray(self.trans_VV), tokens_B1, cache, step)

  def apply(self, trans_VV, tokens_B1, cache, step):
    token_B = tokens_B1[:, 0]
    history_BS = cache["history"].at[:, step].set(token_B)
    period = self.by_sum_MV.shape[0]
    logits_BV = (trans_VV[token_B] + jnp.asarray(self.by_sum_MV)[history_BS.sum(-1) % period]
                 + jnp.asarray(self.by_pos_SV)[step])
    return logits_BV, {"history": history_BS, "calls": cache["calls"] + 1}

  def ref_logits(self, fed) -> np.ndarray:
    """Uncached: logits after feeding tokens `fed` at positions 0 .. len(fed) - 1."""
    return (self.trans_VV[fed[-1]] + self.by_sum_MV[sum(fed) % self.by_sum_MV.shape[0]]
            + self.by_pos_SV[len(fed) - 1]).astype(np.float64)


def log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max() - np.log(np.exp(x - x.max()).sum())


def penalty(length, alpha):
  return ((5.0 + length) / 6.0) ** alpha


def ref_greedy(lm, prefix, start, length):
  fed, out, score = list(prefix) + [start], [], 0.0
  for _ in range(length):
    logp = log_softmax(lm.ref_logits(fed))
    token = int(np.argmax(logp))
    out.append(token)
    score += logp[token]
    if token == EOS:
      break
    fed.append(token)
  return out + [0] * (length - len(out)), score


def ref_all_hypotheses(lm, prefix, start, length, alpha):
  """Every sequence ending in EOS or at `length`, with its score, best first."""
  found = []

  def extend(fed, tokens, logp_sum):
    logp = log_softmax(lm.ref_logits(fed))
    for token in range(lm.vocab):
      seq, total = tokens + [token], logp_sum + logp[token]
      if token == EOS or len(seq) == length:
        found.append((total / penalty(len(seq), alpha), seq + [0] * (length - len(seq))))
      else:
        extend(fed + [token], seq, total)

  extend(list(prefix) + [start], [], 0.0)
  return sorted(found, key=lambda item: -item[0])


def ref_beam_search(lm, prefix, start, length, beams, alpha):
  """Plain-list beam search with the documented rules, run to full length."""
  live, finished = [(0.0, [])], []  # (log-prob, tokens)
  for step in range(length):
    candidates = []
    for logp_sum, tokens in live:
      logp = log_softmax(lm.ref_logits(list(prefix) + [start] + tokens))
      candidates += [(logp_sum + logp[t], tokens + [t]) for t in range(lm.vocab)]
    candidates = sorted(candidates, key=lambda c: -c[0])[:2 * beams]
    for logp_sum, tokens in candidates[:beams]:
      if tokens[-1] == EOS or step == length - 1:
        finished.append((logp_sum / penalty(len(tokens), alpha),
                         tokens + [0] * (length - len(tokens))))
    live = [c for c in candidates if c[1][-1] != EOS][:beams]
  return sorted(finished, key=lambda f: -f[0])[:beams]


def nucleus(logits, temperature, top_k, top_p):
  """Token ids that top-k then top-p filtering keeps (numpy reference)."""
  order = np.argsort(-logits, kind="stable")
  kept = order[:top_k] if top_k else order
  probs = np.exp(log_softmax(logits[kept] / temperature))
  mass_before = np.cumsum(probs) - probs
  return set(int(t) for t in kept[(mass_before < top_p) | (np.arange(len(kept)) == 0)])


PREFIX = np.array([[2, 3], [0, 0], [4, 1]], np.int32)
STARTS = np.array([0, 3, 2], np.int32)

# Hand-made table (vocab 5, EOS=1) where greedy is not optimal: 0 -> 2 (p=.5) -> EOS
# (p=.25) loses to 0 -> 3 (p=.4) -> EOS (p=.9). Token 4 loops on itself.
TRAP_PROBS = [
    [0.01, 0.04, 0.50, 0.40, 0.05],
    [0.20, 0.20, 0.20, 0.20, 0.20],
    [0.1875, 0.25, 0.1875, 0.1875, 0.1875],
    [0.025, 0.90, 0.025, 0.025, 0.025],
    [0.05, 0.10, 0.10, 0.10, 0.65],
]

# Early EOS (p=.6) versus a near-certain loop on token 4.
LOOP_PROBS = [
    [0.02, 0.60, 0.04, 0.04, 0.30],
    [0.20, 0.20, 0.20, 0.20, 0.20],
    [0.20, 0.20, 0.20, 0.20, 0.20],
    [0.20, 0.20, 0.20, 0.20, 0.20],
    [0.01, 0.01, 0.005, 0.005, 0.97],
]


# ---------------------------------------------------------------- helpers


def test_brevity_penalty_values():
  np.testing.assert_allclose(decoding.brevity_penalty(7, 0.6), 2.0 ** 0.6, rtol=1e-6)
  np.testing.assert_allclose(decoding.brevity_penalty(1, 1.0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(decoding.brevity_penalty(13, 0.0), 1.0)


def test_expand_and_gather_beams():
  tree = {"a": jnp.array([[1, 2], [3, 4]]), "index": jnp.array(7)}
  expanded = decoding.expand_to_beams(tree, 3)
  np.testing.assert_array_equal(expanded["a"], [[1, 2]] * 3 + [[3, 4]] * 3)
  assert int(expanded["index"]) == 7
  flat = {"x": jnp.arange(6) * 10, "index": jnp.array(7)}  # batch 2 x 3 beams
  gathered = decoding.gather_beams(flat, jnp.array([[2, 0], [1, 1]]))
  np.testing.assert_array_equal(gathered["x"], [20, 0, 40, 40])
  assert int(gathered["index"]) == 7


def test_filter_logits_top_k_exact():
  out = decoding.filter_logits(jnp.array([[1.0, 3.0, 2.0, 0.0], [2.0, 2.0, 1.0, 5.0]]), top_k=2)
  np.testing.assert_array_equal(out, [[-np.inf, 3.0, 2.0, -np.inf], [2.0, -np.inf, -np.inf, 5.0]])
  ties = decoding.filter_logits(jnp.array([[2.0, 2.0, 1.0]]), top_k=1)
  np.testing.assert_array_equal(ties, [[2.0, -np.inf, -np.inf]])


def test_filter_logits_top_p_exact():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.3, 0.15]]))
  def kept(**kw):
    return np.flatnonzero(np.isfinite(np.asarray(decoding.filter_logits(logits, **kw)[0]))).tolist()
  assert kept(top_p=0.4) == [1]
  assert kept(top_p=0.6) == [1, 2]
  assert kept(top_p=0.85) == [1, 2, 3]
  assert kept(top_p=1.0) == [0, 1, 2, 3]
  # top-p acts on the top-k renormalized mass: .5 / .95 > .51 drops token 2.
  assert kept(top_p=0.51) == [1, 2]
  assert kept(top_k=3, top_p=0.51) == [1]
  traced = jax.jit(lambda p: decoding.filter_logits(logits, top_p=p))(jnp.float32(0.6))
  np.testing.assert_array_equal(traced, decoding.filter_logits(logits, top_p=0.6))
  np.testing.assert_allclose(traced[0, 1:3], logits[0, 1:3])


@pytest.mark.parametrize("kwargs", [{"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_filter_logits_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError, match="top_"):
    decoding.filter_logits(jnp.zeros((1, 4)), **kwargs)


# ---------------------------------------------------------------- greedy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_uncached_argmax(seed):
  lm = ToyLM.random(vocab=6, seed=seed)
  out = decoding.greedy_decode(lm, lm.init_cache(PREFIX), STARTS, max_decode_len=7,
                               start_step=PREFIX.shape[1])
  assert out.tokens_BL.shape == (3, 7) and out.tokens_BL.dtype == jnp.int32
  for row in range(3):
    tokens, score = ref_greedy(lm, PREFIX[row], STARTS[row], 7)
    np.testing.assert_array_equal(out.tokens_BL[row], tokens)
    np.testing.assert_allclose(out.scores_B[row], score, rtol=1e-5)


def test_greedy_eos_padding_and_max_length():
  lm = ToyLM.from_probs(TRAP_PROBS)
  out = decoding.greedy_decode(lm, lm.init_cache(np.zeros((2, 0))), jnp.array([0, 4]),
                               max_decode_len=5)
  # Row 0 stops at EOS and pads; row 1 loops on token 4 until the length limit.
  np.testing.assert_array_equal(out.tokens_BL, [[2, 1, 0, 0, 0], [4, 4, 4, 4, 4]])
  np.testing.assert_allclose(out.scores_B, [np.log(0.5 * 0.25), 5 * np.log(0.65)], rtol=1e-5)


def test_decoding_errors_name_the_problem():
  lm = ToyLM.random(vocab=5, seed=0)
  cache = lm.init_cache(np.zeros((2, 0)))
  starts = jnp.array([0, 0])
  with pytest.raises(ValueError, match=r"logits \[batch=2, vocab\]"):
    decoding.greedy_decode(lambda t, c, s: (lm(t, c, s)[0][:, None], lm(t, c, s)[1]),
                           cache, starts, 3)
  with pytest.raises(ValueError, match=r"cache leaf \['history'\]"):
    decoding.greedy_decode(
        lambda t, c, s: (lm(t, c, s)[0], {**lm(t, c, s)[1], "history": c["history"] * 1.0}),
        cache, starts, 3)
  with pytest.raises(ValueError, match="max_decode_len"):
    decoding.greedy_decode(lm, cache, starts, 0)
  with pytest.raises(ValueError, match=r"leaf \['bad'\] has shape \(3,\)"):
    decoding.beam_search(lm, {**cache, "bad": jnp.zeros(3)}, starts, 3, num_beams=2)


# ---------------------------------------------------------------- sampling


def test_sampling_at_zero_temperature_or_top1_is_greedy():
  lm = ToyLM.random(vocab=6, seed=3)
  cache = lm.init_cache(PREFIX)
  greedy = decoding.greedy_decode(lm, cache, STARTS, 6, start_step=2)
  rng = jax.random.PRNGKey(5)
  cold = decoding.sample_decode(lm, cache, STARTS, 6, rng, temperature=0.0, start_step=2)
  top1 = decoding.sample_decode(lm, cache, STARTS, 6, rng, temperature=1.7, top_k=1,
                                start_step=2)
  traced = jax.jit(lambda t: decoding.sample_decode(lm, cache, STARTS, 6, rng, temperature=t,
                                                    start_step=2))(jnp.float32(0.0))
  for out in (cold, top1, traced):
    np.testing.assert_array_equal(out.tokens_BL, greedy.tokens_BL)
    np.testing.assert_allclose(out.scores_B, greedy.scores_B, rtol=1e-6)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.5, 3, 1.0), (1.5, 0, 0.6),
                                                     (0.8, 4, 0.8)])
def test_sampling_never_emits_filtered_tokens(temperature, top_k, top_p):
  lm = ToyLM.random(vocab=8, seed=4)
  cache = lm.init_cache(PREFIX)
  decode = jax.jit(lambda key: decoding.sample_decode(
      lm, cache, STARTS, 5, key, temperature=temperature, top_k=top_k, top_p=top_p,
      start_step=2))
  first_tokens, checked = set(), 0
  for seed in range(40):
    out = decode(jax.random.PRNGKey(seed))
    tokens_BL = np.asarray(out.tokens_BL)
    for row in range(3):
      fed, score = list(PREFIX[row]) + [int(STARTS[row])], 0.0
      for token in tokens_BL[row]:
        logits = lm.ref_logits(fed)
        assert token in nucleus(logits, temperature, top_k, top_p), (seed, row, fed, token)
        score += log_softmax(logits)[token]
        checked += 1
        if token == EOS:
          break
        fed.append(int(token))
      np.testing.assert_allclose(out.scores_B[row], score, rtol=1e-5)
      first_tokens.add((row, int(tokens_BL[row, 0])))
  assert checked > 300
  assert len(first_tokens) > 3 + 3  # more than one distinct choice per row: really sampling


def test_sampling_is_reproducible_and_rng_dependent():
  lm = ToyLM.random(vocab=8, seed=5)
  cache = lm.init_cache(PREFIX)
  decode = jax.jit(lambda key: decoding.sample_decode(lm, cache, STARTS, 6, key, start_step=2))
  sample = lambda seed: decode(jax.random.PRNGKey(seed)).tokens_BL
  np.testing.assert_array_equal(sample(11), sample(11))
  assert any(not np.array_equal(sample(11), sample(seed)) for seed in range(12, 16))


@pytest.mark.parametrize("temperature,top_k", [(1.3, 0), (0.9, 3)])
def test_one_step_sampling_distribution_matches_softmax(temperature, top_k):
  lm = ToyLM.random(vocab=8, seed=6)
  draws = 6000
  out = decoding.sample_decode(lm, lm.init_cache(np.zeros((draws, 0))),
                               jnp.full((draws,), 2), 1, jax.random.PRNGKey(0),
                               temperature=temperature, top_k=top_k)
  counts = np.bincount(np.asarray(out.tokens_BL[:, 0]), minlength=8)
  logits = lm.ref_logits([2]) / temperature
  kept = sorted(nucleus(lm.ref_logits([2]), temperature, top_k, 1.0))
  expected = np.zeros(8)
  expected[kept] = np.exp(log_softmax(logits[kept])) * draws
  assert counts[expected == 0].sum() == 0
  chi2 = (((counts - expected)[kept]) ** 2 / expected[kept]).sum()
  # 99.9% quantile of chi-square with 7 (resp. 2) degrees of freedom.
  assert chi2 < {8: 24.32, 3: 13.82}[len(kept)], (counts, expected)


# ---------------------------------------------------------------- beam search


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_one_beam_without_length_penalty_equals_greedy(seed):
  lm = ToyLM.random(vocab=6, seed=seed)
  cache = lm.init_cache(PREFIX)
  greedy = decoding.greedy_decode(lm, cache, STARTS, 7, start_step=2)
  beam = decoding.beam_search(lm, cache, STARTS, 7, num_beams=1, alpha=0.0, start_step=2)
  assert beam.tokens_BKL.shape == (3, 1, 7)
  np.testing.assert_array_equal(beam.tokens_BKL[:, 0], greedy.tokens_BL)
  np.testing.assert_allclose(beam.scores_BK[:, 0], greedy.scores_B, rtol=1e-6)


def test_beam_search_beats_greedy_on_trap_table():
  lm = ToyLM.from_probs(TRAP_PROBS)
  cache = lm.init_cache(np.zeros((1, 0)))
  greedy = decoding.greedy_decode(lm, cache, jnp.array([0]), 3)
  beam = decoding.beam_search(lm, cache, jnp.array([0]), 3, num_beams=2, alpha=0.6)
  best = ref_all_hypotheses(lm, [], 0, 3, alpha=0.6)
  np.testing.assert_array_equal(greedy.tokens_BL[0], [2, 1, 0])
  np.testing.assert_array_equal(beam.tokens_BKL[0], [best[0][1], best[1][1]])
  np.testing.assert_array_equal(beam.tokens_BKL[0], [[3, 1, 0], [2, 1, 0]])
  np.testing.assert_allclose(beam.scores_BK[0], [np.log(0.36) / penalty(2, 0.6),
                                                 np.log(0.125) / penalty(2, 0.6)], rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_equals_brute_force_ranking(alpha):
  # vocab 4, length 3: 4 + 12 + 36 = 52 candidates, 40 distinct hypotheses (EOS ends
  # the 4 + 12 early ones). With 45 beams the search is exhaustive: its finished set
  # is the full ranking and the last 5 slots stay empty.
  lm = ToyLM.random(vocab=4, seed=7)
  prefix, starts = PREFIX[:2], STARTS[:2]
  beam = decoding.beam_search(lm, lm.init_cache(prefix), starts, 3, num_beams=45, alpha=alpha,
                              start_step=2)
  for row in range(2):
    ranking = ref_all_hypotheses(lm, prefix[row], starts[row], 3, alpha)
    assert len(ranking) == 40
    np.testing.assert_array_equal(beam.tokens_BKL[row, :40], [seq for _, seq in ranking])
    np.testing.assert_allclose(beam.scores_BK[row, :40], [s for s, _ in ranking], rtol=1e-5)
    assert np.all(np.isneginf(beam.scores_BK[row, 40:]))
    np.testing.assert_array_equal(beam.tokens_BKL[row, 40:], 0)
  assert not np.array_equal(beam.tokens_BKL[0, :40], beam.tokens_BKL[1, :40])


def test_narrow_beam_matches_numpy_beam_search():
  # The sum-of-history term makes logits depend on each hypothesis' whole past, so a
  # wrong cache gather (beam b of example i at row i * beams + b) changes the result.
  checked_rows = 0
  for seed in range(3):
    lm = ToyLM.random(vocab=5, seed=10 + seed)
    beam = decoding.beam_search(lm, lm.init_cache(PREFIX), STARTS, 5, num_beams=3, alpha=0.6,
                                start_step=2)
    for row in range(3):
      expected = ref_beam_search(lm, PREFIX[row], STARTS[row], 5, 3, 0.6)
      np.testing.assert_array_equal(beam.tokens_BKL[row], [seq for _, seq in expected])
      np.testing.assert_allclose(beam.scores_BK[row], [s for s, _ in expected], rtol=1e-5)
      checked_rows += 1
  assert checked_rows == 9


def test_beam_search_does_not_stop_while_a_live_beam_can_still_win():
  # With alpha=2 the early EOS (p=.6) is finished first, but the live beam 4 -> 4 -> ...
  # (p=.97 per step) scores better once divided by the penalty at length 8. Stopping
  # on the bound at the next length instead of max_decode_len would return [1].
  lm = ToyLM.from_probs(LOOP_PROBS)
  cache = lm.init_cache(np.zeros((1, 0)))
  greedy = decoding.greedy_decode(lm, cache, jnp.array([0]), 8)
  np.testing.assert_array_equal(greedy.tokens_BL[0], [1, 0, 0, 0, 0, 0, 0, 0])
  for beams in (1, 2):
    beam = decoding.beam_search(lm, cache, jnp.array([0]), 8, num_beams=beams, alpha=2.0)
    expected = ref_beam_search(lm, [], 0, 8, beams, 2.0)
    np.testing.assert_array_equal(beam.tokens_BKL[0], [seq for _, seq in expected])
    np.testing.assert_allclose(beam.scores_BK[0], [sc for sc, _ in expected], rtol=1e-5)
    np.testing.assert_array_equal(beam.tokens_BKL[0, 0], [4] * 8)
    np.testing.assert_allclose(beam.scores_BK[0, 0],
                               (np.log(0.3) + 7 * np.log(0.97)) / (13 / 6) ** 2, rtol=1e-5)


def test_decoders_under_jit_with_traced_model_and_start_step():
  lm = ToyLM.random(vocab=6, seed=8)
  cache = lm.init_cache(PREFIX)

  @jax.jit
  def run(trans_VV, start_step):
    fn = lambda t, c, s: lm.apply(trans_VV, t, c, s)
    return (decoding.greedy_decode(fn, cache, STARTS, 5, start_step=start_step),
            decoding.beam_search(fn, cache, STARTS, 5, num_beams=3, start_step=start_step))

  greedy, beam = run(jnp.asarray(lm.trans_VV), jnp.int32(2))
  eager_beam = decoding.beam_search(lm, cache, STARTS, 5, num_beams=3, start_step=2)
  for row in range(3):
    np.testing.assert_array_equal(greedy.tokens_BL[row], ref_greedy(lm, PREFIX[row],
                                                                     STARTS[row], 5)[0])
  np.testing.assert_array_equal(beam.tokens_BKL, eager_beam.tokens_BKL)
  np.testing.assert_allclose(beam.scores_BK, eager_beam.scores_BK, rtol=1e-6)


def test_first_argmax_equals_argmax_with_ties_and_nan():
  rs = np.random.RandomState(0)
  logits = rs.randn(5, 37).astype(np.float32)
  logits[1, [3, 9, 20]] = 10.0  # ties: the first wins
  logits[2, :] = 0.0
  logits[3, [4, 7]] = np.nan  # jnp.argmax picks the first NaN
  got = np.asarray(decoding.first_argmax(jnp.asarray(logits)))
  np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(logits), axis=-1)))
  np.testing.assert_array_equal(got[1:4], [3, 0, 4])
  assert got.dtype == np.int32
