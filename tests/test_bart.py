"""BART / mBART against transformers, and prefix tuning on BART done right.

Golden files: tests/fixtures/hf_{bart,mbart}_tiny/ (Hugging Face directories + golden.npz) and
tests/fixtures/peft_bart_tiny/*.npz, made by tools/make_bart_golden.py. Token 0 is `<s>` here:
padding is the pad id (1).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peft_weights

import prompt_tuning
from prompt_tuning import api
from prompt_tuning.checkpoints import huggingface, tree
from prompt_tuning.data import tokenizer_vocab
from prompt_tuning.methods import prefix_tuning as pt

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
BART = FIXTURES / "hf_bart_tiny"
MODELS = ("hf_bart_tiny", "hf_mbart_tiny")
ATOL = 1e-4


def _golden(name: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / name / "golden.npz") as data:
    return dict(data)


@pytest.fixture(scope="module", params=MODELS)
def loaded(request):
  return request.param, prompt_tuning.load_model(checkpoint=FIXTURES / request.param), _golden(
      request.param)


def test_configs_come_from_config_json():
  bart = huggingface.config_from_hf(BART)
  assert (bart.family, bart.architecture, bart.norm_position, bart.norm_kind) == (
      "bart", "encoder_decoder", "post", "layer")
  assert (bart.position_embedding, bart.position_offset, bart.embedding_norm) == (
      "learned", 2, True)
  assert (bart.pad_token_id, bart.decoder_start_token_id, bart.forced_bos_token_id,
          bart.forced_eos_token_id) == (1, 2, 0, 2)
  assert bart.generation_defaults.length_penalty == 2.0
  assert bart.generation_defaults.no_repeat_ngram_size == 3
  assert bart.generation_defaults.min_new_tokens == 2  # min_length 3 counts the start token
  mbart = huggingface.config_from_hf(FIXTURES / "hf_mbart_tiny")
  assert mbart.norm_position == "pre" and mbart.forced_bos_token_id is None
  assert mbart.embedding_scale == pytest.approx(48 ** 0.5)


def test_logits_equal_transformers(loaded):
  name, model, golden = loaded
  logits = np.asarray(model.logits(golden["input_ids"], golden["decoder_input_ids"]))
  np.testing.assert_allclose(logits, golden["logits"], atol=ATOL, rtol=ATOL, err_msg=name)


@pytest.mark.parametrize("method", ["greedy", pytest.param("beam", marks=pytest.mark.slow)])
def test_generation_equals_transformers(loaded, method):
  """generate with the checkpoint's settings: forced first / last tokens, no-repeat n-grams,
  minimum length, and (beam) num_beams, length_penalty, early_stopping."""
  name, model, golden = loaded
  tokens = model.generate(golden["input_ids"], int(golden["gen_max_new_tokens"]), method=method)
  np.testing.assert_array_equal(tokens, golden[f"{'gen' if method == 'greedy' else 'beam'}_tokens"],
                                err_msg=name)


def _cached_logits(model: api.LoadedModel, encoder_BT: np.ndarray,
                   decoder_BS: np.ndarray) -> np.ndarray:
  """Logits [B, S, V] of teacher-forced decoder tokens fed one cached step at a time."""
  module = model.module

  @jax.jit
  def start(params, encoder_BT):
    variables = {"params": params}
    encoded, mask = module.apply(variables, encoder_BT, method=module.encode_with_mask)
    return module.apply(variables, encoded, mask, decoder_BS.shape[1],
                        method=module.init_decode_cache)

  @jax.jit
  def step(params, tokens_B1, cache, index):
    return module.apply({"params": params}, tokens_B1, cache, index, method=module.decode_step)

  cache = start(model.params, jnp.asarray(encoder_BT))
  steps = []
  for index in range(decoder_BS.shape[1]):
    logits, cache = step(model.params, jnp.asarray(decoder_BS[:, index:index + 1]), cache,
                         jnp.asarray(index, jnp.int32))
    steps.append(np.asarray(logits[:, 0]))
  return np.stack(steps, axis=1)


@pytest.mark.slow
def test_cached_decoding_equals_uncached(loaded):
  _, model, golden = loaded
  cached = _cached_logits(model, golden["input_ids"], golden["decoder_input_ids"])
  np.testing.assert_allclose(cached, golden["logits"], atol=ATOL, rtol=ATOL)


def test_tokenizer_ids_equal_transformers():
  golden = _golden("hf_bart_tiny")
  vocab = tokenizer_vocab.model_vocabulary(BART)
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.add_bos, vocab.add_eos) == (
      0, 2, 1, True, True)
  for kind in ("plain", "special"):
    ids, offsets = golden[f"mixed_ids_{kind}"], golden[f"mixed_offsets_{kind}"]
    for index, text in enumerate(golden["mixed_texts"].tolist()):
      ours = list(vocab.encode(text))
      if kind == "special":
        ours = [vocab.bos_id] + ours + [vocab.eos_id]
      assert ours == ids[offsets[index]:offsets[index + 1]].tolist(), (kind, text)
  assert vocab.decode(list(vocab.encode("the quick brown fox"))) == "the quick brown fox"


# ----------------------------------------------------------------------------- prefix tuning


def _prefix_model(prefix: pt.PrefixConfig, seed: int = 0) -> api.LoadedModel:
  """The tiny BART's frozen weights with freshly initialised prefixes."""
  base = prompt_tuning.load_model(checkpoint=BART)
  module = prefix.build_model(base.config)
  # Under jit, XLA drops the (unused) frozen-weight initialisation.
  fresh = jax.jit(lambda rng: api.method_subtree(api.init_params(module, base.config, rng)))(
      jax.random.PRNGKey(seed))
  flat = tree.flatten_params(base.params)
  flat.update(tree.flatten_params(fresh))
  return api.LoadedModel(base.config, module, tree.unflatten_params(flat), prefix)


def test_zero_length_prefix_reproduces_the_base_model():
  golden = _golden("hf_bart_tiny")
  model = _prefix_model(pt.PrefixConfig(length=0))
  logits = np.asarray(model.logits(golden["input_ids"], golden["decoder_input_ids"]))
  np.testing.assert_allclose(logits, golden["logits"], atol=ATOL, rtol=ATOL)


def _pitfall_batch() -> tuple[np.ndarray, np.ndarray]:
  """The golden encoder rows followed by the same rows with two other real tokens."""
  golden = _golden("hf_bart_tiny")
  tokens = golden["input_ids"]
  other = tokens.copy()
  other[:, 1:3] = 17
  return np.concatenate([tokens, other]), np.tile(golden["decoder_input_ids"], (2, 1))


def test_prefixes_everywhere_still_read_the_encoder_input():
  """The past_key_values pitfall: a cross-attention prefix that *replaced* the encoder's keys
  would make every output the same whatever the input. Ours is prepended."""
  model = _prefix_model(pt.PrefixConfig(length=4, init_stddev=0.3), seed=1)
  assert set(tree.flatten_params(model.method_params)) == {
      "encoder/prefix/attention/key_value", "decoder/prefix/self_attention/key_value",
      "decoder/prefix/encoder_decoder_attention/key_value"}
  tokens, decoder = _pitfall_batch()
  logits = np.asarray(model.logits(tokens, decoder))
  assert np.abs(logits[:3] - logits[3:]).max() > 1e-2


@pytest.mark.slow
def test_prefixes_everywhere_cached_and_generating():
  tokens, decoder = _pitfall_batch()
  # Cross-attention prefixes alone still let the decoder read the encoder.
  cross_only = _prefix_model(pt.PrefixConfig(length=4, encoder=False, decoder_self=False,
                                             init_stddev=0.3), seed=1)
  logits = np.asarray(cross_only.logits(tokens, decoder))
  assert np.abs(logits[:3] - logits[3:]).max() > 1e-2
  model = _prefix_model(pt.PrefixConfig(length=4, init_stddev=0.3), seed=1)
  np.testing.assert_allclose(_cached_logits(model, tokens, decoder),
                             np.asarray(model.logits(tokens, decoder)), atol=ATOL)
  generated = model.generate(tokens, 6)
  assert not np.array_equal(generated[:3], generated[3:])


def _peft_prefix(g: dict, projection: bool, config) -> dict:
  """PEFT's decoder self-attention prefix as our `decoder/prefix/self_attention` params."""
  num_layers = config.num_decoder_layers
  if not projection:  # received [L, B, N, P, H] -> key_value [P, L, 2, N, H]
    kv = np.stack([g["received_keys"][:, 0], g["received_values"][:, 0]], axis=1)
    return {"key_value": kv.transpose(3, 0, 1, 2, 4)}
  # PEFT's MLP output [2L' entries of N * H]; decoder layer l reads entries (4l, 4l+1) mod 2L'.
  peft_layers = int(g["prefix_num_layers"])
  width = config.num_heads * config.head_dim
  entries = [(4 * layer + kv) % (2 * peft_layers) for layer in range(num_layers)
             for kv in (0, 1)]
  columns = np.concatenate([np.arange(e * width, (e + 1) * width) for e in entries])
  get = lambda name: g[f"encoder_weights/{name}"]
  last = peft_weights.linear(get, "transform.2")
  return {"embedding": get("embedding.weight"),
          "transform_0": peft_weights.linear(get, "transform.0"),
          "transform_1": {"kernel": last["kernel"][:, columns], "bias": last["bias"][columns]}}


@pytest.mark.parametrize("projection", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["plain", "proj"])
def test_peft_prefix_tuning_logits_and_loss(projection):
  """PEFT 0.21's seq2seq prefix tuning (`PrefixConfig.peft_seq2seq`): decoder self-attention
  only, decoder tokens at learned positions P.. (after the P-long cache)."""
  g = dict(np.load(FIXTURES / "peft_bart_tiny" /
                   f"prefix_tuning{'_projection' if projection else ''}.npz"))
  assert str(g["peft_version"]).startswith("0.21.") and int(g["decoder_positions_start"]) == 5
  prefix = pt.PrefixConfig.peft_seq2seq(5, projection=projection, hidden_dim=24)
  model = _prefix_model(prefix)
  params = dict(model.params)
  params["decoder"] = dict(params["decoder"], prefix={
      "self_attention": _peft_prefix(g, projection, model.config)})
  logits = jax.jit(model.module.apply)({"params": params}, jnp.asarray(g["input_ids"]),
                                       jnp.asarray(g["decoder_input_ids"]))
  np.testing.assert_allclose(np.asarray(logits), g["logits"], atol=ATOL)
  labels = g["labels"]
  real = labels != -100
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  nll = -np.take_along_axis(log_probs, np.where(real, labels, 0)[..., None], -1)[..., 0]
  np.testing.assert_allclose((nll * real).sum() / real.sum(), g["loss"], atol=ATOL)
  # The MLP reparameterization is dropped at export: the same keys / values, directly.
  exported = pt.export_prefixes(params, model.config)["decoder/prefix/self_attention/key_value"]
  np.testing.assert_allclose(exported[:, :, 0].transpose(1, 0, 2, 3),
                             g["received_keys"][:, 0].transpose(0, 2, 1, 3), atol=ATOL)


# ----------------------------------------------------------------------------- other methods

METHODS = {
    "prompt_tuning": ("architectures/prompt_tuning.gin", "PROMPT_LENGTH=3"),
    "p_tuning": ("architectures/p_tuning.gin", "PROMPT_LENGTH=3", "P_TUNING_HIDDEN_DIM=16"),
    "deep_prompts": ("architectures/deep_prompts.gin", "PROMPT_LENGTH=3"),
    "multitask": ("architectures/multitask_prompts.gin", "PROMPT_LENGTH=3", "NUM_TASKS=2",
                  "MULTITASK_SENTINEL_VOCAB_SIZE=400"),
    "prefix_projection": ("architectures/prefix_tuning.gin", "PREFIX_LENGTH=3",
                          "PREFIX_PROJECTION=True", "PREFIX_HIDDEN_DIM=16"),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_prompt_method_on_bart(method):
  """Each method loads on the BART directory, changes its outputs, and decodes cached exactly as
  it computes uncached (encoder prompts sit before `<s>`, at learned positions 0..P-1)."""
  golden = _golden("hf_bart_tiny")
  model = prompt_tuning.load_model([METHODS[method][0]], list(METHODS[method][1:]),
                                   checkpoint=BART, seed=3)
  tokens, decoder = golden["input_ids"].copy(), golden["decoder_input_ids"]
  if method == "multitask":
    tokens[:, 1] = [399, 398, 399]  # <s>, then the task sentinel (tasks 0, 1, 0)
  logits = np.asarray(model.logits(tokens, decoder))
  base = prompt_tuning.load_model(checkpoint=BART)
  assert np.abs(logits - np.asarray(base.logits(tokens, decoder))).max() > 1e-3
  np.testing.assert_allclose(_cached_logits(model, tokens, decoder), logits, atol=ATOL)
  generated = model.generate(tokens, 5)
  assert generated.shape == (3, 5) and (generated[:, 0] == 0).all()  # forced BOS


def test_export_to_hugging_face_round_trips(tmp_path):
  """save_hf_checkpoint writes BART's names (final_logits_bias as [1, V]) and config fields."""
  model = prompt_tuning.load_model(checkpoint=BART)
  huggingface.save_hf_checkpoint(jax.device_get(model.params), model.config, tmp_path)
  again = huggingface.config_from_hf(tmp_path)
  assert again == model.config
  reloaded = huggingface.load_hf_params(tmp_path, again)
  for path, value in tree.flatten_params(model.params).items():
    np.testing.assert_array_equal(tree.flatten_params(reloaded)[path], np.asarray(value),
                                  err_msg=path)


@pytest.mark.slow
def test_strings_in_text_out():
  model = prompt_tuning.load_model(checkpoint=BART)
  tokens = model.encode_inputs(["the city market", "news"])
  vocab = model.vocabulary
  assert tokens[1].tolist() == [0] + list(vocab.encode("news")) + [2] + [1] * (
      tokens.shape[1] - 2 - len(vocab.encode("news")))
  generated = model.generate(["the city market", "news"], 4)
  np.testing.assert_array_equal(generated, model.generate(tokens, 4))
  assert all(isinstance(text, str) for text in model.decode(generated))
