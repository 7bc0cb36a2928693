"""Exact numbers for T5X's loss (`train/losses.py`) and Adafactor (`train/optim.py`).

Each is checked against a float64 numpy reference written here from T5X's formulas:
`t5x.losses.compute_weighted_cross_entropy` / `cross_entropy_with_logits` (soft targets with
confidence 1 - ls and ls / (V - 1), the normalizing constant, z_loss * log_z^2, the custom
gradient) and `t5x.adafactor.Adafactor.apply_param_gradient` (decay 1 - (t + 1)^-0.8 on the
global step, factored second moments, update clipping, parameter scale, momentum, weight decay).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning.train import losses
from prompt_tuning.train import optim

# ----------------------------------------------------------------------------------------------
# Loss: numpy reference.


def _reference_token_losses(logits_BTV: np.ndarray, targets_BT: np.ndarray, z_loss: float,
                            label_smoothing: float) -> tuple[np.ndarray, np.ndarray]:
  """T5X's per-token (loss, z_loss) [B, T] in float64."""
  logits_BTV = logits_BTV.astype(np.float64)
  vocab = logits_BTV.shape[-1]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  constant = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
  soft_BTV = np.full(logits_BTV.shape, low)
  np.put_along_axis(soft_BTV, targets_BT[..., None], confidence, axis=-1)
  top_BT1 = logits_BTV.max(axis=-1, keepdims=True)
  log_z_BT = np.log(np.exp(logits_BTV - top_BT1).sum(axis=-1)) + top_BT1[..., 0]
  log_softmax_BTV = logits_BTV - log_z_BT[..., None]
  z_BT = z_loss * log_z_BT**2
  return -(soft_BTV * log_softmax_BTV).sum(axis=-1) + z_BT - constant, z_BT


def _reference_logit_grad(logits_BTV: np.ndarray, targets_BT: np.ndarray, weights_BT: np.ndarray,
                          z_loss: float, label_smoothing: float,
                          loss_normalizing_factor: Optional[float]) -> np.ndarray:
  """d(total loss)/d(logits) [B, T, V]: weight * ((1 + 2 z log_z) softmax - soft_targets)."""
  logits_BTV = logits_BTV.astype(np.float64)
  vocab = logits_BTV.shape[-1]
  soft_BTV = np.full(logits_BTV.shape, label_smoothing / (vocab - 1))
  np.put_along_axis(soft_BTV, targets_BT[..., None], 1.0 - label_smoothing, axis=-1)
  exp_BTV = np.exp(logits_BTV - logits_BTV.max(axis=-1, keepdims=True))
  softmax_BTV = exp_BTV / exp_BTV.sum(axis=-1, keepdims=True)
  log_z_BT = np.log(np.exp(logits_BTV).sum(axis=-1))
  grad_BTV = (1.0 + 2.0 * z_loss * log_z_BT)[..., None] * softmax_BTV - soft_BTV
  grad_BTV = grad_BTV * weights_BT[..., None]
  return grad_BTV / (loss_normalizing_factor or 1.0)


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Hand-made logits [2, 3, 5], targets [2, 3], weights [2, 3] (last token of row 1 padding)."""
  logits_BTV = np.array([
      [[2.0, -1.0, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [-3.0, 4.0, 1.0, 0.5, -0.5]],
      [[1.5, 1.0, -2.0, 3.0, 0.0], [10.0, -10.0, 5.0, 0.0, 2.0], [0.3, 0.2, 0.1, 0.0, -0.1]],
  ], np.float32)
  targets_BT = np.array([[0, 3, 2], [3, 4, 1]], np.int32)
  weights_BT = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
  return logits_BTV, targets_BT, weights_BT


def test_uniform_logits_give_log_vocab_and_its_square_as_z_loss():
  logits_BTV = jnp.zeros((1, 2, 4))
  loss_BT, z_BT = losses.token_losses(logits_BTV, jnp.array([[0, 3]]), z_loss=1e-4)
  np.testing.assert_allclose(loss_BT, np.full((1, 2), np.log(4) + 1e-4 * np.log(4)**2), rtol=1e-7)
  np.testing.assert_allclose(z_BT, np.full((1, 2), 1e-4 * np.log(4)**2), rtol=1e-6)


def test_smoothed_loss_is_zero_at_the_soft_targets():
  """The normalizing constant is the soft targets' entropy, so log(soft targets) costs 0."""
  vocab, smoothing = 6, 0.1
  soft_V = np.full(vocab, smoothing / (vocab - 1))
  soft_V[2] = 1.0 - smoothing
  loss_BT, _ = losses.token_losses(jnp.asarray(np.log(soft_V), jnp.float32)[None, None],
                                   jnp.array([[2]]), label_smoothing=smoothing)
  assert abs(float(loss_BT[0, 0])) < 1e-6


@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.1])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_token_losses_match_the_t5x_formula(batch, z_loss, label_smoothing):
  logits_BTV, targets_BT, _ = batch
  loss_BT, z_BT = losses.token_losses(jnp.asarray(logits_BTV), jnp.asarray(targets_BT),
                                      z_loss=z_loss, label_smoothing=label_smoothing)
  want_loss_BT, want_z_BT = _reference_token_losses(logits_BTV, targets_BT, z_loss,
                                                    label_smoothing)
  assert loss_BT.shape == z_BT.shape == (2, 3)
  assert loss_BT.dtype == jnp.float32
  np.testing.assert_allclose(loss_BT, want_loss_BT, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(z_BT, want_z_BT, rtol=1e-6, atol=1e-12)


def test_bfloat16_logits_are_scored_in_float32(batch):
  logits_BTV, targets_BT, _ = batch
  low_BTV = jnp.asarray(logits_BTV, jnp.bfloat16)
  loss_BT, _ = losses.token_losses(low_BTV, jnp.asarray(targets_BT), z_loss=1e-4)
  want_BT, _ = _reference_token_losses(np.asarray(low_BTV.astype(jnp.float32)), targets_BT, 1e-4,
                                       0.0)
  assert loss_BT.dtype == jnp.float32
  np.testing.assert_allclose(loss_BT, want_BT, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("loss_normalizing_factor", [None, 7.5])
def test_weighted_loss_sums_real_tokens_and_divides_by_the_factor(batch, loss_normalizing_factor):
  logits_BTV, targets_BT, weights_BT = batch
  terms = losses.weighted_cross_entropy(
      jnp.asarray(logits_BTV), jnp.asarray(targets_BT), jnp.asarray(weights_BT), z_loss=1e-2,
      label_smoothing=0.1, loss_normalizing_factor=loss_normalizing_factor)
  loss_BT, z_BT = _reference_token_losses(logits_BTV, targets_BT, 1e-2, 0.1)
  divisor = loss_normalizing_factor or 1.0
  np.testing.assert_allclose(terms.loss, (loss_BT * weights_BT).sum() / divisor, rtol=1e-6)
  np.testing.assert_allclose(terms.z_loss, (z_BT * weights_BT).sum() / divisor, rtol=1e-6)
  assert float(terms.weight_sum) == 5.0  # Not divided: it counts tokens.
  # argmax per token: [[0, any(all equal: 0), 1], [3, 0, 0]] vs targets [[0, 3, 2], [3, 4, 1]].
  assert float(terms.correct) == 2.0


def test_zero_weight_tokens_do_not_count_and_weights_scale_tokens(batch):
  logits_BTV, targets_BT, weights_BT = batch
  args = dict(z_loss=1e-4, label_smoothing=0.0)
  base = losses.weighted_cross_entropy(jnp.asarray(logits_BTV), jnp.asarray(targets_BT),
                                       jnp.asarray(weights_BT), **args)
  noisy_BTV, other_BT = logits_BTV.copy(), targets_BT.copy()
  noisy_BTV[1, 2] = [50.0, -20.0, 3.0, 0.0, 9.0]  # The padding position (weight 0).
  other_BT[1, 2] = 0  # Now "correct" there, but weightless.
  masked = losses.weighted_cross_entropy(jnp.asarray(noisy_BTV), jnp.asarray(other_BT),
                                         jnp.asarray(weights_BT), **args)
  for name in ("loss", "z_loss", "weight_sum", "correct"):
    assert float(getattr(masked, name)) == float(getattr(base, name)), name
  half_BT = weights_BT * np.array([[0.5, 1.0, 2.0], [1.0, 0.0, 0.0]], np.float32)
  scaled = losses.weighted_cross_entropy(jnp.asarray(logits_BTV), jnp.asarray(targets_BT),
                                         jnp.asarray(half_BT), **args)
  loss_BT, _ = _reference_token_losses(logits_BTV, targets_BT, 1e-4, 0.0)
  np.testing.assert_allclose(scaled.loss, (loss_BT * half_BT).sum(), rtol=1e-6)
  assert float(scaled.weight_sum) == 4.5


@pytest.mark.parametrize("z_loss,label_smoothing,loss_normalizing_factor",
                         [(0.0, 0.0, None), (1e-4, 0.0, None), (0.1, 0.2, 3.0)])
def test_loss_gradient_is_softmax_minus_soft_targets_plus_z_term(batch, z_loss, label_smoothing,
                                                                 loss_normalizing_factor):
  logits_BTV, targets_BT, weights_BT = batch

  def total(logits):
    return losses.weighted_cross_entropy(
        logits, jnp.asarray(targets_BT), jnp.asarray(weights_BT), z_loss=z_loss,
        label_smoothing=label_smoothing, loss_normalizing_factor=loss_normalizing_factor).loss

  grad_BTV = jax.grad(total)(jnp.asarray(logits_BTV))
  want_BTV = _reference_logit_grad(logits_BTV, targets_BT, weights_BT, z_loss, label_smoothing,
                                   loss_normalizing_factor)
  np.testing.assert_allclose(grad_BTV, want_BTV, rtol=1e-5, atol=1e-7)
  assert not np.any(np.asarray(grad_BTV)[1, 2])  # No gradient through padding.


# ----------------------------------------------------------------------------------------------
# Adafactor: numpy reference of t5x.adafactor.Adafactor.apply_param_gradient.


def _reference_factored_dims(shape: tuple[int, ...], min_dim_size_to_factor: int):
  """(second largest, largest) axis to factor over, or None.

  For rank > 2 this is flax.optim's heuristic: T5X's heuristic rule refuses rank > 2 without an
  explicit factor rule, and `optim.adafactor` generalizes as flax.optim did.
  """
  if len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _reference_decay(step: int, step_offset: int, exponent: float) -> tuple[float, float]:
  """(decay, mixing) computed in float32 as T5X does (1 - decay loses digits at large steps)."""
  t = np.float32(step - step_offset) + np.float32(1.0)
  decay = np.float32(1.0) - t**np.float32(-exponent)
  return float(decay), float(np.float32(1.0) - decay)


def _reference_init(param: np.ndarray, hp: dict[str, Any]) -> dict[str, np.ndarray]:
  state = {k: np.zeros((1,)) for k in ("v_row", "v_col", "v", "m")}
  dims = _reference_factored_dims(param.shape, hp["min_dim_size_to_factor"])
  if dims is None:
    state["v"] = np.zeros(param.shape)
  else:
    second, largest = dims
    state["v_row"] = np.zeros(np.delete(param.shape, largest))
    state["v_col"] = np.zeros(np.delete(param.shape, second))
  if hp["beta1"] is not None:
    state["m"] = np.zeros(param.shape)
  return state


def _reference_apply(param: np.ndarray, state: dict[str, np.ndarray], grad: np.ndarray, step: int,
                     learning_rate: float, hp: dict[str, Any]) -> tuple[np.ndarray, dict]:
  """One T5X Adafactor update of one parameter in float64: (new param, new state)."""
  param, grad = param.astype(np.float64), grad.astype(np.float64)
  new = dict(state)
  decay, mixing = _reference_decay(step, hp["step_offset"], hp["decay_rate"])
  update_scale = learning_rate
  if hp["multiply_by_parameter_scale"]:
    update_scale *= max(np.sqrt(np.mean(param * param)), hp["epsilon2"])
  grad_sqr = grad * grad + hp["epsilon1"]
  dims = _reference_factored_dims(param.shape, hp["min_dim_size_to_factor"])
  if dims is not None:
    second, largest = dims
    new["v_row"] = decay * state["v_row"] + mixing * grad_sqr.mean(axis=largest)
    new["v_col"] = decay * state["v_col"] + mixing * grad_sqr.mean(axis=second)
    reduced_second = second - 1 if largest < second else second
    row_mean = new["v_row"].mean(axis=reduced_second, keepdims=True)
    row_factor = (new["v_row"] / row_mean)**-0.5
    col_factor = new["v_col"]**-0.5
    y = grad * np.expand_dims(row_factor, largest) * np.expand_dims(col_factor, second)
  else:
    new["v"] = decay * state["v"] + mixing * grad_sqr
    y = grad * new["v"]**-0.5
  if hp["clipping_threshold"] is not None:
    y = y / max(1.0, np.sqrt(np.mean(y * y)) / hp["clipping_threshold"])
  subtrahend = update_scale * y
  if hp["beta1"] is not None:
    new["m"] = hp["beta1"] * state["m"] + (1.0 - hp["beta1"]) * subtrahend
    subtrahend = new["m"]
  if hp["weight_decay"] is not None:
    return (1.0 - hp["weight_decay"]) * param - subtrahend, new
  return param - subtrahend, new


SHAPES = {
    "unfactored": (5, 4),         # Both dims < 128: full second moment.
    "factored": (256, 130),       # Row = axis 1 (130), column = axis 0 (256).
    "factored_3d": (256, 3, 130),  # Factored over axes 2 and 0; axis 1 kept in both moments.
    "vector": (7,),
}


def _params_and_grads(num_steps: int, seed: int = 0,
                      growth: float = 10.0) -> tuple[dict, list[dict]]:
  """Parameters and per-step gradients (float32) whose scale grows by `growth` each step."""
  rng = np.random.default_rng(seed)
  params = {name: (0.5 * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in SHAPES.items()}
  grads = [{name: (growth**(k - 1) * rng.standard_normal(shape) *
                   rng.uniform(0.1, 3.0, size=shape)).astype(np.float32)
            for name, shape in SHAPES.items()} for k in range(num_steps)]
  return params, grads


def _hyper_params(**overrides: Any) -> dict[str, Any]:
  hp = dict(decay_rate=0.8, step_offset=0, multiply_by_parameter_scale=False,
            clipping_threshold=1.0, weight_decay=1e-5, min_dim_size_to_factor=128, beta1=None,
            epsilon1=1e-30, epsilon2=1e-3)
  hp.update(overrides)
  return hp


def _run_ours(optimizer, params: dict, grads: list[dict], first_step: int,
              jit: bool = False) -> tuple[dict, Any, list]:
  """Applies the gradients with optax.apply_updates, at global steps first_step, first_step+1..."""
  update = lambda g, s, p, step: optimizer.update(g, s, p, step=step)
  if jit:  # As the trainer calls it: the step is a traced int32.
    update = jax.jit(update)
  state = optimizer.init(params)
  trajectory = []
  for k, grad in enumerate(grads):
    updates, state = update(grad, state, params, jnp.asarray(first_step + k, jnp.int32))
    params = optax.apply_updates(params, updates)
    trajectory.append(jax.device_get(params))
  return params, state, trajectory


def _run_reference(params: dict, grads: list[dict], first_step: int, hp: dict[str, Any],
                   schedule=lambda step: 0.3) -> tuple[dict, dict, list]:
  params = {name: p.astype(np.float64) for name, p in params.items()}
  states = {name: _reference_init(p, hp) for name, p in params.items()}
  trajectory = []
  for k, grad in enumerate(grads):
    step = first_step + k
    for name in params:
      params[name], states[name] = _reference_apply(params[name], states[name], grad[name], step,
                                                    schedule(step), hp)
    trajectory.append(dict(params))
  return params, states, trajectory


def _assert_params_close(ours: dict, reference: dict) -> None:
  """Equal to 1e-6 of each parameter's scale (float32 rounding measures ~1.6e-7 of it)."""
  for name in SHAPES:
    got = np.asarray(ours[name])
    assert got.dtype == np.float32 and got.shape == SHAPES[name], name
    scale = np.abs(reference[name]).max()
    np.testing.assert_allclose(got, reference[name], rtol=1e-6, atol=1e-6 * scale, err_msg=name)


@pytest.mark.parametrize("first_step", [0, 1_100_000])
@pytest.mark.parametrize("multiply_by_parameter_scale", [False, True])
@pytest.mark.parametrize("beta1", [None, 0.9])
def test_adafactor_matches_t5x_apply_param_gradient(first_step, multiply_by_parameter_scale, beta1):
  hp = _hyper_params(multiply_by_parameter_scale=multiply_by_parameter_scale, beta1=beta1)
  params, grads = _params_and_grads(num_steps=3)
  optimizer = optim.adafactor(
      0.3, decay_rate=0.8, step_offset=0, multiply_by_parameter_scale=multiply_by_parameter_scale,
      clipping_threshold=1.0, weight_decay=1e-5, min_dim_size_to_factor=128, beta1=beta1)
  _, state, trajectory = _run_ours(optimizer, params, grads, first_step)
  _, want_states, want_trajectory = _run_reference(params, grads, first_step, hp)
  for got_params, want_params in zip(trajectory, want_trajectory):
    _assert_params_close(got_params, want_params)
  for name in SHAPES:
    got_state = state.per_param[name]
    for field in ("v_row", "v_col", "v", "m"):
      got = np.asarray(getattr(got_state, field))
      assert got.shape == want_states[name][field].shape, (name, field)
      want = want_states[name][field]
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max(),
                                 err_msg=f"{name}/{field}")


def test_adafactor_without_clipping_or_weight_decay_and_with_an_rsqrt_schedule():
  """No clipping lets the float32 mixing rate at a large step reach the update directly."""
  first_step = 1_100_000
  hp = _hyper_params(clipping_threshold=None, weight_decay=None, step_offset=1_000_000)
  params, grads = _params_and_grads(num_steps=3, seed=1)
  optimizer = optim.adafactor(optim.rsqrt_schedule(1.0, warmup_steps=10_000),
                              clipping_threshold=None, weight_decay=None, step_offset=1_000_000)
  ours, _, _ = _run_ours(optimizer, params, grads, first_step)
  want, _, _ = _run_reference(params, grads, first_step, hp,
                              schedule=lambda step: 1.0 / np.sqrt(max(step, 10_000)))
  _assert_params_close(ours, want)


def test_adafactor_decay_follows_the_global_step_passed_to_update():
  """The second-moment decay is taken at the step passed to `update`.

  Step 0 and 1_100_000 give the same first update (clipping removes the moments' scale) but
  different second ones: decay 0 at step 0 forgets the first gradient, decay ~1 keeps it
  (measured mean change of the second update: 3.4 % (3-D) to 16 % (vector)).
  """
  params, grads = _params_and_grads(num_steps=2, seed=2, growth=1.0)
  for name, shape in SHAPES.items():  # Give the second gradient another row / column profile.
    ramp = np.ones(shape, np.float32)
    for axis, size in enumerate(shape):
      ramp = ramp * np.exp(np.linspace(-2.0, 2.0, size, dtype=np.float32)).reshape(
          [size if a == axis else 1 for a in range(len(shape))])
    grads[1][name] = grads[1][name] * ramp
  optimizer = optim.adafactor(0.3)
  _, _, from_zero = _run_ours(optimizer, params, grads, first_step=0, jit=True)
  _, _, from_late = _run_ours(optimizer, params, grads, first_step=1_100_000, jit=True)
  for name in SHAPES:
    scale = np.abs(from_zero[0][name]).max()
    np.testing.assert_allclose(from_zero[0][name], from_late[0][name], rtol=1e-6,
                               atol=1e-6 * scale)
    second_zero = from_zero[1][name] - from_zero[0][name]
    second_late = from_late[1][name] - from_late[0][name]
    change = np.abs(second_zero - second_late).mean() / np.abs(second_zero).mean()
    assert change > 0.01, name
  assert _reference_decay(0, 0, 0.8) == (0.0, 1.0)
  decay, mixing = _reference_decay(1_100_000, 0, 0.8)
  assert decay == pytest.approx(1.0 - 1_100_001**-0.8, abs=1e-7)
  assert mixing == pytest.approx(1_100_001**-0.8, rel=1e-2)


def test_adafactor_state_shapes_are_t5x_s():
  optimizer = optim.adafactor(0.3, beta1=0.9)
  state = optimizer.init({name: jnp.zeros(shape) for name, shape in SHAPES.items()})
  shapes = {name: tuple(tuple(getattr(state.per_param[name], f).shape)
                        for f in ("v_row", "v_col", "v", "m")) for name in SHAPES}
  assert shapes == {
      "unfactored": ((1,), (1,), (5, 4), (5, 4)),
      "factored": ((130,), (256,), (1,), (256, 130)),
      "factored_3d": ((3, 130), (256, 3), (1,), (256, 3, 130)),
      "vector": ((1,), (1,), (7,), (7,)),
  }
  assert optim.factored_dims((128, 128), 128) is not None
  assert optim.factored_dims((127, 4096), 128) is None
  assert optim.adafactor(0.3, factored=False).init({"w": jnp.zeros((256, 130))}).per_param[
      "w"].v.shape == (256, 130)


def test_adafactor_needs_params():
  optimizer = optim.adafactor(0.3)
  grads = {"w": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="needs `params`"):
    optimizer.update(grads, optimizer.init(grads), step=0)


def test_adamw_learning_rate_follows_the_step():
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, 0.1, -0.2])}
  schedule = optim.rsqrt_schedule(2.0, warmup_steps=100)
  ours = optim.adamw(schedule, weight_decay=0.01)
  updates, _ = ours.update(grads, ours.init(params), params, step=400)
  reference = optax.adamw(2.0 / np.sqrt(400), weight_decay=0.01)
  want, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(updates["w"], want["w"], rtol=1e-6)
  assert optim.learning_rate_at(schedule, 25) == pytest.approx(0.2)
  assert optim.learning_rate_at(0.3, 25) == pytest.approx(0.3)


# ----------------------------------------------------------------------------------------------
# Trainable / frozen split.


def _model_tree() -> dict:
  return {
      "token_embedder": {"embedding": np.ones((8, 4))},
      "encoder": {
          "prompt": {"prompt": np.full((3, 4), 2.0)},
          "layers_0": {"attention": {"query": {"kernel": np.zeros((4, 4))}}},
          "prompt_norm": {"scale": np.ones(4)},  # Not under a '/prompt/' component.
      },
      "decoder": {"prompt": {"prompt": np.full((2, 4), 3.0)},
                  "decoder_norm": {"scale": np.ones(4)}},
  }


def _paths(params: dict) -> set[str]:
  return {"/".join(k.key for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_split_puts_every_leaf_on_exactly_one_side_and_merge_restores_the_tree():
  params = _model_tree()
  trainable, frozen = optim.split_params(params)
  assert _paths(trainable) == {"encoder/prompt/prompt", "decoder/prompt/prompt"}
  assert _paths(frozen) == {"token_embedder/embedding", "encoder/layers_0/attention/query/kernel",
                            "encoder/prompt_norm/scale", "decoder/decoder_norm/scale"}
  assert _paths(trainable) | _paths(frozen) == _paths(params)
  merged = optim.merge_params(trainable, frozen)
  assert _paths(merged) == _paths(params)
  for (_, got), (_, want) in zip(sorted(jax.tree_util.tree_flatten_with_path(merged)[0],
                                        key=lambda x: str(x[0])),
                                 sorted(jax.tree_util.tree_flatten_with_path(params)[0],
                                        key=lambda x: str(x[0]))):
    assert got is want  # The very same arrays: nothing copied or cast.


def test_split_regex_must_match_the_whole_path():
  params = _model_tree()
  trainable, frozen = optim.split_params(params, "encoder/.*")
  assert _paths(trainable) == {"encoder/prompt/prompt", "encoder/layers_0/attention/query/kernel",
                               "encoder/prompt_norm/scale"}
  trainable, _ = optim.split_params(params, "decoder/prompt/prompt|.*/scale")
  assert _paths(trainable) == {"decoder/prompt/prompt", "encoder/prompt_norm/scale",
                               "decoder/decoder_norm/scale"}
  with pytest.raises(optim.NothingToTrainError):
    optim.split_params(params, "prompt")  # A substring is not enough.


def test_split_without_a_match_says_how_to_fix_it():
  params = {"encoder": {"layers_0": {"mlp": {"wo": {"kernel": np.ones((2, 2))}}}}}
  with pytest.raises(ValueError, match=r"'\.\*/prompt/\.\*' matches none of the model's 1 "
                     r"parameters .*encoder/layers_0/mlp/wo/kernel.*TRAINABLE_REGEX"):
    optim.split_params(params)
  with pytest.raises(ValueError, match="cannot be part of a '/'-joined path"):
    optim.split_params({"encoder": {"a/b": np.ones(2)}})
