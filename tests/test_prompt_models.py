"""Prompt models: identity at P = 0, cached == uncached generation, padding invariance,
gradients w.r.t. the prompt only, `load_model(..., prompt=)`, released prompts' layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import api, layers, prompts
from prompt_tuning.checkpoints import match_params, tree
from prompt_tuning.models import T5Config, build_model

from uncached_reference import greedy_decoder_only, greedy_encoder_decoder

TINY = T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                num_encoder_layers=2, num_decoder_layers=2, relpos_num_buckets=8,
                relpos_max_distance=16)
DECODER_ONLY = TINY.replace(architecture="decoder_only", num_encoder_layers=0)
PROMPT_PATH = "encoder/prompt/prompt/prompt"


def _prompt_model(config: T5Config, length: int, seed: int = 0, **options) -> api.LoadedModel:
  prompt_config = prompts.PromptConfig(length=length, **options)
  module = layers.build_prompt_model(config, prompt_config)
  params = api.init_params(module, config, jax.random.PRNGKey(seed))
  return api.LoadedModel(config, module, params, prompt_config)


def _base_model(prompt_model: api.LoadedModel) -> api.LoadedModel:
  """The plain model sharing the prompt model's frozen weights."""
  flat = {p: v for p, v in tree.flatten_params(prompt_model.params).items()
          if "/prompt/" not in p}
  config = prompt_model.config
  return api.LoadedModel(config, build_model(config), tree.unflatten_params(flat))


ENCODER_TOKENS = np.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
DECODER_TOKENS = np.array([[0, 11, 12, 13], [0, 14, 15, 16]])


def test_zero_length_prompt_reproduces_the_base_model():
  model = _prompt_model(TINY, 0, seed=1)
  assert tree.flatten_params(model.params)[PROMPT_PATH].shape == (0, 8)
  np.testing.assert_allclose(model.logits(ENCODER_TOKENS, DECODER_TOKENS),
                             _base_model(model).logits(ENCODER_TOKENS, DECODER_TOKENS), atol=1e-6)
  decoder_only = _prompt_model(DECODER_ONLY, 0, seed=1)
  tokens = np.array([[5, 6, 7, 0], [8, 9, 10, 11]])
  np.testing.assert_allclose(decoder_only.logits(tokens), _base_model(decoder_only).logits(tokens),
                             atol=1e-6)


@pytest.mark.parametrize("placement,attends", [("prefix", True), ("suffix_before_eos", False)])
def test_encoder_decoder_cached_generation_equals_uncached_argmax(placement, attends):
  model = _prompt_model(TINY, 3, seed=3, placement=placement, decoder_attends_to_prompt=attends)
  cached = model.generate(ENCODER_TOKENS, 6)
  np.testing.assert_array_equal(cached, greedy_encoder_decoder(model, ENCODER_TOKENS, 6))


@pytest.mark.parametrize("placement", ["prefix_after_bos", "suffix_before_eos"])
def test_encoder_padding_does_not_change_outputs(placement):
  model = _prompt_model(TINY, 3, seed=2, placement=placement)
  short = np.array([[5, 6, 7, 1]])
  padded = np.array([[5, 6, 7, 1, 0, 0, 0]])
  decoder = DECODER_TOKENS[:1]
  np.testing.assert_allclose(model.logits(short, decoder), model.logits(padded, decoder),
                             atol=1e-5)


def test_decoder_only_cached_generation_with_prompt_left_and_right_padding():
  model = _prompt_model(DECODER_ONLY, 3, seed=4)
  rows = [[5, 6, 7, 8, 9], [10, 11]]
  right = np.array([r + [0] * (5 - len(r)) for r in rows])
  left = np.array([[0] * (5 - len(r)) + r for r in rows])
  generated = model.generate(right, 6)
  np.testing.assert_array_equal(model.generate(left, 6), generated)
  for row, inputs in enumerate(rows):
    assert generated[row].tolist() == greedy_decoder_only(model, inputs, 6)


def test_decoder_only_padding_invariance_left_and_right():
  model = _prompt_model(DECODER_ONLY, 3, seed=5)
  plain = np.asarray(model.logits(np.array([[5, 6, 7]])))[0]
  right = np.asarray(model.logits(np.array([[5, 6, 7, 0, 0]])))[0]
  left = np.asarray(model.logits(np.array([[0, 0, 5, 6, 7]])))[0]
  np.testing.assert_allclose(right[:3], plain, atol=1e-5)
  np.testing.assert_allclose(left[2:], plain, atol=1e-5)
  # A visible inputs prefix (T5X decoder_causal_attention) includes the prompt.
  causal = np.array([[1, 1, 0]])
  prefix_lm = np.asarray(model.logits(np.array([[5, 6, 7]]), decoder_causal_attention=causal))[0]
  assert not np.allclose(prefix_lm, plain, atol=1e-4)


def _split(params: dict) -> tuple[dict, dict]:
  flat = tree.flatten_params(params)
  trainable = {p: v for p, v in flat.items() if "/prompt/" in p}
  frozen = {p: v for p, v in flat.items() if p not in trainable}
  return tree.unflatten_params(trainable), tree.unflatten_params(frozen)


@pytest.mark.parametrize("config,path", [(TINY, PROMPT_PATH),
                                          (DECODER_ONLY, "decoder/prompt/prompt/prompt")])
def test_gradients_reach_only_the_prompt(config, path):
  model = _prompt_model(config, 3, seed=6)
  trainable, frozen = _split(model.params)
  assert list(tree.flatten_params(trainable)) == [path]
  inputs = (ENCODER_TOKENS, DECODER_TOKENS) if config is TINY else (ENCODER_TOKENS,)

  def loss(trainable_params):
    params = tree.unflatten_params({**tree.flatten_params(frozen),
                                    **tree.flatten_params(trainable_params)})
    logits = model.module.apply({"params": params}, *map(jnp.asarray, inputs))
    return jnp.mean(jax.nn.log_softmax(logits)[..., 3])

  grad_fn = jax.grad(loss)
  jaxpr = jax.make_jaxpr(grad_fn)(trainable)
  # The differentiated program outputs exactly one array: the prompt's gradient.
  assert [v.aval.shape for v in jaxpr.jaxpr.outvars] == [(3, 8)]
  grads = tree.flatten_params(jax.jit(grad_fn)(trainable))
  assert list(grads) == [path] and float(jnp.abs(grads[path]).sum()) > 0


def test_prompt_argument_overrides_the_prompt_parameter(tmp_path):
  model = _prompt_model(TINY, 3, seed=7)
  new_prompt = np.linspace(-1, 1, 24).reshape(3, 8)
  path = tmp_path / "prompt.npy"
  np.save(path, new_prompt)  # float64 on disk.
  expected_params = tree.flatten_params(model.params)
  expected_params[PROMPT_PATH] = jnp.asarray(new_prompt, jnp.float32)
  expected = api.LoadedModel(TINY, model.module, tree.unflatten_params(expected_params))
  want = expected.logits(ENCODER_TOKENS, DECODER_TOKENS)
  np.testing.assert_array_equal(model.logits(ENCODER_TOKENS, DECODER_TOKENS, prompt=path), want)
  np.testing.assert_array_equal(model.generate(ENCODER_TOKENS, 4, prompt=new_prompt),
                                expected.generate(ENCODER_TOKENS, 4))
  # The prompt matters (so the P = 0 identity test can fail).
  assert not np.allclose(model.logits(ENCODER_TOKENS, DECODER_TOKENS), want, atol=1e-3)
  with pytest.raises(ValueError, match=r"\[4, 8\].*encoder/prompt/prompt/prompt.*\[3, 8\]"):
    model.logits(ENCODER_TOKENS, DECODER_TOKENS, prompt=np.zeros((4, 8)))
  with pytest.raises(ValueError, match="prompt-tuning gin file"):
    _base_model(model).logits(ENCODER_TOKENS, DECODER_TOKENS, prompt=new_prompt)


def test_load_model_restores_frozen_weights_and_initialises_the_prompt(t5x_tiny_checkpoint):
  plain = prompt_tuning.load_model(["test/t5_1_1_tiny.gin"], checkpoint=t5x_tiny_checkpoint)
  model = prompt_tuning.load_model(["test/t5_1_1_tiny_prompt.gin"], checkpoint=t5x_tiny_checkpoint)
  assert isinstance(model.module, layers.PromptEncoderDecoder)
  flat = tree.flatten_params(model.params)
  prompt = np.asarray(flat.pop(PROMPT_PATH))
  assert prompt.shape == (5, 4) and np.abs(prompt).max() <= 0.5 and np.abs(prompt).min() > 0
  for path, value in tree.flatten_params(plain.params).items():
    np.testing.assert_array_equal(flat.pop(path), value)
  assert not flat
  assert list(tree.flatten_params(model.prompt_params)) == [PROMPT_PATH]


def test_class_label_gin_init_from_checkpoint_embeddings(t5x_tiny_checkpoint, t5_vocab_path):
  model = prompt_tuning.load_model(
      ["test/t5_1_1_tiny_prompt.gin", "prompts/from_class_labels.gin"],
      [f"INITIAL_CHECKPOINT_PATH='{t5x_tiny_checkpoint}'", f"VOCAB_FILE='{t5_vocab_path}'",
       "CLASS_LABELS=['positive', 'great movie']", "SAMPLED_VOCAB_SIZE=50"],
      checkpoint=t5x_tiny_checkpoint)
  embedding = np.asarray(model.params["token_embedder"]["embedding"])
  prompt = np.asarray(tree.flatten_params(model.params)[PROMPT_PATH])
  np.testing.assert_allclose(prompt[0], embedding[1465], rtol=1e-6)
  np.testing.assert_allclose(prompt[1], (embedding[248] + embedding[1974]) / 2, rtol=1e-6)
  for row in prompt[2:]:  # Sampled from the first 50 rows.
    assert any(np.array_equal(row, e) for e in embedding[:50])


def test_decoder_only_gin_builds_prompt_model():
  model = prompt_tuning.load_model(["test/decoder_only_tiny_prompt.gin"])
  assert isinstance(model.module, layers.PromptDecoderOnly)
  assert list(tree.flatten_params(model.prompt_params)) == ["decoder/prompt/prompt/prompt"]
  assert model.logits(np.array([[5, 6, 0]])).shape == (1, 3, 32128)


@pytest.mark.parametrize("task", ["sst2", "mrpc", "rte"])
def test_released_prompts_load_into_t5_1_1_base_unchanged(task):
  from conftest import shared_fixture
  path = shared_fixture(f"released_prompts/t5_1_1_lm100k_base/{task}.npy")
  config = api._config_from_gin(["models/t5_1_1_base_prompt.gin"], (), ())
  prompt_config = api._prompt_config_from_gin()
  assert prompt_config.length == 100 and config.emb_dim == 768
  module = api.build_any_model(config, prompt_config)
  shapes = api.param_shapes(module, config)  # Frozen weights never allocated.
  released = np.load(path)
  assert released.dtype == np.float32
  expected_prompt = api.prompt_subtree(shapes)
  assert list(tree.flatten_params(expected_prompt)) == [PROMPT_PATH]
  loaded = match_params(expected_prompt, tree.unflatten_params({PROMPT_PATH: released}),
                        source=str(path))
  np.testing.assert_array_equal(tree.flatten_params(loaded)[PROMPT_PATH], released)
  replaced = api.replace_prompt(shapes, path)
  np.testing.assert_array_equal(tree.flatten_params(replaced)[PROMPT_PATH], released)


def test_other_prompt_methods_plug_in_with_their_output_length():
  from prompt_tuning.methods import multitask
  method = multitask.MultiTaskPrompt(length=2, num_tasks=3, task_length=1, combine="concat")
  module = layers.PromptEncoderDecoder(TINY, prompt_method=method)
  params = api.init_params(module, TINY, jax.random.PRNGKey(0))
  assert sorted(tree.flatten_params(api.prompt_subtree(params))) == [
      "encoder/prompt/prompt/shared_prompt", "encoder/prompt/prompt/task_prompts"]
  tokens = jnp.array([[1, 5, 6, 1, 0], [2, 7, 1, 0, 0]])  # First token: the task sentinel.
  encoded, mask = module.apply({"params": params}, tokens, method=module.encode_with_mask)
  assert encoded.shape == (2, 8, 8)  # T + shared 2 + task 1.
  np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0, 0]])
