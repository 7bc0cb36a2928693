"""Exact values of the prompt placement functions and their masks, incl. ragged lengths."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import combine, masks

# Ragged rows: EOS (1) at different places, one row without EOS, one empty row.
TOKENS = np.array([[5, 6, 1, 0, 0],
                   [7, 1, 0, 0, 0],
                   [8, 9, 3, 4, 1],
                   [4, 5, 0, 0, 0],
                   [0, 0, 0, 0, 0]])
# Embedding of token t is 10 * t (D = 1); prompt rows of example b are -(2b+1), -(2b+2).
EMBEDDED = (10.0 * TOKENS)[..., None]
PROMPT = -np.arange(1, 11, dtype=np.float64).reshape(5, 2)[..., None]


def _place(fn):
  return np.asarray(fn(jnp.asarray(PROMPT), jnp.asarray(EMBEDDED), jnp.asarray(TOKENS)))[..., 0]


def test_prefix_prompt_exact():
  np.testing.assert_array_equal(_place(combine.prefix_prompt), [
      [-1, -2, 50, 60, 10, 0, 0],
      [-3, -4, 70, 10, 0, 0, 0],
      [-5, -6, 80, 90, 30, 40, 10],
      [-7, -8, 40, 50, 0, 0, 0],
      [-9, -10, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(masks.prefix_prompt_mask(jnp.asarray(TOKENS), 2), [
      [1, 1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0, 0],
      [1, 1, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 0, 0, 0],
      [1, 1, 0, 0, 0, 0, 0]])


def test_prefix_prompt_after_bos_exact():
  np.testing.assert_array_equal(_place(combine.prefix_prompt_after_bos), [
      [50, -1, -2, 60, 10, 0, 0],
      [70, -3, -4, 10, 0, 0, 0],
      [80, -5, -6, 90, 30, 40, 10],
      [40, -7, -8, 50, 0, 0, 0],
      [-9, -10, 0, 0, 0, 0, 0]])  # An empty row has no BOS: the prompt starts it.
  np.testing.assert_array_equal(masks.prefix_prompt_after_bos_mask(jnp.asarray(TOKENS), 2), [
      [1, 1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0, 0],
      [1, 1, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 0, 0, 0],
      [1, 1, 0, 0, 0, 0, 0]])


def test_suffix_prompt_before_eos_exact_with_ragged_lengths():
  np.testing.assert_array_equal(_place(combine.suffix_prompt_before_eos), [
      [50, 60, -1, -2, 10, 0, 0],
      [70, -3, -4, 10, 0, 0, 0],
      [80, 90, 30, 40, -5, -6, 10],
      [40, 50, -7, -8, 0, 0, 0],  # No EOS: the prompt follows the last token.
      [-9, -10, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(combine.before_eos_index(jnp.asarray(TOKENS)), [2, 1, 4, 2, 0])
  np.testing.assert_array_equal(masks.suffix_prompt_before_eos_mask(jnp.asarray(TOKENS), 2), [
      [1, 1, 1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0, 0, 0],
      [1, 1, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 0, 0, 0],
      [1, 1, 0, 0, 0, 0, 0]])


def test_zero_length_prompt_is_identity():
  empty = jnp.zeros((5, 0, 1))
  for fn in (combine.prefix_prompt, combine.prefix_prompt_after_bos,
             combine.suffix_prompt_before_eos):
    np.testing.assert_array_equal(fn(empty, jnp.asarray(EMBEDDED), jnp.asarray(TOKENS)), EMBEDDED)
  np.testing.assert_array_equal(masks.prefix_prompt_mask(jnp.asarray(TOKENS), 0), TOKENS > 0)


def test_loss_weights_targets_and_cross_attention_are_zero_on_prompt_positions():
  index = jnp.array([0, 1, 2])
  weights = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.5, 0.0]])
  np.testing.assert_array_equal(masks.loss_weights_with_prompt(weights, index, 2), [
      [0, 0, 1, 1, 0],
      [1, 0, 0, 1, 1],
      [1, 0.5, 0, 0, 0]])
  targets = jnp.array([[4, 1, 0], [5, 6, 1], [7, 8, 9]])
  np.testing.assert_array_equal(masks.targets_with_prompt(targets, index, 2), [
      [0, 0, 4, 1, 0],
      [5, 0, 0, 6, 1],
      [7, 8, 0, 0, 9]])
  valid = targets > 0
  np.testing.assert_array_equal(masks.cross_attention_valid(valid, index, 2, False), [
      [0, 0, 1, 1, 0],
      [1, 0, 0, 1, 1],
      [1, 1, 0, 0, 1]])
  np.testing.assert_array_equal(masks.cross_attention_valid(valid, index, 2, True), [
      [1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(masks.is_prompt(index, 3, 2), [
      [1, 1, 0, 0, 0],
      [0, 1, 1, 0, 0],
      [0, 0, 1, 1, 0]])


def test_decoder_causal_attention_extends_the_visible_prefix():
  causal = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(
      masks.causal_attention_with_prompt(causal, jnp.array([0, 0]), 2),
      [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
  assert masks.causal_attention_with_prompt(None, jnp.array([0, 0]), 2) is None


def test_left_padding_first_valid_index_insert_and_remove():
  valid = jnp.array([[0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
  index = combine.first_valid_index(valid)
  np.testing.assert_array_equal(index, [2, 0, 4])
  np.testing.assert_array_equal(masks.prompt_valid(valid, index, 1), [
      [0, 0, 1, 1, 1],
      [1, 1, 1, 0, 0],
      [0, 0, 0, 0, 1]])
  values = jnp.arange(12).reshape(3, 4, 1) + 1
  combined = combine.insert_prompt(-jnp.ones((3, 1, 1), jnp.int32), values, index)
  np.testing.assert_array_equal(combined[..., 0], [
      [1, 2, -1, 3, 4],
      [-1, 5, 6, 7, 8],
      [9, 10, 11, 12, -1]])
  np.testing.assert_array_equal(combine.remove_prompt(combined, index, 1), values)
  np.testing.assert_array_equal(masks.positions(jnp.array([[0, 0, 1, 1, 1], [1, 1, 0, 1, 0]])),
                                [[0, 0, 0, 1, 2], [0, 1, 0, 2, 0]])


def test_unknown_placement_and_mismatched_shapes_raise():
  with pytest.raises(ValueError, match="suffix_before_eos"):
    combine.placement_index("middle", jnp.asarray(TOKENS))
  with pytest.raises(ValueError, match=r"\[5, 2, 3\].*\[5, 5, 1\]"):
    combine.prefix_prompt(jnp.zeros((5, 2, 3)), jnp.asarray(EMBEDDED), jnp.asarray(TOKENS))
