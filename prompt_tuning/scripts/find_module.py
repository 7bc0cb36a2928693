"""Prints the folder a Python module or package is installed in (e.g. for --gin_search_paths).

  python -m prompt_tuning.scripts.find_module prompt_tuning
  python -m prompt_tuning.scripts.find_module prompt_tuning.configs   # the shipped gin files
  --gin_search_paths=$(python -m prompt_tuning.scripts.find_module my_project.configs)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Optional, Sequence

from absl import flags

from prompt_tuning.scripts import _cli

PROG = "find_module"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} MODULE   (or --module=MODULE)

Prints the folder of a package (the one holding its __init__.py, or a namespace package's
folder) or the folder holding a single-file module, without running the module's code.
"""
CONFIGS_PACKAGE = "prompt_tuning.configs"


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("module", None, "Dotted module name, e.g. prompt_tuning.configs (or pass it "
                      "as the only argument).", flag_values=flag_values)


def module_dir(name: str) -> str:
  """The folder module `name` is installed in.

  `prompt_tuning.configs` (installed from the checkout's top-level `configs/`) resolves to the
  shipped gin folder also from a checkout, where it is no importable package.

  Raises:
    ModuleNotFoundError: no such module in this Python.
  """
  try:
    spec = importlib.util.find_spec(name)
  except (ImportError, ValueError) as error:  # A parent package is missing or the name is bad.
    spec, cause = None, error
  else:
    cause = None
  if spec is None:
    if name == CONFIGS_PACKAGE:
      from prompt_tuning import gin_utils  # pylint: disable=g-import-not-at-top
      return str(gin_utils.default_config_dir())
    raise ModuleNotFoundError(
        f"No module named {name!r} in this Python ({sys.executable}): check the spelling "
        f"(dotted, e.g. prompt_tuning.configs) and install its distribution"
        + (f" ({cause})." if cause else "."))
  if spec.submodule_search_locations:  # A package, regular or namespace.
    return os.path.abspath(list(spec.submodule_search_locations)[0])
  if spec.origin and os.path.exists(spec.origin):
    return os.path.dirname(os.path.abspath(spec.origin))
  raise ModuleNotFoundError(
      f"Module {name!r} has no file (origin: {spec.origin}): it is built into Python, so it "
      "has no folder.")


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Prints the folder of the one module named."""
  names = ([flag_values.module] if flag_values.module else []) + list(args)
  if len(names) != 1:
    raise _cli.UsageError(
        f"pass exactly one module name (got {names or 'none'}), e.g. `python -m "
        f"prompt_tuning.scripts.{PROG} prompt_tuning.configs`.")
  print(module_dir(names[0]))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
