"""Autoregressive decoding over a KV-cache step function: greedy, sampling, beam search.

Every algorithm here is model-agnostic. A model plugs in through one callable,

  tokens_to_logits(tokens_B1, cache, step) -> (logits_BV, new_cache)

where `tokens_B1` (int32 [batch, 1]) is the token at decoder position `step` (int32
scalar), `cache` is any pytree (the KV cache filled once by the encoder pass or the
decoder-only prefill) and `logits_BV` (float [batch, vocab]) predicts the token at
`step + 1`. A whole generation runs as one `jax.lax.while_loop`, so each function
can be wrapped in `jax.jit` (`max_decode_len`, `num_beams` and `top_k` static).

Outputs follow T5X: generated tokens exclude the start token, positions after EOS
hold 0 (padding), beam scores use the brevity penalty ((5 + length) / 6) ** alpha
where length counts the generated tokens including EOS. Beam search can instead score and
stop as Hugging Face's `generate` does (`length_penalty`: log-probability / length **
length_penalty; `early_stopping` True / False / "never"), and every algorithm takes
per-step `constraints.Constraints` (no-repeat n-grams, a minimum length, forced first / last
tokens) applied to the scores as transformers' logits processors are.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from prompt_tuning.inference import constraints as constraints_lib
from prompt_tuning.inference.constraints import Constraints

PyTree = Any
TokensToLogits = Callable[[jax.Array, PyTree, jax.Array], tuple[jax.Array, PyTree]]
# Chooses the next token: (logits_BV, rng key) -> int [batch].
_ChooseFn = Callable[[jax.Array, jax.Array], jax.Array]

# Temperatures below this decode greedily (dividing by them would overflow).
MIN_TEMPERATURE = 1e-4


class DecodeOutput(NamedTuple):
  """Result of greedy or sampled decoding.

  Attributes:
    tokens_BL: int32 [batch, max_decode_len] generated tokens (start token excluded);
      positions after EOS are 0.
    scores_B: float32 [batch] sum of the model's log-probabilities (log-softmax of the
      raw logits, before temperature / top-k / top-p) of the generated tokens, up to
      and including EOS.
  """
  tokens_BL: jax.Array
  scores_B: jax.Array


class BeamOutput(NamedTuple):
  """Result of beam search.

  Attributes:
    tokens_BKL: int32 [batch, num_beams, max_decode_len] hypotheses sorted best-first;
      positions after EOS are 0.
    scores_BK: float32 [batch, num_beams] log-probability / brevity_penalty(length);
      -inf (with all-zero tokens) where fewer than num_beams hypotheses exist.
  """
  tokens_BKL: jax.Array
  scores_BK: jax.Array


EosIds = int | tuple[int, ...]


def is_eos(tokens: jax.Array, eos_id: EosIds) -> jax.Array:
  """bool, tokens' shape: whether each token is the end-of-sequence id (or one of several)."""
  if isinstance(eos_id, int):
    return tokens == eos_id
  return jnp.isin(tokens, jnp.asarray(eos_id, tokens.dtype))


def brevity_penalty(length: jax.Array | int, alpha: jax.Array | float) -> jax.Array:
  """T5X / GNMT length normalizer ((5 + length) / 6) ** alpha (1 for alpha = 0)."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def hf_length_penalty(length: jax.Array | int, length_penalty: jax.Array | float) -> jax.Array:
  """Hugging Face's beam length normalizer length ** length_penalty (length: generated tokens,
  EOS included)."""
  return jnp.asarray(length, jnp.float32) ** length_penalty


def _eos_tuple(eos_id: "EosIds") -> tuple[int, ...]:
  return (eos_id,) if isinstance(eos_id, int) else tuple(eos_id)


def _history(context_BC: jax.Array, generated_BL: jax.Array) -> jax.Array:
  """int32 [B, C + L]: the context (e.g. the start token) followed by the generated tokens."""
  return jnp.concatenate([context_BC.astype(jnp.int32), generated_BL], axis=1)


def expand_to_beams(tree: PyTree, num_beams: int) -> PyTree:
  """Repeats every leaf's batch rows: [batch, ...] -> [batch * num_beams, ...].

  Row i * num_beams + b of the result is a copy of row i. Scalar (0-d) leaves, e.g. a
  shared cache index, are returned unchanged.
  """
  def expand(x):
    x = jnp.asarray(x)
    return x if x.ndim == 0 else jnp.repeat(x, num_beams, axis=0)
  return jax.tree_util.tree_map(expand, tree)


def gather_beams(tree: PyTree, beam_indices_BK: jax.Array) -> PyTree:
  """Selects beams per example in leaves laid out as [batch * old_beams, ...].

  Args:
    tree: pytree whose leaves have batch * old_beams leading rows (the beams of
      example i at rows i * old_beams ... i * old_beams + old_beams - 1); scalar leaves
      pass through.
    beam_indices_BK: int [batch, new_beams]; new beam j of example i copies old beam
      beam_indices_BK[i, j] of example i.

  Returns:
    The tree with leaves [batch * new_beams, ...].
  """
  batch = beam_indices_BK.shape[0]

  def gather(path, x):
    if x.ndim == 0:
      return x
    if x.shape[0] % batch:
      raise ValueError(
          f"gather_beams: leaf {jax.tree_util.keystr(path)} has shape {x.shape}; its "
          f"leading axis must be batch * beams with batch={batch}.")
    old_beams = x.shape[0] // batch
    rows = (jnp.arange(batch)[:, None] * old_beams + beam_indices_BK).reshape(-1)
    return jnp.take(x, rows, axis=0)
  return jax.tree_util.tree_map_with_path(gather, tree)


def _check_filter_args(top_k: int, top_p: float | jax.Array) -> None:
  if not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f"top_k={top_k!r} must be a Python int >= 0 (0 disables top-k filtering).")
  if not isinstance(top_p, jax.Array) and not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p={top_p} must be in (0, 1] (1.0 disables nucleus filtering).")


def filter_logits(logits_BV: jax.Array, top_k: int = 0,
                  top_p: float | jax.Array = 1.0) -> jax.Array:
  """Sets logits outside the top-k / nucleus (top-p) set to -inf.

  Args:
    logits_BV: float [batch, vocab].
    top_k: keep the k largest logits per row (exactly k; ties broken by lower id);
      0 keeps all.
    top_p: then keep the smallest prefix of the remaining tokens, by decreasing
      probability, whose total probability reaches top_p; the most likely token is
      always kept. 1.0 keeps all.

  Returns:
    float [batch, vocab] with filtered entries at -inf.
  """
  _check_filter_args(top_k, top_p)
  static_p = not isinstance(top_p, jax.Array)
  if logits_BV.ndim != 2:
    raise ValueError(f"filter_logits expects logits [batch, vocab], got shape {logits_BV.shape}.")
  batch, vocab = logits_BV.shape
  use_k = 0 < top_k < vocab
  use_p = not (static_p and top_p >= 1.0)
  if not (use_k or use_p):
    return logits_BV
  order_BV = jnp.argsort(-logits_BV, axis=-1, stable=True)  # token ids, most likely first
  sorted_BV = jnp.take_along_axis(logits_BV, order_BV, axis=-1)
  keep_BV = jnp.ones((batch, vocab), bool)  # in sorted order
  if use_k:
    keep_BV = keep_BV & (jnp.arange(vocab) < top_k)
  if use_p:
    probs_BV = jax.nn.softmax(jnp.where(keep_BV, sorted_BV, -jnp.inf), axis=-1)
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    keep_BV = keep_BV & (mass_before_BV < top_p)
  keep_BV = keep_BV.at[:, 0].set(True)
  keep_by_id_BV = jnp.zeros_like(keep_BV).at[jnp.arange(batch)[:, None], order_BV].set(keep_BV)
  return jnp.where(keep_by_id_BV, logits_BV, -jnp.inf)


def _check_step_fn(tokens_to_logits: TokensToLogits, cache: PyTree, batch: int,
                   step: jax.Array) -> None:
  """Traces one step abstractly; raises if logits or the returned cache mismatch."""
  tokens_B1 = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
  logits, new_cache = jax.eval_shape(tokens_to_logits, tokens_B1, cache, step)
  if len(logits.shape) != 2 or logits.shape[0] != batch:
    raise ValueError(
        f"tokens_to_logits must return logits [batch={batch}, vocab]; got shape "
        f"{logits.shape}. Slice the last position of [batch, 1, vocab] logits.")
  old = jax.tree_util.tree_flatten_with_path(cache)[0]
  new_leaves, new_def = jax.tree_util.tree_flatten(new_cache)
  if new_def != jax.tree_util.tree_structure(cache):
    raise ValueError(
        "tokens_to_logits returned a cache with a different structure than it was "
        f"given:\n  given {jax.tree_util.tree_structure(cache)}\n  returned {new_def}")
  for (path, a), b in zip(old, new_leaves):
    a = jnp.asarray(a) if not hasattr(a, "dtype") else a
    if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
      raise ValueError(
          f"tokens_to_logits changed cache leaf {jax.tree_util.keystr(path)} from "
          f"{a.dtype}{list(a.shape)} to {b.dtype}{list(b.shape)}; the cache must keep "
          "shapes and dtypes (cast the initial cache or the update).")


def _check_common(start_tokens_B: jax.Array, max_decode_len: int) -> None:
  if start_tokens_B.ndim != 1:
    raise ValueError(
        f"start_tokens_B must be int [batch]; got shape {start_tokens_B.shape}.")
  if not isinstance(max_decode_len, int) or max_decode_len < 1:
    raise ValueError(f"max_decode_len={max_decode_len!r} must be a Python int >= 1.")


class _LoopState(NamedTuple):
  i: jax.Array  # [] int32, number of tokens generated so far
  token_B: jax.Array  # int32 [batch], token fed at the next step
  cache: PyTree
  tokens_BL: jax.Array  # int32 [batch, max_decode_len]
  scores_B: jax.Array  # float32 [batch]
  done_B: jax.Array  # bool [batch], EOS generated
  rng: jax.Array


def _context(context_BC: Optional[jax.Array], start_tokens_B: jax.Array) -> jax.Array:
  """The tokens before the generated ones that n-gram constraints see (default: the start)."""
  if context_BC is None:
    return start_tokens_B[:, None]
  return jnp.asarray(context_BC, jnp.int32)


def _decode_loop(tokens_to_logits: TokensToLogits, initial_cache: PyTree,
                 start_tokens_B: jax.Array, max_decode_len: int, eos_id: EosIds,
                 start_step: int | jax.Array, choose: _ChooseFn,
                 rng: jax.Array, constraints: Optional[Constraints] = None,
                 context_BC: Optional[jax.Array] = None) -> DecodeOutput:
  """One-sequence-per-row decoding loop shared by greedy and sampling."""
  start_tokens_B = jnp.asarray(start_tokens_B, jnp.int32)
  _check_common(start_tokens_B, max_decode_len)
  batch = start_tokens_B.shape[0]
  context_BC = _context(context_BC, start_tokens_B)
  start_step = jnp.asarray(start_step, jnp.int32)
  _check_step_fn(tokens_to_logits, initial_cache, batch, start_step)

  def cond(s: _LoopState) -> jax.Array:
    return (s.i < max_decode_len) & ~jnp.all(s.done_B)

  def body(s: _LoopState) -> _LoopState:
    logits_BV, cache = tokens_to_logits(s.token_B[:, None], s.cache, start_step + s.i)
    logits_BV = logits_BV.astype(jnp.float32)
    rng, key = jax.random.split(s.rng)
    allowed_BV = constraints_lib.apply(
        constraints, logits_BV, _history(context_BC, s.tokens_BL), context_BC.shape[1] + s.i,
        s.i, max_decode_len, _eos_tuple(eos_id))
    next_B = jnp.where(s.done_B, 0, choose(allowed_BV, key).astype(jnp.int32))
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BV), next_B[:, None], axis=-1)[:, 0]
    return _LoopState(
        i=s.i + 1,
        token_B=next_B,
        cache=cache,
        tokens_BL=jax.lax.dynamic_update_slice(s.tokens_BL, next_B[:, None], (0, s.i)),
        scores_B=s.scores_B + jnp.where(s.done_B, 0.0, logp_B),
        done_B=s.done_B | is_eos(next_B, eos_id),
        rng=rng)

  init = _LoopState(
      i=jnp.zeros((), jnp.int32), token_B=start_tokens_B, cache=initial_cache,
      tokens_BL=jnp.zeros((batch, max_decode_len), jnp.int32),
      scores_B=jnp.zeros((batch,), jnp.float32), done_B=jnp.zeros((batch,), bool), rng=rng)
  final = jax.lax.while_loop(cond, body, init)
  return DecodeOutput(tokens_BL=final.tokens_BL, scores_B=final.scores_B)


def first_argmax(logits_BV: jax.Array) -> jax.Array:
  """int32 [batch]: each row's most likely token, the first among ties; equals jnp.argmax.

  Two plain reductions (max, then the smallest index holding it) instead of XLA's fused
  (value, index) reduce, which the CPU backend runs 3-5x slower on [8, 32128] logits (about
  0.5 ms of every decoding step). A row with NaN gives its first NaN, as jnp.argmax does.
  """
  max_B1 = jnp.max(logits_BV, axis=-1, keepdims=True)
  index_BV = jax.lax.broadcasted_iota(jnp.int32, logits_BV.shape, logits_BV.ndim - 1)
  is_max_BV = (logits_BV == max_B1) | jnp.isnan(logits_BV)
  return jnp.min(jnp.where(is_max_BV, index_BV, logits_BV.shape[-1]), axis=-1)


def _argmax(logits_BV: jax.Array, key: jax.Array) -> jax.Array:
  del key
  return first_argmax(logits_BV)


def greedy_decode(tokens_to_logits: TokensToLogits, initial_cache: PyTree,
                  start_tokens_B: jax.Array, max_decode_len: int, eos_id: EosIds = 1,
                  start_step: int | jax.Array = 0, *,
                  constraints: Optional[Constraints] = None,
                  context_BC: Optional[jax.Array] = None) -> DecodeOutput:
  """Decodes by taking the most likely token at each step.

  Args:
    tokens_to_logits: the model's one-step function (see the module docstring).
    initial_cache: cache after the encoder pass / prefill.
    start_tokens_B: int [batch] token at decoder position `start_step` (T5: 0 = BOS).
    max_decode_len: number of tokens to generate at most.
    eos_id: a row stops after emitting this token; later positions are 0.
    start_step: decoder position of the start tokens (prefix length for
      decoder-only models), Python int or int32 scalar.
    constraints: per-step constraints on the chosen token (scores stay the model's).
    context_BC: int [batch, C], the tokens before the generated ones that no-repeat n-grams
      see (default: the start tokens; decoder-only: the prompt).

  Returns:
    DecodeOutput. The loop exits early once every row has emitted EOS.
  """
  return _decode_loop(tokens_to_logits, initial_cache, start_tokens_B, max_decode_len,
                      eos_id, start_step, _argmax, jax.random.PRNGKey(0), constraints,
                      context_BC)


def sample_decode(tokens_to_logits: TokensToLogits, initial_cache: PyTree,
                  start_tokens_B: jax.Array, max_decode_len: int, rng: jax.Array,
                  temperature: float | jax.Array = 1.0, top_k: int = 0,
                  top_p: float | jax.Array = 1.0, eos_id: EosIds = 1,
                  start_step: int | jax.Array = 0, *,
                  constraints: Optional[Constraints] = None,
                  context_BC: Optional[jax.Array] = None) -> DecodeOutput:
  """Decodes by sampling from softmax(logits / temperature), optionally top-k / top-p filtered.

  Args:
    tokens_to_logits, initial_cache, start_tokens_B, max_decode_len, eos_id,
      start_step, constraints, context_BC: as in `greedy_decode` (constraints apply to the
      logits before temperature and filtering).
    rng: PRNG key; the same key gives the same samples.
    temperature: scalar; values below MIN_TEMPERATURE (e.g. 0) decode greedily.
    top_k: static int, sample among the k most likely tokens (0: all).
    top_p: nucleus mass in (0, 1], applied to the tempered (and top-k filtered)
      distribution (1.0: all).

  Returns:
    DecodeOutput; scores are log-probabilities under the unmodified model.
  """
  if not isinstance(temperature, jax.Array):
    if temperature < 0:
      raise ValueError(f"temperature={temperature} must be >= 0 (0 decodes greedily).")
    if temperature < MIN_TEMPERATURE:
      return greedy_decode(tokens_to_logits, initial_cache, start_tokens_B, max_decode_len,
                           eos_id, start_step, constraints=constraints, context_BC=context_BC)
  _check_filter_args(top_k, top_p)

  def choose(logits_BV: jax.Array, key: jax.Array) -> jax.Array:
    scaled_BV = logits_BV / jnp.maximum(temperature, MIN_TEMPERATURE)
    sampled_B = jax.random.categorical(key, filter_logits(scaled_BV, top_k, top_p), axis=-1)
    if isinstance(temperature, jax.Array):
      return jnp.where(temperature < MIN_TEMPERATURE, first_argmax(logits_BV), sampled_B)
    return sampled_B

  return _decode_loop(tokens_to_logits, initial_cache, start_tokens_B, max_decode_len,
                      eos_id, start_step, choose, rng, constraints, context_BC)


class _BeamState(NamedTuple):
  i: jax.Array  # [] int32, number of tokens generated so far
  live_tokens_BKL: jax.Array  # int32, hypotheses still being extended
  live_logp_BK: jax.Array  # float32, their log-probabilities (-inf: empty slot)
  live_last_BK: jax.Array  # int32, token each live beam feeds next
  cache: PyTree  # leaves [batch * num_beams, ...]
  fin_tokens_BKL: jax.Array  # int32, ended hypotheses (EOS or max length), best first
  fin_scores_BK: jax.Array  # float32, length-penalized scores (-inf: empty slot)
  fin_flags_BK: jax.Array  # bool, slot holds a hypothesis
  open_B: jax.Array  # bool, Hugging Face stopping: the example may still gain hypotheses


def _check_batch_leading(cache: PyTree, batch: int) -> None:
  for path, x in jax.tree_util.tree_flatten_with_path(cache)[0]:
    shape = jnp.shape(x)
    if shape and shape[0] != batch:
      raise ValueError(
          f"beam_search: cache leaf {jax.tree_util.keystr(path)} has shape {shape}; every "
          f"non-scalar leaf needs the batch ({batch}) as its leading axis so beams can be "
          "expanded and gathered (move scanned-layer axes behind the batch).")


EARLY_STOPPING = (None, True, False, "never")


def beam_search(tokens_to_logits: TokensToLogits, initial_cache: PyTree,
                start_tokens_B: jax.Array, max_decode_len: int, num_beams: int,
                alpha: float | jax.Array = 0.6, eos_id: EosIds = 1,
                start_step: int | jax.Array = 0, *,
                length_penalty: Optional[float] = None,
                early_stopping: bool | str | None = None,
                constraints: Optional[Constraints] = None,
                context_BC: Optional[jax.Array] = None) -> BeamOutput:
  """Beam search keeping finished hypotheses apart; T5X's scoring or Hugging Face's.

  Each step extends the live beams, takes the max(2, 1 + number of EOS ids) * num_beams most
  probable extensions (after `constraints`), and moves those among the top num_beams that end
  (EOS, or reaching max_decode_len) into the finished set, scored logp / penalty(length)
  (length: generated tokens, EOS included); the best num_beams extensions without EOS stay
  live.

  Scoring and stopping:
    - default (T5X): penalty = brevity_penalty(length, alpha); the loop stops early once no
      live beam can beat the worst finished hypothesis of every example (an exact bound).
      With num_beams=1 and alpha=0 the result equals `greedy_decode`.
    - `length_penalty` set: penalty = length ** length_penalty (Hugging Face).
    - `early_stopping` set (Hugging Face's rule; True, False or "never"): an example stops
      gaining hypotheses once its num_beams slots are full (True), or once its best live beam,
      normalized at its current length (False) or at max_decode_len ("never", positive
      length_penalty), cannot beat its worst finished one.
  Hugging Face's `generate(num_beams=K, length_penalty=lp, early_stopping=e)` equals
  `length_penalty=lp, early_stopping=e`.

  Args:
    tokens_to_logits: the model's one-step function. Its cache rows are
      batch * num_beams: beam b of example i lives at row i * num_beams + b.
    initial_cache: cache after the encoder pass / prefill, leaves [batch, ...]
      (scalar leaves are shared by all rows).
    start_tokens_B: int [batch] token at decoder position `start_step`.
    max_decode_len: number of tokens to generate at most.
    num_beams: beams per example (static).
    alpha: T5X brevity penalty exponent; 0 ranks by plain log-probability.
    eos_id: end-of-sequence id(s).
    start_step: decoder position of the start tokens.
    length_penalty: Hugging Face's exponent (replaces `alpha` when set).
    early_stopping: Hugging Face's stopping rule (None: the exact T5X bound).
    constraints: per-step constraints, applied to the log-probabilities.
    context_BC: tokens before the generated ones for no-repeat n-grams (default: the start).

  Returns:
    BeamOutput with hypotheses sorted best-first.
  """
  start_tokens_B = jnp.asarray(start_tokens_B, jnp.int32)
  _check_common(start_tokens_B, max_decode_len)
  if not isinstance(num_beams, int) or num_beams < 1:
    raise ValueError(f"num_beams={num_beams!r} must be a Python int >= 1.")
  if early_stopping is not None and not isinstance(early_stopping, str):
    early_stopping = bool(early_stopping)  # e.g. numpy bools
  if early_stopping not in EARLY_STOPPING:
    raise ValueError(f"early_stopping={early_stopping!r}: use True, False, 'never' (Hugging "
                     "Face's rules) or None (T5X's exact bound).")
  batch, beams, length = start_tokens_B.shape[0], num_beams, max_decode_len
  _check_batch_leading(initial_cache, batch)
  start_step = jnp.asarray(start_step, jnp.int32)
  cache = expand_to_beams(initial_cache, beams)
  _check_step_fn(tokens_to_logits, cache, batch * beams, start_step)
  eos_ids = _eos_tuple(eos_id)
  context_NC = expand_to_beams(_context(context_BC, start_tokens_B), beams)
  num_candidates = max(2, 1 + len(eos_ids)) * beams

  def penalty(num_tokens):
    if length_penalty is None:
      return brevity_penalty(num_tokens, alpha)
    return hf_length_penalty(num_tokens, length_penalty)

  max_penalty = penalty(length)

  def still_open(s: _BeamState, best_live_B: jax.Array) -> jax.Array:
    """Hugging Face's check after a step (s.i tokens generated): may the example improve?"""
    hypothetical = length if (early_stopping == "never" and (length_penalty or 0) > 0) else s.i
    best_B = best_live_B / penalty(jnp.maximum(hypothetical, 1))
    worst_B = jnp.where(jnp.all(s.fin_flags_BK, axis=-1), jnp.min(s.fin_scores_BK, axis=-1),
                        -jnp.inf)
    return s.open_B & (best_B > worst_B)

  def cond(s: _BeamState) -> jax.Array:
    best_live_B = jnp.max(s.live_logp_BK, axis=-1)
    if early_stopping is not None:
      full_B = jnp.all(s.fin_flags_BK, axis=-1) & (early_stopping is True)
      return (s.i < length) & jnp.any(s.open_B & ~full_B)
    # logp only falls as beams grow and the penalty is monotonic in length, so a live
    # beam's best reachable score is at the next length or at max_decode_len.
    bound_B = jnp.maximum(best_live_B / penalty(s.i + 1), best_live_B / max_penalty)
    worst_finished_B = jnp.where(jnp.all(s.fin_flags_BK, axis=-1),
                                 jnp.min(s.fin_scores_BK, axis=-1), -jnp.inf)
    row_done_B = (best_live_B == -jnp.inf) | (worst_finished_B > bound_B)
    return (s.i < length) & ~jnp.all(row_done_B)

  def body(s: _BeamState) -> _BeamState:
    logits_NV, new_cache = tokens_to_logits(
        s.live_last_BK.reshape(batch * beams, 1), s.cache, start_step + s.i)
    vocab = logits_NV.shape[-1]
    logp_NV = jax.nn.log_softmax(logits_NV.astype(jnp.float32))
    logp_NV = constraints_lib.apply(
        constraints, logp_NV, _history(context_NC, s.live_tokens_BKL.reshape(batch * beams, -1)),
        context_NC.shape[1] + s.i, s.i, length, eos_ids)
    logp_BKV = logp_NV.reshape(batch, beams, vocab) + s.live_logp_BK[:, :, None]
    # Candidates C: the best extensions over all beams, most probable first.
    cand_logp_BC, flat_BC = jax.lax.top_k(logp_BKV.reshape(batch, beams * vocab),
                                          min(num_candidates, beams * vocab))
    cand_beam_BC, cand_token_BC = flat_BC // vocab, flat_BC % vocab
    cand_tokens_BCL = jnp.take_along_axis(s.live_tokens_BKL, cand_beam_BC[:, :, None], axis=1)
    cand_tokens_BCL = jax.lax.dynamic_update_slice(
        cand_tokens_BCL, cand_token_BC[:, :, None], (0, 0, s.i))
    is_eos_BC = is_eos(cand_token_BC, eos_id)

    # Finished: ended candidates among the top num_beams, merged with the old set.
    ends_BK = (is_eos_BC[:, :beams] | (s.i == length - 1)) & (cand_logp_BC[:, :beams] > -jnp.inf)
    if early_stopping is not None:  # Hugging Face: closed or full examples gain no more.
      full_B = jnp.all(s.fin_flags_BK, axis=-1) & (early_stopping is True)
      ends_BK = ends_BK & (s.open_B & ~full_B)[:, None]
    new_scores_BK = jnp.where(ends_BK, cand_logp_BC[:, :beams] / penalty(s.i + 1), -jnp.inf)
    all_scores = jnp.concatenate([s.fin_scores_BK, new_scores_BK], axis=1)
    all_flags = jnp.concatenate([s.fin_flags_BK, ends_BK], axis=1)
    all_tokens = jnp.concatenate([s.fin_tokens_BKL, cand_tokens_BCL[:, :beams]], axis=1)
    fin_scores_BK, fin_pick_BK = jax.lax.top_k(all_scores, beams)

    # Live: the best candidates that did not emit EOS.
    live_logp_BK, live_pick_BK = jax.lax.top_k(
        jnp.where(is_eos_BC, -jnp.inf, cand_logp_BC), beams)
    parent_BK = jnp.take_along_axis(cand_beam_BC, live_pick_BK, axis=1)
    new = _BeamState(
        i=s.i + 1,
        live_tokens_BKL=jnp.take_along_axis(cand_tokens_BCL, live_pick_BK[:, :, None], axis=1),
        live_logp_BK=live_logp_BK,
        live_last_BK=jnp.take_along_axis(cand_token_BC, live_pick_BK, axis=1),
        cache=gather_beams(new_cache, parent_BK),
        fin_tokens_BKL=jnp.take_along_axis(all_tokens, fin_pick_BK[:, :, None], axis=1),
        fin_scores_BK=fin_scores_BK,
        fin_flags_BK=jnp.take_along_axis(all_flags, fin_pick_BK, axis=1),
        open_B=s.open_B)
    if early_stopping is not None:
      new = new._replace(open_B=still_open(new, live_logp_BK[:, 0]))
    return new

  first_live_K = jnp.where(jnp.arange(beams) == 0, 0.0, -jnp.inf)  # one live beam at first
  init = _BeamState(
      i=jnp.zeros((), jnp.int32),
      live_tokens_BKL=jnp.zeros((batch, beams, length), jnp.int32),
      live_logp_BK=jnp.broadcast_to(first_live_K, (batch, beams)).astype(jnp.float32),
      live_last_BK=jnp.broadcast_to(start_tokens_B[:, None], (batch, beams)),
      cache=cache,
      fin_tokens_BKL=jnp.zeros((batch, beams, length), jnp.int32),
      fin_scores_BK=jnp.full((batch, beams), -jnp.inf, jnp.float32),
      fin_flags_BK=jnp.zeros((batch, beams), bool),
      open_B=jnp.ones((batch,), bool))
  final = jax.lax.while_loop(cond, body, init)
  return BeamOutput(
      tokens_BKL=jnp.where(final.fin_flags_BK[:, :, None], final.fin_tokens_BKL, 0),
      scores_BK=jnp.where(final.fin_flags_BK, final.fin_scores_BK, -jnp.inf))
