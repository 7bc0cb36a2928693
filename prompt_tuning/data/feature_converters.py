"""seqio feature converters that know the model prepends a prompt.

`TASK_FEATURE_LENGTHS` stays the length of the text: the converted arrays have
text lengths, and the model splices the prompt's P embeddings in itself. What
changes is `get_model_feature_lengths`, which reports where the model sees
text + prompt: the encoder side (`encoder_*`, length T_in + P) for the
encoder-decoder, the whole decoder sequence (length T_in + T_out + P) for the
decoder-only model. `get_text_feature_lengths` gives the array lengths.

Examples of a prompt template carry "prompt_slots" (`template_inputs`); the converters pass it
through to the batch as positions in the model's input row (the encoder inputs; the decoder
row after its start token / BOS).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import seqio
import tensorflow as tf

from prompt_tuning.data.template_inputs import SLOTS, model_slots_tf

ENCODER_FEATURES = ("encoder_input_tokens", "encoder_segment_ids",
                    "encoder_positions")


def _check_prompt_length(prompt_length: int, pack: bool) -> None:
  if prompt_length < 0:
    raise ValueError(f"prompt_length must be >= 0, got {prompt_length}.")
  if prompt_length and pack:
    raise ValueError(
        f"prompt_length={prompt_length} with pack=True: a packed row holds "
        "several examples but gets one prompt. Pass pack=False.")


def _add_prompt(lengths: Mapping[str, int], prompt_length: int,
                features: tuple[str, ...] | None) -> dict[str, int]:
  """`lengths` with `prompt_length` added to `features` (None: to all)."""
  return {k: v + prompt_length if features is None or k in features else v
          for k, v in lengths.items()}


class _PromptAwareLengths:
  """Shared behaviour: seqio's own conversion (text lengths) + model lengths with the prompt.

  Subclasses set `_PROMPT_FEATURES` (None: every feature) and `_SLOT_SHIFT` (tokens the model
  row has in front of the inputs), and call `_init_prompt`.
  """

  _PROMPT_FEATURES: tuple[str, ...] | None = None
  _SLOT_SHIFT = 0

  def _init_prompt(self, prompt_length: int, text_converter: seqio.FeatureConverter,
                   make_converter: Callable[[Mapping[str, Any]], seqio.FeatureConverter]
                   ) -> None:
    """`make_converter(passthrough_features)` builds the text converter that carries a
    template's "prompt_slots" through."""
    self._prompt_length = prompt_length
    self._text_converter = text_converter
    self._make_converter = make_converter

  @property
  def prompt_length(self) -> int:
    return self._prompt_length

  def __call__(self, ds: tf.data.Dataset,
               task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    """Converts `ds` to model features of text lengths (seqio's validation).

    Examples with "prompt_slots" (a template's slots, `template_inputs`) keep them, as
    positions in the model's input row.
    """
    if SLOTS not in ds.element_spec:
      return self._text_converter(ds, task_feature_lengths)
    num_slots = ds.element_spec[SLOTS].shape[0]
    if num_slots is None:
      raise ValueError("prompt_slots must have a static length (the template's slot count); "
                       "make them with template_inputs.tokenize_template.")
    spec = {SLOTS: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    lengths = dict(task_feature_lengths, **{SLOTS: num_slots})
    shift = self._slot_shift()
    converted = self._make_converter(spec)(ds, lengths)
    return converted.map(lambda ex: dict(ex, **{SLOTS: model_slots_tf(ex[SLOTS], shift)}),
                         num_parallel_calls=tf.data.AUTOTUNE)

  def _slot_shift(self) -> int:
    return self._SLOT_SHIFT

  def get_text_feature_lengths(
      self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    """Lengths of the converted arrays (no prompt)."""
    return dict(
        self._text_converter.get_model_feature_lengths(task_feature_lengths))

  def get_model_feature_lengths(
      self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    """Lengths as the model sees them, the prompt included where it is spliced in."""
    return _add_prompt(self.get_text_feature_lengths(task_feature_lengths),
                       self._prompt_length, self._PROMPT_FEATURES)


class PromptEncDecFeatureConverter(_PromptAwareLengths, seqio.EncDecFeatureConverter):
  """`seqio.EncDecFeatureConverter` for a model with a P-token encoder prompt.

  Converted arrays are exactly those of `seqio.EncDecFeatureConverter` (text
  lengths); `get_model_feature_lengths` adds `prompt_length` to the encoder
  features, the length the model's encoder attends over.
  """

  _PROMPT_FEATURES = ENCODER_FEATURES

  def __init__(self, prompt_length: int = 0, pack: bool = False,
               **kwargs: Any) -> None:
    _check_prompt_length(prompt_length, pack)
    super().__init__(pack=pack, **kwargs)
    self._init_prompt(prompt_length, seqio.EncDecFeatureConverter(pack=pack, **kwargs),
                      lambda passthrough: seqio.EncDecFeatureConverter(
                          pack=pack, passthrough_features=passthrough, **kwargs))


class PromptDecoderFeatureConverter(_PromptAwareLengths, seqio.DecoderFeatureConverter):
  """`seqio.DecoderFeatureConverter` for a decoder-only model with a prompt.

  With an `inputs` length the inputs are a fully visible prefix
  (`decoder_causal_attention`) and, by default, carry no loss; without one
  it is a plain language model. Converted arrays have text lengths;
  `get_model_feature_lengths` adds `prompt_length` to every feature, since
  the prompt is part of the decoder sequence.
  """

  _PROMPT_FEATURES = None
  _SLOT_SHIFT = 1  # The decoder start token before the inputs.

  def __init__(self, prompt_length: int = 0, loss_on_targets_only: bool = True,
               pack: bool = False, **kwargs: Any) -> None:
    _check_prompt_length(prompt_length, pack)
    super().__init__(loss_on_targets_only=loss_on_targets_only, pack=pack,
                     **kwargs)
    self._init_prompt(prompt_length, seqio.DecoderFeatureConverter(
        loss_on_targets_only=loss_on_targets_only, pack=pack, **kwargs),
                      lambda passthrough: seqio.DecoderFeatureConverter(
                          loss_on_targets_only=loss_on_targets_only, pack=pack,
                          passthrough_features=passthrough, **kwargs))


class CausalLMTextConverter(seqio.FeatureConverter):
  """Inputs + targets as one causal-LM sequence, for the decoder-only LLM families.

  Each example becomes the token sequence [BOS] + inputs + targets (BOS only when the model's
  tokenizer adds one; targets usually end with EOS), and the model features:
    decoder_input_tokens:   sequence[:-1]
    decoder_target_tokens:  sequence[1:] (the next token at every position)
    decoder_loss_weights:   1 where the next token is a target token (loss on targets only)
    decoder_attention_mask: 1 on real positions, 0 on padding
  all of length inputs + targets (trimmed at the end, then padded). Attention is plainly causal
  (no fully visible inputs prefix, unlike T5X's prefix LM), padding is the mask (token id 0 is a
  real token for these vocabularies), and a row's generation prompt is its real positions up to
  the first weighted one. Without an `inputs` length the task is plain language modelling.
  """

  TASK_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  MODEL_FEATURES = {
      name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
      for name in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                   "decoder_attention_mask")}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, bos_id: int | None = None, pack: bool = False, **kwargs: Any) -> None:
    if pack:
      raise ValueError("packing is not supported for causal-LM features; pass pack=False.")
    super().__init__(pack=False, **kwargs)
    self._bos_id = bos_id

  @property
  def num_prepended(self) -> int:
    """Tokens each row has before the inputs (the BOS, when the tokenizer adds one)."""
    return 0 if self._bos_id is None else 1

  def __call__(self, ds: tf.data.Dataset,
               task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    features = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
    if "inputs" in task_feature_lengths:
      features["inputs"] = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
    self.TASK_FEATURES = features  # Instance-level: inputs are optional (seqio checks exactly).
    return super().__call__(ds, task_feature_lengths)

  def _model_length(self, task_feature_lengths: Mapping[str, int]) -> int:
    return int(task_feature_lengths.get("inputs", 0)) + int(task_feature_lengths["targets"])

  def _passthrough(self, example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {name: example[name] for name in self._passthrough_features}

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = self._model_length(task_feature_lengths)
    bos = [] if self._bos_id is None else [self._bos_id]

    def convert(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      inputs = example.get("inputs", tf.zeros([0], tf.int32))
      head = tf.concat([tf.constant(bos, tf.int32), tf.cast(inputs, tf.int32)], axis=0)
      sequence = tf.concat([head, tf.cast(example["targets"], tf.int32)], axis=0)
      positions = tf.range(tf.size(sequence) - 1)
      features = {
          "decoder_input_tokens": sequence[:-1],
          "decoder_target_tokens": sequence[1:],
          "decoder_loss_weights": tf.cast(positions >= tf.size(head) - 1, tf.int32),
          "decoder_attention_mask": tf.ones_like(positions, tf.int32),
      }
      padded = {name: tf.pad(value[:length], [[0, tf.maximum(length - tf.size(value), 0)]])
                for name, value in features.items()}
      return dict(padded, **self._passthrough(example))

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    length = self._model_length(task_feature_lengths)
    lengths = {name: length for name in self.MODEL_FEATURES}
    lengths.update({name: task_feature_lengths[name] for name in self._passthrough_features})
    return lengths


class Seq2SeqTextConverter(seqio.FeatureConverter):
  """Encoder-decoder features for families that pad with a pad id and start texts with BOS
  (BART, mBART), as Hugging Face's seq2seq fine-tuning builds them:
    encoder_input_tokens:  [BOS] + inputs (inputs end with EOS), padded with pad_id
    decoder_target_tokens: [BOS] + targets (targets end with EOS), padded with pad_id
    decoder_input_tokens:  [decoder start] + targets shifted right, padded with pad_id
    decoder_loss_weights:  1 on the real target positions
  (BOS only when the model's tokenizer adds one.) Lengths are the task's plus the BOS.
  """

  TASK_FEATURES = {"inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
                   "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  MODEL_FEATURES = {
      name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
      for name in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                   "decoder_loss_weights")}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, pad_id: int, decoder_start_id: int, bos_id: int | None = None,
               pack: bool = False, **kwargs: Any) -> None:
    if pack:
      raise ValueError("packing is not supported for these seq2seq features; pass pack=False.")
    super().__init__(pack=False, **kwargs)
    self._pad_id, self._start_id, self._bos_id = pad_id, decoder_start_id, bos_id

  @property
  def num_prepended(self) -> int:
    """Tokens each row has before the inputs / targets (the BOS, when the tokenizer adds one)."""
    return 0 if self._bos_id is None else 1

  def _pad(self, value: tf.Tensor, length: int, fill: int) -> tf.Tensor:
    value = value[:length]
    return tf.pad(value, [[0, tf.maximum(length - tf.size(value), 0)]], constant_values=fill)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    lengths = self.get_model_feature_lengths(task_feature_lengths)
    bos = tf.constant([] if self._bos_id is None else [self._bos_id], tf.int32)

    def convert(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      inputs = tf.concat([bos, tf.cast(example["inputs"], tf.int32)], axis=0)
      targets = tf.concat([bos, tf.cast(example["targets"], tf.int32)], axis=0)
      shifted = tf.concat([tf.constant([self._start_id], tf.int32), targets[:-1]], axis=0)
      decoder_length = lengths["decoder_target_tokens"]
      features = {
          "encoder_input_tokens": self._pad(inputs, lengths["encoder_input_tokens"],
                                            self._pad_id),
          "decoder_target_tokens": self._pad(targets, decoder_length, self._pad_id),
          "decoder_input_tokens": self._pad(shifted, decoder_length, self._pad_id),
          "decoder_loss_weights": self._pad(tf.ones_like(targets), decoder_length, 0),
      }
      features.update({name: example[name] for name in self._passthrough_features})
      return features

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    encoder = int(task_feature_lengths["inputs"]) + self.num_prepended
    decoder = int(task_feature_lengths["targets"]) + self.num_prepended
    lengths = {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder,
               "decoder_target_tokens": decoder, "decoder_loss_weights": decoder}
    lengths.update({name: task_feature_lengths[name] for name in self._passthrough_features})
    return lengths


class PromptSeq2SeqFeatureConverter(_PromptAwareLengths, Seq2SeqTextConverter):
  """`Seq2SeqTextConverter` for a model with a P-token encoder prompt (encoder lengths + P)."""

  _PROMPT_FEATURES = ENCODER_FEATURES

  def __init__(self, pad_id: int, decoder_start_id: int, prompt_length: int = 0,
               bos_id: int | None = None, pack: bool = False, **kwargs: Any) -> None:
    _check_prompt_length(prompt_length, pack)
    Seq2SeqTextConverter.__init__(self, pad_id, decoder_start_id, bos_id, pack=pack, **kwargs)
    make = lambda passthrough=None: Seq2SeqTextConverter(
        pad_id, decoder_start_id, bos_id, pack=pack, passthrough_features=passthrough, **kwargs)
    self._init_prompt(prompt_length, make(), make)

  def _slot_shift(self) -> int:
    return self.num_prepended

  def get_text_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    return self._text_converter.get_model_feature_lengths(task_feature_lengths)


class PromptCausalLMFeatureConverter(_PromptAwareLengths, CausalLMTextConverter):
  """`CausalLMTextConverter` for a model with a P-token prompt (model lengths + P)."""

  _PROMPT_FEATURES = None

  def __init__(self, prompt_length: int = 0, bos_id: int | None = None, pack: bool = False,
               **kwargs: Any) -> None:
    _check_prompt_length(prompt_length, pack)
    CausalLMTextConverter.__init__(self, bos_id=bos_id, pack=pack, **kwargs)
    self._init_prompt(prompt_length, CausalLMTextConverter(bos_id=bos_id, pack=pack, **kwargs),
                      lambda passthrough: CausalLMTextConverter(
                          bos_id=bos_id, pack=pack, passthrough_features=passthrough, **kwargs))

  def _slot_shift(self) -> int:
    return self.num_prepended

  def get_text_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    return self._text_converter.get_model_feature_lengths(task_feature_lengths)
