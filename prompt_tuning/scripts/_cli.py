"""Plumbing shared by the `prompt_tuning.scripts` commands: flags, `--gin.NAME=VALUE`, errors.

Each command module defines `define_flags(flag_values)` and `run(flag_values, args)` and
exposes `main(argv) -> exit code` built with `main_from`. Flags live in a fresh
`absl.flags.FlagValues` per call (not the global `FLAGS`), so the commands can be run
in-process one after another (tests) without flag-name clashes. Bad input (a wrong path, a
variable that does not exist, a malformed flag) is printed as one `NAME: error: ...` line on
stderr, without a traceback, and the command exits non-zero.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Optional, Sequence, TextIO

from absl import flags

from prompt_tuning.cli import GIN_BINDINGS_FLAG, UsageError, rewrite_gin_args

# Exit codes: 0 ran, 1 bad input (path, variable, checkpoint contents), 2 bad command line.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")

DefineFn = Callable[[flags.FlagValues], None]
RunFn = Callable[[flags.FlagValues, list[str]], None]


def define_gin_flags(flag_values: flags.FlagValues) -> None:
  """--gin_file (repeatable), --gin_bindings (what --gin.NAME=VALUE becomes), --gin_search_paths."""
  flags.DEFINE_multi_string(
      "gin_file", [], "Gin file describing the model (repeatable; later files win), e.g. "
      "models/t5_1_1_base.gin.", flag_values=flag_values)
  flags.DEFINE_multi_string(
      GIN_BINDINGS_FLAG, [], "Gin binding NAME=VALUE (repeatable); --gin.NAME=VALUE is the "
      "same.", flag_values=flag_values)
  flags.DEFINE_list(
      "gin_search_paths", [], "Comma-separated folders to resolve --gin_file names from "
      "(the shipped configs are always searched).", flag_values=flag_values)


def _flag_help(flag_values: flags.FlagValues, names: Sequence[str]) -> str:
  lines = []
  for name in names:
    flag = flag_values[name]
    default = "" if flag.default in (None, [], "") else f" (default: {flag.default_as_str})"
    lines.append(f"  --{name}: {flag.help}{default}")
  return "\n".join(lines)


def _message(error: BaseException) -> str:
  """The error's text on one line (KeyError quotes its message; show it as written)."""
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]
  else:
    text = str(error) or type(error).__name__
  return " ".join(line.strip() for line in text.splitlines() if line.strip())


def report(prog: str, error: BaseException, stream: Optional[TextIO] = None) -> None:
  """Prints `prog: error: <message>` as one line."""
  print(f"{prog}: error: {_message(error)}", file=stream or sys.stderr)


def main_from(prog: str, usage: str, define: DefineFn, run: RunFn,
              argv: Optional[Sequence[str]]) -> int:
  """Parses `argv` (argv[0] is the program name) into fresh flags and runs the command.

  Returns:
    EXIT_OK, EXIT_ERROR (bad input) or EXIT_USAGE (bad command line).
  """
  argv = list(sys.argv if argv is None else argv)
  flag_values = flags.FlagValues()
  define(flag_values)
  names = list(flag_values)
  if any(arg in _HELP_FLAGS for arg in argv[1:]):
    print(f"{usage.strip()}\n\nFlags:\n{_flag_help(flag_values, names)}")
    return EXIT_OK
  try:
    args = flag_values(rewrite_gin_args(argv))[1:]
  except (flags.Error, UsageError) as error:
    report(prog, error)
    print(f"Run `python -m prompt_tuning.scripts.{prog} --help` for the flags.", file=sys.stderr)
    return EXIT_USAGE
  try:
    run(flag_values, args)
  except UsageError as error:
    report(prog, error)
    return EXIT_USAGE
  except (ValueError, KeyError, OSError, ImportError) as error:
    report(prog, error)
    return EXIT_ERROR
  return EXIT_OK


def compile_regex(pattern: str, flag: str) -> re.Pattern:
  """re.compile with an error that names the flag."""
  try:
    return re.compile(pattern)
  except re.error as error:
    raise UsageError(f"--{flag}={pattern!r} is not a valid regular expression: {error}.") from error
