"""`evaluate(...)` and `infer(...)`: a frozen model + a prompt file, metrics or predictions out.

The functions `python -m prompt_tuning.eval` / `python -m prompt_tuning.infer` configure
(`configs/runs/prompt_eval.gin`, `configs/runs/prompt_infer.gin`). The prompt comes from
PROMPT_FILE (a `.npy` [P, D], e.g. `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/...npy` or one of
the paper's released prompts) or from a training checkpoint of ours (`trained_checkpoint_path`).
PROMPT_FILES (a list, a glob or a folder of `.npy` prompts) evaluates a prompt ensemble instead:
every prompt and the ensemble, all prompts in one pass per batch (`ensemble_eval`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Optional, TextIO

import jax

from prompt_tuning import prompt_files as prompt_files_lib
from prompt_tuning.models import T5Config
from prompt_tuning.train import checkpoints as train_checkpoints
from prompt_tuning.train import (data, ensemble_eval, evaluation, model_setup, models,
                                 partitioning)


def _prepared(model_config: T5Config, prompt_config: Any, checkpoint_path: Optional[str],
              prompt_file: Optional[str], trained_checkpoint_path: Optional[str],
              restore_dtype: Optional[str], frozen_dtype: Optional[str], num_partitions: int,
              decode_config: models.DecodeConfig, dataset_cfg: data.DatasetConfig,
              split_macro: str) -> tuple[model_setup.RunModel, Any, evaluation.ModelFns]:
  data.check_dataset(dataset_cfg, model_config.vocab_size, split_macro)
  run = model_setup.build_run_model(model_config, prompt_config)
  params = model_setup.initial_params(
      run, checkpoint_path, restore_dtype=restore_dtype, frozen_dtype=frozen_dtype,
      vocabulary=model_setup.vocabulary_for_init(prompt_config, dataset_cfg))
  if trained_checkpoint_path:
    params = model_setup.overlay_trained(params, trained_checkpoint_path)
  params = model_setup.with_prompt_file(params, prompt_file)
  mesh = partitioning.make_mesh(num_partitions)
  params = partitioning.place(params, partitioning.param_shardings(run.axes, run.shapes, mesh))
  data.warn_if_truncated(dataset_cfg, limit=dataset_cfg.num_examples)
  return run, params, evaluation.ModelFns(run.module, decode_config, mesh, dataset_cfg.batch_size)


_STEP_FOLDER = re.compile(r"^checkpoint_(\d+)$")


def prompt_step(prompt_file: Optional[str],
                trained_checkpoint_path: Optional[str]) -> Optional[int]:
  """The training step the evaluated prompt comes from, where its path tells it.

  A prompt exported by training sits in a `checkpoint_<step>` folder
  (`numpy_checkpoints/checkpoint_3300/...npy`, `best/checkpoint_3200/...`, an adapter folder
  inside one); a trained checkpoint records its step. None when unknown (e.g. a released prompt).
  """
  source = prompt_file
  if trained_checkpoint_path and not prompt_file:
    if not any(name.endswith(".npy") for name in os.listdir(trained_checkpoint_path)):
      from prompt_tuning.checkpoints import orbax as orbax_format  # Local: orbax is heavy.
      return orbax_format.checkpoint_step(trained_checkpoint_path)
    source = trained_checkpoint_path  # A numpy checkpoint folder: checkpoint_<step>.
  if not source:
    return None
  for part in reversed(os.path.normpath(os.fspath(source)).split(os.sep)):
    match = _STEP_FOLDER.match(part)
    if match:
      return int(match.group(1))
  return None


def evaluate(*,
             model_config: T5Config,
             prompt_config: Any,
             dataset_cfg: data.DatasetConfig,
             output_dir: str,
             checkpoint_path: Optional[str] = None,
             prompt_file: Optional[str] = None,
             trained_checkpoint_path: Optional[str] = None,
             decode_config: models.DecodeConfig = models.DecodeConfig(),
             restore_dtype: Optional[str] = None,
             frozen_dtype: Optional[str] = None,
             num_partitions: int = 1,
             stream: Optional[TextIO] = None,
             prompt_files: Any = None) -> dict[str, dict[str, float]]:
  """Metrics of every task of the dataset's split; written to `output_dir/metrics.json`.

  With `prompt_files` (PROMPT_FILES: a list, a glob or a folder of `.npy` prompts) the returned
  metrics are the ensemble's; metrics.json also lists each prompt's (`prompt_metrics`, in the
  order of `prompt_files`).

  seqio also writes each task's inferences and metrics under `output_dir/inference_eval/`.
  Both are labelled with the prompt's training step where known (`prompt_step`), else the
  frozen checkpoint's; metrics.json records both steps.
  """
  stream = stream or sys.stdout
  train_checkpoints.check_writable(output_dir, "EVAL_OUTPUT_DIR")
  paths = _ensemble_paths(prompt_file, prompt_files)
  run, params, fns = _prepared(model_config, prompt_config, checkpoint_path, prompt_file,
                               trained_checkpoint_path, restore_dtype, frozen_dtype,
                               num_partitions, decode_config, dataset_cfg, "EVAL_SPLIT")
  frozen_step = model_setup.checkpoint_step(checkpoint_path)
  step = prompt_step(prompt_file, trained_checkpoint_path)
  if step is None:
    step = frozen_step
  evaluator = evaluation.Evaluation(dataset_cfg, fns, model_config, run.prompt_length,
                                    log_dir=os.path.join(output_dir, "inference_eval"))
  record = {"step": step, "split": dataset_cfg.split, "frozen_checkpoint_step": frozen_step,
            "prompt_file": prompt_file, "trained_checkpoint_path": trained_checkpoint_path}
  if paths:
    ensemble = ensemble_eval.build(run, params, paths, decode_config, fns.mesh,
                                   dataset_cfg.batch_size)
    results, per_prompt = ensemble_eval.evaluate(evaluator, ensemble, step)
    record["prompt_files"] = paths
    record["prompt_metrics"] = per_prompt
  else:
    results = evaluator.evaluate(params, step)
  record["metrics"] = results
  if jax.process_index() == 0:
    path = os.path.join(output_dir, "metrics.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)
    if paths:
      for index, (prompt, metrics) in enumerate(zip(paths, per_prompt)):
        _print_metrics(f"prompt {index} ({prompt})", metrics, dataset_cfg.split, stream)
      _print_metrics(f"ensemble of {len(paths)} (majority vote / mean log-likelihood)", results,
                     dataset_cfg.split, stream)
    else:
      _print_metrics(None, results, dataset_cfg.split, stream)
    print(f"Metrics written to {path}", file=stream, flush=True)
  return results


def _print_metrics(title: Optional[str], results: dict[str, dict[str, float]], split: str,
                   stream: TextIO) -> None:
  if title:
    print(title, file=stream, flush=True)
  for task, values in results.items():
    shown = "  ".join(f"{name} {value:.4f}" for name, value in values.items())
    print(f"{'  ' if title else ''}{task} ({split}): {shown}", file=stream, flush=True)


def _ensemble_paths(prompt_file: Optional[str], prompt_files: Any) -> list[str]:
  """The prompt files of an ensemble (PROMPT_FILES), or [] for a single prompt."""
  if prompt_files is None:
    return []
  if prompt_file:
    raise prompt_files_lib.PromptFileError(
        "PROMPT_FILE and PROMPT_FILES are both set: give PROMPT_FILES alone to evaluate an "
        "ensemble, or PROMPT_FILE alone for one prompt.")
  return prompt_files_lib.expand_prompt_files(prompt_files)


def infer(*,
          model_config: T5Config,
          prompt_config: Any,
          dataset_cfg: data.DatasetConfig,
          output_dir: str,
          checkpoint_path: Optional[str] = None,
          prompt_file: Optional[str] = None,
          trained_checkpoint_path: Optional[str] = None,
          decode_config: models.DecodeConfig = models.DecodeConfig(),
          restore_dtype: Optional[str] = None,
          frozen_dtype: Optional[str] = None,
          num_partitions: int = 1,
          stream: Optional[TextIO] = None,
          prompt_files: Any = None) -> dict[str, str]:
  """Decoded predictions of every example, one JSONL file per task under `output_dir`.

  With `prompt_files` (an ensemble) each record holds the ensemble's "prediction" and each
  prompt's "predictions".
  """
  stream = stream or sys.stdout
  train_checkpoints.check_writable(output_dir, "INFER_OUTPUT_DIR")
  paths = _ensemble_paths(prompt_file, prompt_files)
  run, params, fns = _prepared(model_config, prompt_config, checkpoint_path, prompt_file,
                               trained_checkpoint_path, restore_dtype, frozen_dtype,
                               num_partitions, decode_config, dataset_cfg, "INFER_SPLIT")
  if paths:
    ensemble = ensemble_eval.build(run, params, paths, decode_config, fns.mesh,
                                   dataset_cfg.batch_size)
    written = ensemble_eval.infer_to_jsonl(ensemble, dataset_cfg, model_config,
                                           run.prompt_length, output_dir)
  else:
    written = evaluation.infer_to_jsonl(params, fns, dataset_cfg, model_config,
                                        run.prompt_length, output_dir)
  if jax.process_index() == 0:
    for task, path in written.items():
      print(f"{task}: predictions written to {path}", file=stream, flush=True)
  return written
