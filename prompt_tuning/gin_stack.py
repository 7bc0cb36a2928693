"""A gin stack read as text, without importing what it configures.

The commands' real gin parse imports every configured module (seqio, TensorFlow: ~20 s). This
module reads the same files (includes followed through the same search paths) and the
`--gin.NAME=VALUE` bindings with gin's own parser only, and records which macros are set
(`NAME = VALUE`, with the file and line) and which are read (`%NAME`). From that, before any heavy
import, the commands report a macro that is read but never set, a command-line macro that nothing
reads (a typo: the close name is suggested), a gin syntax error naming its file or flag, and
T5X configurables that have an equivalent here; `--help` lists the required and optional macros
and `--dry_run` the final values.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import os
import tokenize
from typing import Any, Iterable, Optional, Sequence

from gin import config_parser

from prompt_tuning import gin_utils, t5x_bindings

COMMAND_LINE = "command line"


@dataclasses.dataclass(frozen=True)
class MacroRef:
  """`%NAME` inside a parsed value."""

  name: str


@dataclasses.dataclass(frozen=True)
class ConfigurableRef:
  """`@name` / `@name()` inside a parsed value."""

  name: str
  evaluate: bool


class _Delegate(config_parser.ParserDelegate):
  """Keeps references as plain records instead of resolving them (nothing is imported)."""

  def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> Any:
    return ConfigurableRef(scoped_configurable_name, evaluate)

  def macro(self, macro_name: str) -> Any:
    return MacroRef(macro_name)


@dataclasses.dataclass(frozen=True)
class MacroSetting:
  """One `NAME = VALUE` of a file or of the command line."""

  name: str
  value: Any          # parsed; macros as MacroRef, configurable references as ConfigurableRef.
  source: str         # "runs/prompt_finetune.gin:23" or "--gin.NAME".
  comment: str = ""   # the line's trailing comment, if any.

  @property
  def from_command_line(self) -> bool:
    return self.source.startswith("--gin.")


@dataclasses.dataclass(frozen=True)
class Binding:
  """One `scope/selector.arg = VALUE` of a file or of the command line."""

  scope: str
  selector: str
  arg: str
  value: Any
  source: str


def format_value(value: Any) -> str:
  """A parsed value written back as gin text (`%NAME`, `@name()`, Python literals)."""
  if isinstance(value, MacroRef):
    return f"%{value.name}"
  if isinstance(value, ConfigurableRef):
    return f"@{value.name}{'()' if value.evaluate else ''}"
  if isinstance(value, list):
    return "[" + ", ".join(format_value(v) for v in value) + "]"
  if isinstance(value, tuple):
    inner = ", ".join(format_value(v) for v in value)
    return f"({inner}{',' if len(value) == 1 else ''})"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in value.items()) + "}"
  return repr(value)


def _macros_in(value: Any) -> Iterable[str]:
  if isinstance(value, MacroRef):
    yield value.name
  elif isinstance(value, (list, tuple, set)):
    for item in value:
      yield from _macros_in(item)
  elif isinstance(value, dict):
    for key, item in value.items():
      yield from _macros_in(key)
      yield from _macros_in(item)


def _trailing_comment(line: str) -> str:
  """The `# ...` comment ending a one-line statement ('' when none or not tokenizable)."""
  try:
    for token in tokenize.generate_tokens(io.StringIO(line).readline):
      if token.type == tokenize.COMMENT:
        return token.string.lstrip("#").strip()
  except (tokenize.TokenError, SyntaxError):
    pass
  return ""


def display_name(path: str) -> str:
  """A gin file as users name it: relative to the shipped configs/ when inside it."""
  config_dir = str(gin_utils.default_config_dir())
  absolute = os.path.abspath(path)
  if absolute.startswith(config_dir + os.sep):
    return os.path.relpath(absolute, config_dir)
  return path


# Macros the commands read themselves (the command-line file route: a task from TRAIN_FILE /
# VALIDATION_FILE / TEST_FILE with the model's tokenizer; see `cli._register_file_route`).
FILE_MACROS = ("TRAIN_FILE", "VALIDATION_FILE", "TEST_FILE")
# Macros that, on the command line, override a model config read from a checkpoint (no model
# gin file reads them then; `api.CHECKPOINT_CONFIG_OVERRIDES` maps them to config fields).
CHECKPOINT_CONFIG_MACROS = ("ACTIVATION_DTYPE", "DROPOUT_RATE", "REMAT_POLICY")
COMMAND_MACROS = FILE_MACROS + ("INPUT_TEMPLATE", "TARGET_COLUMN", "TARGET_TEMPLATE",
                                "FILE_FORMAT", "CLASS_LABELS") + CHECKPOINT_CONFIG_MACROS


@dataclasses.dataclass
class GinStack:
  """What a gin stack sets and reads, in parse order (later settings win, as in gin)."""

  files: list[str] = dataclasses.field(default_factory=list)          # display names.
  settings: list[MacroSetting] = dataclasses.field(default_factory=list)
  bindings: list[Binding] = dataclasses.field(default_factory=list)
  uses: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # macro -> sources.

  def _add(self, statement: Any, source: str) -> None:
    if isinstance(statement, config_parser.BindingStatement):
      scope, selector, arg, value, location = statement
      if not arg:
        name = f"{scope}/{selector}" if scope else selector
        comment = _trailing_comment(location.line_content or "")
        self.settings.append(MacroSetting(name, value, source, comment))
      else:
        self.bindings.append(Binding(scope, selector, arg, value, source))
      for used in _macros_in(value):
        self.uses.setdefault(used, []).append(source)

  def final_settings(self) -> dict[str, MacroSetting]:
    """The setting that wins for each macro (the last one)."""
    final: dict[str, MacroSetting] = {}
    for setting in self.settings:
      final[setting.name] = setting
    return final

  def missing_macros(self) -> list[str]:
    """Macros read (`%NAME`) but set nowhere, in the order they are first read.

    MIXTURE_OR_TASK_NAME counts as set when the command-line file route gives files (the
    commands then name the task "file_task"), PROMPT_FILE when PROMPT_FILES names an ensemble.
    """
    defined = {s.name for s in self.settings}
    if defined & set(FILE_MACROS):
      defined.add("MIXTURE_OR_TASK_NAME")
    ensemble = self.final_settings().get("PROMPT_FILES")
    if ensemble is not None and ensemble.value is not None:
      defined.add("PROMPT_FILE")  # An ensemble's commands default PROMPT_FILE to None.
    return [name for name in self.uses if name not in defined]

  def unused_command_line_macros(self) -> list[MacroSetting]:
    """Macros set on the command line that no file or binding reads (the file route's macros,
    read by the commands themselves, excepted)."""
    return [s for s in self.settings if s.from_command_line and s.name not in self.uses and
            s.name not in COMMAND_MACROS]

  def close_names(self, name: str) -> list[str]:
    """Macros of this stack spelt like `name` (best first)."""
    known = sorted(set(self.uses) | {s.name for s in self.settings if not s.from_command_line})
    return difflib.get_close_matches(name, known, n=3, cutoff=0.6)

  def check(self, *, allow_unused: bool = False) -> None:
    """Raises GinConfigError for a T5X configurable, a macro read but never set, or (unless
    `allow_unused`) a command-line macro that nothing reads."""
    for binding in self.bindings:
      if t5x_bindings.is_t5x(binding.selector, binding.arg):
        raise gin_utils.GinConfigError(
            f"{binding.source} binds T5X's {binding.selector}.{binding.arg}, which this library "
            f"does not have: {t5x_bindings.equivalent(binding.selector, binding.arg)}.")
    missing = self.missing_macros()
    if missing:
      name = missing[0]
      raise gin_utils.GinConfigError(
          f"gin macro {name} is used but never set (read at {self.uses[name][0]}): add a gin "
          f"file that sets it or pass --gin.{name}=VALUE.")
    unused = [] if allow_unused else self.unused_command_line_macros()
    if unused:
      setting = unused[0]
      close = self.close_names(setting.name)
      hint = (f"did you mean {close[0]}? (--gin.{close[0]}=...)" if close else
              "check its spelling against `--help`")
      raise gin_utils.GinConfigError(
          f"{setting.source} sets macro {setting.name}, which no gin file of this command reads, "
          f"so it would change nothing: {hint}. Pass --allow_unused_macros to keep it anyway.")


def _parse(text: str, origin: str) -> list[Any]:
  """gin statements of `text`; a syntax error becomes GinConfigError naming `origin` and what
  is wrong (e.g. which bracket is never closed, on which line)."""
  problem = gin_utils.syntax_problem(text)
  if problem:
    raise gin_utils.GinConfigError(
        f"{origin} cannot be parsed: {problem}. Check brackets and quotes (strings are quoted "
        "inside the flag, e.g. --gin.MODEL_DIR=\"'/tmp/run'\"; dicts whole, e.g. "
        "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 512, 'targets': 8}\").")
  try:
    return list(config_parser.ConfigParser(text, _Delegate()))
  except tokenize.TokenError as error:
    problem = "a bracket or quote is not closed"
  except (SyntaxError, ValueError, IndexError) as error:
    problem = (getattr(error, "msg", None) or str(error).splitlines()[0]).rstrip(".")
    line = getattr(error, "lineno", None)
    if line and not origin.startswith("--gin"):
      origin = f"{origin} line {line}"
  raise gin_utils.GinConfigError(
      f"{origin} is not valid gin ({problem}): check brackets and quotes (strings are quoted "
      "inside the flag, e.g. --gin.MODEL_DIR=\"'/tmp/run'\").")


def binding_source(binding: str) -> str:
  """How a `NAME=VALUE` binding was most likely written on the command line."""
  name = binding.split("=", 1)[0].strip()
  return f"--gin.{name}"


def read_stack(gin_files: Sequence[str], bindings: Sequence[str] = (),
               gin_search_paths: Iterable[str] = ()) -> GinStack:
  """Reads `gin_files` (in order, includes followed) and then `bindings`; imports nothing.

  Raises:
    GinConfigError: a file that cannot be found (with the search paths) or parsed.
  """
  paths = gin_utils.search_paths(gin_search_paths)
  stack = GinStack()

  def read_file(name: str, seen: tuple[str, ...]) -> None:
    path = gin_utils.resolve_gin_file(name, paths)
    if path in seen:
      raise gin_utils.GinConfigError(f"gin file {name} includes itself ({' -> '.join(seen)}).")
    shown = display_name(path)
    stack.files.append(shown)
    with open(path, encoding="utf-8") as f:
      text = f.read()
    for statement in _parse(text, shown):
      if isinstance(statement, config_parser.IncludeStatement):
        read_file(statement.filename, seen + (path,))
        continue
      line = getattr(getattr(statement, "location", None), "line_num", None)
      stack._add(statement, f"{shown}:{line}" if line else shown)

  for name in gin_files:
    read_file(name, ())
  for binding in bindings:
    source = binding_source(binding)
    for statement in _parse(binding, f"{source}={binding.split('=', 1)[-1]}"):
      stack._add(statement, source)
  return stack


def translate_t5x_bindings(bindings: Sequence[str]) -> tuple[list[str], list[str]]:
  """(`bindings` with T5X's common bindings rewritten to ours, one note per rewrite).

  Raises:
    GinConfigError: a binding that does not parse, or a T5X binding with no equivalent here.
  """
  out, notes = [], []
  for binding in bindings:
    source = binding_source(binding)
    statements = _parse(binding, f"{source}={binding.split('=', 1)[-1]}")
    statement = statements[0] if len(statements) == 1 else None
    if not isinstance(statement, config_parser.BindingStatement) or not statement.arg_name:
      out.append(binding)
      continue
    value_text = binding.split("=", 1)[1].strip()
    ours, refusal = t5x_bindings.translate(statement.scope, statement.selector,
                                           statement.arg_name, statement.value, value_text)
    if refusal is not None:
      raise gin_utils.GinConfigError(f"{source} is a T5X setting with no equivalent here: "
                                     f"{refusal}.")
    if ours is None:
      out.append(binding)
      continue
    out.append(ours)
    notes.append(f"note: {source} is T5X's; read as --gin.{ours}")
  return out, notes
