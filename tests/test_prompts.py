"""Prompt initializers and the `Prompt` module: exact values, shapes, errors naming both shapes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import prompts
from prompt_tuning.checkpoints import t5x
from prompt_tuning.data import vocab as vocab_lib

RNG = jax.random.PRNGKey(0)
TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)  # row r = [3r, 3r+1, 3r+2].


def test_uniform_range_and_scale():
  values = np.asarray(prompts.uniform(0.5)(RNG, (50, 8)))
  assert values.shape == (50, 8) and values.dtype == np.float32
  assert values.min() >= -0.5 and values.max() < 0.5
  assert values.max() > 0.45 and values.min() < -0.45  # Fills the range (400 draws).
  np.testing.assert_array_equal(prompts.uniform(2.0)(RNG, (50, 8)), values * 4.0)


def _rows_of(sample: np.ndarray) -> list[int]:
  """Row numbers of TABLE that each sampled row equals."""
  assert np.all(sample[:, 0] % 3 == 0)
  np.testing.assert_array_equal(sample[:, 1:] - sample[:, :1], np.tile([1, 2], (len(sample), 1)))
  return [int(v) // 3 for v in sample[:, 0]]


def test_sample_of_embeddings_without_then_with_replacement():
  calls = []

  def loader():
    calls.append(1)
    return TABLE

  init = prompts.from_sample_of_embeddings(loader, population_size=5)
  assert not calls  # No I/O until the initializer runs.
  rows = _rows_of(np.asarray(init(RNG, (5, 3))))
  assert sorted(rows) == [0, 1, 2, 3, 4]  # All of the population, each once.
  assert len(calls) == 1
  rows = _rows_of(np.asarray(init(RNG, (12, 3))))  # P > population: with replacement.
  assert set(rows) <= {0, 1, 2, 3, 4} and len(rows) == 12
  rows = _rows_of(np.asarray(prompts.from_sample_of_embeddings(TABLE)(RNG, (10, 3))))
  assert sorted(rows) == list(range(10))


def test_sample_of_embeddings_width_mismatch_names_both_shapes():
  with pytest.raises(ValueError, match=r"\[10, 3\].*\[4, 5\]"):
    prompts.from_sample_of_embeddings(TABLE)(RNG, (4, 5))


@pytest.fixture
def t5_vocab(t5_vocab_path):
  return vocab_lib.t5_vocabulary(t5_vocab_path)


@pytest.fixture
def tiny_embeddings():
  from conftest import shared_fixture
  return np.load(shared_fixture("tiny_embeddings_32128x4.npy"))


def test_class_label_init_is_mean_of_sub_token_embeddings(t5_vocab, tiny_embeddings):
  # The T5 vocabulary's pieces: "positive" is one token, "great movie" two.
  assert list(t5_vocab.encode("positive")) == [1465]
  assert list(t5_vocab.encode("great movie")) == [248, 1974]
  fallback = prompts.from_array(np.full((4, 4), 7.0))
  init = prompts.from_embedded_list(lambda: tiny_embeddings, t5_vocab,
                                    ["positive", "great movie"], fallback)
  got = np.asarray(init(RNG, (4, 4)))
  np.testing.assert_allclose(got[0], tiny_embeddings[1465], rtol=1e-6)
  np.testing.assert_allclose(got[1], (tiny_embeddings[248] + tiny_embeddings[1974]) / 2, rtol=1e-6)
  np.testing.assert_array_equal(got[2:], np.full((2, 4), 7.0))


def test_embedded_string_rows_are_sub_token_embeddings(t5_vocab, tiny_embeddings):
  init = prompts.from_embedded_string(tiny_embeddings, t5_vocab, "great movie",
                                      prompts.from_array(np.zeros((3, 4))))
  np.testing.assert_array_equal(init(RNG, (3, 4)),
                                [tiny_embeddings[248], tiny_embeddings[1974], np.zeros(4)])


def test_too_many_class_labels_is_an_error(t5_vocab, tiny_embeddings):
  init = prompts.from_embedded_list(tiny_embeddings, t5_vocab, ["a", "b", "c"])
  with pytest.raises(ValueError, match="3 initial rows.*\\[2, 4\\].*at least 3"):
    init(RNG, (2, 4))


def test_np_load_casts_float64_to_float32_and_checks_shape():
  from conftest import shared_fixture
  path = shared_fixture("prompt_5x256.npy")
  stored = np.load(path)
  assert stored.dtype == np.float64
  got = prompts.np_load(path)(RNG, (5, 256))
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(got, stored.astype(np.float32))
  with pytest.raises(ValueError, match=r"\[5, 256\].*\[4, 256\].*PROMPT_LENGTH=5"):
    prompts.np_load(path)(RNG, (4, 256))


def test_from_array_rejects_integer_prompts():
  with pytest.raises(ValueError, match="floating point"):
    prompts.from_array(np.ones((2, 2), np.int32))(RNG, (2, 2))


def test_from_checkpoint_variable_and_embedding_loader(t5x_tiny_checkpoint):
  expected = t5x.load_t5x_variable(t5x_tiny_checkpoint, "token_embedder/embedding")
  init = prompts.from_checkpoint_variable(t5x_tiny_checkpoint, "token_embedder/embedding")
  np.testing.assert_array_equal(init(RNG, expected.shape), expected)
  table = prompts.embedding_loader(t5x_tiny_checkpoint)()
  np.testing.assert_array_equal(table, expected)
  rows = prompts.from_sample_of_embeddings(prompts.embedding_loader(t5x_tiny_checkpoint), 100)(
      RNG, (3, 4))
  assert all(any(np.array_equal(r, e) for e in expected[:100]) for r in np.asarray(rows))


def test_prompt_module_param_axes_batching_and_dtype():
  module = prompts.Prompt(length=3, initializer=prompts.from_array(np.arange(12.0).reshape(3, 4)))
  tokens = jnp.ones((2, 5), jnp.int32)
  embedded = jnp.zeros((2, 5, 4), jnp.bfloat16)
  variables = module.init(RNG, tokens, embedded)
  box = variables["params"]["prompt"]
  assert isinstance(box, nn.LogicallyPartitioned) and box.names == ("prompt", "prompt_embed")
  assert box.value.dtype == jnp.float32
  out = module.apply(variables, tokens, embedded)
  assert out.shape == (2, 3, 4) and out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out[1], np.arange(12.0).reshape(3, 4))


def test_prompt_config_validates():
  with pytest.raises(ValueError, match="placement='middle'"):
    prompts.PromptConfig(placement="middle")
  with pytest.raises(ValueError, match="method='lora'"):
    prompts.PromptConfig(method="lora")
  assert prompts.prompt_config() is None
