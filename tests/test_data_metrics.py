"""Tests for prompt_tuning.data.metrics against hand-computed values."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from prompt_tuning.data import metrics


def test_accuracy_counts_invalid_predictions_as_wrong():
  # Hits at positions 0, 1, 3: 3 of 5.
  assert metrics.accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, -1]) == {
      "accuracy": pytest.approx(60.0)}


def test_accuracy_on_strings():
  assert metrics.accuracy(["yes", "no"], ["yes", "yes"]) == {
      "accuracy": pytest.approx(50.0)}


def test_f1_binary_with_invalid_prediction():
  targets = [1, 1, 0, 0, 1, 0]
  predictions = [1, 0, 1, 0, 1, 7]  # 7 on a 0 target counts as a false 1.
  # tp = 2 (pos 0, 4), fp = 2 (pos 2, 5), fn = 1 (pos 1): 2tp/(2tp+fp+fn).
  expected = 100 * 4 / 7
  assert metrics.f1(targets, predictions)["f1"] == pytest.approx(expected)
  corrected = [1, 0, 1, 0, 1, 1]
  assert expected == pytest.approx(
      100 * sklearn.metrics.f1_score(targets, corrected))


def test_f1_rejects_non_binary_targets():
  with pytest.raises(ValueError, match="targets 0 or 1"):
    metrics.f1([0, 2], [0, 1])


def test_macro_f1():
  targets = [0, 1, 2, 2, 1]
  predictions = [0, 2, 2, 1, 1]
  # Class 0: F1 1. Class 1: tp 1, fp 1, fn 1 -> 1/2. Class 2: likewise 1/2.
  result = metrics.macro_f1(targets, predictions)
  assert result == {"macro_f1": pytest.approx(100 * 2 / 3)}
  assert result["macro_f1"] == pytest.approx(100 * sklearn.metrics.f1_score(
      targets, predictions, average="macro"))


def test_macro_f1_ignores_invalid_prediction_class():
  # -1 is wrong for class 1 (fn) but is not averaged as a class of its own.
  # Class 0: tp 1 -> 1. Class 1: tp 1, fn 1 -> 2/3.
  assert metrics.macro_f1([0, 1, 1], [0, 1, -1])["macro_f1"] == pytest.approx(
      100 * (1 + 2 / 3) / 2)


def test_mean_multiclass_f1_averages_absent_classes_as_zero():
  metric = metrics.mean_multiclass_f1(3)
  # Class 0: tp 1, fn 1 -> 2/3. Class 1: tp 1, fp 1 -> 2/3. Class 2: 0.
  result = metric([0, 0, 1], [0, 1, 1])
  assert result == {"mean_3class_f1": pytest.approx(100 * 4 / 9)}
  reference = sklearn.metrics.f1_score(
      [0, 0, 1], [0, 1, 1], labels=[0, 1, 2], average="macro", zero_division=0)
  assert result["mean_3class_f1"] == pytest.approx(100 * reference)


def test_multilabel_f1():
  targets = [{"a", "b"}, ["b"], "c"]
  predictions = [["a"], {"b", "c"}, []]
  # a: tp 1 -> 1. b: tp 1, fn 1 -> 2/3. c: fp 1, fn 1 -> 0.
  assert metrics.multilabel_f1(targets, predictions) == {
      "multilabel_f1": pytest.approx(100 * 5 / 9)}
  # An extra label that never occurs adds a 0 to the mean.
  assert metrics.multilabel_f1(
      targets, predictions, label_set=["a", "b", "c", "d"]) == {
          "multilabel_f1": pytest.approx(100 * 5 / 12)}
  indicator_t = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
  indicator_p = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
  assert 100 * 5 / 9 == pytest.approx(100 * sklearn.metrics.f1_score(
      indicator_t, indicator_p, average="macro", zero_division=0))


def test_matthews_corrcoef_from_confusion_matrix():
  targets = [1, 1, 1, 0, 0, 0, 1, 0]
  predictions = [1, 0, 1, 0, 1, 0, 1, 0]
  tp, tn, fp, fn = 3, 3, 1, 1
  expected = (tp * tn - fp * fn) / math.sqrt(
      (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  assert expected == 0.5
  assert metrics.matthews_corrcoef(targets, predictions) == {
      "matthews_corrcoef": pytest.approx(50.0)}


def test_pearson_and_spearman():
  x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
  # Deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / sqrt(5 * 5).
  assert metrics.pearson_corrcoef(x, y) == {
      "pearson_corrcoef": pytest.approx(80.0)}
  assert metrics.spearman_corrcoef(x, y) == {
      "spearman_corrcoef": pytest.approx(80.0)}
  monotone = [1.0, 10.0, 100.0, 1000.0]
  assert metrics.spearman_corrcoef(x, monotone)["spearman_corrcoef"] == (
      pytest.approx(100.0))
  assert metrics.pearson_corrcoef(x, monotone)["pearson_corrcoef"] == (
      pytest.approx(100 * scipy.stats.pearsonr(x, monotone)[0]))
  assert metrics.pearson_corrcoef(x, monotone)["pearson_corrcoef"] < 90


def test_exact_match_decodes_bytes_and_is_case_sensitive():
  assert metrics.exact_match(["a b", b"c", "d"], [b"a b", "C", "d"]) == {
      "exact_match": pytest.approx(100 * 2 / 3)}


def test_normalize_squad():
  assert metrics.normalize_squad("The  Cat, sat  on an  Ant-hill!") == (
      "cat sat on anthill")
  assert metrics.normalize_squad(b"A") == ""


def test_squad_max_over_answers():
  targets = [["The cat", "a dog"], ["New York City"]]
  predictions = ["dog", "york city"]
  # Example 1: EM 0; F1 common 2, precision 2/2, recall 2/3 -> 0.8.
  assert metrics.squad(targets, predictions) == {
      "em": pytest.approx(50.0), "f1": pytest.approx(90.0)}


def test_squad_token_f1_counts_repeated_tokens_once_each():
  # "x x y" vs "x y y": common {x: 1, y: 1} = 2 tokens; P = R = 2/3.
  result = metrics.squad([["x y y"]], ["x x y"])
  assert result == {"em": 0.0, "f1": pytest.approx(100 * 2 / 3)}


def test_record_max_over_answers():
  targets = [["Obama", "Barack Obama"], ["Paris"]]
  predictions = ["barack obama", "London"]
  assert metrics.record(targets, predictions) == {
      "em": pytest.approx(50.0), "f1": pytest.approx(50.0)}


def test_record_deduplicates_groups():
  wrong = {"value": ["Paris"], "group": (0, 0)}
  right = {"value": ["Rome"], "group": (0, 1)}
  targets = [wrong, wrong, wrong, right]
  predictions = [{"value": "London"}] * 3 + [{"value": "rome"}]
  # One copy per group: 1 of 2 right (25 without deduplication).
  assert metrics.record(targets, predictions) == {
      "em": pytest.approx(50.0), "f1": pytest.approx(50.0)}


def test_multirc_f1a_and_question_exact_match():
  groups = [0, 0, 0, 1, 1, 2]
  values = [1, 0, 1, 0, 1, 0]
  predicted = [1, 0, 0, 0, 1, -1]
  targets = [{"value": v, "group": g} for v, g in zip(values, groups)]
  predictions = [{"value": p} for p in predicted]
  # Questions: 0 has a miss, 1 all right, 2 invalid -> 1 of 3 all correct.
  # F1a: tp 2, fn 1 (q0 a2), fp 1 (invalid on a 0 target) -> 4 / 6.
  assert metrics.multirc_f1_em(targets, predictions) == {
      "f1a": pytest.approx(100 * 4 / 6),
      "exact_match": pytest.approx(100 / 3)}


def test_gender_parity_of_consecutive_pairs():
  assert metrics.gender_parity([0] * 6, [1, 1, 0, 2, 0, 0]) == {
      "gender_parity": pytest.approx(100 * 2 / 3)}
  with pytest.raises(ValueError, match="odd number"):
    metrics.gender_parity([0, 0, 0], [0, 0, 0])


def test_gender_parity_and_accuracy_with_pair_groups():
  # Examples in shuffled order; pairs named by group. Pair 4: 1 / 1 (alike),
  # pair 7: 0 / 1 (differ), pair 9: 0 / 0 (alike).
  groups = [7, 4, 9, 4, 7, 9]
  labels = [0, 1, 0, 1, 0, 0]
  predicted = [0, 1, 0, 1, 1, 0]
  targets = [{"value": v, "group": g} for v, g in zip(labels, groups)]
  predictions = [{"value": p} for p in predicted]
  assert metrics.gender_parity(targets, predictions) == {
      "gender_parity": pytest.approx(100 * 2 / 3)}
  # Consecutive pairing would give (0,1) (0,1) (1,0): 0 alike.
  assert metrics.gender_parity(labels, predicted) == {"gender_parity": 0.0}
  assert metrics.accuracy(targets, predictions) == {
      "accuracy": pytest.approx(100 * 5 / 6)}


def test_length_mismatch_and_empty_inputs_raise():
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    metrics.accuracy([0, 1], [0])
  with pytest.raises(ValueError, match="no examples"):
    metrics.accuracy([], [])


def _run_all(metric_fns, targets, predictions):
  result = {}
  for fn in metric_fns:
    result.update(fn(targets, predictions))
  return result


def test_glue_metric_sets():
  assert _run_all(metrics.glue_metrics("mrpc"), [1, 0, 1, 1], [1, 1, 0, 1]) == {
      "f1": pytest.approx(100 * 4 / 6), "accuracy": pytest.approx(50.0)}
  assert set(_run_all(metrics.glue_metrics("stsb"), [1.0, 2.0, 3.0],
                      [1.0, 2.5, 2.9])) == {"pearson_corrcoef",
                                            "spearman_corrcoef"}
  assert metrics.glue_metrics("cola") == [metrics.matthews_corrcoef]
  assert metrics.glue_metrics("ax") == []
  for name in ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli",
               "rte", "wnli"):
    assert metrics.glue_metrics(name) == [metrics.accuracy]


def test_super_glue_metric_sets():
  # CB: class 0 F1 1; class 1 tp 1 fp 1 -> 2/3; class 2 tp 1 fn 1 -> 2/3.
  result = _run_all(metrics.super_glue_metrics("cb"), [0, 1, 2, 2],
                    [0, 1, 1, 2])
  assert result == {"mean_3class_f1": pytest.approx(100 * 7 / 9),
                    "accuracy": pytest.approx(75.0)}
  assert metrics.super_glue_metrics("multirc") == [metrics.multirc_f1_em]
  assert metrics.super_glue_metrics("record") == [metrics.record]
  assert metrics.super_glue_metrics("axb") == [metrics.matthews_corrcoef]
  assert metrics.super_glue_metrics("axg") == [metrics.gender_parity,
                                               metrics.accuracy]
  for name in ("boolq", "copa", "rte", "wic", "wsc", "wsc.fixed",
               "wsc_simple"):
    assert metrics.super_glue_metrics(name) == [metrics.accuracy]


def test_metric_sets_are_copies():
  metrics.glue_metrics("mrpc").append(metrics.squad)
  assert metrics.glue_metrics("mrpc") == [metrics.f1, metrics.accuracy]


def test_unknown_names_list_the_known_ones():
  with pytest.raises(ValueError,
                     match="Unknown GLUE task 'cb'; known: ax, cola"):
    metrics.glue_metrics("cb")
  with pytest.raises(ValueError, match="known: axb, axg, boolq"):
    metrics.super_glue_metrics("sst2")
  with pytest.raises(ValueError, match="known: accuracy, exact_match, f1"):
    metrics.get_metric("bleu")
  with pytest.raises(KeyError):
    metrics.METRICS_BY_NAME["bleu"]  # pylint: disable=pointless-statement


def test_metrics_by_name():
  assert metrics.METRICS_BY_NAME["mcc"]([1, 0, 1, 0], [1, 0, 1, 0]) == {
      "matthews_corrcoef": pytest.approx(100.0)}
  assert set(metrics.METRICS_BY_NAME) == {
      "accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman",
      "exact_match", "squad"}


def test_seqio_classifies_every_metric_as_a_predict_metric():
  seqio = pytest.importorskip("seqio")
  all_fns = [fn for name in ("cola", "mrpc", "stsb", "mnli")
             for fn in metrics.glue_metrics(name)]
  all_fns += [fn for name in ("cb", "multirc", "record", "axg")
              for fn in metrics.super_glue_metrics(name)]
  all_fns += list(metrics.METRICS_BY_NAME.values())
  all_fns.append(functools.partial(metrics.multilabel_f1, label_set=["a"]))
  vocab = seqio.PassThroughVocabulary(size=8)
  task = seqio.Task(
      "metrics_signature_test",
      source=seqio.FunctionDataSource(lambda split, shuffle_files: None,
                                      splits=["validation"]),
      output_features={"targets": seqio.Feature(vocabulary=vocab)},
      metric_fns=all_fns)
  assert len(task.predict_metric_fns) == len(all_fns)
  assert not task.score_metric_fns
