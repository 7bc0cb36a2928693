"""Tests for matching loaded parameters to a model (prompt_tuning.checkpoints.restore)."""

from __future__ import annotations

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.checkpoints import restore
from prompt_tuning.checkpoints import t5x
from prompt_tuning.checkpoints import tree
from prompt_tuning.models.config import T5Config

TINY = T5Config(vocab_size=32128, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                num_encoder_layers=2, num_decoder_layers=2, relpos_num_buckets=4,
                relpos_max_distance=8)


def _model_shapes(config: T5Config, dtype=jnp.float32) -> dict:
  """The parameter tree of an encoder-decoder T5 as ShapeDtypeStructs."""
  d, kv, f = config.emb_dim, config.joined_kv, config.mlp_dim

  def sds(*shape):
    return jax.ShapeDtypeStruct(shape, dtype)

  def attention():
    return {"query": {"kernel": sds(d, kv)}, "key": {"kernel": sds(d, kv)},
            "value": {"kernel": sds(d, kv)}, "out": {"kernel": sds(kv, d)}}

  def mlp():
    names = ["wi"] if len(config.mlp_activations) == 1 else [
        f"wi_{i}" for i in range(len(config.mlp_activations))]
    return {**{n: {"kernel": sds(d, f)} for n in names},
            "wo": {"kernel": sds(f, d)}}

  relpos = {"rel_embedding": sds(config.num_heads, config.relpos_num_buckets)}
  encoder = {f"layers_{i}": {
      "pre_attention_layer_norm": {"scale": sds(d)}, "attention": attention(),
      "pre_mlp_layer_norm": {"scale": sds(d)}, "mlp": mlp()}
             for i in range(config.num_encoder_layers)}
  decoder = {f"layers_{i}": {
      "pre_self_attention_layer_norm": {"scale": sds(d)},
      "self_attention": attention(),
      "pre_cross_attention_layer_norm": {"scale": sds(d)},
      "encoder_decoder_attention": attention(),
      "pre_mlp_layer_norm": {"scale": sds(d)}, "mlp": mlp()}
             for i in range(config.num_decoder_layers)}
  return {
      "token_embedder": {"embedding": sds(config.vocab_size, d)},
      "encoder": {**encoder, "relpos_bias": relpos,
                  "encoder_norm": {"scale": sds(d)}},
      "decoder": {**decoder, "relpos_bias": relpos,
                  "decoder_norm": {"scale": sds(d)},
                  "logits_dense": {"kernel": sds(d, config.vocab_size)}},
  }


def _mismatch(expected, loaded, **kwargs) -> str:
  with pytest.raises(restore.CheckpointMismatchError) as error:
    restore.match_params(expected, loaded, source="CKPT", **kwargs)
  assert isinstance(error.value, ValueError)
  return str(error.value)


def test_fixture_fits_the_tiny_t5_1_1_model(t5x_tiny_checkpoint):
  loaded = t5x.load_t5x_params(t5x_tiny_checkpoint)
  matched = restore.match_params(_model_shapes(TINY), loaded,
                                 source=str(t5x_tiny_checkpoint))
  flat, flat_loaded = tree.flatten_params(matched), tree.flatten_params(loaded)
  assert len(flat) == 52
  assert flat.keys() == flat_loaded.keys()
  for path, array in flat.items():
    np.testing.assert_array_equal(array, flat_loaded[path])


def test_casts_to_the_model_dtype(t5x_tiny_checkpoint):
  loaded = t5x.load_t5x_params(t5x_tiny_checkpoint)
  matched = restore.match_params(_model_shapes(TINY, jnp.bfloat16), loaded,
                                 source="tiny")
  scale = matched["encoder"]["encoder_norm"]["scale"]
  assert scale.dtype == jnp.bfloat16
  # 0.93264055 -> nearest bfloat16 (8 significant bits) is 0.93359375.
  assert float(scale[0]) == 0.93359375


def test_wrong_shape_names_both_shapes_and_counts_the_rest(t5x_tiny_checkpoint):
  loaded = t5x.load_t5x_params(t5x_tiny_checkpoint)
  message = _mismatch(_model_shapes(TINY.replace(mlp_dim=16)), loaded)
  first, others = message.split("\n")
  assert first == (
      "Parameters from CKPT do not fit the model: variable "
      "'encoder/layers_0/mlp/wi_0/kernel' has shape [4, 8] in the checkpoint "
      "but the model expects [4, 16]: the checkpoint was written for another "
      "model size or configuration.")
  # wi_0, wi_1 and wo in each of 4 layers: 12 problems.
  assert others.startswith(
      "11 other problem(s): shape 'encoder/layers_0/mlp/wi_1/kernel'; "
      "shape 'encoder/layers_0/mlp/wo/kernel'; ")
  assert others.endswith("; ... (3 more).")


def test_vocabulary_size_mismatch(t5x_tiny_checkpoint):
  loaded = t5x.load_t5x_params(t5x_tiny_checkpoint)
  message = _mismatch(_model_shapes(TINY.replace(vocab_size=32100)), loaded)
  assert message == (
      "Parameters from CKPT do not fit the model: vocabulary size mismatch at "
      "'token_embedder/embedding': checkpoint vocabulary has 32128 rows, model "
      "expects 32100: set NUM_EMBEDDINGS=32128 (e.g. "
      "--gin.NUM_EMBEDDINGS=32128) to build the model with the checkpoint's "
      "vocabulary (checkpoint shape [32128, 4], model shape [32100, 4]).\n"
      "1 other problem(s): shape 'decoder/logits_dense/kernel'.")
  logits_only = _mismatch(
      {"logits_dense": {"kernel": jax.ShapeDtypeStruct((4, 250112), jnp.float32)}},
      {"logits_dense": {"kernel": np.zeros((4, 32128), np.float32)}})
  assert ("checkpoint vocabulary has 32128 columns, model expects 250112: "
          "set NUM_EMBEDDINGS=32128") in logits_only


def test_missing_variable_and_allow_missing(t5x_tiny_checkpoint):
  loaded = t5x.load_t5x_params(t5x_tiny_checkpoint)
  expected = _model_shapes(TINY)
  expected["encoder"]["prompt"] = {
      "prompt": {"prompt": jax.ShapeDtypeStruct((5, 4), jnp.float32)}}
  assert _mismatch(expected, loaded) == (
      "Parameters from CKPT do not fit the model: variable "
      "'encoder/prompt/prompt/prompt' (shape [5, 4]) of the model is missing "
      "from the checkpoint. If the model adds it on purpose (e.g. a prompt), "
      "pass allow_missing=<regex of such paths>.")
  matched = restore.match_params(expected, loaded, source="CKPT",
                                 allow_missing=".*/prompt/.*")
  assert "prompt" not in matched["encoder"]
  assert len(tree.flatten_params(matched)) == 52
  # The regex must match the whole path.
  assert "missing" in _mismatch(expected, loaded, allow_missing="prompt")


def test_missing_variable_suggests_close_names():
  expected = {"encoder": {"encoder_norm": {"scale": (4,)}}}
  loaded = {"encoder": {"encoder_nrom": {"scale": np.ones(4)}}}
  message = _mismatch(expected, loaded)
  assert ("variable 'encoder/encoder_norm/scale' (shape [4]) of the model is "
          "missing from the checkpoint. Closest checkpoint variables: "
          "encoder/encoder_nrom/scale.") in message
  assert message.endswith(
      "1 other problem(s): unexpected 'encoder/encoder_nrom/scale'.")


def test_unexpected_variable_and_ignore_unexpected():
  expected = {"dense": {"kernel": (2, 3)}}
  loaded = {"dense": {"kernel": np.ones((2, 3))},
            "extra": {"bias": np.zeros(3, np.float32)}}
  assert _mismatch(expected, loaded) == (
      "Parameters from CKPT do not fit the model: the checkpoint has variable "
      "'extra/bias' (shape [3]) that the model does not define. To drop such "
      "variables, pass ignore_unexpected=<regex of their paths>.")
  matched = restore.match_params(expected, loaded, source="CKPT",
                                 ignore_unexpected="extra/.*")
  assert list(tree.flatten_params(matched)) == ["dense/kernel"]
  # Shape-tuple leaves carry no dtype: the array is returned as loaded.
  assert matched["dense"]["kernel"].dtype == np.float64


def test_t5_1_0_checkpoint_for_a_t5_1_1_model():
  wi = np.zeros((4, 8), np.float32)
  t5_1_0 = {"encoder": {"layers_0": {"mlp": {"wi": {"kernel": wi}}}}}
  t5_1_1 = {"encoder": {"layers_0": {"mlp": {
      "wi_0": {"kernel": (4, 8)}, "wi_1": {"kernel": (4, 8)}}}}}
  message = _mismatch(t5_1_1, t5_1_0)
  assert message.startswith(
      "Parameters from CKPT do not fit the model: variable "
      "'encoder/layers_0/mlp/wi_0/kernel' (shape [4, 8]) of the model is "
      "missing from the checkpoint. Note: the checkpoint has a T5 1.0 MLP "
      "('mlp/wi') but the model a gated T5 1.1 MLP")
  assert "2 other problem(s)" in message
  reverse = _mismatch({"encoder": {"layers_0": {"mlp": {"wi": {"kernel": (4, 8)}}}}},
                      {"encoder": {"layers_0": {"mlp": {"wi_0": {"kernel": wi},
                                                        "wi_1": {"kernel": wi}}}}})
  assert "use a T5 1.1 / mT5 architecture for this checkpoint" in reverse


def test_boxed_and_frozen_trees():
  expected = flax.core.freeze({"prompt": {"prompt": nn.Partitioned(
      jax.ShapeDtypeStruct((3, 2), jnp.float32), names=("prompt", "prompt_embed"))}})
  loaded = {"prompt": {"prompt": np.arange(6, dtype=np.float64).reshape(3, 2)}}
  matched = restore.match_params(expected, loaded, source="CKPT")
  assert matched["prompt"]["prompt"].dtype == np.float32
  np.testing.assert_array_equal(matched["prompt"]["prompt"],
                                [[0, 1], [2, 3], [4, 5]])
  with pytest.raises(restore.CheckpointMismatchError, match=r"\[3, 2\]"):
    restore.match_params(expected, {"prompt": {"prompt": np.zeros((2, 3))}},
                         source="CKPT")


def test_flatten_unflatten_round_trip():
  nested = {"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": {}, "g": 4}
  flat = tree.flatten_params(nested)
  assert flat == {"a/b/c": 1, "a/b/d": 2, "a/e": 3, "g": 4}
  assert tree.unflatten_params(flat) == {"a": {"b": {"c": 1, "d": 2}, "e": 3},
                                         "g": 4}
  assert tree.flatten_params(flax.core.freeze({"x": {"y": 5}})) == {"x/y": 5}


def test_flatten_unflatten_errors():
  with pytest.raises(ValueError, match="key 'a/b' under x cannot be part"):
    tree.flatten_params({"x": {"a/b": 1}})
  with pytest.raises(ValueError, match="key 3 under <root>"):
    tree.flatten_params({3: 1})
  with pytest.raises(ValueError, match="'a/b/c' goes through 'a/b', which is"):
    tree.unflatten_params({"a/b": 1, "a/b/c": 2})
  with pytest.raises(ValueError, match="'a/b' is both a variable and a scope"):
    tree.unflatten_params({"a/b/c": 2, "a/b": 1})
  with pytest.raises(ValueError, match="'a//b' has an empty component"):
    tree.unflatten_params({"a//b": 1})
