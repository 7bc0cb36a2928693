"""seqio evaluation and inference with our model: decoded predictions and target scores.

`Evaluation` wraps `seqio.Evaluator` (which owns postprocessing, metrics and example order) with
our predict / score functions. Every batch is padded to the eval batch size so the jitted
functions compile once. `infer_to_jsonl` writes decoded predictions of any split.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.experimental import multihost_utils

from prompt_tuning.train import data, models, partitioning, scoring


def _to_host(array: jax.Array) -> np.ndarray:
  if jax.process_count() > 1 and not array.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
  return np.asarray(array)


def float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The numeric metrics of a seqio result (Text / Histogram values are left out)."""
  numeric = {}
  for name, value in metrics.items():
    value = getattr(value, "value", value)
    try:
      numeric[name] = float(value)
    except (TypeError, ValueError):
      continue
  return numeric


@dataclasses.dataclass
class ModelFns:
  """Batch functions over full parameters; built once per run so they compile once."""

  module: nn.Module
  decode: models.DecodeConfig
  mesh: jax.sharding.Mesh
  batch_size: int

  def __post_init__(self):
    self._scorer = scoring.Scorer(self.module, self._place,
                                  rows_multiple=self.mesh.shape[partitioning.DATA_AXIS])

  def _batches(self, dataset: tf.data.Dataset) -> Iterable[tuple[dict[str, np.ndarray], int]]:
    for batch in dataset.batch(self.batch_size).as_numpy_iterator():
      yield data.pad_batch(batch, self.batch_size)

  def _place(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    return partitioning.place(dict(batch), partitioning.batch_sharding(self.mesh))

  def predict(self, params: Any, features: tf.data.Dataset) -> list[np.ndarray]:
    """Decoded tokens [L] of every example of a feature dataset, in order."""
    outputs = []
    for batch, rows in self._batches(features):
      tokens = models.predict_batch(self.module, params, self._place(batch), self.decode)
      outputs.extend(_to_host(tokens)[:rows])
    return outputs

  def score(self, params: Any, features: tf.data.Dataset) -> list[float]:
    """Target log-likelihood of every example, in order."""
    scores = []
    for batch, rows in self._batches(features):
      scores.extend(_to_host(self._scorer(params, batch))[:rows].tolist())
    return scores


def _enumerated(fn: Callable[[Any, tf.data.Dataset], list]) -> Callable:
  """A seqio model fn over an (index, features) dataset, from a fn over features."""

  def model_fn(params: Any, dataset: tf.data.Dataset, model_feature_shapes=None) -> list:
    indices = [int(i) for i in dataset.map(lambda i, _: i).as_numpy_iterator()]
    outputs = fn(params, dataset.map(lambda _, features: features))
    return list(zip(indices, [o.tolist() if isinstance(o, np.ndarray) else o for o in outputs]))

  return model_fn


class Evaluation:
  """Metrics of the tasks of a mixture (or one task) on one split."""

  def __init__(self, dataset_config: data.DatasetConfig, fns: ModelFns, model: Any,
               prompt_length: int, log_dir: Optional[str] = None):
    """`model`: the model's `ModelConfig` (or its architecture name), for the features."""
    data.get_mixture_or_task(dataset_config.mixture_or_task_name, dataset_config.module)
    loggers = (seqio.JSONLogger,) if log_dir and jax.process_index() == 0 else ()
    if loggers:
      os.makedirs(log_dir, exist_ok=True)
    self._evaluator = seqio.Evaluator(
        dataset_config.mixture_or_task_name,
        feature_converter=data.feature_converter(
            model, prompt_length, task=dataset_config.mixture_or_task_name,
            module=dataset_config.module),
        eval_split=dataset_config.split, use_cached=dataset_config.use_cached,
        seed=dataset_config.seed, sequence_length=dict(dataset_config.task_feature_lengths),
        num_examples=dataset_config.num_examples, logger_cls=loggers, log_dir=log_dir,
        async_compute_metrics=False)
    self._predict = _enumerated(fns.predict)
    self._score = _enumerated(fns.score)

  @property
  def task_names(self) -> list[str]:
    return [task.name for task in self._evaluator.eval_tasks]

  def evaluate(self, params: Any, step: int) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of the numeric metrics at `step`."""
    return self.evaluate_outputs(functools.partial(self._predict, params),
                                 functools.partial(self._score, params), step)

  def evaluate_outputs(self, predict_fn: Callable, score_fn: Callable, step: int,
                       log: bool = True) -> dict[str, dict[str, float]]:
    """Metrics of given seqio model fns (over (index, features) datasets, returning
    (index, output) pairs); `log` False keeps this evaluation out of the seqio logs."""
    loggers = self._evaluator._loggers  # pylint: disable=protected-access
    if not log:
      self._evaluator._loggers = ()  # pylint: disable=protected-access
    try:
      metrics, _ = self._evaluator.evaluate(compute_metrics=True, step=step,
                                            predict_fn=predict_fn, score_fn=score_fn)
      result = metrics.result()
    finally:
      self._evaluator._loggers = loggers  # pylint: disable=protected-access
    return {task: float_metrics(values) for task, values in result.items()}


def infer_to_jsonl(params: Any, fns: ModelFns, dataset_config: data.DatasetConfig,
                   model: Any, prompt_length: int, output_dir: str) -> dict[str, str]:
  """Decodes every example of each task's split; writes `<task>-<split>.jsonl`; returns paths."""

  def records(features: tf.data.Dataset, vocabulary: seqio.Vocabulary) -> list[dict[str, Any]]:
    return [{"prediction": _decoded(vocabulary, tokens)}
            for tokens in fns.predict(params, features)]

  return write_predictions(records, dataset_config, model, prompt_length, output_dir)


def _decoded(vocabulary: seqio.Vocabulary, tokens: Any) -> str:
  return vocabulary.decode([int(t) for t in tokens])


def write_predictions(records_fn: Callable[[tf.data.Dataset, seqio.Vocabulary],
                                           list[dict[str, Any]]],
                      dataset_config: data.DatasetConfig, model: Any, prompt_length: int,
                      output_dir: str) -> dict[str, str]:
  """One JSONL per task of the split: `records_fn(features, target vocabulary)`'s record of
  each example (e.g. {"prediction": text}) plus its `inputs` / `targets` texts; returns paths."""
  written = {}
  mixture = data.get_mixture_or_task(dataset_config.mixture_or_task_name, dataset_config.module)
  tasks = mixture.tasks if isinstance(mixture, seqio.Mixture) else [mixture]
  converter = data.feature_converter(model, prompt_length,
                                     task=dataset_config.mixture_or_task_name,
                                     module=dataset_config.module)
  for task in tasks:
    lengths = dict(dataset_config.task_feature_lengths)
    raw = task.get_dataset(sequence_length=lengths, split=dataset_config.split, shuffle=False,
                           use_cached=dataset_config.use_cached, seed=dataset_config.seed)
    if dataset_config.num_examples is not None:
      raw = raw.take(dataset_config.num_examples)
    vocabulary = task.output_features["targets"].vocabulary
    outputs = records_fn(converter(raw, lengths), vocabulary)
    path = os.path.join(output_dir, f"{task.name}-{dataset_config.split}.jsonl")
    if jax.process_index() == 0:
      os.makedirs(output_dir, exist_ok=True)
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        for example, output in zip(raw.as_numpy_iterator(), outputs):
          record = dict(output)
          for field in ("inputs_pretokenized", "targets_pretokenized"):
            if field in example:
              record[field.replace("_pretokenized", "")] = _text(example[field])
          f.write(json.dumps(record) + "\n")
      os.replace(path + ".tmp", path)
    written[task.name] = path
  return written


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
