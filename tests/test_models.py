"""Model invariants: parameter tree, T5X fixture forward, cached == uncached decoding, padding."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import api
from prompt_tuning.checkpoints import t5x
from prompt_tuning.models import T5Config, build_model
from prompt_tuning.models.relpos import relative_position_bucket
from prompt_tuning.inference import decoding

from uncached_reference import greedy_decoder_only, greedy_encoder_decoder


TEST_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"

TINY = T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                num_encoder_layers=2, num_decoder_layers=3, relpos_num_buckets=8,
                relpos_max_distance=16)

# Logical axes by the parameter's trailing name (T5X's conventions).
EXPECTED_AXES = [
    (r"token_embedder/embedding$", ("vocab", "embed")),
    (r"(query|key|value)/kernel$", ("embed", "joined_kv")),
    (r"out/kernel$", ("joined_kv", "embed")),
    (r"wi(_\d)?/kernel$", ("embed", "mlp")),
    (r"wo/kernel$", ("mlp", "embed")),
    (r"scale$", ("embed",)),
    (r"rel_embedding$", ("heads", "relpos_buckets")),
    (r"logits_dense/kernel$", ("embed", "vocab")),
]


def _flat(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(a, str) for a in x))[0]
  return {"/".join(k.key for k in path): leaf for path, leaf in leaves}


def _tiny_model(config: T5Config = TINY, seed: int = 0) -> api.LoadedModel:
  module = build_model(config)
  return api.LoadedModel(config, module, api.init_params(module, config, jax.random.PRNGKey(seed)))


def test_relative_position_buckets_exact():
  # Bidirectional, 8 buckets (4 per direction, 2 exact), max distance 16.
  relative = np.array([-20, -8, -4, -3, -2, -1, 0, 1, 2, 3, 4, 8, 20])
  got = relative_position_bucket(relative, True, 8, 16)
  # key before query (negative) -> buckets 0..3; key after -> 4..7 (offset by half).
  np.testing.assert_array_equal(got, [3, 3, 2, 2, 2, 1, 0, 5, 6, 6, 6, 7, 7])
  # Unidirectional (decoder): future keys all map to bucket 0.
  got = relative_position_bucket(np.array([3, 0, -1, -2, -5, -100]), False, 4, 8)
  # distance 5: 2 + int(log(5/2) / log(8/2) * 2) = 2 + int(1.32) = 3.
  np.testing.assert_array_equal(got, [0, 0, 1, 2, 3, 3])


def test_param_tree_matches_t5x_fixture_and_axis_names(t5x_tiny_checkpoint):
  model = prompt_tuning.load_model(["test/t5_1_1_tiny.gin"])
  ours = {path: tuple(leaf.shape) for path, leaf in _flat(model.params).items()}
  theirs = {path: tuple(var.shape) for path, var in t5x.t5x_variables(t5x_tiny_checkpoint).items()}
  assert ours == theirs
  axes = _flat(api.param_axes(model.module, model.config))
  assert set(axes) == set(ours)
  for path, names in axes.items():
    expected = [want for pattern, want in EXPECTED_AXES if re.search(pattern, path)]
    assert expected and names == expected[0], path
    assert len(names) == len(ours[path])
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(model.params))


def test_t5x_fixture_forward_is_deterministic_and_finite(t5x_tiny_checkpoint):
  model = prompt_tuning.load_model(["test/t5_1_1_tiny.gin"], checkpoint=t5x_tiny_checkpoint)
  encoder_tokens = np.array([[37, 1024, 5, 1, 0, 0], [8, 9, 10, 11, 12, 1]])
  decoder_tokens = np.array([[0, 1566, 7, 0], [0, 31, 32, 33]])
  first = np.asarray(model.logits(encoder_tokens, decoder_tokens))
  second = np.asarray(model.logits(encoder_tokens, decoder_tokens))
  assert first.shape == (2, 4, 32128)
  assert np.isfinite(first).all()
  np.testing.assert_array_equal(first, second)
  embedding = t5x.load_t5x_variable(t5x_tiny_checkpoint, "token_embedder/embedding")
  np.testing.assert_array_equal(np.asarray(model.params["token_embedder"]["embedding"]), embedding)


def test_encoder_padding_does_not_change_outputs():
  model = _tiny_model()
  short = np.array([[5, 6, 7, 1]])
  padded = np.array([[5, 6, 7, 1, 0, 0, 0]])
  decoder = np.array([[0, 9, 10]])
  np.testing.assert_allclose(model.logits(short, decoder), model.logits(padded, decoder),
                             atol=1e-6)


@pytest.mark.parametrize("mlp_activations,tied", [(("gelu", "linear"), False), (("relu",), True)])
def test_cached_greedy_equals_uncached_argmax(mlp_activations, tied):
  config = TINY.replace(mlp_activations=mlp_activations, logits_via_embedding=tied)
  model = _tiny_model(config, seed=3)
  encoder_tokens = np.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
  cached = model.generate(encoder_tokens, 7)
  np.testing.assert_array_equal(cached, greedy_encoder_decoder(model, encoder_tokens, 7))


def test_cached_step_logits_equal_full_forward_logits():
  model = _tiny_model(seed=1)
  encoder_tokens = jnp.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
  decoder_tokens = jnp.array([[0, 11, 12, 13, 14], [0, 15, 16, 17, 18]])
  full = np.asarray(model.logits(encoder_tokens, decoder_tokens))
  variables = {"params": model.params}
  module = model.module
  encoded = module.apply(variables, encoder_tokens, method=module.encode)
  cache = module.apply(variables, encoded, encoder_tokens > 0, 5, method=module.init_decode_cache)
  for step in range(5):
    logits, cache = module.apply(variables, decoder_tokens[:, step:step + 1], cache, step,
                                 method=module.decode_step)
    np.testing.assert_allclose(logits[:, 0], full[:, step], atol=1e-5, rtol=1e-5)


def test_one_beam_equals_greedy_and_beams_are_sorted():
  model = _tiny_model(seed=2)
  encoder_tokens = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
  greedy = model.generate(encoder_tokens, 6)
  np.testing.assert_array_equal(model.generate(encoder_tokens, 6, method="beam", num_beams=1, alpha=0.0),
                                greedy)
  sampled = model.generate(encoder_tokens, 6, method="sample", top_k=1)
  np.testing.assert_array_equal(sampled, greedy)


DECODER_ONLY = TINY.replace(architecture="decoder_only", num_encoder_layers=0)


def test_decoder_only_cached_generation_equals_uncached_with_ragged_prompts():
  model = _tiny_model(DECODER_ONLY, seed=4)
  prompts = [[5, 6, 7, 8, 9], [10, 11]]
  padded = np.array([p + [0] * (5 - len(p)) for p in prompts])
  generated = model.generate(padded, 6)
  for row, prompt in enumerate(prompts):
    assert generated[row].tolist() == greedy_decoder_only(model, prompt, 6)


def test_decoder_only_param_paths():
  model = _tiny_model(DECODER_ONLY)
  paths = set(_flat(model.params))
  assert "decoder/token_embedder/embedding" in paths
  assert "decoder/layers_2/self_attention/query/kernel" in paths
  assert not any("encoder" in p for p in paths)


def test_bfloat16_activations_stay_close_to_float32():
  model32 = _tiny_model(seed=5)
  model16 = api.LoadedModel(TINY.replace(dtype="bfloat16"), build_model(TINY.replace(dtype="bfloat16")),
                            model32.params)
  encoder_tokens = np.array([[5, 6, 7, 8, 1]])
  decoder_tokens = np.array([[0, 11, 12]])
  full = np.asarray(model32.logits(encoder_tokens, decoder_tokens))
  half = np.asarray(model16.logits(encoder_tokens, decoder_tokens))
  assert half.dtype == np.float32
  np.testing.assert_allclose(half, full, atol=0.1 * np.abs(full).max())


def test_load_model_reports_checkpoint_mismatch(t5x_tiny_checkpoint):
  from prompt_tuning.checkpoints import CheckpointMismatchError
  with pytest.raises(CheckpointMismatchError, match=r"32128.*NUM_EMBEDDINGS"):
    prompt_tuning.load_model(["test/t5_1_1_tiny.gin"], bindings=["NUM_EMBEDDINGS=32100"],
                             checkpoint=t5x_tiny_checkpoint)
  with pytest.raises(CheckpointMismatchError,
                     match=r"mlp/wi_0/kernel.*\[4, 8\] in the checkpoint.*expects \[4, 16\]"):
    prompt_tuning.load_model(["test/t5_1_1_tiny.gin"], bindings=["MLP_DIM=16"],
                             checkpoint=t5x_tiny_checkpoint)


def test_load_model_from_hugging_face_directory_needs_no_gin():
  model = prompt_tuning.load_model(checkpoint=str(TEST_FIXTURES / "hf_t5_1_1_tiny"))
  golden = np.load(TEST_FIXTURES / "hf_t5_1_1_tiny" / "golden.npz")
  assert model.config.mlp_activations == ("gelu", "linear")
  logits = np.asarray(model.logits(golden["encoder_input_tokens"], golden["decoder_input_tokens"],
                                   decoder_target_tokens=golden["decoder_target_tokens"]))
  real = golden["decoder_target_tokens"] > 0
  np.testing.assert_allclose(logits[real], golden["logits"][real], atol=1e-4)
