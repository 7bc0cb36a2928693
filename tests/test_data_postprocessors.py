"""Tests for prompt_tuning.data.postprocessors."""

from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors as pp

_LABELS = ("negative", "positive")


def test_string_label_to_class_id():
  assert pp.string_label_to_class_id("positive", _LABELS) == 1
  assert pp.string_label_to_class_id(b"negative", _LABELS) == 0
  assert pp.string_label_to_class_id("negative", (b"negative", b"x")) == 0
  assert pp.string_label_to_class_id("neutral", _LABELS) == -1
  assert pp.string_label_to_class_id("Positive", _LABELS, default=7) == 7
  # Same mapping for targets, with the example passed the seqio way.
  assert pp.string_label_to_class_id("positive", _LABELS, example={},
                                     is_target=True) == 1


def test_string_to_float():
  assert pp.string_to_float("3.25") == 3.25
  assert pp.string_to_float(b"2") == 2.0
  assert pp.string_to_float(np.array(b"-0.5")) == -0.5
  assert pp.string_to_float("three") == -1.0
  assert pp.string_to_float("", default=0.0) == 0.0


def test_qa_and_record():
  example = {"answers": np.array([b"Barack Obama", b"Obama"], dtype=object)}
  for fn in (pp.qa, pp.record):
    assert fn("obama", example=example, is_target=True) == [
        "Barack Obama", "Obama"]
    assert fn(b"Obama", example=example) == "Obama"
  with pytest.raises(ValueError, match="'answers'"):
    pp.qa("x", example={"inputs": b"q"}, is_target=True)


def test_record_grouped_with_flat_and_nested_idx():
  flat = {"answers": np.array([b"Paris"], dtype=object),
          "idx/passage": np.int32(3), "idx/query": np.int32(7)}
  nested = {"answers": [b"Paris"],
            "idx": {"passage": np.int64(3), "query": np.int64(7)}}
  expected = {"value": ["Paris"], "group": (3, 7)}
  assert pp.record_grouped("p", example=flat, is_target=True) == expected
  assert pp.record_grouped("p", example=nested, is_target=True) == expected
  assert pp.record_grouped(b"Paris", example=flat) == {"value": "Paris"}


def test_multirc():
  flat = {"idx/question": np.int32(5)}
  nested = {"idx": {"paragraph": np.int32(0), "question": np.int32(6),
                    "answer": np.int32(2)}}
  assert pp.multirc("True", example=flat, is_target=True) == {
      "value": 1, "group": 5}
  assert pp.multirc(b"False", example=nested, is_target=True) == {
      "value": 0, "group": 6}
  assert pp.multirc("False", example=flat) == {"value": 0}
  assert pp.multirc("maybe", example=flat) == {"value": -1}
  with pytest.raises(ValueError, match="idx/question"):
    pp.multirc("True", example={"idx": np.int32(1)}, is_target=True)


def test_multirc_outputs_feed_the_metric():
  examples = [{"idx/question": q} for q in (0, 0, 1)]
  targets = [pp.multirc(t, example=ex, is_target=True)
             for t, ex in zip(("True", "False", "True"), examples)]
  predictions = [pp.multirc(p, example=ex)
                 for p, ex in zip(("True", "True", "True"), examples)]
  # tp 2, fp 1 -> F1a 4/5; question 0 has a miss, question 1 is right.
  assert metrics.multirc_f1_em(targets, predictions) == {
      "f1a": pytest.approx(80.0), "exact_match": pytest.approx(50.0)}


def test_axg_groups_minimal_pairs_by_index():
  assert pp.axg("not_entailment", example={"idx": np.int32(7)},
                is_target=True) == {"value": 1, "group": 3}
  assert pp.axg(b"entailment", example={"idx": np.int32(6)},
                is_target=True) == {"value": 0, "group": 3}
  assert pp.axg("contradiction", example={"idx": np.int32(6)}) == {
      "value": -1}
  with pytest.raises(ValueError, match="'idx'"):
    pp.axg("entailment", example={}, is_target=True)


@pytest.mark.parametrize("prediction, expected", [
    ("fuzzy bunny", 1),
    ("The Bunny", 1),  # Case and determiners are ignored; subset matches.
    ("big fuzzy bunny", 1),  # Superset of the referent's words.
    ("fuzzy bunny's hat", 0),  # Possessive on one side only.
    ("cat", 0),
    ("", -1),
    ("the", -1),  # Nothing left after dropping determiners.
])
def test_wsc_simple(prediction, expected):
  example = {"targets_pretokenized": b"the fuzzy bunny", "label": np.int64(1)}
  assert pp.wsc_simple(prediction, example=example) == expected


def test_wsc_simple_possessive_and_target():
  example = {"targets_pretokenized": b"Bob's hat", "label": np.int64(0)}
  assert pp.wsc_simple("Bob", example=example) == 0
  assert pp.wsc_simple("bob's hat", example=example) == 1
  assert pp.wsc_simple("anything", example=example, is_target=True) == 0
  legacy = {"targets_plaintext": b"the dog"}
  assert pp.wsc_simple("dog", example=legacy) == 1
