"""prompt_cache: a decoder-only model's prompt keys/values computed once and reused.

Generation that copies the cached prompt into each batch's cache must equal generation that
recomputes the prompt in every prefill (api.LoadedModel.generate), for left / right / no
padding, one-token inputs, greedy, beam and sampling; the cache itself must hold the same keys
and values at every valid position as the model's own prefill.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import api, layers, prompt_cache, prompts
from prompt_tuning.models import T5Config

CONFIG = T5Config(vocab_size=48, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                  num_encoder_layers=0, num_decoder_layers=2, relpos_num_buckets=8,
                  relpos_max_distance=16, architecture="decoder_only")
PROMPT_LENGTH = 4
# Rows of different lengths, right padded (generate left-aligns them), plus a full row.
INPUTS = np.array([[5, 6, 7, 8, 9, 10],
                   [11, 12, 0, 0, 0, 0],
                   [13, 0, 0, 0, 0, 0],
                   [0, 0, 14, 15, 16, 0]])


def _model(seed: int = 0, length: int = PROMPT_LENGTH) -> api.LoadedModel:
  prompt_config = prompts.PromptConfig(length=length, initializer=prompts.uniform(1.0))
  module = layers.build_prompt_model(CONFIG, prompt_config)
  params = jax.jit(lambda rng: api.init_params(module, CONFIG, rng))(jax.random.PRNGKey(seed))
  return api.LoadedModel(CONFIG, module, params, prompt_config)


@pytest.fixture(scope="module")
def model() -> api.LoadedModel:
  return _model()


@pytest.fixture(scope="module")
def cache(model) -> prompt_cache.PromptCache:
  return prompt_cache.build_prompt_cache(model.module, model.params)


def test_prompt_cache_holds_p_positions_per_layer(model, cache):
  assert cache.length == PROMPT_LENGTH
  assert len(cache.self_attention) == CONFIG.num_decoder_layers
  for layer in cache.self_attention:
    assert layer.key_BNSH.shape == (1, CONFIG.num_heads, PROMPT_LENGTH, CONFIG.head_dim)
    assert float(jnp.abs(layer.value_BNSH).max()) > 0.0


def test_cache_equals_the_models_own_prefill_at_every_valid_position(model, cache):
  tokens_BT, _ = api.left_align_padding(jnp.asarray(INPUTS, jnp.int32))
  module = model.module

  @jax.jit
  def both(params, cache, tokens_BT):
    variables = {"params": params}
    fresh = module.apply(variables, tokens_BT.shape[0], tokens_BT.shape[1] + 3,
                         method=module.init_decode_cache)
    reference = module.apply(variables, tokens_BT[:, :-1], fresh, method=module.prefill)
    return reference, prompt_cache.cache_with_prompt(module, params, cache, tokens_BT, 3)

  reference, reused = both(model.params, cache, tokens_BT)
  np.testing.assert_array_equal(reused.key_valid_BS, reference.key_valid_BS)
  # Left-aligned rows have 0, 4, 5 and 3 pads; each has P prompt + its real tokens[:-1] valid.
  np.testing.assert_array_equal(np.asarray(reused.key_valid_BS).sum(axis=1),
                                [PROMPT_LENGTH + 5, PROMPT_LENGTH + 1, PROMPT_LENGTH,
                                 PROMPT_LENGTH + 2])
  valid = np.asarray(reference.key_valid_BS) > 0
  batch_major = lambda x_BNSH: np.moveaxis(np.asarray(x_BNSH), 1, 2)  # -> [B, S, N, H]
  for got, want in zip(reused.self_attention, reference.self_attention):
    for got_x, want_x in ((got.key_BNSH, want.key_BNSH), (got.value_BNSH, want.value_BNSH)):
      np.testing.assert_allclose(batch_major(got_x)[valid], batch_major(want_x)[valid],
                                 atol=1e-5)


@pytest.mark.parametrize("options", [
    dict(method="greedy"),
    dict(method="beam", num_beams=3, alpha=0.6),
    dict(method="sample", temperature=0.7, top_k=10),
])
def test_generation_with_the_reused_prompt_equals_recomputing_it(model, cache, options):
  rng = jax.random.PRNGKey(7)
  expected = model.generate(INPUTS, 6, eos_id=-1, rng=rng, **options)
  got = prompt_cache.generate(model, cache, INPUTS, 6, eos_id=-1, rng=rng, **options)
  np.testing.assert_array_equal(got, expected)
  assert (expected > 0).any()


def test_one_cache_serves_other_batch_sizes_and_one_token_inputs(model, cache):
  for inputs in (np.array([[9]]), np.array([[0, 0, 21, 22], [23, 24, 25, 26], [27, 0, 0, 0]])):
    np.testing.assert_array_equal(prompt_cache.generate(model, cache, inputs, 6, eos_id=-1),
                                  model.generate(inputs, 6, eos_id=-1))


def test_prompt_change_needs_a_rebuilt_cache(model, cache):
  other = api.LoadedModel(CONFIG, model.module, model.with_prompt(
      np.full((PROMPT_LENGTH, CONFIG.emb_dim), 0.3, np.float32)))
  rebuilt = prompt_cache.build_prompt_cache(other.module, other.params)
  assert not np.allclose(rebuilt.self_attention[0].key_BNSH, cache.self_attention[0].key_BNSH)
  np.testing.assert_array_equal(prompt_cache.generate(other, rebuilt, INPUTS, 6, eos_id=-1),
                                other.generate(INPUTS, 6, eos_id=-1))


def test_new_batches_and_new_prompts_reuse_the_compiled_generation(model, cache):
  prompt_cache.generate(model, cache, INPUTS, 6, eos_id=-1)
  compiled = prompt_cache._generate._cache_size()  # pylint: disable=protected-access
  other = api.LoadedModel(CONFIG, model.module, model.with_prompt(
      np.full((PROMPT_LENGTH, CONFIG.emb_dim), -0.2, np.float32)))
  for shift in (1, 2):
    prompt_cache.generate(model, cache, INPUTS + shift * (INPUTS > 0), 6, eos_id=-1)
  prompt_cache.generate(other, prompt_cache.build_prompt_cache(other.module, other.params),
                        INPUTS, 6, eos_id=-1)
  assert prompt_cache._generate._cache_size() == compiled  # pylint: disable=protected-access


def test_errors_name_the_fix(model, cache):
  encoder_decoder = layers.build_prompt_model(
      CONFIG.replace(architecture="encoder_decoder", num_encoder_layers=2),
      prompts.PromptConfig(length=2))
  with pytest.raises(ValueError, match="decoder-only prompt models"):
    prompt_cache.build_prompt_cache(encoder_decoder, {})
  shorter = prompt_cache.PromptCache(tuple(
      jax.tree_util.tree_map(lambda x: x[:, :, :2], layer) for layer in cache.self_attention))
  with pytest.raises(ValueError, match="rebuild it with build_prompt_cache"):
    prompt_cache.generate(model, shorter, INPUTS, 3)
