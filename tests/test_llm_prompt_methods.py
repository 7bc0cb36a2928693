"""Every prompt method on a Llama-family model: cached decoding equals full passes, the prompt's
keys/values reused across batches, chunked loss, bfloat16 frozen weights; and on GPT-2 (learned
positions) and BLOOM (ALiBi, embedding LayerNorm), whose prompts and prefixes take positions too."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import prompt_cache
from prompt_tuning.train import models
from tiny_llms import write_tiny, write_tiny_llama

EOS = 2
# Left-padded inputs with token 0 (a real token here) inside; padding by mask.
TOKENS = np.array([[1, 0, 7, 9, 33], [0, 0, 1, 12, 0], [0, 0, 0, 1, 5]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]], np.int32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return write_tiny_llama(tmp_path_factory.mktemp("llama") / "llama", seed=2)


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


def _uncached_greedy(model, row, mask_row, steps):
  """Greedy tokens by full forward passes over the growing (unpadded) sequence."""
  tokens, out = [int(t) for t, m in zip(row, mask_row) if m], []
  for _ in range(steps):
    logits = np.asarray(model.logits(np.array([tokens], np.int32)))
    out.append(int(logits[0, -1].argmax()))
    if out[-1] == model.config.eos_id:
      break
    tokens.append(out[-1])
  return out + [model.config.output_pad_id] * (steps - len(out))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cached_generation_equals_full_passes(checkpoint, method):
  model = _load(checkpoint, *METHODS[method])
  generated = model.generate(TOKENS, 4, attention_mask=MASK)
  for row in range(len(TOKENS)):
    assert generated[row].tolist() == _uncached_greedy(model, TOKENS[row], MASK[row], 4), row


@pytest.mark.parametrize("method", ["prompt_tuning", "deep_prompts"])
def test_prompt_keys_values_reused_across_batches(checkpoint, method):
  model = _load(checkpoint, *METHODS[method])
  cache = prompt_cache.build_prompt_cache(model.module, model.params)
  reused = prompt_cache.generate(model, cache, TOKENS, 4, attention_mask=MASK)
  np.testing.assert_array_equal(reused, model.generate(TOKENS, 4, attention_mask=MASK))


@pytest.mark.parametrize("positions_checkpoint, method",
                         _positions_cases(POSITIONS_METHODS + ("multitask",),
                                          {("bloom", "prefix_tuning")}),
                         indirect=["positions_checkpoint"])
def test_positions_families_cached_generation_equals_full_passes(positions_checkpoint, method):
  """GPT-2 / BLOOM: prompts, deep prompts, prefixes (both position semantics) and multi-task
  prompts decode with the cache as full passes do (left padding, token 0 real)."""
  spec, tokens = (MULTITASK, MULTITASK_TOKENS) if method == "multitask" else (METHODS[method],
                                                                             TOKENS)
  model = _load(positions_checkpoint, *spec)
  generated = model.generate(tokens, 4, attention_mask=MASK)
  for row in range(len(tokens)):
    assert generated[row].tolist() == _uncached_greedy(model, tokens[row], MASK[row], 4), row


@pytest.mark.parametrize("positions_checkpoint, method",
                         _positions_cases(("prompt_tuning", "deep_prompts"),
                                          {("bloom", "prompt_tuning")}),
                         indirect=["positions_checkpoint"])
def test_positions_families_prompt_cache(positions_checkpoint, method):
  model = _load(positions_checkpoint, *METHODS[method])
  cache = prompt_cache.build_prompt_cache(model.module, model.params)
  reused = prompt_cache.generate(model, cache, TOKENS, 4, attention_mask=MASK)
  np.testing.assert_array_equal(reused, model.generate(TOKENS, 4, attention_mask=MASK))


@pytest.mark.slow
@pytest.mark.parametrize("positions_checkpoint", ["gpt2", "bloom"], indirect=True)
def test_positions_families_prefix_default_is_shifted(positions_checkpoint):
  """Learned / ALiBi prefixes are "shifted" by default (PEFT's), which differs from "zero"."""
  test_prefix_positions_follow_peft_by_default(positions_checkpoint)


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


def test_chunked_loss_equals_plain_loss(checkpoint):
  model = _load(checkpoint, *METHODS["prompt_tuning"])
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  plain = models.loss_terms(model.module, model.params, batch, models.LossConfig())
  chunked = models.loss_terms(model.module, model.params, batch,
                              models.LossConfig(logits_chunk_size=3))
  np.testing.assert_allclose(chunked.loss, plain.loss, rtol=1e-5)
  assert float(plain.weight_sum) == 7.0


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
