"""P-tuning prompt encoder: shapes, MLP / biLSTM outputs against numpy, export, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.methods import p_tuning

TOKENS_BT = jnp.ones((2, 5), jnp.int32)
EMBEDDED_BTD = jnp.zeros((2, 5, 6), jnp.float32)


def _init(encoder: p_tuning.PTuningPromptEncoder, seed: int = 0) -> dict:
  return nn.unbox(encoder.init(jax.random.PRNGKey(seed), TOKENS_BT, EMBEDDED_BTD)["params"])


def _np(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def _linear(p, x):
  return x @ p["kernel"] + p["bias"]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _lstm_direction(p, x_PI, reverse):
  """Textbook LSTM (torch's equations, gates i, f, g, o) with an explicit Python loop."""
  hidden = p["kernel_hidden"].shape[0]
  h, c = np.zeros(hidden), np.zeros(hidden)
  out = np.zeros((x_PI.shape[0], hidden))
  order = range(x_PI.shape[0] - 1, -1, -1) if reverse else range(x_PI.shape[0])
  for t in order:
    gates = x_PI[t] @ p["kernel_input"] + h @ p["kernel_hidden"] + p["bias"]
    i, f, g, o = np.split(gates, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    out[t] = h
  return out


def test_mlp_encoder_output_and_parameter_shapes():
  encoder = p_tuning.PTuningPromptEncoder(length=3, hidden_dim=4, reparameterization="mlp")
  params = _init(encoder)
  shapes = jax.tree_util.tree_map(np.shape, params)
  assert shapes == {"embedding": (3, 6),
                    "mlp_0": {"kernel": (6, 4), "bias": (4,)},
                    "mlp_1": {"kernel": (4, 4), "bias": (4,)},
                    "mlp_2": {"kernel": (4, 6), "bias": (6,)}}
  prompt = encoder.apply({"params": params}, TOKENS_BT, EMBEDDED_BTD.astype(jnp.bfloat16))
  assert prompt.shape == (2, 3, 6) and prompt.dtype == jnp.bfloat16
  p = _np(params)
  relu = lambda x: np.maximum(x, 0)
  want = _linear(p["mlp_2"], relu(_linear(p["mlp_1"], relu(_linear(p["mlp_0"], p["embedding"])))))
  got = encoder.apply({"params": params}, TOKENS_BT, EMBEDDED_BTD)
  np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[0], got[1])  # the same prompt for every example


def test_mlp_encoder_exact_on_hand_set_weights():
  # D = 2, hidden = 2, P = 2 with identity-like weights: each layer is checkable by hand.
  params = {
      "embedding": np.array([[1.0, -2.0], [0.5, 3.0]], np.float32),
      "mlp_0": {"kernel": np.eye(2, dtype=np.float32), "bias": np.array([0.0, 1.0], np.float32)},
      "mlp_1": {"kernel": np.array([[2.0, 0.0], [0.0, 1.0]], np.float32),
                "bias": np.zeros(2, np.float32)},
      "mlp_2": {"kernel": np.array([[1.0, 1.0], [0.0, -1.0]], np.float32),
                "bias": np.array([0.5, 0.0], np.float32)},
  }
  # Row 0: relu([1, -1]) = [1, 0] -> relu([2, 0]) = [2, 0] -> [2 + .5, 2 - 0] = [2.5, 2].
  # Row 1: relu([.5, 4]) = [.5, 4] -> relu([1, 4]) = [1, 4] -> [1 + .5, 1 - 4] = [1.5, -3].
  np.testing.assert_allclose(p_tuning.export_prompt(params), [[2.5, 2.0], [1.5, -3.0]])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_encoder_matches_numpy_bidirectional_lstm(num_layers):
  encoder = p_tuning.PTuningPromptEncoder(length=4, hidden_dim=3, reparameterization="lstm",
                                          num_lstm_layers=num_layers)
  params = _init(encoder, seed=num_layers)
  shapes = jax.tree_util.tree_map(np.shape, params)
  assert shapes["lstm_0_forward"] == {"kernel_input": (6, 12), "kernel_hidden": (3, 12),
                                      "bias": (12,)}
  assert shapes["mlp_0"] == {"kernel": (6, 6), "bias": (6,)}
  assert shapes["mlp_1"] == {"kernel": (6, 6), "bias": (6,)}
  assert sum(k.startswith("lstm_") for k in shapes) == 2 * num_layers
  p = _np(params)
  h = p["embedding"]
  for layer in range(num_layers):
    h = np.concatenate([_lstm_direction(p[f"lstm_{layer}_forward"], h, reverse=False),
                        _lstm_direction(p[f"lstm_{layer}_backward"], h, reverse=True)], -1)
  want = _linear(p["mlp_1"], np.maximum(_linear(p["mlp_0"], h), 0))
  got = encoder.apply({"params": params}, TOKENS_BT, EMBEDDED_BTD)
  assert got.shape == (2, 4, 6)
  np.testing.assert_allclose(got[1], want, rtol=1e-5, atol=1e-6)
  # Export needs no module: it reads the architecture from the parameter names and shapes.
  np.testing.assert_allclose(p_tuning.export_prompt(params), want, rtol=1e-5, atol=1e-6)


def test_lstm_backward_direction_sees_later_positions():
  encoder = p_tuning.PTuningPromptEncoder(length=3, hidden_dim=2, reparameterization="lstm",
                                          num_lstm_layers=1)
  params = _init(encoder, seed=3)
  base = p_tuning.export_prompt(params)
  changed = jax.tree_util.tree_map(np.asarray, params)
  changed["embedding"] = changed["embedding"].copy()
  changed["embedding"][2] += 1.0  # the last virtual token only
  moved = p_tuning.export_prompt(changed)
  assert np.abs(moved[0] - base[0]).max() > 1e-4  # row 0 depends on row 2 (backward pass)


def test_initialisation_follows_torch_defaults():
  encoder = p_tuning.PTuningPromptEncoder(length=64, hidden_dim=16, reparameterization="mlp")
  params = nn.unbox(encoder.init(jax.random.PRNGKey(0), TOKENS_BT,
                                 jnp.zeros((2, 5, 32), jnp.float32))["params"])
  # Linear: U(+-1/sqrt(fan_in)); Embedding: N(0, 1).
  assert np.abs(params["mlp_0"]["kernel"]).max() <= 1 / np.sqrt(32)
  assert np.abs(params["mlp_1"]["bias"]).max() <= 1 / np.sqrt(16)
  assert 0.8 < float(np.std(params["embedding"])) < 1.2


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="reparameterization='gru'"):
    p_tuning.PTuningPromptEncoder(3, 4, "gru").init(jax.random.PRNGKey(0), TOKENS_BT,
                                                    EMBEDDED_BTD)
  with pytest.raises(ValueError, match="embedding"):
    p_tuning.export_prompt({"mlp_0": {}})


def test_gin_file_loads_a_p_tuning_model_with_frozen_weights(t5x_tiny_checkpoint):
  from prompt_tuning import api
  from prompt_tuning.checkpoints import t5x

  model = api.load_model(["test/t5_1_1_tiny_p_tuning.gin"], checkpoint=t5x_tiny_checkpoint)
  assert isinstance(model.prompt_config, p_tuning.PTuningConfig)
  shapes = jax.tree_util.tree_map(np.shape, model.prompt_params)
  assert shapes["encoder"]["prompt"]["prompt"]["embedding"] == (5, 4)
  assert shapes["encoder"]["prompt"]["prompt"]["lstm_0_forward"]["kernel_hidden"] == (6, 24)
  np.testing.assert_array_equal(
      np.asarray(model.params["token_embedder"]["embedding"]),
      t5x.load_t5x_variable(t5x_tiny_checkpoint, "token_embedder/embedding"))
  exported = p_tuning.export_prompt(model.prompt_params["encoder"]["prompt"]["prompt"])
  assert exported.shape == (5, 4) and exported.dtype == np.float32
