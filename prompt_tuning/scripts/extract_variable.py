r"""Writes one variable of a checkpoint (T5X, our orbax, Hugging Face) to a `.npy` file.

Typical use: pull the trained prompt out of a checkpoint to reuse it as PROMPT_FILE.

  python -m prompt_tuning.scripts.extract_variable \
    --checkpoint_dir=/tmp/model/checkpoint_1100000 \
    --variable_path=target/encoder/prompt/prompt/prompt \
    --output_path=/tmp/prompt.npy
"""

from __future__ import annotations

import io
import os
import sys
from typing import Optional, Sequence

from absl import flags
import numpy as np

from prompt_tuning.scripts import _checkpoints, _cli

PROG = "extract_variable"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} --checkpoint_dir=DIR \\
    --variable_path=PATH --output_path=FILE.npy [--restore_dtype=float32]

Reads one variable of a T5X checkpoint folder (e.g. .../checkpoint_1100000), one of our orbax
checkpoints (DIR or DIR/checkpoint_<step>) or a Hugging Face T5 directory and writes it as .npy.
"""
# bfloat16 is left out on purpose: numpy writes it to .npy as raw 2-byte void that loads as
# garbage; float32 holds every bfloat16 value exactly.
RESTORE_DTYPES = ("float32", "float16", "float64")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("checkpoint_dir", None, "Checkpoint to read: a T5X checkpoint folder, "
                      "our orbax checkpoint (folder or checkpoint_<step>) or a Hugging Face "
                      "directory.", flag_values=flag_values)
  flags.DEFINE_string("variable_path", None, "Variable to extract, '/'-nested, e.g. "
                      "encoder/prompt/prompt/prompt; a leading 'target/' or "
                      "'optimizer/target/' is optional.", flag_values=flag_values)
  flags.DEFINE_string("output_path", None, "The .npy file to write ('.npy' is appended if "
                      "missing; folders are created).", flag_values=flag_values)
  flags.DEFINE_enum("restore_dtype", "float32", RESTORE_DTYPES, "dtype of the written array "
                    "(floating-point variables only; bfloat16 is stored exactly in float32).",
                    flag_values=flag_values)
  for name in ("checkpoint_dir", "variable_path", "output_path"):
    flags.mark_flag_as_required(name, flag_values=flag_values)


def extract_variable(checkpoint_dir: str, variable_path: str,
                     restore_dtype: str = "float32") -> tuple[str, np.ndarray]:
  """(normalized path, array) of one checkpoint variable, floats cast to `restore_dtype`."""
  index = _checkpoints.open_checkpoint(checkpoint_dir)
  path = _checkpoints.normalize_variable_path(variable_path)
  if not path:
    raise _cli.UsageError(f"--variable_path={variable_path!r} names no variable.")
  return path, index.read([path], np.dtype(restore_dtype))[path]


def write_npy(array: np.ndarray, output_path: str) -> str:
  """Writes `array` to `output_path` (+'.npy'), local or gs://; returns the path written."""
  if not output_path.endswith(".npy"):
    output_path += ".npy"
  if "://" in output_path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    buffer = io.BytesIO()
    np.save(buffer, array)
    with tf.io.gfile.GFile(output_path, "wb") as f:
      f.write(buffer.getvalue())
    return output_path
  folder = os.path.dirname(os.path.abspath(output_path))
  os.makedirs(folder, exist_ok=True)
  np.save(output_path, array)
  return output_path


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Extracts the variable and writes it."""
  if args:
    raise _cli.UsageError(f"unexpected arguments {args}: pass everything as --flags.")
  path, array = extract_variable(flag_values.checkpoint_dir, flag_values.variable_path,
                                 flag_values.restore_dtype)
  written = write_npy(array, flag_values.output_path)
  print(f"Wrote {path} {list(array.shape)} {array.dtype} to {written}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
