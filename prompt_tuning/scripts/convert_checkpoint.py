r"""Converts checkpoints: Hugging Face T5 <-> our orbax checkpoint; T5X -> orbax (or Hugging Face).

  # Hugging Face -> orbax (the model config comes from config.json and is stored in `meta`):
  python -m prompt_tuning.scripts.convert_checkpoint \
    --input_path=/tmp/hf/t5-v1_1-base --output_dir=/tmp/t5_1_1_base_orbax
  # orbax -> Hugging Face (config from `meta`, or from gin files as for load_model):
  python -m prompt_tuning.scripts.convert_checkpoint \
    --input_path=/tmp/t5_1_1_base_orbax --output_dir=/tmp/hf_out
  # T5X -> orbax (gin files give the config to store; without them none is stored):
  python -m prompt_tuning.scripts.convert_checkpoint \
    --input_path=/tmp/t5_1_1_base/checkpoint_1000000 --output_dir=/tmp/t5_1_1_base_orbax \
    --gin_file=models/t5_1_1_base.gin

The orbax checkpoint holds every variable under `params` and, in its JSON `meta` item,
{"t5_config": <our T5Config as a dict>, "converted_from": ..., "source_format": ...}.
Prompt-method variables (e.g. `encoder/prompt/...`) are kept in orbax output and left out of
Hugging Face output (export prompts with the PEFT interchange instead).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from typing import Any, Mapping, Optional, Sequence

from absl import flags
import numpy as np

from prompt_tuning.checkpoints import huggingface, orbax, tree
from prompt_tuning.checkpoints.restore import match_params
from prompt_tuning.models.config import T5Config
from prompt_tuning.scripts import _checkpoints, _cli

PROG = "convert_checkpoint"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} --input_path=CHECKPOINT \\
    --output_dir=DIR [--output_format=auto|orbax|huggingface] [--gin_file=...] [--gin.NAME=VALUE]

Input: a Hugging Face T5 directory, a T5X checkpoint folder or one of our orbax checkpoints.
Output (auto): orbax for Hugging Face / T5X input, Hugging Face for orbax input.
"""
META_CONFIG_KEY = "t5_config"
OUTPUT_FORMATS = ("auto", "orbax", "huggingface")
RESTORE_DTYPES = ("float32", "bfloat16", "float16")
# Parameters of prompt-learning methods: not part of the frozen model's tree.
_METHOD_PARAMS = ".*/(prompt|prefix)/.*"
_STEP_IN_NAME = re.compile(r"checkpoint_(\d+)$")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("input_path", None, "Checkpoint to convert: a Hugging Face T5 directory, a "
                      "T5X checkpoint folder or our orbax checkpoint (folder or "
                      "checkpoint_<step>).", flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Folder to write: orbax output goes to "
                      "OUTPUT_DIR/checkpoint_<step>, Hugging Face output is config.json + "
                      "model.safetensors.", flag_values=flag_values)
  flags.DEFINE_enum("output_format", "auto", OUTPUT_FORMATS, "Format to write; auto = "
                    "huggingface for orbax input, orbax otherwise.", flag_values=flag_values)
  flags.DEFINE_integer("step", None, "Step of the orbax checkpoint written (default: the input's "
                       "step, from its checkpoint_<step> name, else 0).", lower_bound=0,
                       flag_values=flag_values)
  flags.DEFINE_enum("restore_dtype", "float32", RESTORE_DTYPES, "dtype the floating-point "
                    "parameters are read and written as.", flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "Replace an existing output checkpoint.",
                    flag_values=flag_values)
  _cli.define_gin_flags(flag_values)
  for name in ("input_path", "output_dir"):
    flags.mark_flag_as_required(name, flag_values=flag_values)


def config_to_meta(config: T5Config) -> dict[str, Any]:
  """`config` as JSON-able values, for the orbax `meta` item."""
  return dataclasses.asdict(config)


def config_from_meta(meta: Mapping[str, Any]) -> Optional[T5Config]:
  """The T5Config stored in an orbax checkpoint's `meta` (None when it has none).

  Raises:
    ValueError: the stored config has fields this version of T5Config does not know.
  """
  stored = meta.get(META_CONFIG_KEY)
  if stored is None:
    return None
  known = {field.name for field in dataclasses.fields(T5Config)}
  unknown = sorted(set(stored) - known)
  if unknown:
    raise ValueError(
        f"the checkpoint's stored model config has fields {unknown} that this version of "
        "prompt_tuning's T5Config does not know: pass the model's gin files (--gin_file=...) "
        "instead.")
  return T5Config(**stored)


def config_from_gin(gin_files: Sequence[str], bindings: Sequence[str],
                    search_paths: Sequence[str]) -> T5Config:
  """The T5Config the gin files (and NAME=VALUE bindings) describe."""
  from prompt_tuning import gin_utils  # pylint: disable=g-import-not-at-top  (entry point only)
  gin_utils.parse_gin_config(gin_files, bindings, search_paths)
  return gin_utils.configured(T5Config)()


def input_step(index: _checkpoints.CheckpointIndex) -> int:
  """The step of an orbax input, or the number in a `..._checkpoint_<step>` folder name, or 0."""
  if index.kind == "orbax":
    return index.step
  match = _STEP_IN_NAME.search(os.path.basename(os.path.normpath(index.path)))
  return int(match.group(1)) if match else 0


def model_variables(config: T5Config) -> dict[str, tuple[int, ...]]:
  """{path: shape} of the plain (no prompt) model `config` describes; allocates nothing."""
  from prompt_tuning import api  # pylint: disable=g-import-not-at-top  (builds flax modules)
  from prompt_tuning.models import build_model  # pylint: disable=g-import-not-at-top
  shapes = api.param_shapes(build_model(config), config)
  return {p: tuple(s.shape) for p, s in tree.flatten_params(shapes).items()}


def check_params(params: Mapping[str, Any], config: T5Config, source: str) -> list[str]:
  """Checks `params` against `config`'s model; returns the paths it holds beyond the model's.

  Raises:
    CheckpointMismatchError: a model variable is missing or has another shape, or an extra
      variable is not a prompt-method one.
  """
  expected = model_variables(config)
  match_params(tree.unflatten_params(expected), params, source=source,
               ignore_unexpected=_METHOD_PARAMS)
  return [p for p in tree.flatten_params(params) if p not in expected]


def _output_format(requested: str, input_kind: str) -> str:
  if requested != "auto":
    return requested
  return "huggingface" if input_kind == "orbax" else "orbax"


def _orbax_target(output_dir: str, step: int, overwrite: bool) -> str:
  """OUTPUT_DIR/checkpoint_<step>, checked not to exist unless `overwrite`."""
  target = os.path.join(os.path.abspath(output_dir), f"{orbax.STEP_PREFIX}_{step}")
  if os.path.exists(target) and not overwrite:
    raise FileExistsError(
        f"{target} already exists: pass --overwrite to replace it, or --step=N to write "
        "another step.")
  return target


def _check_huggingface_target(config: Optional[T5Config], output_dir: str,
                              overwrite: bool) -> None:
  """A config is known and `output_dir` holds no Hugging Face files (unless `overwrite`)."""
  if config is None:
    raise _cli.UsageError(
        "writing a Hugging Face checkpoint needs the model config, and the input stores none: "
        "pass the model's gin files, e.g. --gin_file=models/t5_1_1_base.gin (or convert to "
        "orbax with --gin_file first, which stores the config).")
  existing = [name for name in (huggingface.CONFIG_FILE, huggingface.SAFETENSORS_FILE)
              if os.path.exists(os.path.join(output_dir, name))]
  if existing and not overwrite:
    raise FileExistsError(
        f"{output_dir} already holds {', '.join(existing)}: pass --overwrite to replace them or "
        "choose another --output_dir.")


def convert(input_path: str, output_dir: str, output_format: str = "auto",
            config: Optional[T5Config] = None, step: Optional[int] = None,
            restore_dtype: str = "float32", overwrite: bool = False) -> str:
  """Converts one checkpoint (see the module docstring); returns the folder written.

  Args:
    input_path: Hugging Face directory, T5X checkpoint folder or our orbax checkpoint.
    output_dir: where to write (orbax: OUTPUT_DIR/checkpoint_<step>).
    output_format: "orbax", "huggingface" or "auto" (huggingface for orbax input, else orbax).
    config: the model's config; overrides the input's own (config.json / orbax meta).
    step: step of orbax output; default the input's.
    restore_dtype: dtype floating-point parameters are read and written as.
    overwrite: replace an existing output checkpoint.
  """
  index = _checkpoints.open_checkpoint(input_path, hf_config=config)
  if config is None and index.kind == "huggingface":
    config = index.config
  elif config is None and index.kind == "orbax":
    config = config_from_meta(index.meta())
  kind = _output_format(output_format, index.kind)
  if kind == "huggingface":
    _check_huggingface_target(config, output_dir, overwrite)
  else:
    step = input_step(index) if step is None else step
    _orbax_target(output_dir, step, overwrite)
  params = _checkpoints.params_of(index, np.dtype(restore_dtype))
  extra = check_params(params, config, index.path) if config is not None else []
  if kind == "huggingface":
    huggingface.save_hf_t5_checkpoint(params, config, output_dir)
    written = os.path.abspath(output_dir)
    print(f"Wrote Hugging Face T5 checkpoint ({huggingface.CONFIG_FILE}, "
          f"{huggingface.SAFETENSORS_FILE}) to {written}")
    if extra:
      print(f"Left out {len(extra)} variables that Hugging Face T5 has no place for: "
            f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    return written
  meta = {"converted_from": index.path, "source_format": index.kind}
  if config is not None:
    meta[META_CONFIG_KEY] = config_to_meta(config)
  target = _orbax_target(output_dir, step, overwrite)
  if os.path.exists(target):  # --overwrite: orbax refuses to save over an existing step.
    shutil.rmtree(target)
  written = orbax.save_params(output_dir, params, step, meta=meta)
  print(f"Wrote orbax checkpoint ({len(index.variables)} variables) to {written}")
  if config is None:
    print("Stored no model config (T5X checkpoints carry none): pass --gin_file=... to store "
          "it, so that the orbax checkpoint converts to Hugging Face without gin files.")
  return written


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Converts the checkpoint the flags name."""
  if args:
    raise _cli.UsageError(f"unexpected arguments {args}: pass everything as --flags.")
  if flag_values.gin_bindings and not flag_values.gin_file:
    raise _cli.UsageError("--gin.NAME=VALUE bindings need --gin_file (e.g. "
                          "--gin_file=models/t5_1_1_base.gin) to bind into.")
  config = None
  if flag_values.gin_file:
    config = config_from_gin(flag_values.gin_file, flag_values.gin_bindings,
                             flag_values.gin_search_paths)
  convert(flag_values.input_path, flag_values.output_dir, flag_values.output_format, config,
          flag_values.step, flag_values.restore_dtype, flag_values.overwrite)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
