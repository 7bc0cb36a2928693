"""From a seqio task or mixture name to numpy batches with a resumable position.

The training stream is deterministic given (task, split, seed): resuming at position N rebuilds
the same stream and skips N batches, so a resumed run sees exactly the batches an uninterrupted
run would. Each process reads its own shard of the data (one per group of processes that
feed the same batch rows; `partitioning.process_batch_shard`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Iterator, Mapping, Optional

import jax
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.data import feature_converters

# Modules whose `register_all()` registers this library's own tasks, tried in order.
BUILTIN_TASK_MODULES = ("prompt_tuning.data.glue", "prompt_tuning.data.super_glue",
                        "prompt_tuning.data.demo_tasks")


class TaskNotFoundError(ValueError):
  """The mixture or task name is not registered."""


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """T5X's DatasetConfig fields that a prompt-tuning run uses."""

  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str = "train"
  batch_size: int = 32                  # global batch size (all processes).
  shuffle: bool = True
  seed: Optional[int] = 0
  use_cached: bool = False
  pack: bool = False
  module: Optional[str] = None          # imported first (registers the task).
  num_examples: Optional[int] = None    # None: the whole split.


def _registered(name: str) -> bool:
  return name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names()


def _register_from(module_name: str) -> None:
  module = importlib.import_module(module_name)
  register_all = getattr(module, "register_all", None)
  if callable(register_all):
    register_all()


def get_mixture_or_task(name: str, module: Optional[str] = None) -> seqio.Task | seqio.Mixture:
  """The registered task or mixture `name`, importing `module` (and our task modules) if needed."""
  if module and not _registered(name):
    try:
      _register_from(module)
    except ImportError as error:
      raise TaskNotFoundError(
          f"MIXTURE_OR_TASK_MODULE={module!r} cannot be imported ({error}): set it to an "
          "importable module that registers your seqio tasks.") from error
  for builtin in BUILTIN_TASK_MODULES:
    if _registered(name):
      break
    try:
      _register_from(builtin)
    except ImportError:
      continue
  if not _registered(name):
    known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise TaskNotFoundError(
        f"task or mixture {name!r} is not registered.{hint} Set "
        "--gin.MIXTURE_OR_TASK_MODULE=\"'your.module'\" to the module that registers it.")
  return seqio.get_mixture_or_task(name)


def feature_converter(model: Any, prompt_length: int = 0, pack: bool = False, *,
                      task: Optional[str] = None,
                      module: Optional[str] = None) -> seqio.FeatureConverter:
  """The prompt-aware seqio converter for a model (its `ModelConfig`, or an architecture name).

  T5 family: seqio's encoder-decoder / prefix-LM decoder features (token 0 is padding).
  Decoder-only LLM families: causal-LM features with an attention mask, starting with BOS
  when the `task`'s vocabulary adds one.
  """
  architecture = model if isinstance(model, str) else model.architecture
  if architecture == "decoder_only":
    if isinstance(model, str) or model.zero_is_padding:
      return feature_converters.PromptDecoderFeatureConverter(prompt_length=prompt_length,
                                                              pack=pack)
    return feature_converters.PromptCausalLMFeatureConverter(
        prompt_length=prompt_length, bos_id=task_bos_id(task, module), pack=pack)
  return feature_converters.PromptEncDecFeatureConverter(prompt_length=prompt_length, pack=pack)


def task_bos_id(task: Optional[str], module: Optional[str] = None) -> Optional[int]:
  """The BOS id the task's target vocabulary starts texts with (None: it adds none)."""
  if task is None:
    return None
  from prompt_tuning.data import model_vocab  # Local: tokenizers are needed only here.
  mixture = get_mixture_or_task(task, module)
  tasks = mixture.tasks if isinstance(mixture, seqio.Mixture) else [mixture]
  vocabulary = tasks[0].output_features["targets"].vocabulary
  return int(vocabulary.bos_id) if model_vocab.adds_bos(vocabulary) else None


def local_batch_size(global_batch_size: int, num_shards: Optional[int] = None) -> int:
  """This process's share of the global batch split into `num_shards` (default: processes)."""
  count = jax.process_count() if num_shards is None else num_shards
  if global_batch_size % count:
    raise ValueError(f"BATCH_SIZE={global_batch_size} must divide by the {count} data shards "
                     "(processes feeding distinct examples): change BATCH_SIZE.")
  return global_batch_size // count


def get_dataset(config: DatasetConfig, converter: seqio.FeatureConverter, *,
                repeat: bool = True, drop_remainder: bool = True,
                shard: Optional[tuple[int, int]] = None) -> tf.data.Dataset:
  """This process's batched tf.data stream of converted features (text lengths).

  `shard` = (index, count) of this process's slice of the global batch (see
  `partitioning.process_batch_shard`); default: (process index, process count).
  """
  get_mixture_or_task(config.mixture_or_task_name, config.module)
  index, count = shard or (jax.process_index(), jax.process_count())
  shard = seqio.ShardInfo(index=index, num_shards=count)
  ds = seqio.get_dataset(
      config.mixture_or_task_name, task_feature_lengths=dict(config.task_feature_lengths),
      dataset_split=config.split, shuffle=config.shuffle, num_epochs=None if repeat else 1,
      feature_converter=converter, shard_info=shard, use_cached=config.use_cached,
      seed=config.seed)
  if config.num_examples is not None:
    ds = ds.take(config.num_examples)
  return ds.batch(local_batch_size(config.batch_size, count), drop_remainder=drop_remainder)


class BatchIterator:
  """numpy batches from a dataset; `position` counts batches handed out (saved in checkpoints)."""

  def __init__(self, dataset: tf.data.Dataset, position: int = 0):
    self.position = int(position)
    self._iterator = iter(dataset.skip(self.position).prefetch(2).as_numpy_iterator())

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    self.position += 1
    return dict(batch)


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], int]:
  """`batch` padded with all-zero rows to `batch_size` rows; returns (padded, real row count)."""
  rows = len(next(iter(batch.values())))
  if rows == batch_size:
    return dict(batch), rows
  padded = {name: np.concatenate([value, np.zeros((batch_size - rows,) + value.shape[1:],
                                                  value.dtype)])
            for name, value in batch.items()}
  return padded, rows


def sharded_features(ds: tf.data.Dataset) -> list[dict[str, Any]]:
  """All elements of a finite dataset as numpy dicts (small eval sets)."""
  return list(ds.as_numpy_iterator())
