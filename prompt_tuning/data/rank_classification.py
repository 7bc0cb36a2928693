"""Rank classification: score every candidate label, predict the best one.

Each example becomes one (inputs, targets) pair per candidate label; a model
(encoder-decoder or decoder-only) scores each pair by the log-likelihood of
`targets` given `inputs`; `rank_classification_postprocessor` and
`rank_classification_metric` then pick the best-scoring label per example.
A task uses them as

  preprocessors=[functools.partial(rank_classification_from_labels,
                                   label_texts=("negative", "positive")), ...],
  postprocess_fn=rank_classification_postprocessor,
  metric_fns=[functools.partial(rank_classification_metric, num_classes=2)]
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import sklearn.metrics
import tensorflow as tf

from prompt_tuning.data import metrics as metrics_lib

Features = Mapping[str, tf.Tensor]
MODES = ("train", "eval", "fewshot_eval")


def _check_sizes(named: Mapping[str, tf.Tensor]) -> list[tf.Operation]:
  """Errors now for static size mismatches; assert ops for dynamic ones."""
  sizes = {name: t.shape.num_elements() for name, t in named.items()}
  if None not in sizes.values():
    if len(set(sizes.values())) > 1:
      raise ValueError(
          f"inputs_fn, targets_fn and is_correct_fn must return one value per "
          f"candidate label, got sizes {sizes}.")
    return []
  first_name, first = next(iter(named.items()))
  return [
      tf.debugging.assert_equal(
          tf.size(t), tf.size(first),
          message=f"{name} and {first_name} must have one value per candidate "
          "label (inputs_fn, targets_fn, is_correct_fn sizes differ)")
      for name, t in named.items()
  ]


def rank_classification(
    dataset: tf.data.Dataset,
    inputs_fn: Callable[[Features], Any],
    targets_fn: Callable[[Features], Any],
    is_correct_fn: Callable[[Features], Any],
    weight_fn: Callable[[Features], Any] | None = None,
    mode: str = "eval",
    passthrough_feature_keys: Sequence[str] | None = None,
) -> tf.data.Dataset:
  """Expands each example into one (inputs, targets) pair per candidate label.

  Args:
    dataset: examples with the features the callables read.
    inputs_fn: example -> [num_candidates] inputs strings (or token ids).
    targets_fn: example -> [num_candidates] targets, one per candidate label.
    is_correct_fn: example -> [num_candidates] bools (or 0/1): which
      candidates are right; several may be.
    weight_fn: example -> scalar weight, copied to every pair as "weight".
    mode: "train" keeps only the correct pairs; "eval" keeps every pair, one
      example each; "fewshot_eval" keeps every pair, batched per example
      (features gain a leading [num_candidates] axis).
    passthrough_feature_keys: features copied unchanged onto every pair.

  Returns:
    A dataset of {"idx": [example_idx, candidate_idx] int32, "inputs",
    "targets", "is_correct": bool, optional "weight": float32, passthroughs}.
  """
  if mode not in MODES:
    raise ValueError(f"rank_classification mode must be one of {MODES}, got "
                     f"{mode!r}.")
  passthrough_feature_keys = tuple(passthrough_feature_keys or ())

  def expand(example_idx: tf.Tensor, example: Features) -> dict[str, tf.Tensor]:
    inputs_N = tf.reshape(tf.convert_to_tensor(inputs_fn(example)), [-1])
    targets_N = tf.reshape(tf.convert_to_tensor(targets_fn(example)), [-1])
    is_correct_N = tf.reshape(
        tf.cast(tf.convert_to_tensor(is_correct_fn(example)), tf.bool), [-1])
    checks = _check_sizes({"inputs": inputs_N, "targets": targets_N,
                           "is_correct": is_correct_N})
    with tf.control_dependencies(checks):
      num = tf.size(is_correct_N)
    candidate_idx_N = tf.range(num, dtype=tf.int32)
    example_idx_N = tf.fill([num], tf.cast(example_idx, tf.int32))
    output = {
        "idx": tf.stack([example_idx_N, candidate_idx_N], axis=1),  # [N, 2]
        "inputs": inputs_N,
        "targets": targets_N,
        "is_correct": is_correct_N,
    }
    if weight_fn is not None:
      output["weight"] = tf.fill([num], tf.cast(weight_fn(example), tf.float32))
    for key in passthrough_feature_keys:
      if key not in example:
        raise ValueError(f"passthrough feature {key!r} is not in the example; "
                         f"it has {sorted(example)}.")
      value = tf.convert_to_tensor(example[key])
      output[key] = tf.repeat(value[tf.newaxis], num, axis=0)  # [N, ...]
    return output

  dataset = dataset.enumerate().map(expand, num_parallel_calls=tf.data.AUTOTUNE)
  if mode != "fewshot_eval":
    dataset = dataset.unbatch()
  if mode == "train":
    dataset = dataset.filter(lambda pair: pair["is_correct"])
  return dataset


def rank_classification_from_labels(
    dataset: tf.data.Dataset,
    label_texts: Sequence[str],
    inputs_key: str = "inputs",
    label_key: str = "label",
    mode: str = "eval",
    passthrough_feature_keys: Sequence[str] | None = None,
) -> tf.data.Dataset:
  """Rank classification with fixed inputs and one target per label text.

  Args:
    dataset: examples with a scalar string `inputs_key` and an int `label_key`
      (a scalar class id, or a vector of ids when several are right; -1 for an
      unlabeled example marks no candidate correct).
    label_texts: the target string of each class id.
    inputs_key: the feature holding the inputs string.
    label_key: the feature holding the class id(s).
    mode: "train", "eval" or "fewshot_eval" (see `rank_classification`).
    passthrough_feature_keys: features copied onto every pair.

  Returns:
    The expanded dataset, as `rank_classification` returns it.
  """
  label_texts = tuple(label_texts)
  if not label_texts:
    raise ValueError("rank_classification_from_labels needs at least one "
                     "label text, got none.")
  num_labels = len(label_texts)

  def inputs_fn(example: Features) -> tf.Tensor:
    return tf.fill([num_labels], example[inputs_key])

  def targets_fn(example: Features) -> tf.Tensor:
    del example
    return tf.constant(label_texts)

  def is_correct_fn(example: Features) -> tf.Tensor:
    labels = tf.reshape(tf.cast(example[label_key], tf.int32), [-1, 1])
    matches_KN = tf.equal(labels, tf.range(num_labels)[tf.newaxis])
    return tf.reduce_any(matches_KN, axis=0)  # [num_labels]

  return rank_classification(
      dataset, inputs_fn=inputs_fn, targets_fn=targets_fn,
      is_correct_fn=is_correct_fn, mode=mode,
      passthrough_feature_keys=passthrough_feature_keys)


def rank_classification_postprocessor(
    output: Any,
    example: Mapping[str, Any] | None = None,
    is_target: bool = False) -> Any:
  """Targets: (example_idx, label_idx, is_correct[, weight]); scores unchanged.

  The weight is the 4th element only when the example has a "weight" feature.
  """
  if not is_target:
    return output
  if example is None or "idx" not in example or "is_correct" not in example:
    have = "no example" if example is None else f"keys {sorted(example)}"
    raise ValueError(
        "rank_classification_postprocessor needs the example's 'idx' and "
        f"'is_correct' features (from the rank_classification preprocessor), "
        f"got {have}.")
  example_idx, label_idx = (int(i) for i in np.asarray(example["idx"]))
  target = (example_idx, label_idx, bool(np.asarray(example["is_correct"])))
  if "weight" in example:
    target += (float(np.asarray(example["weight"])),)
  return target


def _parse_rank_target(target: Sequence[Any]) -> tuple[int, int, bool, float]:
  """(example_idx, label_idx, is_correct, weight) of a postprocessed target."""
  if len(target) in (3, 4) and not hasattr(target[0], "__len__"):
    weight = float(target[3]) if len(target) == 4 else 1.0
    return int(target[0]), int(target[1]), bool(target[2]), weight
  if len(target) == 4 and len(target[0]) == 2:  # t5: (idx, is_correct, w, len)
    return int(target[0][0]), int(target[0][1]), bool(target[1]), float(
        target[2])
  raise ValueError(
      f"A rank classification target must be (example_idx, label_idx, "
      f"is_correct[, weight]), got {target!r}; use "
      "rank_classification_postprocessor as the task's "
      "postprocess_fn.")


def _rank_examples(targets: Sequence[Sequence[Any]], scores: Sequence[float],
                   num_classes: int | None) -> tuple[list[tuple], bool]:
  """Per example (weight, hit, predicted label, true label, probs [classes]).

  Also returns whether every example has exactly one correct candidate.
  """
  by_example = collections.defaultdict(list)
  for target, score in zip(targets, scores):
    example_idx, label_idx, is_correct, weight = _parse_rank_target(target)
    by_example[example_idx].append(
        (label_idx, is_correct, weight, float(np.asarray(score))))
  ranked, single_answer = [], True
  for example_idx in sorted(by_example):
    candidates = sorted(by_example[example_idx])  # By label index.
    if num_classes is not None and len(candidates) != num_classes:
      raise ValueError(
          f"Example {example_idx} has {len(candidates)} scored candidates but "
          f"num_classes={num_classes}; pass num_classes=None for a varying "
          "number of candidates, or score every label of every example.")
    labels_C = [c[0] for c in candidates]
    correct_C = [c[1] for c in candidates]
    scores_C = np.array([c[3] for c in candidates], np.float64)
    best = int(np.argmax(scores_C))  # First of equal scores, as np.argmax.
    probs_C = np.exp(scores_C - scores_C.max())
    true_label = labels_C[int(np.argmax(correct_C))]
    ranked.append((candidates[0][2], float(correct_C[best]), labels_C[best],
                   true_label, probs_C / probs_C.sum()))
    single_answer &= sum(correct_C) == 1
  return ranked, single_answer


def rank_classification_metric(targets: Sequence[Sequence[Any]],
                               scores: Sequence[float],
                               num_classes: int | None = None
                               ) -> dict[str, float]:
  """Classification by picking, per example, the best-scoring candidate label.

  Args:
    targets: one per scored (inputs, targets) pair, as made by
      `rank_classification_postprocessor`: (example_idx, label_idx, is_correct)
      with an optional 4th element, the example weight (t5's
      ((example_idx, label_idx), is_correct, weight, length) is accepted too).
    scores: one log-likelihood per pair, aligned with `targets`.
    num_classes: the fixed number of candidates per example (label indices
      0..num_classes-1), or None when it varies (then only accuracy).

  Returns:
    "accuracy" (weighted; picking any correct candidate counts); with
    num_classes == 2 also "f1" of label 1 and, when both labels occur,
    "auc-roc" / "auc-pr" of the softmax probability of label 1; with more
    classes "mean_<n>class_f1". Only accuracy when some example has no or
    several correct candidates.
  """
  metrics_lib.check_same_length(targets, scores, "scores")
  if num_classes is not None and num_classes < 2:
    raise ValueError(f"num_classes must be None or at least 2, got "
                     f"{num_classes}.")
  ranked, single_answer = _rank_examples(targets, scores, num_classes)
  weights, hits, predicted, truth, probs = zip(*ranked)
  result = {"accuracy": 100.0 * float(np.average(hits, weights=weights))}
  if num_classes is None or not single_answer:
    return result
  if num_classes > 2:
    result[f"mean_{num_classes}class_f1"] = 100.0 * (
        metrics_lib.mean_f1_over_labels(truth, predicted, range(num_classes),
                                        weights))
    return result
  result["f1"] = 100.0 * metrics_lib.mean_f1_over_labels(
      truth, predicted, [1], weights)
  if len(set(truth)) == 2:
    probs_1 = [p[1] for p in probs]
    result["auc-roc"] = 100.0 * float(sklearn.metrics.roc_auc_score(
        truth, probs_1, sample_weight=weights))
    result["auc-pr"] = 100.0 * float(sklearn.metrics.average_precision_score(
        truth, probs_1, sample_weight=weights))
  return result
