"""Registers the variants the prompt-tuning paper used for one T5 task.

For a base name such as `glue_sst2_v002` the variants are
  * `glue_sst2_v002`: the T5 text format ("sst2 sentence: ...");
  * `taskless_glue_sst2_v002`: without the leading task-name word;
  * `task_index_glue_sst2_v002`: taskless, with `<extra_id_{task index}>`
    prepended to the input tokens;
each also as `..._examples`, whose metrics also report decoded examples, and
all behind an optional vocabulary prefix such as `mt5_`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import seqio

from prompt_tuning.data import examples
from prompt_tuning.data import postprocessors
from prompt_tuning.data import preprocessors
from prompt_tuning.data import registry

PLAIN = ""
TASKLESS = "taskless_"
TASK_INDEX = "task_index_"
FAMILIES = (PLAIN, TASKLESS, TASK_INDEX)
EXAMPLES_SUFFIX = "_examples"
SUFFIXES = ("", EXAMPLES_SUFFIX)


def variant_preprocessors(family: str,
                          text_preprocessors: Sequence[Callable[..., Any]],
                          task_index: int | None) -> list[Callable[..., Any]]:
  """The full preprocessor list of `family` (see module docstring)."""
  if family not in FAMILIES:
    raise ValueError(f"Unknown task family {family!r}; use one of {FAMILIES}.")
  steps = list(text_preprocessors)
  if family != PLAIN:
    steps.append(preprocessors.remove_first_text_token)
  steps.append(seqio.preprocessors.tokenize)
  if family == TASK_INDEX:
    if task_index is None:
      raise ValueError("A task_index_ variant needs a task index; pass "
                       "task_index=<int>.")
    steps.append(functools.partial(preprocessors.add_sentinel_to_beginning,
                                   field="inputs", offset=task_index))
  steps += [seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim]
  return steps


def register_variants(base_name: str,
                      *,
                      source: seqio.DataSource,
                      text_preprocessors: Sequence[Callable[..., Any]],
                      output_features: Mapping[str, seqio.Feature],
                      postprocess_fn: Callable[..., Any] | None,
                      metric_fns: Sequence[Callable[..., Any]],
                      examples_name: str,
                      task_index: int | None,
                      prefix: str = "",
                      families: Sequence[str] = FAMILIES) -> list[str]:
  """Registers `{prefix}{family}{base_name}{suffix}` for each family / suffix.

  Args:
    base_name: e.g. "glue_sst2_v002".
    source: the data source of every variant.
    text_preprocessors: the steps producing `inputs` / `targets` strings.
    output_features: seqio output features (vocabulary, EOS).
    postprocess_fn: maps decoded text to what `metric_fns` compare.
    metric_fns: seqio metric functions of the plain variants.
    examples_name: the name the `_examples` variants report examples under.
    task_index: the `<extra_id_*>` offset of the task_index variants.
    prefix: a vocabulary prefix such as "mt5_" ("" for T5).
    families: the families to register.

  Returns:
    The registered task names.
  """
  names = []
  for family in families:
    steps = variant_preprocessors(family, text_preprocessors, task_index)
    for suffix in SUFFIXES:
      if suffix:
        post, metrics = examples.with_examples(postprocess_fn, metric_fns,
                                               examples_name)
      else:
        post, metrics = postprocess_fn, list(metric_fns)
      name = f"{prefix}{family}{base_name}{suffix}"
      registry.add_task(name, source=source, preprocessors=steps,
                        output_features=output_features, postprocess_fn=post,
                        metric_fns=metrics)
      names.append(name)
  return names


def register_mixture_variants(base_name: str,
                              task_base_names: Sequence[str] |
                              Sequence[tuple[str, float]],
                              prefix: str = "",
                              families: Sequence[str] = FAMILIES,
                              default_rate: float | None = 1.0,
                              name_suffix: str = "") -> list[str]:
  """Registers mixtures of the same family / suffix variants of tasks.

  Mixture names are `{prefix}{family}{base_name}{suffix}{name_suffix}`, e.g.
  `task_index_super_glue_v102_examples_proportional`; `task_base_names` holds
  task base names (mixed at `default_rate`) or (base name, rate) pairs.
  """
  names = []
  for family in families:
    for suffix in SUFFIXES:
      tasks = []
      for entry in task_base_names:
        if isinstance(entry, tuple):
          tasks.append((f"{prefix}{family}{entry[0]}{suffix}", entry[1]))
        else:
          tasks.append(f"{prefix}{family}{entry}{suffix}")
      name = f"{prefix}{family}{base_name}{suffix}{name_suffix}"
      registry.add_mixture(name, tasks, default_rate=default_rate)
      names.append(name)
  return names


def glue_postprocessor(config_name: str,
                       label_names: Sequence[str] | None) -> Callable[..., Any]:
  """The postprocessor of a GLUE / SuperGLUE config (T5's choice)."""
  if config_name == "stsb":
    return postprocessors.string_to_float
  if config_name == "multirc":
    return postprocessors.multirc
  if config_name == "record":
    # The record preprocessor repeats each query once per answer: group them for the metric.
    return postprocessors.record_grouped
  if config_name == "axg":
    # Minimal pairs grouped by idx // 2, robust to the data source's example order.
    return postprocessors.axg
  if label_names is None:
    raise ValueError(f"GLUE config {config_name!r} needs label_names.")
  return functools.partial(postprocessors.string_label_to_class_id,
                           label_classes=tuple(label_names))
