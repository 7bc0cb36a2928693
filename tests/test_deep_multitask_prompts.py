"""Tests for deep (per-layer) prompts and multi-task prompts (prompt_tuning/methods): the
pure functions, the modules, and the models built from gin by `load_model` (cached == uncached
generation, per-example tasks, gradients on the method's parameters only)."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import api, layers
from prompt_tuning.checkpoints import tree
from prompt_tuning.methods import deep_prompts, multitask
from prompt_tuning.models.attention import mask_to_bias
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.decoder_only import DecoderOnly, prefix_lm_mask
from prompt_tuning.models.t5 import EncoderDecoder

from uncached_reference import greedy_decoder_only, greedy_encoder_decoder

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


def test_task_ids_from_first_non_padding_token():
  tokens_BT = jnp.array([[31, 5, 0],    # encoder row: sentinel first.
                         [0, 0, 30],    # left-padded decoder-only row.
                         [0, 29, 4],    # T5X decoder-only training row: [0, sentinel, ...].
                         [0, 0, 0]])    # batch padding: task 0, never NaN.
  np.testing.assert_array_equal(
      multitask.task_ids_from_sentinel(tokens_BT, sentinel_vocab_size=32), [0, 1, 2, 0])
  np.testing.assert_array_equal(
      multitask.task_ids_from_sentinel(tokens_BT, task_token_offset=29), [2, 1, 0, 0])
  assert multitask.task_ids_from_sentinel(jnp.zeros((2, 0), jnp.int32)).tolist() == [0, 0]


def test_method_configs_check_their_fields():
  assert deep_prompts.DeepPromptConfig(layers=[2, 1]).layers == (2, 1)  # Hashable.
  assert deep_prompts.resolve_layers(None, 4) == (1, 2, 3)
  with pytest.raises(ValueError, match=r"layers=\(0, 2\).*\[0, 2\)"):
    deep_prompts.resolve_layers((0, 2), 2)
  with pytest.raises(ValueError, match="for_stack"):
    deep_prompts.DeepPromptMethod(length=2).init(jax.random.PRNGKey(0), jnp.ones((1, 2), jnp.int32),
                                                 jnp.zeros((1, 2, 8)))
  with pytest.raises(ValueError, match="task_length == length"):
    multitask.MultiTaskPromptConfig(length=2, task_length=1, combine="add")
  with pytest.raises(ValueError, match="'mean'"):
    multitask.MultiTaskPromptConfig(combine="mean")


# --- built from gin by load_model ------------------------------------------------------------

DEEP_ENC_DEC = "test/t5_1_1_tiny_deep_prompt.gin"
DEEP_DECODER_ONLY = "test/decoder_only_tiny_deep_prompt.gin"
MULTITASK = "test/t5_1_1_tiny_multitask_prompt.gin"
GIN_MODELS = {
    DEEP_ENC_DEC: (layers.PromptEncoderDecoder, {"encoder/prompt/prompt/prompt": (3, 4),
                                                 "encoder/prompt/prompt/deep/prompt": (1, 3, 4)}),
    DEEP_DECODER_ONLY: (layers.PromptDecoderOnly, {"decoder/prompt/prompt/prompt": (3, 4),
                                                   "decoder/prompt/prompt/deep/prompt": (1, 3, 4)}),
    MULTITASK: (layers.PromptEncoderDecoder, {"encoder/prompt/prompt/shared_prompt": (2, 4),
                                              "encoder/prompt/prompt/task_prompts": (3, 1, 4)}),
}
ENCODER_TOKENS = np.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
DECODER_TOKENS = np.array([[0, 11, 12, 13, 14], [0, 14, 15, 16, 17]])


@pytest.fixture(scope="module")
def loaded() -> dict[str, api.LoadedModel]:
  return {gin_file: prompt_tuning.load_model([gin_file], seed=3) for gin_file in GIN_MODELS}


def _with(model: api.LoadedModel, path: str, value) -> api.LoadedModel:
  """`model` with parameter `path` set to `value`."""
  flat = tree.flatten_params(model.params)
  flat[path] = jnp.asarray(value, jnp.float32)
  return api.LoadedModel(model.config, model.module, tree.unflatten_params(flat),
                         model.prompt_config)


@pytest.mark.parametrize("gin_file", list(GIN_MODELS))
def test_gin_file_builds_the_method_model_with_t5x_paths(loaded, gin_file):
  model = loaded[gin_file]
  module_type, expected = GIN_MODELS[gin_file]
  assert isinstance(model.module, module_type)
  method = {p: v.shape for p, v in tree.flatten_params(model.method_params).items()}
  assert method == expected
  # The trainer's default regex selects exactly the method's parameters; the rest is the plain
  # model with its T5X paths.
  flat = tree.flatten_params(model.params)
  assert {p for p in flat if re.fullmatch(api.PROMPT_PARAMS_REGEX, p)} == set(expected)
  plain = api.param_shapes(api.build_any_model(model.config), model.config)
  assert {p: v.shape for p, v in tree.flatten_params(plain).items()} == {
      p: v.shape for p, v in flat.items() if p not in expected}
  axes = tree.flatten_params(api.param_axes(model.module, model.config))
  for path in expected:
    assert axes[path][-2:] == ("prompt", "prompt_embed")


def test_deep_prompt_layers_macro():
  # pylint: disable=protected-access
  config = api._config_from_gin([DEEP_ENC_DEC], ["DEEP_PROMPT_LAYERS=(0, 1)"], ())
  prompt_config = api._prompt_config_from_gin()
  assert prompt_config.layers == (0, 1)
  shapes = api.param_shapes(api.build_any_model(config, prompt_config), config)
  assert tree.flatten_params(shapes)["encoder/prompt/prompt/deep/prompt"].shape == (2, 3, 4)


def test_deep_encoder_decoder_generation_and_prompt_argument(loaded):
  model = loaded[DEEP_ENC_DEC]
  cached = model.generate(ENCODER_TOKENS, len(DECODER_TOKENS[0]))
  np.testing.assert_array_equal(cached, greedy_encoder_decoder(model, ENCODER_TOKENS,
                                                               len(DECODER_TOKENS[0])))
  # (Shapes as in the reference's calls: one compilation.)
  logits = np.asarray(model.logits(ENCODER_TOKENS, DECODER_TOKENS))
  # The per-layer prompt reaches the output (so the equality above is not vacuous) ...
  other = _with(model, "encoder/prompt/prompt/deep/prompt", np.full((1, 3, 4), 0.3))
  assert np.abs(np.asarray(other.logits(ENCODER_TOKENS, DECODER_TOKENS)) - logits).max() > 1e-4
  # ... and prompt= replaces the input prompt only (the [P, D] one at prompt tuning's path).
  new_prompt = np.linspace(-1, 1, 12).reshape(3, 4)
  want = _with(model, "encoder/prompt/prompt/prompt", new_prompt)
  np.testing.assert_array_equal(model.logits(ENCODER_TOKENS, DECODER_TOKENS, prompt=new_prompt),
                                want.logits(ENCODER_TOKENS, DECODER_TOKENS))


def test_deep_decoder_only_cached_equals_uncached_left_and_right_padding(loaded):
  model = loaded[DEEP_DECODER_ONLY]
  rows = [[5, 6, 7, 8, 9], [10, 11]]
  right = np.array([r + [0] * (5 - len(r)) for r in rows])
  left = np.array([[0] * (5 - len(r)) + r for r in rows])
  generated = model.generate(right, 5)
  np.testing.assert_array_equal(model.generate(left, 5), generated)
  for row, inputs in enumerate(rows):
    assert generated[row].tolist() == greedy_decoder_only(model, inputs, 5)
  padded = np.array([rows[0] + [0] * 5])  # The reference's shape: no new compilation.
  logits = np.asarray(model.logits(padded))
  other = _with(model, "decoder/prompt/prompt/deep/prompt", np.full((1, 3, 4), 0.3))
  assert np.abs(np.asarray(other.logits(padded)) - logits).max() > 1e-4


def _sentinel(task: int) -> int:
  return 32100 - 1 - task  # <extra_id_task> in T5's vocabulary (MULTITASK_SENTINEL_VOCAB_SIZE).


def test_multitask_each_example_uses_only_its_own_task_prompt(loaded):
  model = loaded[MULTITASK]
  tokens = np.array([[_sentinel(0), 5, 6, 1, 0], [_sentinel(1), 7, 8, 9, 1],
                     [_sentinel(2), 5, 6, 1, 0], [_sentinel(1), 10, 1, 0, 0]])
  decoder = np.array([[0, 11, 12, 13], [0, 13, 14, 15], [0, 11, 12, 13], [0, 15, 16, 17]])
  mixed = np.asarray(model.logits(tokens, decoder))
  for row in range(4):
    alone = np.asarray(model.logits(tokens[row:row + 1], decoder[row:row + 1]))[0]
    np.testing.assert_allclose(mixed[row], alone, atol=1e-5)
  # Changing task 1's prompt changes rows 1 and 3 only, and leaves the others bit-identical.
  path = "encoder/prompt/prompt/task_prompts"
  task_prompts = np.array(tree.flatten_params(model.params)[path])
  task_prompts[1] += 0.5
  changed = np.asarray(_with(model, path, task_prompts).logits(tokens, decoder))
  np.testing.assert_array_equal(changed[[0, 2]], mixed[[0, 2]])
  assert np.abs(changed[[1, 3]] - mixed[[1, 3]]).min(axis=-1).max() > 1e-4
  np.testing.assert_array_equal(model.generate(tokens, 4), greedy_encoder_decoder(model, tokens, 4))


def test_decoder_only_multitask_reads_the_task_after_padding_and_start_token():
  config = CONFIG.replace(architecture="decoder_only", num_encoder_layers=0)
  prompt_config = multitask.MultiTaskPromptConfig(length=2, num_tasks=2, task_length=1,
                                                  sentinel_vocab_size=32)  # Sentinels 31, 30.
  module = api.build_any_model(config, prompt_config)
  params = jax.jit(lambda rng: api.init_params(module, config, rng))(jax.random.PRNGKey(4))
  model = api.LoadedModel(config, module, params, prompt_config)
  rows = [[31, 5, 6, 7], [30, 8, 9]]
  right = np.array([r + [0] * (4 - len(r)) for r in rows])
  left = np.array([[0] * (4 - len(r)) + r for r in rows])
  generated = model.generate(right, 4)
  np.testing.assert_array_equal(model.generate(left, 4), generated)
  for row, inputs in enumerate(rows):
    assert generated[row].tolist() == greedy_decoder_only(model, inputs, 4)
  # T5X training rows start with the 0 start token: the task is still the sentinel's (task 0).
  inputs, targets = np.array([[0, 31, 5, 6]]), np.array([[31, 5, 6, 7]])
  base = np.asarray(model.logits(inputs, decoder_target_tokens=targets))
  path = "decoder/prompt/prompt/task_prompts"
  task_prompts = np.asarray(tree.flatten_params(params)[path])
  np.testing.assert_array_equal(
      _with(model, path, task_prompts + np.array([0.0, 1.0])[:, None, None]).logits(
          inputs, decoder_target_tokens=targets), base)
  assert np.abs(np.asarray(_with(model, path, task_prompts + np.array([1.0, 0.0])[:, None, None])
                           .logits(inputs, decoder_target_tokens=targets)) - base).max() > 1e-4


@pytest.mark.parametrize("gin_file", list(GIN_MODELS))
def test_gradients_reach_only_the_method_parameters(loaded, gin_file):
  model = loaded[gin_file]
  flat = tree.flatten_params(model.params)
  trainable = tree.unflatten_params(
      {p: v for p, v in flat.items() if re.fullmatch(api.PROMPT_PARAMS_REGEX, p)})
  frozen = {p: v for p, v in flat.items() if not re.fullmatch(api.PROMPT_PARAMS_REGEX, p)}
  if model.is_decoder_only:
    inputs = (jnp.asarray(ENCODER_TOKENS),)
  else:
    encoder = np.array([[_sentinel(2), 5, 6, 1], [_sentinel(0), 7, 1, 0]])
    inputs = (jnp.asarray(encoder), jnp.asarray(DECODER_TOKENS))

  def loss(trainable_params):
    params = tree.unflatten_params({**frozen, **tree.flatten_params(trainable_params)})
    logits = model.module.apply({"params": params}, *inputs)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 3])

  grad_fn = jax.grad(loss)
  # The differentiated program outputs only the method's gradients (frozen ones never exist).
  jaxpr = jax.make_jaxpr(grad_fn)(trainable)
  expected_shapes = [leaf.shape for leaf in jax.tree_util.tree_leaves(trainable)]
  assert [v.aval.shape for v in jaxpr.jaxpr.outvars] == expected_shapes
  grads = tree.flatten_params(jax.jit(grad_fn)(trainable))
  assert set(grads) == set(GIN_MODELS[gin_file][1])
  for path, grad in grads.items():
    grad = np.asarray(grad)
    if path.endswith("task_prompts"):  # Tasks 0 and 2 are used, task 1 is not.
      assert np.abs(grad[[0, 2]]).min(axis=-1).max() > 0
      np.testing.assert_array_equal(grad[1], 0.0)
    else:
      assert np.abs(grad).max() > 0, path


def test_deep_and_multitask_models_restore_frozen_weights_from_t5x(t5x_tiny_checkpoint):
  plain = tree.flatten_params(
      prompt_tuning.load_model(["test/t5_1_1_tiny.gin"], checkpoint=t5x_tiny_checkpoint).params)
  for gin_file in (DEEP_ENC_DEC, MULTITASK):
    flat = tree.flatten_params(
        prompt_tuning.load_model([gin_file], checkpoint=t5x_tiny_checkpoint).params)
    for path, value in plain.items():
      np.testing.assert_array_equal(flat.pop(path), value)
    assert {p: v.shape for p, v in flat.items()} == GIN_MODELS[gin_file][1]  # Fresh method params.
