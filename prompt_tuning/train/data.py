"""From a seqio task or mixture name to numpy batches with a resumable position.

The training stream is deterministic given (task, split, seed): resuming at position N rebuilds
the same stream and skips N batches, so a resumed run sees exactly the batches an uninterrupted
run would. Each process reads its own shard of the data (one per group of processes that
feed the same batch rows; `partitioning.process_batch_shard`).
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import importlib
import logging
import sys
from typing import Any, Iterator, Mapping, Optional, TextIO

from google.protobuf import message as protobuf_message
import jax
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning import errors
from prompt_tuning.data import feature_converters

# Modules whose `register_all()` registers this library's own tasks, tried in order.
BUILTIN_TASK_MODULES = ("prompt_tuning.data.glue", "prompt_tuning.data.super_glue",
                        "prompt_tuning.data.demo_tasks")


class TaskNotFoundError(ValueError):
  """The mixture or task name is not registered."""


class DatasetError(errors.UserInputError, ValueError):
  """A dataset the run cannot use: unknown split, data not prepared, vocabulary too large."""


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

  def __post_init__(self):
    """Checks the values gin macros set (BATCH_SIZE, TASK_FEATURE_LENGTHS, ...)."""
    if not isinstance(self.mixture_or_task_name, str) or not self.mixture_or_task_name:
      raise errors.ConfigValueError(
          f"MIXTURE_OR_TASK_NAME={self.mixture_or_task_name!r} must be a task or mixture name "
          "in quotes: pass e.g. --gin.MIXTURE_OR_TASK_NAME=\"'glue_sst2_v002'\".")
    if not isinstance(self.split, str) or not self.split:
      raise errors.ConfigValueError(
          f"split {self.split!r} must be a split name in quotes, e.g. 'validation' "
          "(EVAL_SPLIT / INFER_SPLIT): pass e.g. --gin.INFER_SPLIT=\"'validation'\".")
    check_feature_lengths(self.task_feature_lengths)
    batch = self.batch_size
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
      raise errors.ConfigValueError(
          f"BATCH_SIZE={batch!r} (the batch size of the {self.split!r} split; EVAL_BATCH_SIZE "
          "for evaluation while training) must be a positive whole number of examples: pass "
          "e.g. --gin.BATCH_SIZE=32.")
    examples = self.num_examples
    if examples is not None and (not isinstance(examples, int) or isinstance(examples, bool)
                                 or examples < 1):
      raise errors.ConfigValueError(
          f"the number of examples to read ({examples!r}; EVAL_EXAMPLES or INFER_EXAMPLES) must "
          "be a positive whole number or None (the whole split): pass e.g. "
          "--gin.EVAL_EXAMPLES=100.")
    if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
      raise errors.ConfigValueError(
          f"RANDOM_SEED={self.seed!r} must be a whole number: pass e.g. --gin.RANDOM_SEED=0.")


def check_feature_lengths(lengths: Any) -> None:
  """Raises ConfigValueError unless `lengths` maps feature names to positive lengths."""
  example = "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 512, 'targets': 8}\""
  if not isinstance(lengths, Mapping) or not lengths:
    raise errors.ConfigValueError(
        f"TASK_FEATURE_LENGTHS={lengths!r} must be a dict of feature name -> length: pass e.g. "
        f"{example}.")
  for name, length in lengths.items():
    if not isinstance(name, str) or not isinstance(length, int) or isinstance(length, bool) \
        or length < 1:
      raise errors.ConfigValueError(
          f"TASK_FEATURE_LENGTHS={dict(lengths)!r}: {name!r} -> {length!r} is not a feature "
          f"name with a positive whole length: pass e.g. {example}.")


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


def dataset_tasks(config: DatasetConfig) -> list[seqio.Task]:
  """The tasks a dataset config reads (a mixture's tasks, or its one task)."""
  task = get_mixture_or_task(config.mixture_or_task_name, config.module)
  return list(task.tasks) if isinstance(task, seqio.Mixture) else [task]


def _vocab_size(task: seqio.Task, feature: str, vocabulary: seqio.Vocabulary) -> int:
  """The vocabulary's size; DatasetError naming the task and feature when it cannot be loaded."""
  try:
    return int(vocabulary.vocab_size)
  except (OSError, ValueError, RuntimeError, tf.errors.OpError, protobuf_message.Error) as error:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    raise DatasetError(
        f"the vocabulary of task {task.name!r} ({feature!r}) cannot be loaded "
        f"({errors.one_line(text)}): check its path and network access; the default T5 / mT5 "
        "SentencePiece models are read from gs://t5-data, set PROMPT_TUNING_T5_VOCAB / "
        "PROMPT_TUNING_MT5_VOCAB to a local copy to work offline.") from error


def _check_tfds_prepared(task: seqio.Task, split: str) -> None:
  """Raises DatasetError naming the dataset, the folder searched and the fix when a task's TFDS
  data has not been downloaded and prepared."""
  source = task.source
  if not isinstance(source, seqio.TfdsDataSource) or source.tfds_dataset.name is None:
    return
  loader = source.tfds_dataset
  try:
    source.list_shards(split=split)
    return
  except KeyError:
    pass
  name = loader.name
  try:
    builder = loader.builder
    prepared = bool(builder.info.splits)
    folder = builder.data_dir
  except Exception as error:  # pylint: disable=broad-except  (TFDS raises its own types)
    raise DatasetError(
        f"task {task.name!r} reads TFDS dataset {name!r}, which TFDS cannot open "
        f"({errors.one_line(str(error))}): check the dataset name and the installed "
        "tensorflow-datasets version.") from error
  if prepared:
    return  # The data is there; the split check names the missing split.
  root = loader.data_dir
  where = (f"--tfds_data_dir={root}" if root else
           "TFDS's default folder; --tfds_data_dir names another")
  raise DatasetError(
      f"TFDS dataset {name!r} (task {task.name!r}) is not prepared: no data in {folder} "
      f"({where}). Prepare it where the internet is reachable: `tfds build {name} "
      f"--data_dir={root or '~/tensorflow_datasets'}` (or copy a prepared copy there), or pass "
      "the --tfds_data_dir that holds it.")


def check_dataset(config: DatasetConfig, vocab_size: Optional[int] = None,
                  split_macro: str = "the split") -> None:
  """Raises a one-line error for a dataset the run could not read as configured.

  Checks every task of the mixture: its TFDS data is prepared, it has the split,
  TASK_FEATURE_LENGTHS names its required features, and (with `vocab_size`, the rows of the
  model's embedding table) its vocabularies' ids all fit the model.
  """
  for task in dataset_tasks(config):
    _check_tfds_prepared(task, config.split)
    splits = list(task.splits or ())
    if splits and config.split not in splits:
      close = difflib.get_close_matches(config.split, splits, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise DatasetError(
          f"task {task.name!r} has no split {config.split!r}{hint}; its splits are "
          f"{', '.join(splits)}: set {split_macro} to one of them.")
    missing = [name for name, feature in task.output_features.items()
               if feature.required and name not in config.task_feature_lengths]
    if missing:
      raise errors.ConfigValueError(
          f"TASK_FEATURE_LENGTHS={dict(config.task_feature_lengths)!r} has no length for "
          f"{', '.join(map(repr, missing))}, a feature of task {task.name!r}: add it, e.g. "
          f"--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 512, 'targets': 8}}\".")
    if vocab_size is None:
      continue
    for name, feature in task.output_features.items():
      size = _vocab_size(task, name, feature.vocabulary)
      if size > vocab_size:
        raise DatasetError(
            f"task {task.name!r} tokenizes {name!r} with a vocabulary of {size} ids but the "
            f"model's embedding table has {vocab_size} rows (NUM_EMBEDDINGS): token ids past "
            "the table would be garbage. Use a task with the model's vocabulary, or a model "
            "(and checkpoint) whose vocabulary covers the task's.")


def count_truncated(config: DatasetConfig, limit: Optional[int] = None
                    ) -> tuple[int, int, dict[str, int]]:
  """(examples longer than TASK_FEATURE_LENGTHS, examples looked at, longest length per feature).

  Reads each task's split once without trimming (the first `limit` examples of each task;
  None: all). Features the task does not length-limit are ignored.
  """
  truncated = seen = 0
  longest: dict[str, int] = collections.defaultdict(int)
  lengths = dict(config.task_feature_lengths)
  for task in dataset_tasks(config):
    ds = task.get_dataset(sequence_length=None, split=config.split, shuffle=False,
                          num_epochs=1, use_cached=config.use_cached, seed=config.seed)
    if limit is not None:
      ds = ds.take(limit)
    names = [name for name in lengths if name in task.output_features]
    ds = ds.map(lambda ex: {name: tf.size(ex[name]) for name in names if name in ex})
    for example in ds.as_numpy_iterator():
      seen += 1
      over = False
      for name, size in example.items():
        longest[name] = max(longest[name], int(size))
        over |= int(size) > lengths[name]
      truncated += over
  return truncated, seen, dict(longest)


def warn_if_truncated(config: DatasetConfig, stream: Optional[TextIO] = None,
                      limit: Optional[int] = None) -> int:
  """Prints one warning when examples of the split are longer than TASK_FEATURE_LENGTHS.

  seqio cuts such examples to the configured lengths; the warning counts them. Returns the
  number of truncated examples (0 when counting is impossible, e.g. a task whose preprocessors
  need lengths).
  """
  if jax.process_index() != 0:
    return 0
  try:
    truncated, seen, longest = count_truncated(config, limit)
  except (ValueError, TypeError, KeyError, OSError, tf.errors.OpError) as error:
    # The check is advisory: reading the data for real reports any problem it has.
    logging.getLogger(__name__).info("Could not count truncated examples: %s", error)
    return 0
  if truncated:
    lengths = dict(config.task_feature_lengths)
    over = ", ".join(f"{name} up to {size} tokens" for name, size in longest.items()
                     if size > lengths.get(name, size))
    looked = f"of the first {seen}" if limit is not None and seen >= limit else f"of {seen}"
    print(f"warning: {truncated} {looked} examples of {config.mixture_or_task_name!r} "
          f"({config.split}) are longer than TASK_FEATURE_LENGTHS={lengths} ({over}) and are "
          "cut to fit: raise TASK_FEATURE_LENGTHS to keep them whole.",
          file=stream or sys.stderr, flush=True)
  return truncated


def feature_converter(model: Any, prompt_length: int = 0, pack: bool = False, *,
                      task: Optional[str] = None,
                      module: Optional[str] = None) -> seqio.FeatureConverter:
  """The prompt-aware seqio converter for a model (its `ModelConfig`, or an architecture name).

  T5 family: seqio's encoder-decoder / prefix-LM decoder features (token 0 is padding).
  Decoder-only LLM families: causal-LM features with an attention mask, starting with BOS
  when the `task`'s vocabulary adds one. Other encoder-decoders (BART): seq2seq features padded
  with the model's pad id, decoding from its decoder start token.
  """
  architecture = model if isinstance(model, str) else model.architecture
  if architecture == "decoder_only":
    if isinstance(model, str) or model.zero_is_padding:
      return feature_converters.PromptDecoderFeatureConverter(prompt_length=prompt_length,
                                                              pack=pack)
    return feature_converters.PromptCausalLMFeatureConverter(
        prompt_length=prompt_length, bos_id=task_bos_id(task, module), pack=pack)
  if not isinstance(model, str) and not model.zero_is_padding:
    return feature_converters.PromptSeq2SeqFeatureConverter(
        pad_id=model.pad_token_id, decoder_start_id=model.decoder_start_token_id,
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
    raise errors.ConfigValueError(
        f"BATCH_SIZE={global_batch_size} must divide by the {count} data shards (processes "
        "feeding distinct examples): change BATCH_SIZE.")
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
