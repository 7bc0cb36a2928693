"""seqio metric functions and the GLUE / SuperGLUE metric sets.

Every metric is a function `fn(targets, predictions) -> {name: value}` that
returns plain Python floats on a 0-100 scale under the key names the `t5`
package uses (seqio picks predict metrics by these argument names). The score
metric for rank classification lives in `rank_classification.py`.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats
import sklearn.metrics

MetricFn = Callable[..., dict[str, float]]


def check_same_length(targets: Sequence[Any], outputs: Sequence[Any],
                      outputs_name: str = "predictions") -> None:
  """Raises a ValueError unless there is one output per target, and some."""
  if len(targets) != len(outputs):
    raise ValueError(
        f"Got {len(targets)} targets but {len(outputs)} {outputs_name}; a "
        f"metric needs exactly one of the {outputs_name} per target.")
  if len(targets) == 0:
    raise ValueError("Got no examples; a metric needs at least one target.")


def _as_text(value: Any) -> str:
  """A str from a str or UTF-8 bytes value."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _f1_from_counts(tp: float, fp: float, fn: float) -> float:
  """F1 in [0, 1] from (weighted) counts; 0 when there is nothing to count."""
  denominator = 2 * tp + fp + fn
  return 0.0 if denominator == 0 else 2 * tp / denominator


def mean_f1_over_labels(targets: Sequence[Hashable],
                        predictions: Sequence[Hashable],
                        labels: Iterable[Hashable],
                        weights: Sequence[float] | None = None) -> float:
  """Unweighted mean over `labels` of one-vs-rest F1 (with example weights)."""
  if weights is None:
    weights = [1.0] * len(targets)
  per_label = []
  for label in labels:
    tp = fp = fn = 0.0
    for target, prediction, weight in zip(targets, predictions, weights):
      if prediction == label and target == label:
        tp += weight
      elif prediction == label:
        fp += weight
      elif target == label:
        fn += weight
    per_label.append(_f1_from_counts(tp, fp, fn))
  return float(np.mean(per_label))


# ----------------------------------------------------------- classification


def _value(item: Any) -> Any:
  """The "value" of a t5-style {"value": ..., "group": ...} dict, else item."""
  return item["value"] if isinstance(item, Mapping) else item


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]
             ) -> dict[str, float]:
  """Percentage of predictions equal to their target ({"value"} dicts too)."""
  check_same_length(targets, predictions)
  hits = [bool(_value(t) == _value(p)) for t, p in zip(targets, predictions)]
  return {"accuracy": 100.0 * float(np.mean(hits))}


def f1(targets: Sequence[int], predictions: Sequence[int]
       ) -> dict[str, float]:
  """Binary F1 of class 1; a prediction other than 0 or 1 counts as wrong."""
  check_same_length(targets, predictions)
  tp = fp = fn = 0
  for target, prediction in zip(targets, predictions):
    if target not in (0, 1):
      raise ValueError(
          f"Binary F1 needs targets 0 or 1, got {target!r}; map the labels to "
          "class ids first (postprocessors.string_label_to_class_id).")
    if prediction not in (0, 1):
      prediction = 1 - target  # An invalid prediction is a wrong one.
    tp += int(prediction == 1 and target == 1)
    fp += int(prediction == 1 and target == 0)
    fn += int(prediction == 0 and target == 1)
  return {"f1": 100.0 * _f1_from_counts(tp, fp, fn)}


def macro_f1(targets: Sequence[Hashable], predictions: Sequence[Hashable]
             ) -> dict[str, float]:
  """Unweighted mean of per-class F1 over the classes seen in the targets."""
  check_same_length(targets, predictions)
  labels = list(dict.fromkeys(targets))
  return {"macro_f1": 100.0 * mean_f1_over_labels(targets, predictions, labels)}


def mean_multiclass_f1(num_classes: int) -> MetricFn:
  """Metric: mean per-class F1 over class ids 0..num_classes-1 (t5's name)."""
  if num_classes < 2:
    raise ValueError(f"mean_multiclass_f1 needs num_classes >= 2, got "
                     f"{num_classes}.")
  key = f"mean_{num_classes}class_f1"

  def metric(targets: Sequence[int], predictions: Sequence[int]
             ) -> dict[str, float]:
    check_same_length(targets, predictions)
    return {key: 100.0 * mean_f1_over_labels(targets, predictions,
                                             range(num_classes))}
  metric.__name__ = key
  return metric


def _label_set(value: Any) -> set[str]:
  """The labels of one example as strings; a bare string is a single label."""
  if isinstance(value, (str, bytes)):
    return {_as_text(value)}
  return {_as_text(v) for v in value}


def multilabel_f1(targets: Sequence[Iterable[Any]],
                  predictions: Sequence[Iterable[Any]],
                  label_set: Iterable[Any] | None = None) -> dict[str, float]:
  """Mean over labels of per-label binary F1; each example is a set of labels.

  Args:
    targets: per example, the collection of true labels (a single string is one
      label).
    predictions: per example, the collection of predicted labels.
    label_set: labels to average over; defaults to every label in the targets.

  Returns:
    {"multilabel_f1": mean F1 * 100}.
  """
  check_same_length(targets, predictions)
  true_sets = [_label_set(t) for t in targets]
  pred_sets = [_label_set(p) for p in predictions]
  if label_set is None:
    labels = sorted(set().union(*true_sets))
  else:
    labels = sorted(_label_set(label_set))
  if not labels:
    raise ValueError("multilabel_f1 found no labels; pass label_set or give "
                     "targets with at least one label.")
  per_label = []
  for label in labels:
    tp = fp = fn = 0
    for true, predicted in zip(true_sets, pred_sets):
      tp += label in true and label in predicted
      fp += label not in true and label in predicted
      fn += label in true and label not in predicted
    per_label.append(_f1_from_counts(tp, fp, fn))
  return {"multilabel_f1": 100.0 * float(np.mean(per_label))}


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]
                      ) -> dict[str, float]:
  """Matthews correlation coefficient (multi-class form where needed)."""
  check_same_length(targets, predictions)
  return {"matthews_corrcoef": 100.0 * float(
      sklearn.metrics.matthews_corrcoef(list(targets), list(predictions)))}


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]
                     ) -> dict[str, float]:
  """Pearson correlation coefficient."""
  check_same_length(targets, predictions)
  value = scipy.stats.pearsonr(np.asarray(targets, np.float64),
                               np.asarray(predictions, np.float64))[0]
  return {"pearson_corrcoef": 100.0 * float(value)}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]
                      ) -> dict[str, float]:
  """Spearman rank correlation coefficient."""
  check_same_length(targets, predictions)
  value = scipy.stats.spearmanr(np.asarray(targets, np.float64),
                                np.asarray(predictions, np.float64))[0]
  return {"spearman_corrcoef": 100.0 * float(value)}


def exact_match(targets: Sequence[Any], predictions: Sequence[Any]
                ) -> dict[str, float]:
  """Percentage of predicted strings exactly equal to their target string."""
  check_same_length(targets, predictions)
  hits = [_as_text(t) == _as_text(p) for t, p in zip(targets, predictions)]
  return {"exact_match": 100.0 * float(np.mean(hits))}


def gender_parity(targets: Sequence[Any], predictions: Sequence[Any]
                  ) -> dict[str, float]:
  """AX-g gender parity: percentage of minimal pairs predicted alike.

  Each pair is the same sentence with the pronoun's gender swapped. Targets
  that are dicts with a "group" (see `postprocessors.axg`) name the pair;
  otherwise examples (2k, 2k+1) are taken as pairs.
  """
  check_same_length(targets, predictions)
  if all(isinstance(t, Mapping) and "group" in t for t in targets):
    groups = [t["group"] for t in targets]
  elif len(predictions) % 2:
    raise ValueError(
        f"gender_parity pairs consecutive examples but got an odd number "
        f"({len(predictions)}) of predictions; evaluate the full AX-g split or "
        "give targets a pair \"group\" (postprocessors.axg).")
  else:
    groups = [i // 2 for i in range(len(predictions))]
  by_pair = collections.defaultdict(set)
  for group, prediction in zip(groups, predictions):
    by_pair[group].add(_value(prediction))
  same = [len(pair_predictions) == 1 for pair_predictions in by_pair.values()]
  return {"gender_parity": 100.0 * float(np.mean(same))}


# ------------------------------------------------------ question answering


def normalize_squad(text: Any) -> str:
  """SQuAD answer normalization: lower case; no punctuation, articles, extra
  spaces."""
  text = _as_text(text).lower()
  text = "".join(ch for ch in text if ch not in string.punctuation)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
  """Bag-of-tokens F1 between two normalized strings, in [0, 1]."""
  target_tokens, prediction_tokens = target.split(), prediction.split()
  common = collections.Counter(target_tokens) & collections.Counter(
      prediction_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(target_tokens)
  return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[Any]], predictions: Sequence[Any]
          ) -> dict[str, float]:
  """SQuAD EM and token F1, each the maximum over the example's answers.

  Args:
    targets: per example, the list of acceptable answers (a single string is
      taken as the only answer).
    predictions: per example, the predicted answer string.

  Returns:
    {"em": ..., "f1": ...} on a 0-100 scale.
  """
  check_same_length(targets, predictions)
  ems, f1s = [], []
  for answers, prediction in zip(targets, predictions):
    if isinstance(answers, (str, bytes)):
      answers = [answers]
    answers = [normalize_squad(a) for a in answers]
    if not answers:
      raise ValueError("A SQuAD target has no answers; every example needs at "
                       "least one reference answer.")
    prediction = normalize_squad(prediction)
    ems.append(max(float(a == prediction) for a in answers))
    f1s.append(max(_token_f1(a, prediction) for a in answers))
  return {"em": 100.0 * float(np.mean(ems)), "f1": 100.0 * float(np.mean(f1s))}


def record(targets: Sequence[Any], predictions: Sequence[Any]
           ) -> dict[str, float]:
  """ReCoRD EM / F1: SQuAD metrics maximized over all answers of a query.

  Targets are answer lists, or t5-style dicts {"value": answers, "group": key};
  with dicts only the first example of each group counts (ReCoRD inputs are
  repeated once per answer). Predictions are strings or {"value": string}.
  """
  check_same_length(targets, predictions)
  seen_groups = set()
  kept_targets, kept_predictions = [], []
  for target, prediction in zip(targets, predictions):
    if isinstance(target, Mapping):
      group = target.get("group")
      if group is not None:
        if group in seen_groups:
          continue
        seen_groups.add(group)
      target = target["value"]
    kept_targets.append(target)
    kept_predictions.append(_value(prediction))
  return squad(kept_targets, kept_predictions)


def multirc_f1_em(targets: Sequence[Mapping[str, Any]],
                  predictions: Sequence[Any]) -> dict[str, float]:
  """MultiRC: F1a over all answers and exact match per question.

  Args:
    targets: dicts {"value": 0 or 1, "group": question id}.
    predictions: dicts {"value": class id} (or bare class ids); a value other
      than 0 or 1 counts as wrong.

  Returns:
    {"f1a": binary F1 * 100, "exact_match": percentage of questions whose
    answers are all predicted correctly}.
  """
  check_same_length(targets, predictions)
  target_values = [t["value"] for t in targets]
  prediction_values = [_value(p) for p in predictions]
  by_question = collections.defaultdict(list)
  for target, t_value, p_value in zip(targets, target_values,
                                      prediction_values):
    by_question[target["group"]].append(t_value == p_value)
  exact = [all(hits) for hits in by_question.values()]
  return {"f1a": f1(target_values, prediction_values)["f1"],
          "exact_match": 100.0 * float(np.mean(exact))}


# ------------------------------------------------------------ metric tables


class UnknownMetricError(ValueError, KeyError):
  """An unknown metric or task name (a ValueError, and a KeyError for dicts)."""

  def __str__(self) -> str:
    return str(self.args[0])


class _NamedTable(dict):
  """A dict whose missing keys raise an error listing the known ones."""

  def __init__(self, what: str, entries: Mapping[str, Any]):
    super().__init__(entries)
    self._what = what

  def __missing__(self, name: str) -> Any:
    raise UnknownMetricError(
        f"Unknown {self._what} {name!r}; known: {', '.join(sorted(self))}.")


METRICS_BY_NAME: dict[str, MetricFn] = _NamedTable("metric name", {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson_corrcoef,
    "spearman": spearman_corrcoef,
    "exact_match": exact_match,
    "squad": squad,
})

_GLUE_METRICS = _NamedTable("GLUE task", {
    "cola": [matthews_corrcoef],
    "sst2": [accuracy],
    "mrpc": [f1, accuracy],
    "qqp": [f1, accuracy],
    "stsb": [pearson_corrcoef, spearman_corrcoef],
    "mnli": [accuracy],
    "mnli_matched": [accuracy],
    "mnli_mismatched": [accuracy],
    "qnli": [accuracy],
    "rte": [accuracy],
    "wnli": [accuracy],
    "ax": [],  # Test labels are hidden (-1): nothing to compute, as in t5.
})

_SUPER_GLUE_METRICS = _NamedTable("SuperGLUE task", {
    "boolq": [accuracy],
    "cb": [mean_multiclass_f1(num_classes=3), accuracy],
    "copa": [accuracy],
    "multirc": [multirc_f1_em],
    "record": [record],
    "rte": [accuracy],
    "wic": [accuracy],
    "wsc": [accuracy],
    "wsc.fixed": [accuracy],
    "wsc_simple": [accuracy],
    "axb": [matthews_corrcoef],
    "axg": [gender_parity, accuracy],
})


def get_metric(name: str) -> MetricFn:
  """The metric a user file task names (see METRICS_BY_NAME)."""
  return METRICS_BY_NAME[name]


def glue_metrics(task_name: str) -> list[MetricFn]:
  """Metric functions of a GLUE task ("cola", "mrpc", "stsb", ...)."""
  return list(_GLUE_METRICS[task_name])


def super_glue_metrics(task_name: str) -> list[MetricFn]:
  """Metric functions of a SuperGLUE task ("boolq", "cb", "multirc", ...)."""
  return list(_SUPER_GLUE_METRICS[task_name])
