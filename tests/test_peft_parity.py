"""Parity with Hugging Face PEFT 0.21 on the tiny T5 1.1 fixture (no torch needed here).

Golden files: tests/fixtures/peft_{prompt_tuning,p_tuning,prefix_tuning}/golden.npz, made by
tools/make_peft_golden.py; the frozen base is tests/fixtures/hf_t5_1_1_tiny.

Where PEFT and we differ by design (documented, not compared):
  - Prefix tuning on T5: PEFT passes the prefix as `past_key_values`, which reach only the
    decoder's self-attention (PEFT resets the cross-attention cache, and the encoder gets no
    prefix). Our encoder-decoder prefix tuning also prefixes encoder self-attention and
    decoder cross-attention (added to the encoder keys, never replacing them); parity is
    checked with those two switched off (`encoder=False, decoder_cross=False`).
  - Hugging Face T5 scores `past_key_values` prefix keys with the relative position bias as if
    they were positions 0..P-1; our default ("zero") gives prefix keys no position bias. Parity
    uses `position_bias="shifted"`, the Hugging Face semantics.
  - Decoder-only: HF has no class for a T5 decoder without cross-attention; the tool wraps HF's
    T5 with every cross-attention output kernel zeroed (the same function as our `DecoderOnly`)
    in PEFT's `PeftModelForCausalLM`. PEFT's causal-LM loss includes the last prompt position
    predicting the first token; our `PromptDecoderOnly` returns logits for the input positions
    only (T5X's decoder-only layout), so decoder-only prompt tuning compares logits, and the
    loss / gradient are compared on the encoder-decoder.
  - PEFT seq2seq prefix tuning hands decoder layer l the prefix of its view's layer
    (2 l) mod L (a side effect of splitting the duplicated [self; cross] view in groups of 4);
    ours is per layer, so T5 logits are compared with the prefixes each layer receives.
  - Seq2seq PEFT allocates P prompt rows per transformer submodule (2P for T5) but only the
    first P reach the model; those are the prompt.
Comparisons use positions whose target / token is real (PEFT masks padding from the inputs,
T5X from the targets; at real positions both see the same keys).
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peft_weights

from prompt_tuning import prompts
from prompt_tuning.checkpoints import huggingface as hf
from prompt_tuning.layers import PromptDecoderOnly, PromptEncoderDecoder
from prompt_tuning.methods import p_tuning, prefix_tuning
from prompt_tuning.models.t5 import EncoderDecoder

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
BASE = FIXTURES / "hf_t5_1_1_tiny"
P = 4
ATOL = 1e-4


def _golden(name: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / name / "golden.npz") as data:
    return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def base():
  """(encoder-decoder config, frozen encoder-decoder params) of the tiny HF T5 1.1."""
  return hf.config_from_hf(BASE), hf.load_hf_t5_params(BASE)


def _decoder_only(config, params):
  """The fixture's decoder as our DecoderOnly (cross-attention dropped) -> (config, params)."""
  decoder = {}
  for name, value in params["decoder"].items():
    if name.startswith("layers_"):
      value = {k: v for k, v in value.items()
               if k not in ("encoder_decoder_attention", "pre_cross_attention_layer_norm")}
    decoder[name] = value
  decoder["token_embedder"] = params["token_embedder"]
  return config.replace(architecture="decoder_only"), {"decoder": decoder}


def _with(params, stack: str, name: str, subtree):
  """params with params[stack][name] = subtree (frozen leaves shared, not copied)."""
  return {**params, stack: {**params[stack], name: subtree}}


def test_golden_files_record_peft_0_21():
  for name in ("peft_prompt_tuning", "peft_p_tuning", "peft_prefix_tuning"):
    assert str(_golden(name)["peft_version"]).startswith("0.21.")


# --- prompt tuning ---------------------------------------------------------------------------


def test_prompt_tuning_t5_logits_loss_and_prompt_gradient(base):
  config, frozen = base
  g = _golden("peft_prompt_tuning")
  assert int(g["enc_num_transformer_submodules"]) == 2
  model = PromptEncoderDecoder(config, prompt_method=prompts.Prompt(length=P))
  targets = jnp.asarray(g["enc_decoder_target_tokens"])
  real = np.asarray(targets > 0)

  def logits_and_loss(prompt_PD):
    params = _with(frozen, "encoder", "prompt", {"prompt": {"prompt": prompt_PD}})
    logits = model.apply({"params": params}, jnp.asarray(g["enc_encoder_input_tokens"]),
                         jnp.asarray(g["enc_decoder_input_tokens"]), targets)
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * real) / real.sum(), logits

  (loss, logits), grad = jax.value_and_grad(logits_and_loss, has_aux=True)(
      jnp.asarray(g["enc_prompt"]))
  np.testing.assert_allclose(np.asarray(logits)[real], g["enc_logits"][real], atol=ATOL)
  np.testing.assert_allclose(loss, g["enc_loss"], atol=ATOL)
  assert np.abs(g["enc_prompt_grad"]).max() > 1e-3
  np.testing.assert_allclose(grad, g["enc_prompt_grad"], atol=ATOL)


def test_prompt_tuning_decoder_only_logits(base):
  config, params = _decoder_only(*base)
  g = _golden("peft_prompt_tuning")
  model = PromptDecoderOnly(config, prompt_method=prompts.Prompt(length=P))
  params = _with(params, "decoder", "prompt", {"prompt": {"prompt": jnp.asarray(g["lm_prompt"])}})
  tokens = jnp.asarray(g["lm_tokens"])
  logits = model.apply({"params": params}, tokens)  # [B, T, V]: input positions only.
  real = g["lm_tokens"] > 0
  np.testing.assert_allclose(np.asarray(logits)[real], g["lm_logits"][:, P:][real], atol=ATOL)


# --- P-tuning --------------------------------------------------------------------------------


def _linear(g, prefix):
  return peft_weights.linear(lambda name: g[name], prefix)


def _p_tuning_params(g, kind):
  return peft_weights.p_tuning_params(lambda name: g[f"{kind}/{name}"], kind)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_p_tuning_encoder_output(kind):
  g = _golden("peft_p_tuning")
  params = _p_tuning_params(g, kind)
  encoder = p_tuning.PTuningPromptEncoder(length=P, hidden_dim=12, reparameterization=kind)
  # Our module's tree has exactly PEFT's weights (nothing missing, nothing extra).
  expected = nn.meta.unbox(encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32),
                                        jnp.zeros((1, 1, 16)))["params"])
  assert jax.tree_util.tree_map(np.shape, expected) == jax.tree_util.tree_map(np.shape, params)
  prompt_BPD = encoder.apply({"params": params}, jnp.zeros((2, 3), jnp.int32),
                             jnp.zeros((2, 3, 16)))
  np.testing.assert_allclose(prompt_BPD[1], g[f"{kind}_output"], atol=ATOL)
  np.testing.assert_allclose(p_tuning.export_prompt(params), g[f"{kind}_output"], atol=ATOL)


# --- prefix tuning ---------------------------------------------------------------------------


def _prefix_params(g, key, projection):
  if not projection:
    # PEFT's embedding [P, L * 2 * N * H] is our key_value [P, L, 2, N, H] reshaped.
    return {"key_value": g[f"{key}/embedding.weight"].reshape(P, 3, 2, 2, 8)}
  return {"embedding": g[f"{key}/embedding.weight"],
          "transform_0": _linear(g, f"{key}/transform.0"),
          "transform_1": _linear(g, f"{key}/transform.2")}


PEFT_LIKE = prefix_tuning.PrefixConfig(length=P, encoder=False, decoder_self=True,
                                       decoder_cross=False, hidden_dim=12,
                                       position_bias="shifted")


def _received_key_value(g, key):
  """key_value [P, L, 2, N, H] holding the prefixes PEFT hands each decoder layer."""
  return np.stack([g[f"{key}_key_LPNH"], g[f"{key}_value_LPNH"]], axis=2).transpose(1, 0, 2, 3, 4)


def _check_export(params, config, g, key, view):
  """Our exported prefixes of PEFT's weights equal PEFT's per-layer keys/values."""
  exported = prefix_tuning.export_prefixes(params, config)[
      "decoder/prefix/self_attention/key_value"]
  np.testing.assert_allclose(exported[:, :, 0].transpose(1, 0, 2, 3), g[f"{key}{view}_key_LPNH"],
                             atol=ATOL)
  np.testing.assert_allclose(exported[:, :, 1].transpose(1, 0, 2, 3),
                             g[f"{key}{view}_value_LPNH"], atol=ATOL)


@pytest.mark.parametrize("projection", [False, True], ids=["plain", "proj"])
def test_prefix_tuning_t5_decoder_self_attention(base, projection):
  """PEFT seq2seq hands decoder layer l its view's layer (2 l) mod L (here 0, 2, 1): its split
  of the duplicated [self; cross] view is not per layer. Our reparameterization reproduces the
  view; the logits are compared with the prefixes each layer actually receives."""
  config, frozen = base
  g = _golden("peft_prefix_tuning")
  key = f"enc_{'proj' if projection else 'plain'}"
  np.testing.assert_array_equal(g[f"{key}_key_LPNH"], g[f"{key}_view_key_LPNH"][[0, 2, 1]])
  ours = _with(frozen, "decoder", "prefix",
               {"self_attention": _prefix_params(g, key, projection)})
  _check_export(ours, config, g, key, "_view")
  model = prefix_tuning.PrefixTuningEncoderDecoder(config, PEFT_LIKE)
  params = _with(frozen, "decoder", "prefix",
                 {"self_attention": {"key_value": _received_key_value(g, key)}})
  targets = jnp.asarray(g["enc_decoder_target_tokens"])
  logits = model.apply({"params": params}, jnp.asarray(g["enc_encoder_input_tokens"]),
                       jnp.asarray(g["enc_decoder_input_tokens"]), targets)
  real = g["enc_decoder_target_tokens"] > 0
  np.testing.assert_allclose(np.asarray(logits)[real], g[f"{key}_logits"][real], atol=ATOL)
  plain = _base_logits(config, frozen, g)
  assert np.abs(plain[real] - g[f"{key}_logits"][real]).max() > 1e-2  # The prefix matters.


def _base_logits(config, frozen, g) -> np.ndarray:
  """Logits [B, S, V] of the frozen T5 without any prompt method."""
  return np.asarray(EncoderDecoder(config).apply(
      {"params": frozen}, jnp.asarray(g["enc_encoder_input_tokens"]),
      jnp.asarray(g["enc_decoder_input_tokens"]), jnp.asarray(g["enc_decoder_target_tokens"])))


@pytest.mark.parametrize("projection", [False, True], ids=["plain", "proj"])
def test_prefix_tuning_decoder_only(base, projection):
  config, frozen = _decoder_only(*base)
  g = _golden("peft_prefix_tuning")
  key = f"lm_{'proj' if projection else 'plain'}"
  model = prefix_tuning.PrefixTuningDecoderOnly(config, PEFT_LIKE.replace(projection=projection))
  params = _with(frozen, "decoder", "prefix",
                 {"self_attention": _prefix_params(g, key, projection)})
  _check_export(params, config, g, key, "")  # Causal LM: layer l receives the view's layer l.
  logits = model.apply({"params": params}, jnp.asarray(g["lm_tokens"]))
  real = g["lm_tokens"] > 0
  np.testing.assert_allclose(np.asarray(logits)[real], g[f"{key}_logits"][real], atol=ATOL)
