"""Golden outputs of the GLUE / SuperGLUE preprocessors on hand-written rows."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import preprocessors as pp


def _run(preprocessor, examples):
  """Applies a dataset preprocessor to in-memory examples; numpy results."""
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={k: tf.TensorSpec.from_tensor(tf.constant(v))
                        for k, v in examples[0].items()})
  return list(preprocessor(ds).as_numpy_iterator())


def test_glue_sst2_and_unlabeled():
  fn = pp.glue_text_preprocessor("sst2", ("negative", "positive"))
  out = _run(fn, [{"sentence": "it 's great", "label": 1, "idx": 3},
                  {"sentence": "dull", "label": -1, "idx": 4}])
  assert out[0] == {"inputs": b"sst2 sentence: it 's great",
                    "targets": b"positive", "idx": 3}
  assert out[1]["targets"] == b"<unk>"


def test_glue_sorts_features_and_mnli_ax_read_as_mnli():
  qqp = pp.glue_text_preprocessor("qqp", ("not_duplicate", "duplicate"))
  out = _run(qqp, [{"question2": "Why b?", "question1": "Why a?", "label": 0,
                    "idx": 7}])
  assert out[0]["inputs"] == b"qqp question1: Why a? question2: Why b?"
  assert out[0]["targets"] == b"not_duplicate"
  for config in ("mnli_matched", "ax"):
    fn = pp.glue_text_preprocessor(
        config, ("entailment", "neutral", "contradiction"))
    out = _run(fn, [{"premise": "P .", "hypothesis": "H .", "label": 2,
                     "idx": 0}])
    assert out[0]["inputs"] == b"mnli hypothesis: H . premise: P ."
    assert out[0]["targets"] == b"contradiction"


def test_glue_multirc_strips_html_and_keeps_ids():
  fn = pp.glue_text_preprocessor("multirc", ("False", "True"))
  ds = tf.data.Dataset.from_tensors({
      "paragraph": "<b>Sent 1: </b>Hi.<br><b>Sent 2: </b>Bye.",
      "question": "Who?", "answer": "Me", "label": tf.constant(1, tf.int64),
      "idx": {"paragraph": 5, "question": 6, "answer": 7}})
  out = list(fn(ds).as_numpy_iterator())[0]
  assert out["inputs"] == (
      b"multirc question: Who? answer: Me paragraph: Sent 1: Hi. Sent 2: Bye.")
  assert out["targets"] == b"True"
  assert (out["idx/paragraph"], out["idx/question"], out["idx/answer"]) == (
      5, 6, 7)


def test_glue_wic_feature_order_and_axb_as_rte():
  wic = pp.glue_text_preprocessor("wic", ("False", "True"))
  out = _run(wic, [{"word": "bank", "sentence1": "A bank .",
                    "sentence2": "River bank .", "start1": 2, "label": 0,
                    "idx": 1}])
  assert out[0]["inputs"] == (
      b"wic sentence1: A bank . sentence2: River bank . word: bank")
  axb = pp.glue_text_preprocessor("axb", ("entailment", "not_entailment"))
  out = _run(axb, [{"premise": "P", "hypothesis": "H", "label": 1, "idx": 0}])
  assert out[0]["inputs"] == b"rte hypothesis: H premise: P"
  assert out[0]["targets"] == b"not_entailment"


def test_stsb_rounds_to_nearest_fifth():
  out = _run(pp.stsb, [
      {"sentence1": "A", "sentence2": "B", "label": np.float32(v), "idx": i}
      for i, v in enumerate([3.45, 4.93, 2.0, 0.09, 1.3])])
  assert out[0]["inputs"] == b"stsb sentence1: A sentence2: B"
  assert [o["targets"] for o in out] == [b"3.4", b"5.0", b"2.0", b"0.0",
                                         b"1.2"]


def test_mark_wsc_spans():
  assert pp.mark_wsc_spans("This is a test sentence .", 3, "test", 0,
                           "This") == "# This # is a * test * sentence ."
  assert pp.mark_wsc_spans("Mark told Pete many lies about himself .", 0,
                           "Mark", 6, "himself") == (
                               "* Mark * told Pete many lies about # himself "
                               "# .")
  assert pp.mark_wsc_spans("The big dog ate it .", 0, "The big dog", 4,
                           "it") == "* The big dog * ate # it # ."


def test_wsc_preprocessor():
  out = _run(pp.wsc, [{"text": "This is a test sentence .", "span1_index": 3,
                       "span1_text": "test", "span2_index": 0,
                       "span2_text": "This", "label": 0, "idx": 9}])
  assert out[0] == {"inputs": b"wsc text: # This # is a * test * sentence .",
                    "targets": b"False", "idx": 9}


def test_highlight_pronoun():
  assert pp.highlight_pronoun("Bob told Tom he won .", 3, "he") == (
      "Bob told Tom *he* won .")
  # The word only starts with the pronoun: the punctuation is split off.
  assert pp.highlight_pronoun('"Good for him," he said.', 2, "him") == (
      '"Good for *him* ," he said.')
  # An off-by-one index: the nearest occurrence is used.
  assert pp.highlight_pronoun("he might want to use it , but", 4, "it") == (
      "he might want to use *it* , but")


def test_wsc_simple_train_keeps_correct_referents_only():
  examples = [
      {"text": "Bob told Tom he won .", "span1_index": 0, "span1_text": "Bob",
       "span2_index": 3, "span2_text": "he", "label": 1, "idx": 0},
      {"text": "Bob told Tom he won .", "span1_index": 2, "span1_text": "Tom",
       "span2_index": 3, "span2_text": "he", "label": 0, "idx": 1},
  ]
  evaluation = _run(pp.wsc_simple, examples)
  assert [(o["inputs"], o["targets"], o["label"]) for o in evaluation] == [
      (b"wsc: Bob told Tom *he* won .", b"Bob", 1),
      (b"wsc: Bob told Tom *he* won .", b"Tom", 0)]
  train = _run(lambda ds: pp.wsc_simple(ds, correct_referent_only=True),
               examples)
  assert [o["targets"] for o in train] == [b"Bob"]


def test_definite_pronoun_resolution_simple():
  out = _run(pp.definite_pronoun_resolution_simple, [
      {"sentence": "Bob asked Tom if he can lend some money.",
       "pronoun": "he", "candidates": ["Bob", "Tom"], "label": 1}])
  assert out[0] == {"inputs": b"wsc: Bob asked Tom if *he* can lend some "
                              b"money.", "targets": b"Tom"}


def test_record_one_example_per_answer():
  ds = tf.data.Dataset.from_generator(
      lambda: iter([
          {"passage": "A penguin.\n@highlight\nBirds swim\n@highlight\nEnd",
           "query": "A @placeholder is a bird.",
           "entities": ["penguin", "potato"], "answers": ["penguin", "pigeon"],
           "idx": {"passage": 1, "query": 2}},
          {"passage": "P", "query": "Q", "entities": ["e"], "answers": [],
           "idx": {"passage": 3, "query": 4}}]),
      output_signature={
          "passage": tf.TensorSpec([], tf.string),
          "query": tf.TensorSpec([], tf.string),
          "entities": tf.TensorSpec([None], tf.string),
          "answers": tf.TensorSpec([None], tf.string),
          "idx": {"passage": tf.TensorSpec([], tf.int32),
                  "query": tf.TensorSpec([], tf.int32)}})
  out = list(pp.record(ds).as_numpy_iterator())
  inputs = (b"record query: A @placeholder is a bird. entities: penguin, "
            b"potato passage: A penguin. Birds swim. End")
  assert [(o["inputs"], o["targets"], o["idx/passage"], o["idx/query"])
          for o in out] == [(inputs, b"penguin", 1, 2),
                            (inputs, b"pigeon", 1, 2),
                            (b"record query: Q entities: e passage: P",
                             b"<unk>", 3, 4)]
  assert out[0]["answers"].tolist() == [b"penguin", b"pigeon"]
  assert out[2]["answers"].tolist() == []


def test_remove_first_text_token():
  out = _run(pp.remove_first_text_token,
             [{"inputs": "sst2 sentence: a  b", "targets": "x"}])
  assert out[0] == {"inputs": b"sentence: a  b", "targets": b"x"}


def test_add_sentinel_to_beginning():
  features = {"inputs": seqio.Feature(seqio.PassThroughVocabulary(size=50))}
  ds = tf.data.Dataset.from_tensors({"inputs": tf.constant([5, 6, 1])})
  out = list(pp.add_sentinel_to_beginning(ds, features, field="inputs",
                                          offset=6).as_numpy_iterator())
  assert out[0]["inputs"].tolist() == [43, 5, 6, 1]


def test_task_index():
  assert pp.task_index(["b", "a", "c"], {"c": "a"}) == {"a": 0, "b": 1, "c": 0}
  with pytest.raises(ValueError, match="'z' is not one of the tasks"):
    pp.task_index(["a"], {"c": "z"})
