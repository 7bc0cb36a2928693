"""The one place gin is parsed: gin file search paths, T5X-style file/binding parsing, errors.

Library modules never import gin; gin files bind them by dynamic registration
(`from __gin__ import dynamic_registration`). The CLI commands and `load_model` call
`parse_gin_config`, then `configured(fn)()` to build objects with the bound values.
"""

from __future__ import annotations

import contextlib
import importlib.util  # noqa: F401  (gin's dynamic registration needs importlib.util loaded)
import logging
import os
import pathlib
import re
import tokenize
from typing import Any, Callable, Iterable, Optional, Sequence

import gin
from gin import config_parser

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


class GinConfigError(ValueError):
  """A gin file or binding that cannot be used, with the fix in the message."""


def default_config_dir() -> pathlib.Path:
  """The shipped `configs/` folder: inside the package when installed, else the checkout's."""
  installed = _PACKAGE_DIR / "configs"
  if (installed / "architectures").is_dir():
    return installed
  return _PACKAGE_DIR.parent / "configs"


def search_paths(extra: Iterable[str] = ()) -> list[str]:
  """Gin search paths in lookup order: user paths (--gin_search_paths), cwd, shipped configs."""
  paths: list[str] = []
  for entry in extra:
    paths.extend(p for p in str(entry).split(",") if p)
  paths.extend([os.getcwd(), str(default_config_dir())])
  return list(dict.fromkeys(paths))


def resolve_gin_file(name: str, paths: Sequence[str]) -> str:
  """Absolute path of gin file `name` (as given, or relative to a search path)."""
  candidates = [name] if os.path.isabs(name) else [name] + [os.path.join(p, name) for p in paths]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise GinConfigError(
      f"gin file {name!r} not found. Searched: {', '.join(paths)}. Pass a path that exists or "
      "add its folder with --gin_search_paths.")


_MISSING_MACRO = re.compile(r"No bindings specified for '([^'/]+)/gin\.macro'")
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching '([^']+)'")


def _explain(error: Exception) -> GinConfigError:
  message = str(error)
  missing = _MISSING_MACRO.search(message)
  if missing:
    return GinConfigError(
        f"gin macro {missing.group(1)} is used but never set: add a gin file that sets it or "
        f"pass --gin.{missing.group(1)}=VALUE.")
  unknown = _UNKNOWN_CONFIGURABLE.search(message)
  if unknown:
    return GinConfigError(
        f"gin binding refers to unknown configurable {unknown.group(1)!r}: check its spelling "
        "and that the gin file imports its module.")
  return GinConfigError(f"invalid gin configuration: {message.splitlines()[0]}")


class _SyntaxOnly(config_parser.ParserDelegate):
  """Parses references and macros to placeholders: checks syntax without touching gin's state."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return None

  def macro(self, macro_name):
    return None


_OPENERS = {"(": ")", "[": "]", "{": "}"}


def _unclosed(text: str) -> Optional[str]:
  """The first bracket or quote of `text` left open, if any (a quick scan, strings skipped)."""
  stack: list[str] = []
  quote = None
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in _OPENERS:
      stack.append(char)
    elif char in _OPENERS.values() and stack and _OPENERS[stack[-1]] == char:
      stack.pop()
  return quote or (stack[0] if stack else None)


def _syntax_problem(text: str) -> Optional[str]:
  """What is wrong with the gin syntax of `text` (a binding or a file's contents), or None."""
  try:
    for _ in config_parser.ConfigParser(text, _SyntaxOnly()):
      pass
  except tokenize.TokenError:
    opener = _unclosed(text)
    return (f"a {opener!r} is never closed" if opener else "it ends in the middle of a value")
  except SyntaxError as error:
    line = f" (line {error.lineno})" if error.lineno and "\n" in text.strip() else ""
    problem = str(error.msg).rstrip(".")
    opener = _unclosed(text)
    if opener:
      problem += f"; a {opener!r} is never closed"
    return problem + line
  except (ValueError, TypeError) as error:  # Literals Python cannot evaluate, e.g. `foo bar`.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    token = [line for line in lines if line.startswith("Failed to parse token")]
    return (f"{token[0].rstrip('.')} (a string needs quotes)" if token else
            (lines[0] if lines else type(error).__name__).rstrip("."))
  return None


def check_syntax(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Raises GinConfigError naming the first binding or gin file that gin cannot parse.

  Only syntax is checked (values are not evaluated, names not looked up), so the message can
  name the binding or file and line instead of gin's position in its joined input.
  """
  for binding in bindings:
    problem = _syntax_problem(binding)
    if problem:
      name = binding.split("=", 1)[0].strip()
      raise GinConfigError(
          f"gin binding {binding.strip()!r} cannot be parsed: {problem}. Write it as "
          f"{name}=VALUE (--gin.{name}=VALUE on the command line) with a Python literal VALUE "
          "(strings quoted, e.g. "
          "--gin.MODEL_DIR=\"'/tmp/model'\"; dicts whole, e.g. "
          "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 512, 'targets': 8}\").")
  for path in gin_files:
    try:
      with open(path, encoding="utf-8") as f:
        text = f.read()
    except (OSError, UnicodeDecodeError) as error:
      raise GinConfigError(f"gin file {path} cannot be read ({error}): pass a readable "
                           "UTF-8 gin file.") from error
    problem = _syntax_problem(text)
    if problem:
      raise GinConfigError(f"gin file {path} cannot be parsed: {problem}. Fix the file.")


class _DropSearchMisses(logging.Filter):
  """Hides gin's 'Path not found' log lines: missing files are reported by our own error."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith("Path not found")


@contextlib.contextmanager
def _quiet_search_misses():
  handler_filter = _DropSearchMisses()
  root = logging.getLogger()
  root.addFilter(handler_filter)
  try:
    yield
  finally:
    root.removeFilter(handler_filter)


def parse_gin_config(gin_files: Sequence[str],
                     bindings: Sequence[str] = (),
                     gin_search_paths: Iterable[str] = (),
                     before_finalize: Callable[[], None] | None = None) -> list[str]:
  """Clears gin, then parses files (later wins) and `NAME=VALUE` bindings; returns file paths.

  `before_finalize` may bind derived defaults (`bind`) once everything is parsed, before gin
  checks that every macro used is set.
  """
  gin.clear_config(clear_constants=True)
  paths = search_paths(gin_search_paths)
  for path in paths:
    gin.add_config_file_search_path(path)
  resolved = [resolve_gin_file(name, paths) for name in gin_files]
  check_syntax(resolved, bindings)
  try:
    with _quiet_search_misses():
      gin.parse_config_files_and_bindings(resolved, list(bindings), finalize_config=False)
    if before_finalize is not None:
      before_finalize()
    gin.finalize()
  except GinConfigError:
    raise
  except (ValueError, KeyError, ImportError, SyntaxError, IOError, tokenize.TokenError) as error:
    raise _explain(error) from error
  return resolved


def configured(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` with its gin-bound arguments applied (gin must have been parsed)."""
  try:
    return gin.get_configurable(fn)
  except ValueError:
    return fn


def call_configured(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """Calls `fn` with its gin bindings; a missing macro raises GinConfigError naming it."""
  try:
    return configured(fn)(*args, **kwargs)
  except ValueError as error:
    if _MISSING_MACRO.search(str(error)):
      raise _explain(error) from error
    raise


def binds_model_config() -> bool:
  """Whether the parsed gin files bind the model config (a models/*.gin was included)."""
  from prompt_tuning.models import config as model_config  # Local: keeps gin parsing light.
  try:
    return bool(gin.get_bindings(model_config.ModelConfig))
  except ValueError:  # No gin file registered it.
    return False


_MACRO_BINDING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


def bound_macros(names: Iterable[str], bindings: Sequence[str]) -> dict[str, Any]:
  """Values of the macros among `names` that `bindings` (NAME=VALUE strings) set, as parsed."""
  wanted = set(names)
  found = {}
  for binding in bindings:
    match = _MACRO_BINDING.match(binding)
    if match and match.group(1) in wanted:
      found[match.group(1)] = gin.query_parameter(f"%{match.group(1)}")
  return found


def macro_value(name: str, default: Any = None) -> Any:
  """The value gin binds to macro `name`, or `default` when it is not bound."""
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return default


def bind(name: str, value: Any) -> None:
  """Binds a gin parameter or `%MACRO` after parsing (the entry points' own derived values)."""
  with gin.unlock_config():
    gin.bind_parameter(name, value)


def bind_default(macro: str, value: Any) -> None:
  """Sets `%macro` to `value` unless the parsed files or bindings set it."""
  if macro_value(macro) is None:
    bind(f"%{macro}", value)


def operative_config_str() -> str:
  """The gin configuration as used so far (for writing into MODEL_DIR)."""
  return gin.operative_config_str()


def config_str() -> str:
  """The whole parsed gin configuration."""
  return gin.config_str()
