"""PEFT 0.21 parity on tiny Llama, Qwen2 (GQA), GPT-2 (learned positions) and BLOOM (ALiBi)
checkpoints, through `load_model`'s public API.

Golden files: tests/fixtures/peft_{llama,qwen2,gpt2,bloom}_tiny/*.npz from
tools/make_llm_golden.py; the frozen bases are tests/fixtures/hf_{...}_tiny. PEFT places prompts
before all tokens (positions 0..P-1, tokens from P) and hands prefix keys/values to every layer as
a P-long past (never rotated, no position embedding; ALiBi biases them as positions 0..P-1;
tokens from position P): our defaults for every LLM family.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peft_weights

import prompt_tuning
from prompt_tuning.checkpoints import tree

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
ATOL = 1e-4
P = 5
BASES = ("llama", "qwen2", "gpt2", "bloom")
# P-tuning encoders and the prefix projection run the same way on every family: on GPT-2 and
# BLOOM they are `slow` (the CI budget); prompt tuning and plain prefixes are checked by default.
FAMILY_AGNOSTIC_SLOW = ("gpt2", "bloom")


def _bases_agnostic():
  return [pytest.param(b, marks=pytest.mark.slow) if b in FAMILY_AGNOSTIC_SLOW else b
          for b in BASES]


def _golden(base: str, method: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / f"peft_{base}_tiny" / f"{method}.npz") as data:
    return dict(data)


def _load(base: str, gin_file: str, *bindings: str) -> prompt_tuning.api.LoadedModel:
  return prompt_tuning.load_model([gin_file], list(bindings),
                                  checkpoint=FIXTURES / f"hf_{base}_tiny")


def _peft_loss(logits_BTV: jax.Array, labels_BT: np.ndarray) -> jax.Array:
  """transformers' causal-LM loss: position t predicts label t + 1; mean over labels != -100."""
  labels = jnp.asarray(labels_BT[:, 1:])
  real = labels != -100
  log_probs = jax.nn.log_softmax(logits_BTV[:, :-1].astype(jnp.float32))
  nll = -jnp.take_along_axis(log_probs, jnp.where(real, labels, 0)[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * real) / jnp.sum(real)


def _assert_logits(logits, g):
  real = g["attention_mask"].astype(bool)
  np.testing.assert_allclose(np.asarray(logits)[real], g["logits"][real], atol=ATOL)


def test_goldens_record_peft_0_21_and_tokens_after_the_prompt():
  for base in BASES:
    g = _golden(base, "prompt_tuning")
    assert str(g["peft_version"]).startswith("0.21.") and int(g["token_positions_start"]) == P


@pytest.mark.parametrize("base", BASES)
def test_prompt_tuning_logits_loss_and_prompt_gradient(base):
  g = _golden(base, "prompt_tuning")
  model = _load(base, "architectures/prompt_tuning.gin", f"PROMPT_LENGTH={P}")
  _assert_logits(model.logits(g["input_ids"], attention_mask=g["attention_mask"],
                              prompt=g["prompt"]), g)
  path = prompt_tuning.api.prompt_param_path(model.params)
  flat = tree.flatten_params(model.params)
  tokens, mask = jnp.asarray(g["input_ids"]), jnp.asarray(g["attention_mask"])

  def loss_fn(prompt_PD):
    params = tree.unflatten_params({**flat, path: prompt_PD})
    logits = model.module.apply({"params": params}, tokens, decoder_attention_mask=mask)
    return _peft_loss(logits, g["labels"])

  loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(g["prompt"]))
  np.testing.assert_allclose(loss, g["loss"], atol=ATOL)
  assert np.abs(g["prompt_grad"]).max() > 1e-3
  np.testing.assert_allclose(grad, g["prompt_grad"], atol=ATOL)


def _linear(g, name):
  return peft_weights.linear(lambda n: g[f"encoder_weights/{n}"], name)


def _p_tuning_params(g, kind):
  return peft_weights.p_tuning_params(lambda name: g[f"encoder_weights/{name}"], kind)


@pytest.mark.parametrize("base", _bases_agnostic())
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_p_tuning_logits_and_loss(base, kind):
  g = _golden(base, "p_tuning" if kind == "mlp" else "p_tuning_lstm")
  model = _load(base, "architectures/p_tuning.gin", f"PROMPT_LENGTH={P}",
                "P_TUNING_HIDDEN_DIM=24", f"P_TUNING_REPARAMETERIZATION='{kind}'")
  params = dict(model.params)
  params["decoder"] = dict(params["decoder"], prompt={"prompt": _p_tuning_params(g, kind)})
  logits = model.module.apply({"params": params}, jnp.asarray(g["input_ids"]),
                              decoder_attention_mask=jnp.asarray(g["attention_mask"]))
  _assert_logits(logits, g)
  np.testing.assert_allclose(_peft_loss(logits, g["labels"]), g["loss"], atol=ATOL)
  # The exported [P, D] prompt gives the same logits as a plain prompt.
  plain = _load(base, "architectures/prompt_tuning.gin", f"PROMPT_LENGTH={P}")
  _assert_logits(plain.logits(g["input_ids"], attention_mask=g["attention_mask"],
                              prompt=g["prompt"]), g)


def _prefix_params(g, projection):
  layers, kv_heads, head_dim = (int(g[k]) for k in ("prefix_num_layers", "prefix_kv_heads",
                                                    "prefix_head_dim"))
  if not projection:
    # PEFT's embedding [P, L * 2 * KV * H] is our key_value [P, L, 2, KV, H] reshaped.
    return {"key_value": g["encoder_weights/embedding.weight"].reshape(P, layers, 2, kv_heads,
                                                                       head_dim)}
  return {"embedding": g["encoder_weights/embedding.weight"],
          "transform_0": _linear(g, "transform.0"), "transform_1": _linear(g, "transform.2")}


@pytest.mark.parametrize(
    "base, projection",
    [pytest.param(b, False, id=f"plain-{b}") for b in BASES]
    + [pytest.param(b, True, id=f"proj-{b}",
                    marks=[pytest.mark.slow] if b in FAMILY_AGNOSTIC_SLOW else []) for b in BASES])
def test_prefix_tuning_logits_and_loss(base, projection):
  g = _golden(base, "prefix_tuning_projection" if projection else "prefix_tuning")
  model = _load(base, "architectures/prefix_tuning.gin", f"PREFIX_LENGTH={P}",
                f"PREFIX_PROJECTION={projection}", "PREFIX_HIDDEN_DIM=24")
  params = dict(model.params)
  params["decoder"] = dict(params["decoder"],
                           prefix={"self_attention": _prefix_params(g, projection)})
  logits = model.module.apply({"params": params}, jnp.asarray(g["input_ids"]),
                              decoder_attention_mask=jnp.asarray(g["attention_mask"]))
  _assert_logits(logits, g)
  np.testing.assert_allclose(_peft_loss(logits, g["labels"]), g["loss"], atol=ATOL)
  exported = prompt_tuning.methods.prefix_tuning.export_prefixes(params, model.config)[
      "decoder/prefix/self_attention/key_value"]  # [P, L, 2, KV, H]
  np.testing.assert_allclose(exported[:, :, 0].transpose(1, 0, 2, 3),
                             g["received_keys"][:, 0].transpose(0, 2, 1, 3), atol=ATOL)
