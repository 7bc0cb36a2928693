"""Rank classification end to end: preprocessor -> fake scorer -> metric."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from prompt_tuning.data import rank_classification as rc

_LABELS = ("negative", "positive")
_REVIEWS = {"inputs": ["great film", "boring plot", "not bad", "awful"],
            "label": [1, 0, 1, 0]}
# Stand-in for the model's log-likelihood of targets given inputs.
_SCORES = {
    ("great film", "negative"): -3.0, ("great film", "positive"): -1.0,
    ("boring plot", "negative"): -2.0, ("boring plot", "positive"): -2.5,
    ("not bad", "negative"): -1.0, ("not bad", "positive"): -2.0,
    ("awful", "negative"): -4.0, ("awful", "positive"): -0.5,
}


def _reviews(mode: str) -> list[dict[str, np.ndarray]]:
  dataset = tf.data.Dataset.from_tensor_slices(_REVIEWS)
  dataset = rc.rank_classification_from_labels(dataset, _LABELS, mode=mode)
  return list(dataset.as_numpy_iterator())


def _score_and_postprocess(pairs):
  targets = [rc.rank_classification_postprocessor(
      pair["targets"].decode(), example=pair, is_target=True) for pair in pairs]
  scores = [_SCORES[(pair["inputs"].decode(), pair["targets"].decode())]
            for pair in pairs]
  return targets, scores


def test_eval_mode_makes_one_pair_per_label_in_order():
  pairs = _reviews("eval")
  got = [(p["idx"].tolist(), p["inputs"], p["targets"], p["is_correct"])
         for p in pairs]
  assert got == [
      ([0, 0], b"great film", b"negative", False),
      ([0, 1], b"great film", b"positive", True),
      ([1, 0], b"boring plot", b"negative", True),
      ([1, 1], b"boring plot", b"positive", False),
      ([2, 0], b"not bad", b"negative", False),
      ([2, 1], b"not bad", b"positive", True),
      ([3, 0], b"awful", b"negative", True),
      ([3, 1], b"awful", b"positive", False),
  ]
  assert pairs[0]["idx"].dtype == np.int32


def test_end_to_end_binary_metric():
  targets, scores = _score_and_postprocess(_reviews("eval"))
  assert targets[:2] == [(0, 0, False), (0, 1, True)]
  # Scored out of order: the metric groups by example index itself.
  result = rc.rank_classification_metric(targets[::-1], scores[::-1],
                                         num_classes=2)
  # Predicted labels 1, 0, 0, 1 against 1, 0, 1, 0: 2 of 4 right;
  # class 1: tp 1, fp 1, fn 1 -> F1 1/2.
  # P(positive) = sigmoid(s1 - s0): .881 (+), .378 (-), .269 (+), .971 (-).
  # AUC-ROC: positive above negative in 1 of 4 pairs. Ranked by probability
  # - + - +: AP = 1/2 * 1/2 + 1/2 * 2/4.
  assert result == {"accuracy": pytest.approx(50.0), "f1": pytest.approx(50.0),
                    "auc-roc": pytest.approx(25.0),
                    "auc-pr": pytest.approx(50.0)}
  assert rc.rank_classification_metric(targets, scores) == {
      "accuracy": pytest.approx(50.0)}


def test_train_mode_keeps_only_correct_pairs():
  pairs = _reviews("train")
  assert [(p["idx"].tolist(), p["targets"]) for p in pairs] == [
      ([0, 1], b"positive"), ([1, 0], b"negative"), ([2, 1], b"positive"),
      ([3, 0], b"negative")]
  assert all(p["is_correct"] for p in pairs)


def test_fewshot_eval_batches_pairs_per_example():
  examples = _reviews("fewshot_eval")
  assert len(examples) == 4
  assert examples[2]["idx"].tolist() == [[2, 0], [2, 1]]
  assert examples[2]["inputs"].tolist() == [b"not bad", b"not bad"]
  assert examples[2]["targets"].tolist() == [b"negative", b"positive"]
  assert examples[2]["is_correct"].tolist() == [False, True]


def test_several_correct_labels_report_only_accuracy():
  dataset = tf.data.Dataset.from_tensor_slices(
      {"inputs": ["q0", "q1"], "label": [[0, 2], [1, 1]]})
  pairs = list(rc.rank_classification_from_labels(
      dataset, ("a", "b", "c")).as_numpy_iterator())
  assert [p["is_correct"] for p in pairs] == [True, False, True,
                                              False, True, False]
  scores = {"q0": (-1.0, -3.0, -0.5), "q1": (-2.0, -3.0, -1.0)}
  targets = [rc.rank_classification_postprocessor(
      "", example=p, is_target=True) for p in pairs]
  flat_scores = [scores[p["inputs"].decode()][p["idx"][1]] for p in pairs]
  # q0 picks c (correct), q1 picks c (wrong).
  assert rc.rank_classification_metric(targets, flat_scores, num_classes=3) == {
      "accuracy": pytest.approx(50.0)}


def test_unlabeled_examples_mark_no_candidate_correct():
  dataset = tf.data.Dataset.from_tensor_slices(
      {"inputs": ["test"], "label": [-1]})
  pairs = list(rc.rank_classification_from_labels(
      dataset, _LABELS).as_numpy_iterator())
  assert [p["is_correct"] for p in pairs] == [False, False]


def _choices_dataset() -> tf.data.Dataset:
  """COPA-like examples with a varying number of choices and weights."""
  rows = [("sky is", ["blue", "green", "red"], 0, 2.0),
          ("grass is", ["green", "blue"], 0, 1.0),
          ("snow is", ["black", "white"], 1, 1.0)]

  def generate():
    for premise, choices, label, weight in rows:
      yield {"premise": premise, "choices": choices, "label": label,
             "weight": weight}

  return tf.data.Dataset.from_generator(generate, output_signature={
      "premise": tf.TensorSpec([], tf.string),
      "choices": tf.TensorSpec([None], tf.string),
      "label": tf.TensorSpec([], tf.int32),
      "weight": tf.TensorSpec([], tf.float32)})


def _choices_pairs(mode: str = "eval") -> list[dict[str, np.ndarray]]:
  dataset = rc.rank_classification(
      _choices_dataset(),
      inputs_fn=lambda ex: tf.fill(tf.shape(ex["choices"]), ex["premise"]),
      targets_fn=lambda ex: ex["choices"],
      is_correct_fn=lambda ex: tf.equal(
          tf.range(tf.size(ex["choices"])), ex["label"]),
      weight_fn=lambda ex: ex["weight"],
      mode=mode,
      passthrough_feature_keys=["label"])
  return list(dataset.as_numpy_iterator())


def test_generic_preprocessor_with_weights_and_passthrough():
  pairs = _choices_pairs()
  assert [p["idx"].tolist() for p in pairs] == [
      [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 1]]
  assert [float(p["weight"]) for p in pairs] == [2, 2, 2, 1, 1, 1, 1]
  assert [int(p["label"]) for p in pairs] == [0, 0, 0, 0, 0, 1, 1]
  assert rc.rank_classification_postprocessor(
      "", example=pairs[6], is_target=True) == (2, 1, True, 1.0)
  assert len(_choices_pairs("fewshot_eval")[0]["label"]) == 3


def test_weighted_accuracy_over_varying_choices():
  pairs = _choices_pairs()
  log_likelihood = {"blue": -1.0, "green": -2.0, "red": -3.0, "white": -0.5,
                    "black": -3.0}
  grass = {"green": -2.0, "blue": -1.0}  # Wrong for the grass example.
  targets = [rc.rank_classification_postprocessor(
      "", example=p, is_target=True) for p in pairs]
  scores = [(grass if p["inputs"] == b"grass is" else log_likelihood)[
      p["targets"].decode()] for p in pairs]
  # Right, wrong, right with weights 2, 1, 1: (2 + 1) / 4.
  assert rc.rank_classification_metric(targets, scores) == {
      "accuracy": pytest.approx(75.0)}
  with pytest.raises(ValueError, match="has 2 scored candidates but "
                     "num_classes=3"):
    rc.rank_classification_metric(targets, scores, num_classes=3)


def test_three_class_metric_and_t5_target_format():
  # Truths 0, 1, 2; predictions 0, 2, 2.
  truth = [0, 1, 2]
  score_rows = [(-1.0, -2.0, -3.0), (-3.0, -2.0, -1.0), (-3.0, -2.0, -1.0)]
  targets = [(e, c, c == truth[e]) for e in range(3) for c in range(3)]
  scores = [score_rows[e][c] for e in range(3) for c in range(3)]
  # Class 0: F1 1; class 1: fn 1 -> 0; class 2: tp 1, fp 1 -> 2/3.
  expected = {"accuracy": pytest.approx(100 * 2 / 3),
              "mean_3class_f1": pytest.approx(100 * 5 / 9)}
  assert rc.rank_classification_metric(targets, scores, num_classes=3) == (
      expected)
  t5_targets = [((e, c), ok, 1.0, 3) for e, c, ok in targets]
  assert rc.rank_classification_metric(t5_targets, scores, num_classes=3) == (
      expected)


def test_ties_pick_the_first_label():
  targets = [(0, 0, False), (0, 1, True)]
  assert rc.rank_classification_metric(targets, [-1.0, -1.0]) == {
      "accuracy": 0.0}


def test_errors_name_the_problem():
  dataset = tf.data.Dataset.from_tensor_slices({"inputs": ["x"], "label": [0]})
  with pytest.raises(ValueError, match="mode must be one of"):
    rc.rank_classification_from_labels(dataset, _LABELS, mode="predict")
  with pytest.raises(ValueError, match="sizes"):
    rc.rank_classification(
        dataset, inputs_fn=lambda ex: tf.fill([2], ex["inputs"]),
        targets_fn=lambda ex: tf.constant(["a", "b", "c"]),
        is_correct_fn=lambda ex: tf.constant([True, False]))
  with pytest.raises(ValueError, match="'idx' and 'is_correct'"):
    rc.rank_classification_postprocessor("x", example={"inputs": b"x"},
                                         is_target=True)
  with pytest.raises(ValueError, match="example_idx, label_idx"):
    rc.rank_classification_metric([(1, 2)], [0.0])
  with pytest.raises(ValueError, match="at least 2, got 1"):
    rc.rank_classification_metric([(0, 0, True)], [0.0], num_classes=1)
  assert rc.rank_classification_postprocessor(-1.5) == -1.5


def test_seqio_classifies_the_metric_as_a_score_metric():
  seqio = pytest.importorskip("seqio")
  task = seqio.Task(
      "rank_classification_signature_test",
      source=seqio.FunctionDataSource(lambda split, shuffle_files: None,
                                      splits=["validation"]),
      output_features={"targets": seqio.Feature(
          vocabulary=seqio.PassThroughVocabulary(size=8))},
      postprocess_fn=rc.rank_classification_postprocessor,
      metric_fns=[functools.partial(rc.rank_classification_metric,
                                    num_classes=2)])
  assert len(task.score_metric_fns) == 1
  assert not task.predict_metric_fns
