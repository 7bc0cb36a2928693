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
import time
from typing import Any, Callable, Optional, TextIO

import jax
import jax.numpy as jnp

from prompt_tuning import api, errors
from prompt_tuning.models import T5Config
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.train import best
from prompt_tuning.train import checkpoints as train_checkpoints
from prompt_tuning.train import (data, evaluation, metrics_log, model_setup, models, optim,
                                 partitioning, recovery, summary, trainer)

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
          lr_schedule: str = "constant",
          warmup_steps: int = 0,
          best_metric: Optional[str] = None,
          best_metric_mode: str = "max",
          early_stopping_patience: Optional[int] = None,
          config_text: Optional[str] = None,
          command_line: Any = None,
          stream: Optional[TextIO] = None) -> TrainResult:
  """Trains the prompt-method parameters of a frozen model; see the module docstring.

  `optimizer(learning_rate=...)` builds the optax transformation (default: T5X's Adafactor with
  the paper's settings); `learning_rate` follows `lr_schedule` (`optim.make_schedule`);
  `trainable_regex` defaults to the prompt methods' parameters.
  `frozen_dtype` (e.g. "bfloat16") keeps the frozen weights in that dtype: half the memory, the
  same activation dtype. `config_text` (the gin configuration) is written to MODEL_DIR/config.gin.
  `best_metric` keeps the best evaluation's trained parameters (`best.BestTracker`), with early
  stopping after `early_stopping_patience` evaluations without a new best. A run whose MODEL_DIR
  already holds TRAIN_STEPS (or that stopped early) says so and returns. The end of the run
  prints a summary (`summary.py`; `command_line`, given by the CLI, adds the eval / infer
  commands).
  """
  started = time.perf_counter()
  stream = stream or sys.stdout
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
  checkpointer = train_checkpoints.TrainCheckpointer(
      model_dir, keep=keep_checkpoints,
      exporter=lambda folder, step, trainable: train_checkpoints.export_step_files(
          folder, step, trainable, prompt_config, model_config))
  start_step = model_setup.checkpoint_step(initial_checkpoint_path)
  resume_step = checkpointer.latest_step()
  tracker = _best_tracker(model_dir, best_metric, best_metric_mode, early_stopping_patience,
                          resume_step, eval_dataset_cfg, eval_period)
  stopped = tracker.stopped_early_at if tracker is not None else None
  if resume_step is not None and (resume_step >= total_steps or stopped == resume_step):
    checkpointer.close()
    return _already_done(model_dir, resume_step, total_steps, tracker, prompt_config,
                         command_line, stream)
  if start_step >= total_steps:
    checkpointer.close()
    raise TrainStepsError(
        f"TRAIN_STEPS={total_steps} but training is already at step {start_step} (TRAIN_STEPS "
        "is absolute, as in T5X: it counts the frozen checkpoint's steps). Set TRAIN_STEPS to "
        f"{start_step} + the number of steps to train.")
  log = metrics_log.MetricsLog(model_dir, total_steps, stream=stream, tensorboard=tensorboard)
  learning_rate = optim.make_schedule(lr_schedule, learning_rate, warmup_steps=warmup_steps,
                                      start_step=start_step, total_steps=total_steps)
  params = model_setup.initial_params(
      run, initial_checkpoint_path, restore_dtype=restore_dtype, frozen_dtype=frozen_dtype,
      trainable_regex=trainable_regex, seed=random_seed,
      vocabulary=model_setup.vocabulary_for_init(prompt_config, train_dataset_cfg))
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

  converter = data.feature_converter(model_config, run.prompt_length,
                                     task=train_dataset_cfg.mixture_or_task_name,
                                     module=train_dataset_cfg.module)
  shard = partitioning.process_batch_shard(mesh)  # Processes feeding the same rows share one.
  batches = data.BatchIterator(data.get_dataset(train_dataset_cfg, converter, shard=shard),
                               position)
  sharded = (partitioning.shard_batch(batch, mesh) for batch in batches)

  eval_metrics: dict[int, dict[str, dict[str, float]]] = {}
  evaluate = None
  if eval_dataset_cfg is not None:
    fns = evaluation.ModelFns(run.module, decode_config, mesh, eval_dataset_cfg.batch_size)
    evaluator = evaluation.Evaluation(eval_dataset_cfg, fns, model_config,
                                      run.prompt_length,
                                      log_dir=os.path.join(model_dir, "inference_eval"))

    def evaluate(step: int, current: trainer.TrainState) -> None:
      results = evaluator.evaluate(optim.merge_params(current.trainable, frozen), step)
      eval_metrics[step] = results
      for task, values in results.items():
        log.log_eval(step, task, values)
      if tracker is not None and step > start_step:
        if tracker.update(step, results, current.trainable, train_checkpoints.inference_exports(
            current.trainable, prompt_config, model_config)):
          log.message(f"new best {tracker.record.metric} {tracker.record.best_value:.2f} at step "
                      f"{step}: kept in {os.path.join(model_dir, best.BEST_DIR)}")

    if eval_before_training:
      evaluate(int(state.step), state)

  last_figures: dict[str, float] = {}

  first_step_seconds: list[float] = []

  def on_log(step: int, figures: dict[str, float]) -> None:
    figures["learning_rate"] = optim.learning_rate_at(learning_rate, step - 1)
    if "first_step_seconds" in figures:
      first_step_seconds.append(figures["first_step_seconds"])
    last_figures.clear()
    last_figures.update(figures)
    log.log_train(step, figures)

  prompt_files: list[str] = []

  def on_checkpoint(step: int, current: trainer.TrainState) -> None:
    meta = {"data_position": batches.position, "trainable_regex": trainable_regex,
            "initial_checkpoint_path": initial_checkpoint_path or "", "start_step": start_step}
    prompt_files[:] = checkpointer.save(step, current.trainable, current.opt_state, meta)

  if model_config.architecture == "decoder_only" and not model_config.zero_is_padding and (
      not loss_config.logits_window):
    # Causal-LM rows: only the target positions need logits (at most `targets` per row).
    loss_config = dataclasses.replace(
        loss_config, logits_window=int(train_dataset_cfg.task_feature_lengths["targets"]))
  step_fn = trainer.make_train_step(run.module, tx, loss_config,
                                    dropout=model_config.dropout_rate > 0,
                                    num_microbatches=num_microbatches)
  jitted = trainer.jit_train_step(step_fn, state_sh, frozen_sh, mesh)
  loop = trainer.LoopConfig(total_steps=total_steps, log_period=log_period,
                            eval_period=eval_period, checkpoint_period=checkpoint_period,
                            batch_size=train_dataset_cfg.batch_size)
  should_stop = (lambda step: tracker.should_stop()) if tracker is not None else None
  hooks = trainer.LoopHooks(on_log=on_log, on_eval=evaluate, on_checkpoint=on_checkpoint,
                            should_stop=should_stop)
  first_step = int(state.step)
  state = trainer.train_loop(jitted, state, frozen, sharded, trainer.dropout_key(random_seed),
                             loop, hooks, last_checkpoint=resume_step)
  checkpointer.close()
  log.close()
  stopped_at = None
  if tracker is not None and int(state.step) < total_steps:
    stopped_at = int(state.step)
    tracker.mark_stopped(stopped_at)
  outcome = summary.Outcome(
      model_dir=os.path.abspath(model_dir), total_steps=total_steps, first_step=first_step,
      last_step=int(state.step), wall_seconds=time.perf_counter() - started,
      eval_metrics=eval_metrics, prompt_files=prompt_files,
      best=tracker.record if tracker is not None else None, stopped_early_at=stopped_at,
      first_step_seconds=first_step_seconds[0] if first_step_seconds else None)
  if jax.process_index() == 0:
    print("\n".join(summary.summary_lines(outcome, command_line, _is_prompt_method(prompt_config))),
          file=stream, flush=True)
  return TrainResult(step=int(state.step), trainable=jax.device_get(state.trainable), frozen=frozen,
                     prompt_files=prompt_files, eval_metrics=eval_metrics,
                     last_figures=last_figures)


# --- Best checkpoint, finished runs (issue 16) ------------------------------------------------


def _is_prompt_method(prompt_config: Any) -> bool:
  """Whether the method's trained parameter is a plain [P, D] prompt (PROMPT_FILE reuses it)."""
  from prompt_tuning import prompts  # Local: only the summary asks.
  return isinstance(prompt_config, prompts.PromptConfig)


def _best_tracker(model_dir: str, metric: Optional[str], mode: str, patience: Optional[int],
                  resume_step: Optional[int], eval_dataset_cfg: Any,
                  eval_period: Optional[int]) -> Optional[best.BestTracker]:
  """The run's best-evaluation tracker (None without BEST_METRIC)."""
  if not metric:
    if patience is not None:
      raise best.BestMetricError("EARLY_STOPPING_PATIENCE needs BEST_METRIC (e.g. "
                                 "--gin.BEST_METRIC=\"'accuracy'\").")
    return None
  if eval_dataset_cfg is None or not eval_period:
    raise best.BestMetricError(f"BEST_METRIC={metric!r} needs evaluations during training: set "
                               "EVAL_PERIOD (e.g. --gin.EVAL_PERIOD=1000).")
  return best.BestTracker(model_dir, metric, mode, patience, resume_step)


def _already_done(model_dir: str, step: int, total_steps: int,
                  tracker: Optional[best.BestTracker], prompt_config: Any, command_line: Any,
                  stream: TextIO) -> TrainResult:
  """The result of rerunning a finished run: nothing is trained, the outputs are named."""
  folder = train_checkpoints.numpy_checkpoint_dir(model_dir, step)
  files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                 for name in names if name.endswith(".npy"))
  record = tracker.record if tracker is not None else None
  outcome = summary.Outcome(
      model_dir=os.path.abspath(model_dir), total_steps=total_steps, first_step=step,
      last_step=step, wall_seconds=0.0, eval_metrics={}, prompt_files=files, best=record,
      stopped_early_at=tracker.stopped_early_at if tracker is not None else None,
      already_done=tracker is None or tracker.stopped_early_at is None)
  if jax.process_index() == 0:
    print("\n".join(summary.summary_lines(outcome, command_line, _is_prompt_method(prompt_config))),
          file=stream, flush=True)
  trainable = orbax_format.load_params(os.path.join(model_dir, f"checkpoint_{step}"))
  return TrainResult(step=step, trainable=trainable, frozen={}, prompt_files=files,
                     eval_metrics={}, last_figures={})
