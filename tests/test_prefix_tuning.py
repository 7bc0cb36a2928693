"""Prefix tuning: param paths, identity at P = 0, cached == uncached, padding, gradients, export."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import api
from prompt_tuning.checkpoints.tree import flatten_params, unflatten_params
from prompt_tuning.methods import prefix_tuning as pt
from prompt_tuning.models.attention import KVPrefix
from prompt_tuning.models import T5Config, build_model

from uncached_reference import greedy_decoder_only, greedy_encoder_decoder

TINY = T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                num_encoder_layers=2, num_decoder_layers=3, relpos_num_buckets=8,
                relpos_max_distance=16)
DECODER_ONLY = TINY.replace(architecture="decoder_only", num_encoder_layers=0)
ENCODER_TOKENS = np.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
DECODER_TOKENS = np.array([[0, 11, 12, 13], [0, 15, 16, 0]])


def _model(config: T5Config, prefix: pt.PrefixConfig, seed: int = 0) -> api.LoadedModel:
  module = pt.build_prefix_tuning_model(config, prefix)
  init = jax.jit(lambda rng: api.init_params(module, config, rng))  # one compiled init, not eager
  return api.LoadedModel(config, module, init(jax.random.PRNGKey(seed)))


def _frozen(params: dict) -> dict:
  """The parameters of the base model: everything but the prefixes."""
  flat = flatten_params(params)
  return unflatten_params({k: v for k, v in flat.items() if not re.match(pt.PREFIX_PARAMS_REGEX, k)})


def _base(model: api.LoadedModel) -> api.LoadedModel:
  return api.LoadedModel(model.config, build_model(model.config), _frozen(model.params))


def test_param_paths_keep_the_base_model_and_add_prefixes_under_prefix():
  model = _model(TINY, pt.PrefixConfig(length=3))
  flat = flatten_params(model.params)
  prefix_paths = {k for k in flat if re.match(pt.PREFIX_PARAMS_REGEX, k)}
  assert {k: flat[k].shape for k in prefix_paths} == {
      "encoder/prefix/attention/key_value": (3, 2, 2, 2, 4),
      "decoder/prefix/self_attention/key_value": (3, 3, 2, 2, 4),
      "decoder/prefix/encoder_decoder_attention/key_value": (3, 3, 2, 2, 4),
  }
  base = api.param_shapes(build_model(TINY), TINY)
  assert {k: flat[k].shape for k in set(flat) - prefix_paths} == {
      k: v.shape for k, v in flatten_params(base).items()}
  axes = flatten_params(api.param_axes(model.module, TINY))
  assert axes["decoder/prefix/self_attention/key_value"] == pt.KEY_VALUE_AXES
  # Decoder-only: only decoder self-attention (cross/encoder flags do not apply).
  only = _model(DECODER_ONLY, pt.PrefixConfig(length=2, projection=True, hidden_dim=5))
  assert sorted(k for k in flatten_params(only.params) if "/prefix/" in k) == [
      "decoder/prefix/self_attention/embedding",
      "decoder/prefix/self_attention/transform_0/bias",
      "decoder/prefix/self_attention/transform_0/kernel",
      "decoder/prefix/self_attention/transform_1/bias",
      "decoder/prefix/self_attention/transform_1/kernel",
  ]


@pytest.mark.parametrize("config", [TINY, DECODER_ONLY], ids=["enc_dec", "decoder_only"])
def test_zero_length_prefix_reproduces_base_logits(config):
  model = _model(config, pt.PrefixConfig(length=0), seed=1)
  tokens = (ENCODER_TOKENS, DECODER_TOKENS) if config is TINY else (ENCODER_TOKENS,)
  np.testing.assert_allclose(model.logits(*tokens), _base(model).logits(*tokens), atol=1e-6)
  # And a real prefix changes them.
  longer = _model(config, pt.PrefixConfig(length=3), seed=1)
  assert np.abs(np.asarray(longer.logits(*tokens)) - np.asarray(model.logits(*tokens))).max() > 1e-3


def test_cross_attention_prefix_is_added_to_the_encoder_keys():
  # Only cross-attention prefixes: the decoder must still read the encoder through them.
  model = _model(TINY, pt.PrefixConfig(length=3, encoder=False, decoder_self=False), seed=2)
  first = np.asarray(model.logits(ENCODER_TOKENS, DECODER_TOKENS))
  other_encoder = ENCODER_TOKENS.copy()
  other_encoder[:, 0] = 20
  second = np.asarray(model.logits(other_encoder, DECODER_TOKENS))
  assert np.abs(first - second).max() > 1e-3
  # Attention over [prefix; encoder]: one layer's cross-attention computed by hand in numpy.
  params = model.params
  encoded = model.module.apply({"params": params}, jnp.asarray(ENCODER_TOKENS),
                               method=model.module.encode)
  layer = params["decoder"]["layers_0"]["encoder_decoder_attention"]
  kv = np.asarray(params["decoder"]["prefix"]["encoder_decoder_attention"]["key_value"])[:, 0]
  query_in = np.asarray(encoded)[:, :2] * 0.5  # any query inputs [B, 2, D]
  prefix = KVPrefix(jnp.broadcast_to(kv[None, :, 0], (2, 3, 2, 4)),
                    jnp.broadcast_to(kv[None, :, 1], (2, 3, 2, 4)))
  bias_B11S = np.concatenate([np.zeros((2, 1, 1, 3)), np.where(
      ENCODER_TOKENS > 0, 0.0, -1e10)[:, None, None, :]], -1).astype(np.float32)

  def attend(module, q, e, b):
    return module.decoder.layers[0].encoder_decoder_attention(q, e, b, prefix=prefix)[0]

  got = model.module.apply({"params": params}, jnp.asarray(query_in), encoded,
                           jnp.asarray(bias_B11S), method=attend)
  split = lambda x: x.reshape(x.shape[:2] + (2, 4))
  q = split(query_in @ np.asarray(layer["query"]["kernel"]))
  k = np.concatenate([np.broadcast_to(kv[None, :, 0], (2, 3, 2, 4)),
                      split(np.asarray(encoded) @ np.asarray(layer["key"]["kernel"]))], 1)
  v = np.concatenate([np.broadcast_to(kv[None, :, 1], (2, 3, 2, 4)),
                      split(np.asarray(encoded) @ np.asarray(layer["value"]["kernel"]))], 1)
  logits = np.einsum("btnh,bsnh->bnts", q, k)
  valid = np.concatenate([np.ones((2, 3), bool), ENCODER_TOKENS > 0], 1)
  logits = np.where(valid[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  context = np.einsum("bnts,bsnh->btnh", weights, v).reshape(2, 2, 8)
  np.testing.assert_allclose(got, context @ np.asarray(layer["out"]["kernel"]), atol=1e-5)


@pytest.mark.parametrize("projection", [False, True])
def test_enc_dec_cached_greedy_equals_uncached_argmax(projection):
  model = _model(TINY, pt.PrefixConfig(length=3, projection=projection, hidden_dim=6), seed=3)
  cached = model.generate(ENCODER_TOKENS, 6)
  np.testing.assert_array_equal(cached, greedy_encoder_decoder(model, ENCODER_TOKENS, 6))
  assert len(set(cached.ravel().tolist())) > 1  # not a degenerate constant output


@pytest.mark.parametrize("position_bias", ["zero", "shifted"])
def test_decoder_only_cached_generation_equals_uncached(position_bias):
  model = _model(DECODER_ONLY, pt.PrefixConfig(length=3, position_bias=position_bias), seed=4)
  prompts = [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
  generated = model.generate(np.array(prompts), 5)
  for row, prompt in enumerate(prompts):
    assert generated[row].tolist() == greedy_decoder_only(model, prompt, 5)


def test_decoder_only_zero_bias_prefix_is_padding_invariant_in_generation():
  model = _model(DECODER_ONLY, pt.PrefixConfig(length=3), seed=4)
  prompts = [[5, 6, 7, 8, 9], [10, 11]]  # ragged: generation left-pads the short one
  generated = model.generate(np.array([p + [0] * (5 - len(p)) for p in prompts]), 5)
  for row, prompt in enumerate(prompts):
    assert generated[row].tolist() == greedy_decoder_only(model, prompt, 5)


def test_shifted_position_bias_matches_prefix_at_leading_positions():
  # "shifted" = the prefix occupies positions 0..P-1 (Hugging Face T5 with past_key_values):
  # relative distances between tokens are unchanged, prefix keys get the bias of their
  # distance. Zero and shifted must then differ, and both equal the base model at P = 0.
  zero = _model(DECODER_ONLY, pt.PrefixConfig(length=3), seed=5)
  shifted = api.LoadedModel(DECODER_ONLY, pt.build_prefix_tuning_model(
      DECODER_ONLY, pt.PrefixConfig(length=3, position_bias="shifted")), zero.params)
  tokens = np.array([[5, 6, 7, 8]])
  assert np.abs(np.asarray(zero.logits(tokens)) - np.asarray(shifted.logits(tokens))).max() > 1e-4


def test_encoder_padding_does_not_change_outputs():
  model = _model(TINY, pt.PrefixConfig(length=3), seed=6)
  short, padded = np.array([[5, 6, 7, 1]]), np.array([[5, 6, 7, 1, 0, 0, 0]])
  decoder = np.array([[0, 9, 10]])
  np.testing.assert_allclose(model.logits(short, decoder), model.logits(padded, decoder),
                             atol=1e-6)


def test_gradients_reach_only_the_prefix_params():
  model = _model(TINY, pt.PrefixConfig(length=3, projection=True, hidden_dim=6), seed=7)
  trainable = pt.prefix_params(model.params)
  frozen = _frozen(model.params)

  def loss(trainable_params):
    params = unflatten_params({**flatten_params(frozen), **flatten_params(trainable_params)})
    logits = model.module.apply({"params": params}, jnp.asarray(ENCODER_TOKENS),
                                jnp.asarray(DECODER_TOKENS))
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 3])

  grads = flatten_params(jax.jit(jax.grad(loss))(trainable))
  assert set(grads) == set(flatten_params(trainable))
  assert all(re.match(pt.PREFIX_PARAMS_REGEX, path) for path in grads)
  assert all(np.abs(np.asarray(g)).max() > 0 for g in grads.values())


def test_export_prefixes_reproduces_the_projected_model_without_the_mlp():
  projected = _model(TINY, pt.PrefixConfig(length=3, projection=True, hidden_dim=6), seed=8)
  exported = pt.export_prefixes(projected.params, TINY)
  assert sorted(exported) == ["decoder/prefix/encoder_decoder_attention/key_value",
                              "decoder/prefix/self_attention/key_value",
                              "encoder/prefix/attention/key_value"]
  # Hand check of one entry: tanh MLP of the embeddings, reshaped [P, L, 2, N, H].
  sub = projected.params["encoder"]["prefix"]["attention"]
  hidden = np.tanh(np.asarray(sub["embedding"]) @ np.asarray(sub["transform_0"]["kernel"]) +
                   np.asarray(sub["transform_0"]["bias"]))
  flat = hidden @ np.asarray(sub["transform_1"]["kernel"]) + np.asarray(sub["transform_1"]["bias"])
  np.testing.assert_allclose(exported["encoder/prefix/attention/key_value"],
                             flat.reshape(3, 2, 2, 2, 4), rtol=1e-5, atol=1e-6)
  direct_module = pt.build_prefix_tuning_model(TINY, pt.PrefixConfig(length=3))
  direct_params = unflatten_params({**flatten_params(_frozen(projected.params)), **exported})
  direct = api.LoadedModel(TINY, direct_module, direct_params)
  np.testing.assert_allclose(direct.logits(ENCODER_TOKENS, DECODER_TOKENS),
                             projected.logits(ENCODER_TOKENS, DECODER_TOKENS), atol=1e-5)


def test_beam_and_sampling_run_with_prefixes():
  model = _model(TINY, pt.PrefixConfig(length=3), seed=3)
  greedy = model.generate(ENCODER_TOKENS, 6)  # same module and shapes as above: compiled once
  # Beam search carries the prefixes in its cache (gathered per beam like the K/V cache).
  beam = model.generate(ENCODER_TOKENS, 6, method="beam", num_beams=3, alpha=0.0)
  assert beam.shape == (2, 6) and ((beam >= 0) & (beam < TINY.vocab_size)).all()
  # Sampling restricted to the top token is greedy decoding.
  np.testing.assert_array_equal(model.generate(ENCODER_TOKENS, 6, method="sample", top_k=1),
                                greedy)


def test_prefix_config_errors_name_the_fix():
  with pytest.raises(ValueError, match="length=-1"):
    pt.PrefixConfig(length=-1)
  with pytest.raises(ValueError, match="'zero', 'shifted' or None"):
    pt.PrefixConfig(position_bias="hf")


def test_gin_files_describe_a_prefix_tuning_model():
  from prompt_tuning import gin_utils
  from prompt_tuning.models import config as model_config

  gin_utils.parse_gin_config(["test/t5_1_1_tiny_prefix.gin"])
  config = gin_utils.configured(model_config.T5Config)()
  prefix = gin_utils.configured(pt.prefix_config)()
  assert prefix == pt.PrefixConfig(length=3, projection=True, hidden_dim=6)
  module = prefix.build_model(config)
  shapes = flatten_params(api.param_shapes(module, config))
  # [hidden, layers * (key, value) * heads * head_dim]
  assert shapes["encoder/prefix/attention/transform_1/kernel"].shape == (6, 2 * 2 * 2 * 2)
  assert shapes["decoder/layers_1/encoder_decoder_attention/key/kernel"].shape == (4, 4)


def test_load_model_restores_frozen_weights_and_initialises_the_prefix(t5x_tiny_checkpoint):
  import prompt_tuning

  plain = prompt_tuning.load_model(["test/t5_1_1_tiny.gin"], checkpoint=t5x_tiny_checkpoint)
  model = prompt_tuning.load_model(["test/t5_1_1_tiny_prefix.gin"], checkpoint=t5x_tiny_checkpoint)
  assert isinstance(model.module, pt.PrefixTuningEncoderDecoder)
  flat = flatten_params(model.params)
  method = flatten_params(model.method_params)
  assert method and all("/prefix/" in path for path in method)
  for path, value in flatten_params(plain.params).items():
    np.testing.assert_array_equal(np.asarray(flat[path]), np.asarray(value))
  assert set(flat) == set(flatten_params(plain.params)) | set(method)
  assert np.isfinite(np.asarray(model.logits(np.array([[5, 6, 1]]), np.array([[0, 7]])))).all()
