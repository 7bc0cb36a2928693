"""seqio preprocessors for prompt templates: inputs with [P:n] slots (`prompt_tuning.templates`).

An example's inputs come as the K + 1 text pieces between the slots ("inputs_pieces", string
[K + 1]); `tokenize_template` tokenizes each piece on its own, concatenates them into "inputs"
and records where each slot falls ("prompt_slots", int32 [K]: the token index the slot's
segment goes before, `templates.BEFORE_ALL` for a leading slot). After the inputs are trimmed
and given their EOS, `trim_prompt_slots` keeps every slot inside the text (before that EOS).
The feature converters carry "prompt_slots" to the batch, shifted to the model's row
(`feature_converters`), and the model places its prompt's segments there.

A file task whose INPUT_TEMPLATE has [P:n] slots uses these by itself (`file_tasks`); a task of
one's own adds `format_template` (fields of the raw example -> pieces) first:

  preprocessors=[functools.partial(template_inputs.format_template, template=T),
                 functools.partial(template_inputs.tokenize_template, template=T),
                 seqio.CacheDatasetPlaceholder(), seqio.preprocessors.append_eos_after_trim,
                 template_inputs.trim_prompt_slots]
"""

from __future__ import annotations

import string
from typing import Mapping

import seqio
import tensorflow as tf

from prompt_tuning import templates

PIECES = "inputs_pieces"
SLOTS = "prompt_slots"


def _as_text(value: tf.Tensor) -> tf.Tensor:
  return value if value.dtype == tf.string else tf.strings.as_string(value)


def format_template(dataset: tf.data.Dataset, template: str) -> tf.data.Dataset:
  """Fills the template's pieces from each example's fields: adds "inputs_pieces" [K + 1] and
  "inputs" (the readable text, slots shown as [P:n]). Fields are plain `{name}` (no format
  spec)."""
  parsed = templates.parse_template(template)
  parts = []
  for piece in parsed.pieces:
    items = []
    for literal, field, spec, conversion in string.Formatter().parse(piece):
      if spec or conversion:
        raise templates.TemplateError(f"template {template!r}: {{{field}:{spec}}} has a format "
                                      "spec; seqio templates take plain {name} fields.")
      items.append((literal, field))
    parts.append(items)

  def fill(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    pieces = []
    for items in parts:
      texts = [tf.constant("")]
      for literal, field in items:
        if literal:
          texts.append(tf.constant(literal))
        if field is not None:
          if field not in example:
            raise templates.TemplateError(f"template {template!r} reads {{{field}}}, which the "
                                          f"examples do not have (fields: {sorted(example)}).")
          texts.append(_as_text(example[field]))
      pieces.append(tf.strings.join(texts))
    shown = [pieces[0]]
    for length, piece in zip(parsed.slot_lengths, pieces[1:]):
      shown += [tf.constant(f" [P:{length}] "), piece]
    out = dict(example)
    out[PIECES] = tf.stack(pieces)
    out["inputs"] = tf.strings.strip(tf.strings.join(shown))
    return out

  return dataset.map(fill, num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_template(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                      template: str, copy_pretokenized: bool = True) -> tf.data.Dataset:
  """"inputs_pieces" -> "inputs" (the pieces' tokens, each piece tokenized alone) and
  "prompt_slots" [K]; the other output features (targets) are tokenized as seqio's `tokenize`
  does. "inputs_pretokenized" is the readable "inputs" text when present."""
  parsed = templates.parse_template(template)
  num_slots = len(parsed.slot_lengths)
  leading = tf.constant(parsed.leading)
  vocabulary = output_features["inputs"].vocabulary

  def tokenize(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    pieces = example[PIECES]
    tokens = [tf.cast(tf.reshape(vocabulary.encode_tf(pieces[i]), [-1]), tf.int32)
              for i in range(num_slots + 1)]
    ends = tf.cumsum(tf.stack([tf.size(t) for t in tokens[:-1]]))
    out = {k: v for k, v in example.items() if k != PIECES}
    for name, feature in output_features.items():
      if name != "inputs" and name in example and example[name].dtype == tf.string:
        if copy_pretokenized:
          out[f"{name}_pretokenized"] = example[name]
        out[name] = feature.vocabulary.encode_tf(example[name])
    if copy_pretokenized:
      out["inputs_pretokenized"] = example.get("inputs",
                                               tf.strings.reduce_join(pieces, separator=" "))
    out["inputs"] = tf.concat(tokens, axis=0)
    out[SLOTS] = tf.reshape(tf.where(leading, templates.BEFORE_ALL, tf.cast(ends, tf.int32)),
                            [num_slots])
    return out

  return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


def trim_prompt_slots(dataset: tf.data.Dataset,
                      output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  """Keeps each slot within the (trimmed) text of "inputs": before its EOS when the inputs
  end with one (`append_eos_after_trim` ran before)."""
  eos = 1 if output_features["inputs"].add_eos else 0

  def trim(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    slots = example[SLOTS]
    limit = tf.maximum(tf.size(example["inputs"]) - eos, 0)
    return dict(example, **{SLOTS: tf.where(slots < 0, slots, tf.minimum(slots, limit))})

  return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)


def model_slots_tf(slots: tf.Tensor, num_prepended: int) -> tf.Tensor:
  """`templates.model_slots` for a [K] tensor: BEFORE_ALL -> 0, else + `num_prepended`."""
  return tf.where(slots == templates.BEFORE_ALL, 0, slots + num_prepended)
