"""Every prompt method on a Llama-family model and on Gemma 3 (sliding-window and full layers,
q/k and sandwich norms, scaled embeddings): cached decoding equals full passes, the prompt's
keys/values reused across batches, chunked loss, bfloat16 frozen weights; and on GPT-2 (learned
positions) and BLOOM (ALiBi, embedding LayerNorm), whose prompts and prefixes take positions too.

The Llama cases run by default; most Gemma 3, GPT-2 and BLOOM cases are marked slow (the default
suite keeps, for Gemma, cached generation with a prompt before the scaled token embeddings and
with prefixes in front of the normalized keys, across the sliding window, and the class-label
init)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import prompt_cache
from prompt_tuning.train import models, scoring
from tiny_llms import write_tiny

# Left-padded inputs with token 0 (a real token here) inside; padding by mask.
TOKENS = np.array([[1, 0, 7, 9, 33], [0, 0, 1, 12, 0], [0, 0, 0, 1, 5]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], np.int32)


FAMILIES = ("llama", "gemma3")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
  family = request.param
  return write_tiny(tmp_path_factory.mktemp(family) / family, family, seed=2)


def _families(gemma3_default: bool = False):
  return [pytest.param(family, marks=() if family == "llama" or gemma3_default
                       else pytest.mark.slow) for family in FAMILIES]


def _cases(names, gemma3_default=()):
  """(family, name) cases: every Llama one by default, Gemma 3's slow unless in gemma3_default."""
  return [pytest.param(family, name, marks=() if family == "llama" or name in gemma3_default
                       else pytest.mark.slow) for family in FAMILIES for name in names]


@pytest.fixture(scope="module")
def positions_checkpoint(request, tmp_path_factory):
  """A tiny GPT-2 (learned positions) or BLOOM (ALiBi) directory (family: indirect param)."""
  return write_tiny(tmp_path_factory.mktemp(request.param) / request.param, request.param, seed=2)


def _positions_cases(methods, default=()):
  """(family, method) cases for GPT-2 and BLOOM; all but the `default` pairs are `slow` (the CI
  budget: each case compiles its own decoding loops)."""
  return [pytest.param(family, method, id=f"{family}-{method}",
                       marks=() if (family, method) in default else pytest.mark.slow)
          for family in ("gpt2", "bloom") for method in methods]


def _load(checkpoint, gin_file, *bindings):
  return prompt_tuning.load_model([gin_file], list(bindings), checkpoint=checkpoint, seed=5)


METHODS = {
    "prompt_tuning": ("architectures/prompt_tuning.gin", "PROMPT_LENGTH=3"),
    "p_tuning": ("architectures/p_tuning.gin", "PROMPT_LENGTH=3", "P_TUNING_HIDDEN_DIM=16"),
    "deep_prompts": ("architectures/deep_prompts.gin", "PROMPT_LENGTH=3"),
    "prompt_after_bos": ("architectures/prompt_tuning.gin", "PROMPT_LENGTH=3",
                         "PROMPT_PLACEMENT='prefix_after_bos'"),
    "prefix_tuning": ("architectures/prefix_tuning.gin", "PREFIX_LENGTH=3"),
    "prefix_tuning_zero": ("architectures/prefix_tuning.gin", "PREFIX_LENGTH=3",
                           "PREFIX_POSITION_BIAS='zero'"),
}
# Multi-task prompts read the task from each row's first non-zero token: <extra_id_k> = 599 - k.
MULTITASK = ("architectures/multitask_prompts.gin", "PROMPT_LENGTH=2", "NUM_TASKS=2",
             "TASK_PROMPT_LENGTH=1", "MULTITASK_SENTINEL_VOCAB_SIZE=600")
MULTITASK_TOKENS = np.array([[599, 0, 7, 9, 33], [0, 0, 598, 12, 0], [0, 0, 0, 599, 5]], np.int32)
# The methods whose positions differ with learned / ALiBi positions.
POSITIONS_METHODS = ("prompt_tuning", "deep_prompts", "prefix_tuning", "prefix_tuning_zero")


def _uncached_greedy(model, tokens, mask, steps):
  """Greedy tokens by full forward passes over the growing sequences (real tokens moved to the
  left, right-padded to one width so every pass has the same shape)."""
  rows = [[int(t) for t, m in zip(row, mask_row) if m] for row, mask_row in zip(tokens, mask)]
  width = max(len(row) for row in rows) + steps
  out = [[] for _ in rows]
  for _ in range(steps):
    padded = np.zeros((len(rows), width), np.int32)
    valid = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
      padded[i, :len(row)], valid[i, :len(row)] = row, 1
    logits = np.asarray(model.logits(padded, attention_mask=valid))
    for i, row in enumerate(rows):
      if out[i] and out[i][-1] == model.config.eos_id:
        continue
      out[i].append(int(logits[i, len(row) - 1].argmax()))
      row.append(out[i][-1])
  return [row + [model.config.output_pad_id] * (steps - len(row)) for row in out]


def _check_cached_generation(model, tokens: np.ndarray) -> None:
  """KV-cached greedy decoding gives the tokens of full uncached passes."""
  generated = model.generate(tokens, 4, attention_mask=MASK)
  assert generated.tolist() == _uncached_greedy(model, tokens, MASK, 4)


def _check_prompt_cache(model) -> None:
  """Decoding from the prompt's precomputed keys/values equals plain generation."""
  cache = prompt_cache.build_prompt_cache(model.module, model.params)
  reused = prompt_cache.generate(model, cache, TOKENS, 4, attention_mask=MASK)
  np.testing.assert_array_equal(reused, model.generate(TOKENS, 4, attention_mask=MASK))


@pytest.mark.parametrize("checkpoint, method",
                         _cases(sorted(METHODS), ("prompt_tuning", "prefix_tuning")),
                         indirect=["checkpoint"])
def test_cached_generation_equals_full_passes(checkpoint, method):
  _check_cached_generation(_load(checkpoint, *METHODS[method]), TOKENS)


@pytest.mark.parametrize("checkpoint, method", _cases(["prompt_tuning", "deep_prompts"]),
                         indirect=["checkpoint"])
def test_prompt_keys_values_reused_across_batches(checkpoint, method):
  _check_prompt_cache(_load(checkpoint, *METHODS[method]))


@pytest.mark.parametrize("positions_checkpoint, method",
                         _positions_cases(POSITIONS_METHODS + ("multitask",),
                                          {("bloom", "prefix_tuning")}),
                         indirect=["positions_checkpoint"])
def test_positions_families_cached_generation_equals_full_passes(positions_checkpoint, method):
  """GPT-2 / BLOOM: prompts, deep prompts, prefixes (both position semantics) and multi-task
  prompts decode with the cache as full passes do (left padding, token 0 real)."""
  spec, tokens = (MULTITASK, MULTITASK_TOKENS) if method == "multitask" else (METHODS[method],
                                                                             TOKENS)
  _check_cached_generation(_load(positions_checkpoint, *spec), tokens)


@pytest.mark.parametrize("positions_checkpoint, method",
                         _positions_cases(("prompt_tuning", "deep_prompts"),
                                          {("bloom", "prompt_tuning")}),
                         indirect=["positions_checkpoint"])
def test_positions_families_prompt_cache(positions_checkpoint, method):
  _check_prompt_cache(_load(positions_checkpoint, *METHODS[method]))


@pytest.mark.slow
@pytest.mark.parametrize("positions_checkpoint", ["gpt2", "bloom"], indirect=True)
def test_positions_families_prefix_default_is_shifted(positions_checkpoint):
  """Learned / ALiBi prefixes are "shifted" by default (PEFT's), which differs from "zero"."""
  test_prefix_positions_follow_peft_by_default(positions_checkpoint)


@pytest.mark.parametrize("checkpoint", _families(False), indirect=True)
def test_prefix_positions_follow_peft_by_default(checkpoint):
  """RoPE prefixes are "shifted" (tokens from position P) unless said otherwise."""
  shifted = _load(checkpoint, *METHODS["prefix_tuning"])
  zero = _load(checkpoint, *METHODS["prefix_tuning_zero"])
  same = zero.module.apply({"params": shifted.params}, jnp.asarray(TOKENS),
                           decoder_attention_mask=jnp.asarray(MASK))
  assert np.abs(np.asarray(shifted.logits(TOKENS, attention_mask=MASK)) -
                np.asarray(same)).max() > 1e-4


def _batch():
  tokens = np.array([[1, 40, 0, 41, 42, 2, 0, 0], [1, 50, 51, 52, 53, 54, 2, 0]], np.int32)
  mask = (np.arange(8)[None] < np.array([[6], [7]])).astype(np.int32)
  weights = mask * (np.arange(8)[None] >= 3)
  return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
          "decoder_loss_weights": weights[:, 1:], "decoder_attention_mask": mask[:, :-1]}


@pytest.mark.parametrize("checkpoint", _families(False), indirect=True)
def test_chunked_loss_equals_plain_loss(checkpoint):
  model = _load(checkpoint, *METHODS["prompt_tuning"])
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  plain = models.loss_terms(model.module, model.params, batch, models.LossConfig())
  chunked = models.loss_terms(model.module, model.params, batch,
                              models.LossConfig(logits_chunk_size=3))
  np.testing.assert_allclose(chunked.loss, plain.loss, rtol=1e-5)
  assert float(plain.weight_sum) == 7.0


def _rank_batch():
  """Rank-classification rows: two examples x two labels (ragged), then an empty padding row."""
  examples = [[1, 40, 41, 42], [1, 50, 51]]
  labels = [[60, 2], [61, 62, 2]]
  rows = [(e, l) for e in examples for l in labels] + [([], [])]
  length = 9
  batch = {name: np.zeros((len(rows), length - 1), np.int32) for name in
           ("decoder_input_tokens", "decoder_target_tokens", "decoder_attention_mask")}
  batch["decoder_loss_weights"] = np.zeros((len(rows), length - 1), np.float32)
  for b, (inputs, targets) in enumerate(rows):
    sequence = inputs + targets
    if not sequence:
      continue
    batch["decoder_input_tokens"][b, :len(sequence) - 1] = sequence[:-1]
    batch["decoder_target_tokens"][b, :len(sequence) - 1] = sequence[1:]
    batch["decoder_attention_mask"][b, :len(sequence) - 1] = 1
    batch["decoder_loss_weights"][b, len(inputs) - 1:len(sequence) - 1] = 1
  return batch


@pytest.mark.parametrize("checkpoint", _families(False), indirect=True)
@pytest.mark.parametrize("name", ["prompt_tuning", "prefix_tuning", None] + [
    pytest.param(name, marks=pytest.mark.slow)
    for name in ("p_tuning", "deep_prompts", "prompt_after_bos")])
def test_rank_scores_from_shared_contexts_and_windows_equal_full_logits(checkpoint, name):
  """Scores from each distinct input prefilled once, and from the targets' window only, equal
  those from every position's logits (plain model: name None)."""
  model = (prompt_tuning.load_model(checkpoint=checkpoint) if name is None
           else _load(checkpoint, *METHODS[name]))
  host = _rank_batch()
  host["decoder_loss_weights"][1, 4] = 0  # A gap inside a row's targets stays in the window.
  window = scoring.score_window(host)
  assert window == 4  # Target spans of 2 to 3 positions (with the last input), rounded up.
  shared = scoring.shared_context_rows(host, window)
  assert shared is not None and shared["context_UT"].shape[0] == 4  # 3 contexts ("" for padding).
  assert scoring.can_share_contexts(model.module)
  batch = {k: jnp.asarray(v) for k, v in host.items()}
  full = np.asarray(scoring.score_batch(model.module, model.params, batch))
  place = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # pylint: disable=unnecessary-lambda-assignment
  scorer = scoring.Scorer(model.module, place)
  windowed = scoring.Scorer(model.module, place, share_contexts=False)
  np.testing.assert_allclose(np.asarray(scorer(model.params, host))[:4], full[:4], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(windowed(model.params, host))[:4], full[:4], rtol=1e-5,
                             atol=1e-5)
  assert scoring.score_window({k: v for k, v in host.items()
                               if k != "decoder_attention_mask"}) is None


@pytest.mark.parametrize("checkpoint", _families(False), indirect=True)
def test_bfloat16_frozen_weights_keep_the_prompt_float32(checkpoint):
  model = prompt_tuning.load_model([METHODS["prompt_tuning"][0]], ["PROMPT_LENGTH=3"],
                                   checkpoint=checkpoint, frozen_dtype="bfloat16")
  leaves = jax.tree_util.tree_leaves_with_path(model.params)
  for path, leaf in leaves:
    expected = jnp.float32 if "prompt" in jax.tree_util.keystr(path) else jnp.bfloat16
    assert leaf.dtype == expected, path
  float32 = _load(checkpoint, *METHODS["prompt_tuning"])
  np.testing.assert_allclose(np.asarray(model.logits(TOKENS, attention_mask=MASK,
                                                     prompt=float32.prompt_params["decoder"]
                                                     ["prompt"]["prompt"]["prompt"])),
                             np.asarray(float32.logits(TOKENS, attention_mask=MASK)),
                             atol=0.25)  # bfloat16 rounding of the weights; logits span ~40.


@pytest.mark.parametrize("checkpoint", _families(False), indirect=True)
def test_after_bos_placement_puts_the_prompt_after_bos_only(checkpoint):
  after = _load(checkpoint, *METHODS["prompt_after_bos"])
  prefix = _load(checkpoint, *METHODS["prompt_tuning"])
  without_bos = np.array([[5, 0, 7, 9]], np.int32)
  np.testing.assert_allclose(np.asarray(after.logits(without_bos)),
                             np.asarray(prefix.logits(without_bos)), atol=1e-6)
  # With BOS first: [BOS, prompt, tokens] = the prefix model's [prompt, tokens] after a BOS row.
  with_bos = np.array([[1, 5, 0, 7]], np.int32)
  assert np.abs(np.asarray(after.logits(with_bos)) - np.asarray(prefix.logits(with_bos))).max() > 1e-3
  with pytest.raises(ValueError, match="placement 'prefix'"):
    prompt_cache.build_prompt_cache(after.module, after.params)


def test_class_label_rows_are_the_models_embedded_tokens(tmp_path):
  """Gemma 3 scales embeddings by sqrt(d): a class-label row starts as the mean of what the model
  feeds for the label's tokens (PEFT's text init does the same), not the raw table rows."""
  from prompt_tuning.data import tokenizer_vocab
  checkpoint = write_tiny(tmp_path / "gemma3", "gemma3", seed=2)
  vocabulary = tokenizer_vocab.model_vocabulary(checkpoint)
  model = prompt_tuning.load_model(
      ["architectures/prompt_tuning.gin", "prompts/from_class_labels.gin"],
      ["PROMPT_LENGTH=3", "CLASS_LABELS=['good', 'bad']", "SAMPLED_VOCAB_SIZE=500"],
      checkpoint=checkpoint,
      vocabulary=vocabulary, seed=5)
  assert model.config.embedding_scale == pytest.approx(32 ** 0.5)
  prompt = np.asarray(model.prompt_params["decoder"]["prompt"]["prompt"]["prompt"])
  table = np.asarray(model.params["decoder"]["token_embedder"]["embedding"])
  for row, label in enumerate(["good", "bad"]):
    ids = vocabulary.encode(label)
    np.testing.assert_allclose(prompt[row], table[ids].mean(0) * np.float32(32 ** 0.5),
                               rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", FAMILIES, indirect=True)
def test_multitask_prompts_cached_generation_equals_full_passes(checkpoint):
  """Multi-task prompts: the task comes from each row's first real token (ids 590 / 591 are
  the task sentinels here); cached generation equals full passes."""
  model = _load(checkpoint, "architectures/multitask_prompts.gin", "PROMPT_LENGTH=2",
                "NUM_TASKS=2", "MULTITASK_SENTINEL_VOCAB_SIZE=590")
  tokens = np.array([[590, 1, 7, 9, 33], [0, 0, 591, 12, 0], [0, 0, 0, 590, 5]], np.int32)
  generated = model.generate(tokens, 4, attention_mask=MASK)
  assert generated.tolist() == _uncached_greedy(model, tokens, MASK, 4)
  other = tokens.copy()
  other[0, 0] = 591
  assert not np.array_equal(np.asarray(model.logits(tokens, attention_mask=MASK))[0],
                            np.asarray(model.logits(other, attention_mask=MASK))[0])
