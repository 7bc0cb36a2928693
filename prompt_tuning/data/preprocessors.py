"""Text-to-text preprocessors for GLUE / SuperGLUE in the T5 paper's formats.

Text preprocessors turn a TFDS example into `{"inputs": str, "targets": str,
...}`, e.g. sst2 `{"sentence": "it 's great", "label": 1}` becomes
`{"inputs": "sst2 sentence: it 's great", "targets": "positive"}`.
`remove_first_text_token` gives the "taskless" variants (no leading task name)
and the token preprocessor `add_sentinel_to_beginning` the "task_index" ones.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

UNKNOWN_LABEL = "<unk>"
Preprocessor = Callable[..., tf.data.Dataset]


def _label_text(label: tf.Tensor, label_names: Sequence[str]) -> tf.Tensor:
  """The name of class `label`, or "<unk>" for the unlabeled marker -1."""
  names = tf.constant(list(label_names))
  index = tf.cast(label, tf.int32)
  name = tf.gather(names, tf.maximum(index, 0))
  return tf.where(index < 0, tf.constant(UNKNOWN_LABEL), name)


@seqio.map_over_dataset
def glue(x: Mapping[str, tf.Tensor],
         benchmark_name: str,
         label_names: Sequence[str],
         feature_names: Sequence[str] | None = None,
         id_key: str | None = "idx") -> dict[str, tf.Tensor]:
  """"<benchmark> key1: text1 key2: text2" -> label name.

  Args:
    x: a GLUE / SuperGLUE example with a `label` (class id, -1 if unlabeled).
    benchmark_name: the leading task token ("sst2", "mnli", "rte", ...).
    label_names: class names, indexed by class id.
    feature_names: text features in output order; all but `label` / `idx`,
      sorted by name, when None.
    id_key: the example-id feature copied to `idx` (None: not copied).

  Returns:
    `inputs`, `targets` and the id (`idx`, or `idx/{paragraph,question,
    answer}` for multirc).
  """
  keys = feature_names or sorted(set(x) - {"label", "idx"})
  parts = [benchmark_name]
  for key in keys:
    parts += [f"{key}:", x[key]]
  inputs = tf.strings.join(parts, separator=" ")
  out = {}
  if benchmark_name == "multirc":
    # MultiRC paragraphs carry HTML line breaks and bold markers.
    inputs = tf.strings.regex_replace(inputs, "<br>", " ")
    inputs = tf.strings.regex_replace(inputs, "<(/)?b>", "")
    for part in ("paragraph", "question", "answer"):
      out[f"idx/{part}"] = x["idx"][part]
  elif id_key:
    out["idx"] = x[id_key]
  out["inputs"] = inputs
  out["targets"] = _label_text(x["label"], label_names)
  return out


@seqio.map_over_dataset
def stsb(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """STS-B with the score rounded to the nearest 0.2 as a "%.1f" string."""
  inputs = tf.strings.join(
      ["stsb sentence1:", x["sentence1"], "sentence2:", x["sentence2"]],
      separator=" ")
  rounded = tf.round(tf.cast(x["label"], tf.float32) * 5.0) / 5.0
  targets = tf.strings.as_string(rounded, precision=1)
  return {"inputs": inputs, "targets": targets, "idx": x["idx"]}


def _insert_marks(words: list[str], start: int, num_words: int,
                  mark: str) -> list[str]:
  """`words` with `mark` before word `start` and after `num_words` words."""
  end = start + num_words
  return words[:start] + [mark] + words[start:end] + [mark] + words[end:]


def mark_wsc_spans(text: str, span1_index: int, span1_text: str,
                   span2_index: int, span2_text: str) -> str:
  """WSC text with "* noun *" at span 1 and "# pronoun #" at span 2.

  Indices count space-separated words, as in the SuperGLUE data:
  ("This is a test .", 3, "test", 0, "This") -> "# This # is a * test * .".
  """
  words = text.split(" ")
  words = _insert_marks(words, span1_index, len(span1_text.split(" ")), "*")
  # Span 1's two marks shift a later span 2 by two words.
  if span1_index < span2_index:
    span2_index += 2
  words = _insert_marks(words, span2_index, len(span2_text.split(" ")), "#")
  return " ".join(words)


def highlight_pronoun(text: str, index: int, pronoun: str) -> str:
  """`text` with the pronoun at word `index` written as "*pronoun*".

  When word `index` only starts with the pronoun (`him,"`) the rest is split
  off (`*him* ,"`); when it is another word, the occurrence of the pronoun
  nearest to `index` is highlighted (the data has a few off-by-one indices).
  """
  words = text.split(" ")
  target = min(max(index, 0), len(words) - 1)
  if words[target] != pronoun:
    if words[target].startswith(pronoun):
      rest = words[target][len(pronoun):]
      words[target:target + 1] = [pronoun, rest]
    else:
      matches = [i for i, w in enumerate(words) if w == pronoun]
      if matches:
        target = min(matches, key=lambda i: (abs(i - index), i))
  words[target] = f"*{pronoun}*"
  return " ".join(words)


def _py_str(fn: Callable[..., str], *args: tf.Tensor) -> tf.Tensor:
  """Runs a Python string function on scalar tensors inside tf.data."""

  def call(*values):
    decoded = [v.decode("utf-8") if isinstance(v, bytes) else v.item()
               for v in values]
    return fn(*decoded).encode("utf-8")

  out = tf.numpy_function(call, list(args), tf.string, stateful=False)
  return tf.reshape(out, [])


@seqio.map_over_dataset
def wsc(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """WSC as classification: "wsc text: ... * noun * ... # it # ..." -> True."""
  text = _py_str(mark_wsc_spans, x["text"], x["span1_index"], x["span1_text"],
                 x["span2_index"], x["span2_text"])
  return {"inputs": tf.strings.join(["wsc text:", text], separator=" "),
          "targets": _label_text(x["label"], ("False", "True")),
          "idx": x["idx"]}


def wsc_simple(dataset: tf.data.Dataset,
               label: str = "wsc:",
               correct_referent_only: bool = False) -> tf.data.Dataset:
  """WSC as generation: "wsc: ... *it* ..." -> the candidate referent.

  The target is always span 1 (right or wrong); `label` keeps whether it is the
  correct referent. Train only on `correct_referent_only=True`.
  """
  if correct_referent_only:
    dataset = dataset.filter(lambda x: tf.cast(x["label"], tf.bool))

  def convert(x):
    text = _py_str(highlight_pronoun, x["text"], x["span2_index"],
                   x["span2_text"])
    return {"inputs": tf.strings.join([label, text], separator=" "),
            "targets": tf.reshape(x["span1_text"], []),
            "label": x.get("label", tf.constant(0, tf.int64)),
            "idx": x["idx"]}

  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def _highlight_first(sentence: str, pronoun: str) -> str:
  """The first whole-word `pronoun` after a space written as "*pronoun*"."""
  pattern = rf" ({re.escape(pronoun)})( |\.|,)"
  return re.sub(pattern, r" *\1*\2", sentence, count=1)


@seqio.map_over_dataset
def definite_pronoun_resolution_simple(
    x: Mapping[str, tf.Tensor], label: str = "wsc:") -> dict[str, tf.Tensor]:
  """DPR like simple WSC: "wsc: Bob asked Tom if *he* ..." -> "Tom"."""
  text = _py_str(_highlight_first, x["sentence"], x["pronoun"])
  return {"inputs": tf.strings.join([label, text], separator=" "),
          "targets": x["candidates"][x["label"]]}


def record(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD: one example per answer ("<unk>" target when there is none).

  inputs: "record query: <query> entities: <e1>, <e2> passage: <passage>",
  with the passage's "@highlight" lines joined as sentences; every example
  keeps the full `answers` list for evaluation.
  """

  def expand(x):
    passage = tf.strings.regex_replace(
        x["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
    passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
    inputs = tf.strings.join(
        ["record query:", x["query"], "entities:",
         tf.strings.reduce_join(x["entities"], separator=", "), "passage:",
         passage], separator=" ")
    answers = x["answers"]
    num_answers = tf.size(answers)
    copies = tf.maximum(num_answers, 1)
    targets = tf.cond(num_answers > 0, lambda: answers,
                      lambda: tf.constant([UNKNOWN_LABEL]))
    return {
        "idx/passage": tf.fill([copies], x["idx"]["passage"]),
        "idx/query": tf.fill([copies], x["idx"]["query"]),
        "inputs": tf.fill([copies], inputs),
        "targets": targets,
        "answers": tf.broadcast_to(answers[tf.newaxis],
                                   [copies, num_answers]),
    }

  dataset = dataset.map(expand, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.unbatch()


@seqio.map_over_dataset
def remove_first_text_token(x: Mapping[str, tf.Tensor],
                            key: str = "inputs") -> dict[str, tf.Tensor]:
  """Drops the first space-separated word of `key` ("sst2 sentence: a" -> ...).

  Turns a T5 task into its "taskless" variant.
  """
  out = dict(x)
  out[key] = tf.strings.regex_replace(x[key], r"^[^ ]* ", "",
                                      replace_global=False)
  return out


def add_sentinel_to_beginning(dataset: tf.data.Dataset,
                              output_features: Mapping[str, seqio.Feature],
                              field: str = "inputs",
                              offset: int = 0) -> tf.data.Dataset:
  """Prepends the token `<extra_id_{offset}>` to the token ids of `field`.

  A token preprocessor (after `seqio.preprocessors.tokenize`); gives the
  "task_index" variants. `<extra_id_0>` is the vocabulary's last id.
  """
  vocab = output_features[field].vocabulary
  token = vocab.vocab_size - (offset + 1)

  def prepend(x):
    out = dict(x)
    ids = x[field]
    out[field] = tf.concat([tf.constant([token], ids.dtype), ids], axis=0)
    return out

  return dataset.map(prepend, num_parallel_calls=tf.data.AUTOTUNE)


def task_index(names: Sequence[str],
               aliases: Mapping[str, str] | None = None) -> dict[str, int]:
  """Index of each task in sorted order; an alias shares its target's index.

  Example: task_index(["b", "a", "c"], {"c": "a"}) == {"a": 0, "b": 1, "c": 0}.
  """
  aliases = dict(aliases or {})
  index = {name: i for i, name in enumerate(sorted(set(names) - set(aliases)))}
  for alias, target in aliases.items():
    if target not in index:
      raise ValueError(
          f"Task alias {alias!r} -> {target!r}: {target!r} is not one of the "
          f"tasks {sorted(index)}; alias an existing task.")
    index[alias] = index[target]
  return index


def glue_text_preprocessor(config_name: str,
                           label_names: Sequence[str] | None) -> Preprocessor:
  """The T5 text preprocessor of a GLUE / SuperGLUE TFDS config name."""
  if config_name == "stsb":
    return stsb
  if config_name in ("wsc", "wsc.fixed"):
    return wsc
  if config_name == "record":
    return record
  if label_names is None:
    raise ValueError(f"GLUE config {config_name!r} needs label_names.")
  if "mnli" in config_name or config_name == "ax":
    benchmark = "mnli"  # The GLUE diagnostic set is read as MNLI.
  elif config_name in ("axb", "axg"):
    benchmark = "rte"  # The SuperGLUE diagnostic sets are read as RTE.
  else:
    benchmark = config_name
  feature_names = {
      "multirc": ("question", "answer", "paragraph"),
      "wic": ("sentence1", "sentence2", "word"),
  }.get(config_name)
  return functools.partial(glue, benchmark_name=benchmark,
                           label_names=tuple(label_names),
                           feature_names=feature_names)
