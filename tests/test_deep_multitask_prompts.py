"""Tests for deep (per-layer) prompts and multi-task prompts (prompt_tuning/methods)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.methods import deep_prompts, multitask
from prompt_tuning.models.attention import mask_to_bias
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.decoder_only import DecoderOnly, prefix_lm_mask
from prompt_tuning.models.t5 import EncoderDecoder

CONFIG = T5Config(vocab_size=32, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                  num_encoder_layers=3, num_decoder_layers=3, relpos_num_buckets=8,
                  relpos_max_distance=16)
P = 2


@pytest.fixture(scope="module")
def enc_dec():
  model = EncoderDecoder(CONFIG)
  tokens = jnp.ones((1, 4), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens, tokens)["params"]
  return model, params


@pytest.fixture(scope="module")
def decoder_only():
  config = CONFIG.replace(architecture="decoder_only")
  model = DecoderOnly(config)
  params = model.init(jax.random.PRNGKey(1), jnp.ones((1, 4), jnp.int32))["params"]
  return model, params


# --- replace_positions: exact values ---------------------------------------------------------


def test_replace_positions_ragged_starts():
  x_BTD = jnp.zeros((2, 5, 1))
  prompt_PD = jnp.array([[7.0], [8.0]])
  out = deep_prompts.replace_positions(x_BTD, prompt_PD, jnp.array([0, 2]))
  np.testing.assert_array_equal(out[..., 0], [[7, 8, 0, 0, 0], [0, 0, 7, 8, 0]])


def test_replace_positions_per_example_prompt_and_offset():
  x_BTD = -jnp.ones((2, 3, 1))
  prompt_BPD = jnp.array([[[1.0], [2.0]], [[3.0], [4.0]]])
  # A decoding chunk holding positions 1..3; prompts start at 0 (example 0) and 2 (example 1).
  out = deep_prompts.replace_positions(x_BTD, prompt_BPD, jnp.array([0, 2]), first_position=1)
  np.testing.assert_array_equal(out[..., 0], [[2, -1, -1], [-1, 3, 4]])


def test_replace_positions_shape_error_names_both_shapes():
  with pytest.raises(ValueError, match=r"\(2, 3\).*\(1, 4, 2\)"):
    deep_prompts.replace_positions(jnp.zeros((1, 4, 2)), jnp.zeros((2, 3)), 0)


def test_layer_inputs_fn_touches_only_selected_layers():
  prompts_LPD = jnp.array([[[5.0]], [[6.0]]])  # layers (0, 2), P = 1, D = 1.
  fn = deep_prompts.layer_inputs_fn(prompts_LPD, (0, 2), start_B=1)
  x_BTD = jnp.zeros((1, 3, 1))
  np.testing.assert_array_equal(fn(0, x_BTD, 0)[0, :, 0], [0, 5, 0])
  np.testing.assert_array_equal(fn(1, x_BTD, 0)[0, :, 0], [0, 0, 0])
  np.testing.assert_array_equal(fn(2, x_BTD, 0)[0, :, 0], [0, 6, 0])
  with pytest.raises(ValueError, match="layers=\\(0,\\)"):
    deep_prompts.layer_inputs_fn(prompts_LPD, (0,))


# --- deep prompts in the stacks --------------------------------------------------------------


def _reference_encoder(model, params, embedded_BTD, mask_BT, prompts_LPD, layers, start_B):
  """The encoder loop written out, replacing rows [start, start + P) before selected layers."""
  encoder = model.bind({"params": params}).encoder
  length = embedded_BTD.shape[1]
  valid = mask_BT > 0
  bias = encoder.relpos_bias(length, length) + mask_to_bias(
      valid[:, None, :, None] & valid[:, None, None, :])
  x = embedded_BTD
  for index, layer in enumerate(encoder.layers):
    if index in layers:
      for b, start in enumerate(start_B):
        x = x.at[b, start:start + P].set(prompts_LPD[layers.index(index)])
    x = layer(x, bias, True)
  return encoder.encoder_norm(x)


def test_deep_prompts_replace_the_right_rows_at_the_right_layers(enc_dec):
  model, params = enc_dec
  tokens_BT = jnp.array([[3, 4, 5, 6, 7, 0], [3, 9, 10, 0, 0, 0]])
  embedded = model.apply({"params": params}, tokens_BT, method=model.embed)
  mask_BT = (tokens_BT > 0).astype(jnp.int32)
  layers = (1, 2)
  prompts_LPD = jax.random.normal(jax.random.PRNGKey(3), (2, P, CONFIG.emb_dim))
  start_B = [0, 1]
  got = model.apply({"params": params}, embedded, mask_BT, prompts_LPD, layers,
                    jnp.array(start_B), method=deep_prompts.encode_with_deep_prompts)
  want = _reference_encoder(model, params, embedded, mask_BT, prompts_LPD, layers, start_B)
  np.testing.assert_allclose(got, want, atol=1e-6)
  base = model.apply({"params": params}, embedded, mask_BT, method=model.encode_embedded)
  assert np.abs(np.asarray(got - base)).max() > 1e-3  # The prompts do reach the output.


def test_deep_prompt_equal_to_layer_input_is_identity(enc_dec):
  """A layer-0 deep prompt holding the rows already there reproduces the base encoder."""
  model, params = enc_dec
  tokens_BT = jnp.array([[3, 4, 5, 6]])
  embedded = model.apply({"params": params}, tokens_BT, method=model.embed)
  mask_BT = jnp.ones((1, 4), jnp.int32)
  same_LPD = embedded[:, 1:1 + P]
  got = model.apply({"params": params}, embedded, mask_BT, same_LPD, (0,), 1,
                    method=deep_prompts.encode_with_deep_prompts)
  base = model.apply({"params": params}, embedded, mask_BT, method=model.encode_embedded)
  np.testing.assert_array_equal(got, base)


def test_decoder_only_deep_prompts_cached_equals_uncached(decoder_only):
  model, params = decoder_only
  tokens_BS = jnp.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
  valid_BS = tokens_BS > 0
  prompts_LPD = jax.random.normal(jax.random.PRNGKey(4), (2, P, CONFIG.emb_dim))
  fn = deep_prompts.layer_inputs_fn(prompts_LPD, (1, 2), start_B=0)

  def full(m, tokens):
    mask = prefix_lm_mask(valid_BS)
    return m.decoder(m.embed(tokens), mask, layer_inputs_fn=fn)

  def cached(m, tokens):
    cache = m.init_decode_cache(2, 6)
    # Prefill the first 3 positions (prompt span included), then one position per step.
    logits, cache = m.decoder.decode_step(m.embed(tokens[:, :3]), cache, 0, valid_BS[:, :3],
                                          layer_inputs_fn=fn)
    out = [logits]
    for index in range(3, 6):
      logits, cache = m.decoder.decode_step(m.embed(tokens[:, index:index + 1]), cache, index,
                                            valid_BS[:, index:index + 1], layer_inputs_fn=fn)
      out.append(logits)
    return jnp.concatenate(out, axis=1)

  want = model.apply({"params": params}, tokens_BS, method=full)
  got = model.apply({"params": params}, tokens_BS, method=cached)
  valid = np.asarray(valid_BS)
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], atol=2e-5)
  base = model.apply({"params": params}, tokens_BS)
  assert np.abs(np.asarray(want - base))[valid].max() > 1e-3


def test_deep_prompt_module_param_and_gradient_only_on_it(enc_dec):
  model, frozen = enc_dec
  deep = deep_prompts.DeepPrompt(length=P, embed_dim=CONFIG.emb_dim, layers=(1, 2))
  variables = deep.init(jax.random.PRNGKey(5))
  assert variables["params"]["prompt"].names == ("layers", "prompt", "prompt_embed")
  plain = nn.meta.unbox(variables["params"])
  assert jax.tree_util.tree_map(jnp.shape, plain) == {"prompt": (2, P, 8)}
  value = np.asarray(plain["prompt"])
  assert value.min() >= -0.5 and value.max() < 0.5  # uniform(0.5) default.
  tokens_BT = jnp.array([[3, 4, 5, 6]])
  mask_BT = jnp.ones((1, 4), jnp.int32)

  def loss(deep_params):
    fn = deep.apply({"params": deep_params}, method=deep.layer_inputs_fn)
    embedded = model.apply({"params": frozen}, tokens_BT, method=model.embed)
    encoded = model.apply({"params": frozen}, embedded, mask_BT, layer_inputs_fn=fn,
                          method=model.encode_embedded)
    return jnp.sum(encoded[:, P:] ** 2)

  grads = jax.grad(loss)(plain)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(plain)
  assert np.abs(np.asarray(grads["prompt"][0])).max() > 0  # Layer 1's prompt.
  assert np.abs(np.asarray(grads["prompt"][1])).max() > 0  # Layer 2's prompt.


# --- multi-task prompts ----------------------------------------------------------------------

SHARED_PD = jnp.array([[1.0, 2.0], [3.0, 4.0]])
TASKS_KQD = jnp.array([[[10.0, 20.0], [30.0, 40.0]], [[100.0, 200.0], [300.0, 400.0]]])


def test_combine_add_per_example():
  out = multitask.combine_prompts(SHARED_PD, TASKS_KQD, jnp.array([1, 0, 1]), "add")
  np.testing.assert_array_equal(out, [[[101, 202], [303, 404]], [[11, 22], [33, 44]],
                                      [[101, 202], [303, 404]]])


def test_combine_concat_per_example():
  out = multitask.combine_prompts(SHARED_PD, TASKS_KQD[:, :1], jnp.array([0, 1]), "concat")
  np.testing.assert_array_equal(out, [[[1, 2], [3, 4], [10, 20]], [[1, 2], [3, 4], [100, 200]]])


def test_combine_errors():
  with pytest.raises(ValueError, match="equal lengths"):
    multitask.combine_prompts(SHARED_PD, TASKS_KQD[:, :1], jnp.array([0]), "add")
  with pytest.raises(ValueError, match=r"\[2\] are outside \[0, 2\)"):
    multitask.combine_prompts(SHARED_PD, TASKS_KQD, jnp.array([0, 2]), "add")
  with pytest.raises(ValueError, match="'mean'"):
    multitask.combine_prompts(SHARED_PD, TASKS_KQD, jnp.array([0]), "mean")
  # Under jit an out-of-range id cannot raise; it gives NaN rows, never another task's prompt.
  out = jax.jit(lambda ids: multitask.combine_prompts(SHARED_PD, TASKS_KQD, ids, "add"))(
      jnp.array([5]))
  assert np.isnan(np.asarray(out)).all()


def _multitask_module(combine, task_length=None):
  return multitask.MultiTaskPrompt(
      length=2, num_tasks=2, task_length=task_length, combine=combine,
      shared_init=lambda rng, shape: SHARED_PD,
      task_init=lambda rng, shape: TASKS_KQD[:, :shape[1]], task_token_offset=3)


def test_multitask_module_task_from_sentinel_and_from_ids():
  module = _multitask_module("add")
  tokens_BT = jnp.array([[4, 9, 9], [3, 9, 0]])  # Sentinels 4, 3 -> tasks 1, 0.
  embedded_BTD = jnp.zeros((2, 3, 2))
  variables = module.init(jax.random.PRNGKey(0), tokens_BT, embedded_BTD)
  shapes = jax.tree_util.tree_map(jnp.shape, nn.meta.unbox(variables["params"]))
  assert shapes == {"shared_prompt": (2, 2), "task_prompts": (2, 2, 2)}
  assert variables["params"]["task_prompts"].names == ("tasks", "prompt", "prompt_embed")
  out = module.apply(variables, tokens_BT, embedded_BTD)
  np.testing.assert_array_equal(out, [[[101, 202], [303, 404]], [[11, 22], [33, 44]]])
  out = module.apply(variables, tokens_BT, embedded_BTD, jnp.array([0, 0]))
  np.testing.assert_array_equal(out[1], out[0])
  np.testing.assert_array_equal(out[0], [[11, 22], [33, 44]])


def test_multitask_module_concat_length_and_dtype():
  module = _multitask_module("concat", task_length=1)
  assert module.output_length == 3
  tokens_BT = jnp.array([[4, 9]])
  embedded_BTD = jnp.zeros((1, 2, 2), jnp.bfloat16)
  variables = module.init(jax.random.PRNGKey(0), tokens_BT, embedded_BTD)
  out = module.apply(variables, tokens_BT, embedded_BTD)
  assert out.dtype == jnp.bfloat16 and out.shape == (1, 3, 2)
  np.testing.assert_array_equal(out[0].astype(jnp.float32), [[1, 2], [3, 4], [100, 200]])


def test_multitask_gradient_reaches_only_used_task_rows(enc_dec):
  model, frozen = enc_dec
  module = multitask.MultiTaskPrompt(length=2, num_tasks=3, combine="concat", task_length=1)
  tokens_BT = jnp.array([[5, 6, 7], [8, 9, 0]])
  task_ids_B = jnp.array([2, 2])  # Task 0 and 1 unused.
  embedded_zero = jnp.zeros((2, 3, CONFIG.emb_dim))
  variables = module.init(jax.random.PRNGKey(2), tokens_BT, embedded_zero, task_ids_B)
  trainable = nn.meta.unbox(variables["params"])

  def loss(prompt_params):
    embedded = model.apply({"params": frozen}, tokens_BT, method=model.embed)
    prompt_BPD = module.apply({"params": prompt_params}, tokens_BT, embedded, task_ids_B)
    x = jnp.concatenate([prompt_BPD, embedded], axis=1)
    mask = jnp.concatenate([jnp.ones((2, 3), jnp.int32), (tokens_BT > 0).astype(jnp.int32)], 1)
    return jnp.sum(model.apply({"params": frozen}, x, mask, method=model.encode_embedded) ** 2)

  grads = jax.grad(loss)(trainable)
  assert set(grads) == {"shared_prompt", "task_prompts"}
  task_grads = np.asarray(grads["task_prompts"])
  np.testing.assert_array_equal(task_grads[:2], 0.0)
  assert np.abs(task_grads[2]).max() > 0
  assert np.abs(np.asarray(grads["shared_prompt"])).max() > 0
