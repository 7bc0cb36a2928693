"""T5X gin bindings users bring along, read as this library's macros (or refused, naming ours).

The original prompt-tuning README and T5X gin files bind T5X configurables, e.g.
`--gin.utils.SaveCheckpointConfig.keep=20` or
`--gin.prompt_init/linen.initializers.uniform.scale=0.5`. On the command line the common ones
are rewritten to the equivalent setting here (`KEEP_CHECKPOINTS=20`, `prompts.uniform.scale=0.5`)
with a note; T5X configurables with no equivalent, and any of them inside a gin file (which cannot
be rewritten), are refused with one line naming what to use instead.
"""

from __future__ import annotations

from typing import Any, Optional

# Module prefixes T5X gin files put before these configurables (dynamic and legacy registration).
_PREFIXES = ("t5x.", "__main__.", "train_script.", "flax.", "prompt_tuning.")

# (T5X selector, argument) -> our macro; the value carries over unchanged.
TO_MACRO = {
    ("utils.SaveCheckpointConfig", "keep"): "KEEP_CHECKPOINTS",
    ("utils.SaveCheckpointConfig", "period"): "SAVING_PERIOD",
    ("utils.RestoreCheckpointConfig", "path"): "INITIAL_CHECKPOINT_PATH",
    ("utils.RestoreCheckpointConfig", "dtype"): "RESTORE_DTYPE",
    ("utils.create_learning_rate_scheduler", "base_learning_rate"): "LEARNING_RATE",
    ("utils.create_learning_rate_scheduler", "warmup_steps"): "WARMUP_STEPS",
    ("train", "eval_period"): "EVAL_PERIOD",
    ("train", "stats_period"): "LOG_PERIOD",
    ("train", "random_seed"): "RANDOM_SEED",
    ("train", "total_steps"): "TRAIN_STEPS",
    ("partitioning.PjitPartitioner", "num_partitions"): "NUM_PARTITIONS",
    ("trainer.Trainer", "num_microbatches"): "NUM_MICROBATCHES",
    ("models.EncoderDecoderModel", "z_loss"): "Z_LOSS",
    ("models.EncoderDecoderModel", "label_smoothing"): "LABEL_SMOOTHING",
    ("models.EncoderDecoderModel", "loss_normalizing_factor"): "LOSS_NORMALIZING_FACTOR",
    ("prompts.from_samples_of_embeddings", "population_size"): "SAMPLED_VOCAB_SIZE",
}

# (T5X selector, argument) -> our configurable binding; the value carries over unchanged.
_ADAFACTOR_SAME = ("decay_rate", "step_offset", "multiply_by_parameter_scale",
                   "clipping_threshold", "factored", "min_dim_size_to_factor", "beta1",
                   "epsilon1", "epsilon2")
TO_BINDING = {
    ("linen.initializers.uniform", "scale"): "prompts.uniform.scale",
    ("adafactor.Adafactor", "weight_decay_rate"): "optim.adafactor.weight_decay",
    **{("adafactor.Adafactor", arg): f"optim.adafactor.{arg}" for arg in _ADAFACTOR_SAME},
}

# T5X's learning-rate `factors` strings -> our LR_SCHEDULE.
SCHEDULE_FACTORS = {"constant": "constant", "constant * rsqrt_decay": "rsqrt"}

# Known T5X bindings with no one-to-one equivalent: what to do instead.
NO_EQUIVALENT = {
    ("train", "eval_steps"): "evaluation runs the whole split; limit it with EVAL_EXAMPLES "
                             "(a number of examples)",
    ("partitioning.PjitPartitioner", "model_parallel_submesh"):
        "the mesh here is (data, model): set NUM_PARTITIONS (model-parallel shards)",
    ("utils.SaveCheckpointConfig", "dtype"): "only the trained parameters are saved, in float32",
    ("adafactor.Adafactor", "logical_factor_rules"): "factoring follows the shapes "
                                                     "(optim.adafactor.min_dim_size_to_factor)",
}


def _normalize(selector: str) -> str:
  for prefix in _PREFIXES:
    if selector.startswith(prefix):
      return _normalize(selector[len(prefix):])
  return selector


def _key(selector: str, arg: str) -> tuple[str, str]:
  return _normalize(selector), arg


def is_t5x(selector: str, arg: str) -> bool:
  """Whether `selector.arg` is a T5X binding this module knows."""
  key = _key(selector, arg)
  return (key in TO_MACRO or key in TO_BINDING or key in NO_EQUIVALENT or
          key == ("utils.create_learning_rate_scheduler", "factors"))


def equivalent(selector: str, arg: str) -> Optional[str]:
  """What to write here instead of T5X's `selector.arg` (None: not a known T5X binding)."""
  key = _key(selector, arg)
  if key in TO_MACRO:
    return f"set the macro {TO_MACRO[key]} instead"
  if key in TO_BINDING:
    return f"bind {TO_BINDING[key]} instead"
  if key in NO_EQUIVALENT:
    return NO_EQUIVALENT[key]
  if key == ("utils.create_learning_rate_scheduler", "factors"):
    return "set LR_SCHEDULE instead ('constant', 'linear', 'cosine' or 'rsqrt')"
  return None


def translate(scope: str, selector: str, arg: str, value: Any,
              value_text: str) -> tuple[Optional[str], Optional[str]]:
  """(our `NAME=VALUE` binding, None) for a T5X binding with an equivalent; (None, why) for a
  known T5X binding without one; (None, None) when `selector.arg` is not a T5X binding."""
  del scope  # T5X scopes (e.g. prompt_init/) have no counterpart: our names are unscoped.
  key = _key(selector, arg)
  if key in TO_MACRO:
    return f"{TO_MACRO[key]}={value_text}", None
  if key in TO_BINDING:
    return f"{TO_BINDING[key]}={value_text}", None
  if key == ("utils.create_learning_rate_scheduler", "factors"):
    normalized = " * ".join(p.strip() for p in str(value).split("*"))
    if normalized in SCHEDULE_FACTORS:
      return f"LR_SCHEDULE='{SCHEDULE_FACTORS[normalized]}'", None
    return None, (f"factors={value!r} has no equivalent; LR_SCHEDULE offers 'constant', "
                  "'linear', 'cosine' and 'rsqrt' (T5X's 'constant * rsqrt_decay'), with "
                  "WARMUP_STEPS")
  if key in NO_EQUIVALENT:
    return None, NO_EQUIVALENT[key]
  return None, None
