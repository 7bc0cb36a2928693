"""`train(...)`: one prompt-learning run, the function `python -m prompt_tuning.train` configures.

Flow: build the model -> restore frozen weights (INITIAL_CHECKPOINT_PATH) and initialise the
prompt -> split trainable / frozen by regex -> shard over the mesh -> resume from MODEL_DIR if it
holds a checkpoint -> loop (log, evaluate every EVAL_PERIOD, checkpoint every
`checkpoint_period`) -> final checkpoint, prompt `.npy` and evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any, Callable, Optional, TextIO

import jax
import jax.numpy as jnp

from prompt_tuning import api, errors
from prompt_tuning.models import T5Config
from prompt_tuning.train import checkpoints as train_checkpoints
from prompt_tuning.train import (data, evaluation, metrics_log, model_setup, models, optim,
                                 partitioning, recovery, trainer)

# Examples of the training split whose lengths are checked against TASK_FEATURE_LENGTHS.
TRUNCATION_CHECK_EXAMPLES = 10_000


class TrainStepsError(ValueError):
  """TRAIN_STEPS leaves nothing to train."""


@dataclasses.dataclass
class TrainResult:
  """What a run produced."""

  step: int
  trainable: dict          # trained parameters (host numpy).
  frozen: dict             # frozen parameters as used by the last step (device arrays).
  prompt_files: list[str]
  eval_metrics: dict[int, dict[str, dict[str, float]]]   # step -> task -> metric -> value.
  last_figures: dict[str, float]


def _place_state(run: model_setup.RunModel, params: dict, trainable_regex: str,
                 mesh: jax.sharding.Mesh) -> tuple[dict, dict, Any, Any]:
  """(trainable, frozen, trainable shardings, frozen shardings) placed on the mesh."""
  shardings = partitioning.param_shardings(run.axes, run.shapes, mesh)
  trainable, frozen = optim.split_params(params, trainable_regex)
  trainable_sh, frozen_sh = optim.split_params(shardings, trainable_regex)
  return (partitioning.place(trainable, trainable_sh), partitioning.place(frozen, frozen_sh),
          trainable_sh, frozen_sh)


def check_run_values(total_steps: Any, checkpoint_period: Any, keep_checkpoints: Any,
                     log_period: Any, eval_period: Any, num_microbatches: Any,
                     batch_size: int, learning_rate: Any) -> None:
  """Raises ConfigValueError naming the gin macro of a loop setting that cannot work."""
  if not callable(learning_rate) and (
      isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float))
      or not math.isfinite(learning_rate) or learning_rate < 0):
    raise errors.ConfigValueError(
        f"LEARNING_RATE={learning_rate!r} must be a number >= 0 (or a schedule): pass e.g. "
        "--gin.LEARNING_RATE=0.3.")
  errors.check_int(total_steps, "TRAIN_STEPS", example=1000)
  errors.check_int(checkpoint_period, "SAVING_PERIOD", allow_none=True, example=1000)
  errors.check_int(keep_checkpoints, "KEEP_CHECKPOINTS", allow_none=True)
  errors.check_int(log_period, "LOG_PERIOD", example=100)
  errors.check_int(eval_period, "EVAL_PERIOD", minimum=0, allow_none=True, example=1000)
  errors.check_int(num_microbatches, "NUM_MICROBATCHES")
  if batch_size % num_microbatches:
    raise errors.ConfigValueError(
        f"NUM_MICROBATCHES={num_microbatches} must divide BATCH_SIZE={batch_size}: change one "
        "of them.")


def train(*,
          model_config: T5Config,
          prompt_config: Any,
          model_dir: str,
          train_dataset_cfg: data.DatasetConfig,
          total_steps: int,
          initial_checkpoint_path: Optional[str] = None,
          eval_dataset_cfg: Optional[data.DatasetConfig] = None,
          optimizer: Callable[..., Any] = optim.adafactor,
          learning_rate: Any = 0.3,
          loss_config: models.LossConfig = models.LossConfig(),
          decode_config: models.DecodeConfig = models.DecodeConfig(),
          trainable_regex: Optional[str] = None,
          eval_period: Optional[int] = None,
          eval_before_training: bool = False,
          checkpoint_period: Optional[int] = 1000,
          keep_checkpoints: Optional[int] = 1,
          log_period: int = 10,
          num_microbatches: int = 1,
          num_partitions: int = 1,
          random_seed: int = 0,
          restore_dtype: Optional[str] = None,
          frozen_dtype: Optional[str] = None,
          tensorboard: bool = True,
          config_text: Optional[str] = None,
          stream: Optional[TextIO] = None) -> TrainResult:
  """Trains the prompt-method parameters of a frozen model; see the module docstring.

  `optimizer(learning_rate=...)` builds the optax transformation (default: T5X's Adafactor with
  the paper's settings); `trainable_regex` defaults to the prompt methods' parameters.
  `frozen_dtype` (e.g. "bfloat16") keeps the frozen weights in that dtype: half the memory, the
  same activation dtype. `config_text` (the gin configuration) is written to MODEL_DIR/config.gin.
  """
  train_checkpoints.check_writable(model_dir)
  check_run_values(total_steps, checkpoint_period, keep_checkpoints, log_period, eval_period,
                   num_microbatches, train_dataset_cfg.batch_size, learning_rate)
  trainable_regex = trainable_regex or api.METHOD_PARAMS_REGEX
  run = model_setup.build_run_model(model_config, prompt_config)
  optim.split_params(run.shapes, trainable_regex)  # The regex is valid and selects something.
  model_setup.check_trainable_shapes(run, trainable_regex)
  mesh = partitioning.make_mesh(num_partitions)
  data.check_dataset(train_dataset_cfg, model_config.vocab_size, "the training split ('train')")
  evaluates = eval_dataset_cfg is not None and bool(eval_period or eval_before_training)
  if evaluates:
    data.check_dataset(eval_dataset_cfg, model_config.vocab_size, "EVAL_SPLIT")
  recovery.clean_model_dir(model_dir)  # Before orbax lists the folder.
  log = metrics_log.MetricsLog(model_dir, total_steps, stream=stream, tensorboard=tensorboard)
  checkpointer = train_checkpoints.TrainCheckpointer(
      model_dir, keep=keep_checkpoints,
      exporter=lambda folder, step, trainable: train_checkpoints.export_step_files(
          folder, step, trainable, prompt_config, model_config))

  start_step = model_setup.checkpoint_step(initial_checkpoint_path)
  resume_step = checkpointer.latest_step()
  if max(start_step, resume_step or 0) >= total_steps:
    at = resume_step if resume_step is not None else start_step
    raise TrainStepsError(
        f"TRAIN_STEPS={total_steps} but training is already at step {at} (TRAIN_STEPS is absolute, "
        "as in T5X: it counts the frozen checkpoint's steps). Set TRAIN_STEPS to "
        f"{at} + the number of steps to train.")
  params = model_setup.initial_params(run, initial_checkpoint_path, restore_dtype=restore_dtype,
                                      frozen_dtype=frozen_dtype, trainable_regex=trainable_regex,
                                      seed=random_seed)
  trainable, frozen, trainable_sh, frozen_sh = _place_state(run, params, trainable_regex, mesh)
  del params
  tx = optimizer(learning_rate=learning_rate)
  # Optimizer state is replicated (prompt-sized; for full fine-tuning on a model-parallel mesh
  # this is simple rather than memory-optimal).
  opt_sh = jax.tree_util.tree_map(lambda _: partitioning.replicated(mesh),
                                  jax.eval_shape(tx.init, trainable))
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(trainable)
  state = trainer.TrainState(step=jnp.asarray(start_step, jnp.int32), trainable=trainable,
                             opt_state=opt_state)
  state_sh = trainer.TrainState(step=partitioning.replicated(mesh), trainable=trainable_sh,
                                opt_state=opt_sh)
  position = 0
  if resume_step is not None:
    trainable, opt_state, meta = checkpointer.restore(resume_step, state.trainable,
                                                      state.opt_state)
    state = trainer.TrainState(step=jnp.asarray(resume_step, jnp.int32), trainable=trainable,
                               opt_state=opt_state)
    position = int(meta.get("data_position", 0))
    log.message(f"Resuming from {checkpointer.model_dir} at step {resume_step} "
                f"(data position {position}).")
  # Committed checkpoints lacking `.npy` files (e.g. deleted, or written by a version that
  # exported after the commit) get them back; metrics of steps after the resumed one are
  # dropped (they are logged again).
  recovery.repair_exports(checkpointer, state.trainable, train_checkpoints.export_names(
      state.trainable, prompt_config, model_config))
  recovery.trim_metrics(model_dir, resume_step)
  if config_text is not None and jax.process_index() == 0:
    with open(os.path.join(model_dir, "config.gin"), "w", encoding="utf-8") as f:
      f.write(config_text)
  data.warn_if_truncated(train_dataset_cfg, limit=TRUNCATION_CHECK_EXAMPLES)

  state = partitioning.place(state, state_sh)  # Placed as the step's outputs: one compilation.

  converter = data.feature_converter(model_config.architecture, run.prompt_length)
  shard = partitioning.process_batch_shard(mesh)  # Processes feeding the same rows share one.
  batches = data.BatchIterator(data.get_dataset(train_dataset_cfg, converter, shard=shard),
                               position)
  sharded = (partitioning.shard_batch(batch, mesh) for batch in batches)

  eval_metrics: dict[int, dict[str, dict[str, float]]] = {}
  evaluate = None
  if eval_dataset_cfg is not None:
    fns = evaluation.ModelFns(run.module, decode_config, mesh, eval_dataset_cfg.batch_size)
    evaluator = evaluation.Evaluation(eval_dataset_cfg, fns, model_config.architecture,
                                      run.prompt_length,
                                      log_dir=os.path.join(model_dir, "inference_eval"))

    def evaluate(step: int, current: trainer.TrainState) -> None:
      results = evaluator.evaluate(optim.merge_params(current.trainable, frozen), step)
      eval_metrics[step] = results
      for task, values in results.items():
        log.log_eval(step, task, values)

    if eval_before_training:
      evaluate(int(state.step), state)

  last_figures: dict[str, float] = {}

  def on_log(step: int, figures: dict[str, float]) -> None:
    figures["learning_rate"] = optim.learning_rate_at(learning_rate, step - 1)
    last_figures.clear()
    last_figures.update(figures)
    log.log_train(step, figures)

  prompt_files: list[str] = []

  def on_checkpoint(step: int, current: trainer.TrainState) -> None:
    meta = {"data_position": batches.position, "trainable_regex": trainable_regex,
            "initial_checkpoint_path": initial_checkpoint_path or "", "start_step": start_step}
    prompt_files[:] = checkpointer.save(step, current.trainable, current.opt_state, meta)

  step_fn = trainer.make_train_step(run.module, tx, loss_config,
                                    dropout=model_config.dropout_rate > 0,
                                    num_microbatches=num_microbatches)
  jitted = trainer.jit_train_step(step_fn, state_sh, frozen_sh, mesh)
  loop = trainer.LoopConfig(total_steps=total_steps, log_period=log_period,
                            eval_period=eval_period, checkpoint_period=checkpoint_period,
                            batch_size=train_dataset_cfg.batch_size)
  hooks = trainer.LoopHooks(on_log=on_log, on_eval=evaluate, on_checkpoint=on_checkpoint)
  state = trainer.train_loop(jitted, state, frozen, sharded, trainer.dropout_key(random_seed),
                             loop, hooks, last_checkpoint=resume_step)
  checkpointer.close()
  log.close()
  return TrainResult(step=int(state.step), trainable=jax.device_get(state.trainable), frozen=frozen,
                     prompt_files=prompt_files, eval_metrics=eval_metrics,
                     last_figures=last_figures)
