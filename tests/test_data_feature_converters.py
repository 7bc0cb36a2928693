"""Prompt-aware feature converters: exact arrays and model lengths."""

from __future__ import annotations

import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import feature_converters as fc


def _dataset(with_inputs=True):
  examples = [{"inputs": [7, 8, 5, 1], "targets": [3, 9, 1]},
              {"inputs": [4, 1], "targets": [6, 1]}]
  if not with_inputs:
    examples = [{"targets": e["targets"]} for e in examples]
  return tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec([None], tf.int32)
                        for k in examples[0]})


def _convert(converter, lengths, with_inputs=True):
  out = converter(_dataset(with_inputs), lengths)
  return [{k: v.tolist() for k, v in ex.items()}
          for ex in out.as_numpy_iterator()]


def test_enc_dec_arrays_keep_text_lengths():
  converter = fc.PromptEncDecFeatureConverter(prompt_length=5)
  lengths = {"inputs": 6, "targets": 4}
  assert _convert(converter, lengths) == [
      {"encoder_input_tokens": [7, 8, 5, 1, 0, 0],
       "decoder_target_tokens": [3, 9, 1, 0],
       "decoder_input_tokens": [0, 3, 9, 1],
       "decoder_loss_weights": [1, 1, 1, 0]},
      {"encoder_input_tokens": [4, 1, 0, 0, 0, 0],
       "decoder_target_tokens": [6, 1, 0, 0],
       "decoder_input_tokens": [0, 6, 1, 0],
       "decoder_loss_weights": [1, 1, 0, 0]}]
  assert converter.get_model_feature_lengths(lengths) == {
      "encoder_input_tokens": 11, "decoder_target_tokens": 4,
      "decoder_input_tokens": 4, "decoder_loss_weights": 4}
  assert converter.get_text_feature_lengths(lengths)[
      "encoder_input_tokens"] == 6
  assert converter.prompt_length == 5
  assert isinstance(converter, seqio.EncDecFeatureConverter)


def test_decoder_only_prefix_lm_arrays():
  converter = fc.PromptDecoderFeatureConverter(prompt_length=3)
  lengths = {"inputs": 4, "targets": 3}
  assert _convert(converter, lengths)[0] == {
      "decoder_target_tokens": [7, 8, 5, 1, 3, 9, 1],
      "decoder_input_tokens": [0, 7, 8, 5, 1, 3, 9],
      "decoder_loss_weights": [0, 0, 0, 0, 1, 1, 1],
      "decoder_causal_attention": [1, 1, 1, 1, 1, 0, 0]}
  assert converter.get_model_feature_lengths(lengths) == {
      "decoder_target_tokens": 10, "decoder_input_tokens": 10,
      "decoder_loss_weights": 10, "decoder_causal_attention": 10}


def test_decoder_only_language_model_arrays():
  converter = fc.PromptDecoderFeatureConverter(prompt_length=2)
  assert _convert(converter, {"targets": 4}, with_inputs=False)[1] == {
      "decoder_target_tokens": [6, 1, 0, 0],
      "decoder_input_tokens": [0, 6, 1, 0],
      "decoder_loss_weights": [1, 1, 0, 0]}
  assert converter.get_model_feature_lengths({"targets": 4}) == {
      "decoder_target_tokens": 6, "decoder_input_tokens": 6,
      "decoder_loss_weights": 6}


def test_no_prompt_equals_seqio():
  lengths = {"inputs": 6, "targets": 4}
  ours = fc.PromptEncDecFeatureConverter(pack=True)
  theirs = seqio.EncDecFeatureConverter(pack=True)
  assert ours.get_model_feature_lengths(lengths) == dict(
      theirs.get_model_feature_lengths(lengths))
  assert _convert(ours, lengths) == [
      {k: v.tolist() for k, v in ex.items()}
      for ex in theirs(_dataset(), lengths).as_numpy_iterator()]


def test_bad_prompt_settings():
  with pytest.raises(ValueError, match="Pass pack=False"):
    fc.PromptEncDecFeatureConverter(prompt_length=4, pack=True)
  with pytest.raises(ValueError, match="prompt_length must be >= 0, got -1"):
    fc.PromptDecoderFeatureConverter(prompt_length=-1)
