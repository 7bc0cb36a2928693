"""The chunked loss (`LossConfig.logits_chunk_size`) equals the plain one and holds no [B, S, V].

- `chunked_weighted_cross_entropy` on a linear projection: same loss terms and gradients (with
  respect to the hidden states and the projection) as `weighted_cross_entropy`;
- every model the trainer builds (T5 1.1 and decoder-only with prompt tuning; marked slow:
  tied-embedding T5 1.0, deep prompts, prefix tuning) returns hidden states whose
  `project_hidden` is its logits, and `loss_terms` with a chunk size that does not divide S
  gives the same terms and trainable gradients, dropout on, z-loss, label smoothing and a
  normalizing factor set;
- the compiled gradient of the chunked loss needs far less temporary memory (XLA's
  `memory_analysis`): at least half of the [B, S, V] float32 logits less.
"""

from __future__ import annotations

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import api, gin_utils, prompts
from prompt_tuning.methods import deep_prompts, prefix_tuning
from prompt_tuning.models import T5Config
from prompt_tuning.train import losses, models, optim

# The layer shape of configs/test/t5_1_1_tiny.gin (vocabulary 32128) with one layer per stack
# (compiles faster; the loss sees only the last hidden states), dropout on.
TINY = T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=1,
                num_decoder_layers=1, relpos_num_buckets=4, relpos_max_distance=8,
                dropout_rate=0.1)
LOSS_OPTIONS = dict(z_loss=1e-3, label_smoothing=0.1, loss_normalizing_factor=3.5)


def _batch(config: T5Config, batch: int, inputs: int, targets: int) -> dict[str, jax.Array]:
  """A seqio-like batch with padded targets (last positions weight 0) and padded inputs."""
  rng = np.random.default_rng(0)
  targets_BS = rng.integers(2, config.vocab_size, (batch, targets)).astype(np.int32)
  targets_BS[0, targets - 2:] = 0
  targets_BS[-1, targets - 1:] = 0
  decoder_inputs_BS = np.concatenate([np.zeros((batch, 1), np.int32), targets_BS[:, :-1]], 1)
  out = {"decoder_input_tokens": decoder_inputs_BS, "decoder_target_tokens": targets_BS,
         "decoder_loss_weights": (targets_BS > 0).astype(np.float32)}
  if config.architecture == "decoder_only":
    causal_BS = np.zeros((batch, targets), np.int32)
    causal_BS[:, :3] = 1  # Two input tokens plus the shifted position (seqio's prefix LM).
    out["decoder_causal_attention"] = causal_BS
    out["decoder_loss_weights"][:, :2] = 0.0  # No loss on the inputs.
  else:
    encoder_BT = rng.integers(2, config.vocab_size, (batch, inputs)).astype(np.int32)
    encoder_BT[0, inputs - 3:] = 0
    out["encoder_input_tokens"] = encoder_BT
  return {name: jnp.asarray(value) for name, value in out.items()}


# ----------------------------------------------------------------------------------------------
# The loss function alone.


@pytest.mark.parametrize("chunk_size", [3, 7, 64])  # 7 = S: one chunk; 64 > S: clamped to S.
def test_chunked_cross_entropy_equals_the_plain_loss_and_gradients(chunk_size):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  hidden_BSD = jax.random.normal(keys[0], (2, 7, 5))
  kernel_DV = jax.random.normal(keys[1], (5, 11)) * 2.0
  targets_BS = jax.random.randint(keys[2], (2, 7), 0, 11)
  weights_BS = jnp.ones((2, 7)).at[0, 5:].set(0.0).at[1, 2].set(0.5)

  def plain(hidden_BSD, kernel_DV):
    return losses.weighted_cross_entropy(hidden_BSD @ kernel_DV, targets_BS, weights_BS,
                                         **LOSS_OPTIONS)

  def chunked(hidden_BSD, kernel_DV):
    return losses.chunked_weighted_cross_entropy(
        hidden_BSD, lambda h_BCD: h_BCD @ kernel_DV, targets_BS, weights_BS,
        chunk_size=chunk_size, **LOSS_OPTIONS)

  expected, ours = plain(hidden_BSD, kernel_DV), chunked(hidden_BSD, kernel_DV)
  for name in losses.LossTerms._fields:
    np.testing.assert_allclose(getattr(ours, name), getattr(expected, name), rtol=1e-6,
                               err_msg=name)
  assert float(expected.weight_sum) == 11.5
  assert float(expected.loss) > 1.0 and float(expected.z_loss) > 0.0

  def grads(fn):
    return jax.grad(lambda h, k: fn(h, k).loss, argnums=(0, 1))(hidden_BSD, kernel_DV)

  for ours_grad, expected_grad in zip(grads(jax.jit(chunked)), grads(plain)):
    np.testing.assert_allclose(ours_grad, expected_grad, rtol=1e-5, atol=1e-7)
  # Weight-0 positions (including padding added for the chunks) get no gradient.
  assert float(jnp.abs(grads(chunked)[0][0, 5:]).max()) == 0.0


def test_chunk_size_errors_say_what_to_use():
  with pytest.raises(ValueError, match="positive integer"):
    losses.chunked_weighted_cross_entropy(jnp.zeros((1, 2, 3)), lambda h: h, jnp.zeros((1, 2), int),
                                          jnp.ones((1, 2)), chunk_size=0)
  with pytest.raises(ValueError, match="logits_chunk_size=-4"):
    models.LossConfig(logits_chunk_size=-4)
  with pytest.raises(ValueError, match="positive integer"):
    models.LossConfig(logits_chunk_size=2.5)
  assert models.LossConfig(logits_chunk_size=0).logits_chunk_size == 0


# ----------------------------------------------------------------------------------------------
# Every model the trainer builds.

PROMPT = prompts.PromptConfig(length=3, initializer=prompts.uniform(0.5))
DECODER_ONLY = TINY.replace(architecture="decoder_only", num_encoder_layers=0)
MODELS = {
    "t5_1_1_prompt": (TINY, PROMPT),
    "t5_1_0_prompt": (TINY.replace(mlp_activations=("relu",), logits_via_embedding=True), PROMPT),
    "decoder_only_prompt": (DECODER_ONLY, PROMPT),
    # Tied logits and the other methods' model classes (marked slow: one compile each).
    "decoder_only_deep_prompt": (DECODER_ONLY.replace(num_decoder_layers=2),  # a deep layer
                                 deep_prompts.DeepPromptConfig(length=2)),
    "t5_1_1_prefix": (TINY, prefix_tuning.PrefixConfig(length=2)),
    "decoder_only_prefix": (DECODER_ONLY, prefix_tuning.PrefixConfig(length=2)),
}
SLOW_MODELS = ("t5_1_0_prompt", "decoder_only_deep_prompt", "t5_1_1_prefix",
               "decoder_only_prefix")


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name
    for name in MODELS])
def test_chunked_loss_terms_and_trainable_gradients_equal_the_plain_path(name):
  config, method_config = MODELS[name]
  module = api.build_any_model(config, method_config)
  params = _random_params(api.param_shapes(module, config))
  batch = _batch(config, batch=3, inputs=6, targets=7)
  dropout_rng = jax.random.PRNGKey(5)
  trainable, frozen = optim.split_params(params, api.METHOD_PARAMS_REGEX)
  assert jax.tree_util.tree_leaves(trainable)

  def terms_and_grads(trainable, chunk_size):
    loss_config = models.LossConfig(logits_chunk_size=chunk_size, **LOSS_OPTIONS)

    def loss_fn(trainable):
      terms = models.loss_terms(module, optim.merge_params(trainable, frozen), batch,
                                loss_config, dropout_rng=dropout_rng)
      return terms.loss, terms

    grads, terms = jax.grad(loss_fn, has_aux=True)(trainable)
    return terms, grads

  @jax.jit
  def run(params, trainable):  # One compilation for everything compared.
    logits_BSV = models.logits(module, params, batch, dropout_rng=dropout_rng)
    hidden_BSD = models.hidden_states(module, params, batch, dropout_rng=dropout_rng)
    projected_BSV = models.project_fn(module, params)(hidden_BSD)
    # 7 target positions: chunks of 3, 3, 1 (+ 2 padding).
    return (logits_BSV, hidden_BSD, projected_BSV, terms_and_grads(trainable, None),
            terms_and_grads(trainable, 3))

  logits_BSV, hidden_BSD, projected_BSV, expected, ours = run(params, trainable)
  # The model's hidden states, projected, are its logits (dropout on: same masks).
  assert hidden_BSD.shape == logits_BSV.shape[:2] + (config.emb_dim,)
  assert logits_BSV.shape[-1] == config.vocab_size
  np.testing.assert_allclose(projected_BSV, logits_BSV, rtol=1e-6, atol=1e-6)

  (expected_terms, expected_grads), (terms, grads) = expected, ours
  for field in losses.LossTerms._fields:
    np.testing.assert_allclose(getattr(terms, field), getattr(expected_terms, field), rtol=1e-5,
                               err_msg=field)
  assert float(expected_terms.weight_sum) == float(jnp.sum(batch["decoder_loss_weights"]))
  assert float(expected_terms.loss) > 1.0
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    expected_grad = _leaf(expected_grads, path)
    assert float(jnp.abs(expected_grad).max()) > 0.0, jax.tree_util.keystr(path)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6 * float(
        jnp.abs(expected_grad).max()), err_msg=jax.tree_util.keystr(path))


def _random_params(shapes) -> dict:
  """Normal(0, 0.5) parameters of the given shapes (no compiled initialiser: faster)."""
  rng = np.random.default_rng(1)
  return jax.tree_util.tree_map(
      lambda leaf: jnp.asarray(rng.normal(0.0, 0.5, leaf.shape).astype(np.float32)), shapes)


def _leaf(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


# ----------------------------------------------------------------------------------------------
# Memory of the compiled gradient.


def _gradient_temp_bytes(module, params_shapes, batch, chunk_size) -> int:
  trainable, frozen = optim.split_params(params_shapes, optim.DEFAULT_TRAINABLE_REGEX)
  loss_config = models.LossConfig(logits_chunk_size=chunk_size)

  def loss(trainable, frozen, batch):
    merged = optim.merge_params(trainable, frozen)
    return models.loss_terms(module, merged, batch, loss_config,
                             dropout_rng=jax.random.PRNGKey(0)).loss

  compiled = jax.jit(jax.grad(loss)).lower(trainable, frozen, batch).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_gradient_holds_no_full_logits_buffer():
  config = TINY  # Vocabulary 32128: the logits dominate everything else.
  module = api.build_any_model(config, prompts.PromptConfig(length=3,
                                                            initializer=prompts.uniform(0.5)))
  params = api.param_shapes(module, config)
  batch_size, length = 4, 64
  batch = jax.eval_shape(lambda: _batch(config, batch_size, 16, length))
  logits_bytes = batch_size * length * config.vocab_size * 4  # 31.4 MiB
  plain = _gradient_temp_bytes(module, params, batch, None)
  chunked = _gradient_temp_bytes(module, params, batch, 8)
  # Measured on CPU (jax 0.10.2): plain 62.9 MiB (two [B, S, V] float32 buffers), chunked 8.0 MiB.
  assert plain >= 1.5 * logits_bytes, (plain, logits_bytes)
  assert plain - chunked >= 0.5 * logits_bytes, (plain, chunked, logits_bytes)
  assert chunked < 0.5 * logits_bytes, (chunked, logits_bytes)


# ----------------------------------------------------------------------------------------------
# Gin.


def test_loss_chunk_size_macro_reaches_the_loss_config():
  stack = ["models/t5_1_1_base_prompt.gin", "runs/prompt_finetune.gin"]
  bindings = ["MODEL_DIR='/tmp/unused'", "MIXTURE_OR_TASK_NAME='unused'",
              "TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", "TRAIN_STEPS=1",
              "INITIAL_CHECKPOINT_PATH='/tmp/unused'"]
  try:
    gin_utils.parse_gin_config(stack, bindings)
    assert gin_utils.call_configured(models.LossConfig).logits_chunk_size is None
    gin_utils.parse_gin_config(stack, bindings + ["LOSS_CHUNK_SIZE=128"])
    assert gin_utils.call_configured(models.LossConfig) == models.LossConfig(
        z_loss=1e-4, logits_chunk_size=128)
  finally:
    gin.clear_config()
