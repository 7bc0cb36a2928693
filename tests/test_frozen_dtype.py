"""bfloat16 frozen weights under float32 compute: `layers.weight_dot` values, gradients, memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import api
from prompt_tuning.checkpoints import tree
from prompt_tuning.models import layers

WIDTH, DEPTH = 256, 8


def _kernels(dtype):
  rng = np.random.default_rng(0)
  return [jnp.asarray(rng.standard_normal((WIDTH, WIDTH), np.float32) / 16).astype(dtype)
          for _ in range(DEPTH)]


def _stack(dot):
  def loss(x_BD, kernels):
    for kernel in kernels:
      x_BD = jnp.tanh(dot(x_BD, kernel))
    return jnp.sum(x_BD ** 2)
  return loss


def test_weight_dot_equals_float32_on_the_rounded_kernel():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((4, WIDTH), np.float32))
  half = _kernels(jnp.bfloat16)
  rounded = [k.astype(jnp.float32) for k in half]
  ours = _stack(lambda x, k: layers.weight_dot(x, k, jnp.float32))
  reference = _stack(jnp.dot)
  np.testing.assert_allclose(ours(x, half), reference(x, rounded), rtol=1e-6)
  grads = jax.grad(ours, argnums=(0, 1))(x, half)
  expected = jax.grad(reference, argnums=(0, 1))(x, rounded)
  np.testing.assert_allclose(grads[0], expected[0], rtol=1e-5, atol=1e-7)
  for got, want in zip(grads[1], expected[1]):  # Kernel gradients come back in bfloat16.
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32),
                               np.asarray(want.astype(jnp.bfloat16), np.float32), rtol=1e-2)


def _temp_bytes(dot) -> int:
  grad = jax.jit(jax.grad(_stack(dot)))  # w.r.t. the input only, as prompt tuning.
  x = jax.ShapeDtypeStruct((4, WIDTH), jnp.float32)
  kernels = [jax.ShapeDtypeStruct((WIDTH, WIDTH), jnp.bfloat16)] * DEPTH
  return grad.lower(x, kernels).compile().memory_analysis().temp_size_in_bytes


def test_cast_kernels_are_not_all_held_at_once():
  """A plain cast lets XLA cast every kernel up front and keep the float32 copies for the
  backward pass; weight_dot holds about one at a time."""
  kernel_f32_bytes = WIDTH * WIDTH * 4
  plain = _temp_bytes(lambda x, k: jnp.dot(x, k.astype(jnp.float32)))
  ours = _temp_bytes(lambda x, k: layers.weight_dot(x, k, jnp.float32))
  assert plain >= (DEPTH - 1) * kernel_f32_bytes
  assert ours <= 3 * kernel_f32_bytes
  assert plain - ours >= (DEPTH - 3) * kernel_f32_bytes


def test_frozen_dtype_casts_only_frozen_leaves():
  model = api.load_model(["test/t5_1_1_tiny_prompt.gin"])
  shapes = api.with_frozen_dtype(jax.eval_shape(lambda: model.params), "bfloat16")
  params = api.with_frozen_dtype(model.params, "bfloat16")
  for tree_ in (shapes, params):
    dtypes = {path: np.dtype(leaf.dtype) for path, leaf in tree.flatten_params(tree_).items()}
    assert dtypes.pop("encoder/prompt/prompt/prompt") == np.float32
    assert set(dtypes.values()) == {np.dtype(jnp.bfloat16)}
  assert api.with_frozen_dtype(model.params, None) is model.params
