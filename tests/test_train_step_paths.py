"""The training step's memory-saving code paths compute what the plain formulas compute.

- `softmax_last` (attention softmax keeping only its output for the backward pass) has the
  values and gradients of `jax.nn.softmax`;
- attention-weight dropout applied to the values equals dropout of the weights (same mask);
- the rematerialised gated MLP activation has the plain formula's gradients;
- the prompt-only step differentiates no frozen weight (no weight-shaped gradient matmul).
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import api, prompts
from prompt_tuning.models import T5Config
from prompt_tuning.models.attention import MultiHeadAttention, softmax_last
from prompt_tuning.models.layers import MlpBlock
from prompt_tuning.train import models, optim


def test_softmax_last_values_and_gradient_equal_jax_softmax():
  logits_BNTS = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 7)) * 3.0
  logits_BNTS = logits_BNTS.at[:, :, :, -2:].set(-1e10)  # masked keys, as the attention bias
  cotangent_BNTS = jax.random.normal(jax.random.PRNGKey(1), logits_BNTS.shape)

  def loss(softmax, x):
    return jnp.sum(softmax(x) * cotangent_BNTS)

  expected = jax.nn.softmax(logits_BNTS, axis=-1)
  np.testing.assert_allclose(softmax_last(logits_BNTS), expected, rtol=0, atol=0)
  grad = jax.grad(lambda x: loss(softmax_last, x))(logits_BNTS)
  expected_grad = jax.grad(lambda x: loss(lambda y: jax.nn.softmax(y, axis=-1), x))(logits_BNTS)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(grad[..., -2:]).max()) == 0.0


class _WeightsDropoutAttention(MultiHeadAttention):
  """The textbook formulation: dropout on the [B, N, T, S] weights (same submodule names)."""

  def __call__(self, inputs_q_BTD, inputs_kv_BSD, bias_BNTS, *, deterministic=True, **unused):
    query_BTNH = self._split_heads(self.query(inputs_q_BTD))
    key_BSNH, value_BSNH = self.project_kv(inputs_kv_BSD)
    logits_BNTS = jnp.einsum("btnh,bsnh->bnts", query_BTNH, key_BSNH) + bias_BNTS
    weights_BNTS = self.weights_dropout(jax.nn.softmax(logits_BNTS, axis=-1),
                                        deterministic=deterministic)
    context_BTNH = jnp.einsum("bnts,bsnh->btnh", weights_BNTS, value_BSNH)
    return self.out(context_BTNH.reshape(context_BTNH.shape[:2] + (-1,))), None


def test_attention_dropout_on_values_equals_dropout_on_weights():
  shape = dict(num_heads=2, head_dim=4, out_features=6, dropout_rate=0.4)
  x_BTD = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 6))
  bias_BNTS = jnp.where(jnp.arange(5)[None, None, None, :] < 4, 0.0, -1e10) * jnp.ones((3, 1, 5, 1))
  params = nn.unbox(
      MultiHeadAttention(**shape).init(jax.random.PRNGKey(1), x_BTD, x_BTD, bias_BNTS))
  rngs = {"dropout": jax.random.PRNGKey(7)}

  def run(module, params):
    return module.apply(params, x_BTD, x_BTD, bias_BNTS, deterministic=False, rngs=rngs)[0]

  ours, reference = run(MultiHeadAttention(**shape), params), run(
      _WeightsDropoutAttention(**shape), params)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
  # Dropout really is on: a different key changes the output.
  other = MultiHeadAttention(**shape).apply(params, x_BTD, x_BTD, bias_BNTS, deterministic=False,
                                            rngs={"dropout": jax.random.PRNGKey(8)})[0]
  assert float(jnp.abs(other - ours).max()) > 1e-3
  # The input gradients agree too (the backward pass of the value-side formulation).
  grads = [jax.grad(lambda x, m=m: jnp.sum(jnp.sin(
      m.apply(params, x, x, bias_BNTS, deterministic=False, rngs=rngs)[0])))(x_BTD)
           for m in (MultiHeadAttention(**shape), _WeightsDropoutAttention(**shape))]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_gated_mlp_gradients_equal_the_plain_formula():
  x_BTD = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8))
  mlp = MlpBlock(intermediate_dim=16, activations=("gelu", "linear"))
  params = nn.unbox(mlp.init(jax.random.PRNGKey(1), x_BTD))
  kernels = params["params"]

  def plain(x_BTD):
    hidden = nn.gelu(x_BTD @ kernels["wi_0"]["kernel"], approximate=True) * (
        x_BTD @ kernels["wi_1"]["kernel"])
    return hidden @ kernels["wo"]["kernel"]

  np.testing.assert_allclose(mlp.apply(params, x_BTD), plain(x_BTD), rtol=1e-6, atol=1e-6)
  ours = jax.grad(lambda x: jnp.sum(jnp.cos(mlp.apply(params, x))))(x_BTD)
  expected = jax.grad(lambda x: jnp.sum(jnp.cos(plain(x))))(x_BTD)
  np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def test_prompt_only_gradient_has_no_weight_shaped_matmul():
  # Distinct sizes, so a weight-shaped [in, out] matmul result is recognisable in the program.
  config = T5Config(vocab_size=97, emb_dim=24, num_heads=2, head_dim=5, mlp_dim=36,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.1)
  module = api.build_any_model(config, prompts.PromptConfig(length=3,
                                                            initializer=prompts.uniform(0.5)))
  params = api.param_shapes(module, config)
  batch = {"encoder_input_tokens": jnp.ones((2, 7), jnp.int32),
           "decoder_input_tokens": jnp.ones((2, 4), jnp.int32),
           "decoder_target_tokens": jnp.ones((2, 4), jnp.int32),
           "decoder_loss_weights": jnp.ones((2, 4), jnp.float32)}

  def grad_program(regex: str) -> str:
    trainable, frozen = optim.split_params(params, regex)

    def loss(trainable, frozen):
      merged = optim.merge_params(trainable, frozen)
      return models.loss_terms(module, merged, batch, models.LossConfig(),
                               dropout_rng=jax.random.PRNGKey(0)).loss

    return jax.jit(jax.grad(loss)).lower(trainable, frozen).as_text()

  kernel_shapes = {"24x10", "10x24", "24x36", "36x24", "24x97"}

  def weight_shaped_dots(program: str) -> int:
    results = re.findall(r"stablehlo\.dot_general.*-> tensor<(\d+x\d+)xf32>", program)
    return sum(result in kernel_shapes for result in results)

  assert weight_shaped_dots(grad_program(optim.DEFAULT_TRAINABLE_REGEX)) == 0
  # The check can see such matmuls: full fine-tuning has one per kernel use.
  assert weight_shaped_dots(grad_program(".*")) >= 2 * (4 + 3) + 2 * (8 + 3)
