"""The train / eval / infer commands: T5X's flags, the gin stack, one-line errors.

Flags (as `python -m t5x.train`): `--gin_file` (repeatable; models -> prompts -> decoding -> runs,
later files win), `--gin.NAME=VALUE` (a binding; e.g. `--gin.MODEL_DIR="'/tmp/run'"`),
`--gin_bindings`, `--gin_search_paths`, `--tfds_data_dir`, and for multi-host runs
`--multiprocess_gpu` / `--coordinator_address` / `--process_count` / `--process_index`
(passed to `jax.distributed.initialize`; on TPU pods `jax.distributed.initialize()` needs none).
`--compilation_cache_dir` keeps XLA's compiled programs between runs (JAX's persistent cache), so
a second run of the same command skips compiling.
This module and `gin_utils` are the only places gin is parsed.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Sequence

from absl import app, flags

# Errors a user can fix from their command line: printed as one line, no traceback.
_USER_ERROR_NAMES = (
    "GinConfigError", "CheckpointMismatchError", "TaskNotFoundError", "ModelDirError",
    "NonFiniteLossError", "TrainStepsError", "NothingToTrainError", "PromptFileError",
    "UnknownLogicalAxisError", "FileTaskError", "UsageError", "UserInputError")

FLAGS = flags.FLAGS

# Overrides the default compilation cache folder; empty disables the cache (the test suite does).
COMPILATION_CACHE_ENV = "PROMPT_TUNING_COMPILATION_CACHE_DIR"


def default_compilation_cache_dir() -> str:
  """$PROMPT_TUNING_COMPILATION_CACHE_DIR, else <user cache dir>/prompt_tuning/xla."""
  if COMPILATION_CACHE_ENV in os.environ:
    return os.environ[COMPILATION_CACHE_ENV]
  cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache_home, "prompt_tuning", "xla")


def define_flags() -> None:
  """Registers the commands' flags (once per process)."""
  if "gin_file" in FLAGS:
    return
  flags.DEFINE_multi_string("gin_file", [], "gin files, in order (later files win).")
  flags.DEFINE_multi_string("gin_bindings", [], "gin bindings NAME=VALUE (also --gin.NAME=VALUE).")
  flags.DEFINE_list("gin_search_paths", [], "extra folders to find gin files in.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (overrides seqio's default).")
  flags.DEFINE_bool("multiprocess_gpu", False, "initialize jax.distributed for multi-host GPU.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
  flags.DEFINE_integer("process_count", None, "number of processes (multi-host).")
  flags.DEFINE_integer("process_index", None, "index of this process (multi-host).")
  flags.DEFINE_string("compilation_cache_dir", default_compilation_cache_dir(),
                      "folder of JAX's persistent compilation cache (reruns skip compiling); "
                      "'' disables it. JAX_COMPILATION_CACHE_DIR, when set, wins.")


class UsageError(ValueError):
  """A command line that cannot be run as given (missing or conflicting arguments)."""


GIN_BINDINGS_FLAG = "gin_bindings"
_GIN_FLAG = re.compile(r"^--gin\.([^=]+)=(.*)$", re.DOTALL)


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """T5X's shorthand `--gin.NAME=VALUE` -> `--gin_bindings=NAME=VALUE`.

  Raises:
    UsageError: a `--gin.NAME` argument without `=VALUE`.
  """
  out = []
  for arg in argv:
    match = _GIN_FLAG.match(arg)
    if arg.startswith("--gin.") and not match:
      raise UsageError(
          f"{arg!r} has no value: write gin bindings as --gin.NAME=VALUE (e.g. "
          "--gin.TRAIN_STEPS=1000, strings quoted: --gin.MODEL_DIR=\"'/tmp/model'\").")
    out.append(f"--{GIN_BINDINGS_FLAG}={match.group(1)}={match.group(2)}" if match else arg)
  return out


def _initialize_distributed() -> None:
  """Joins this process to a multi-host run (`jax.distributed.initialize`) when the flags ask.

  Must run before JAX creates its backends. Cross-process collectives of the CPU backend use gloo
  over TCP unless `--jax_cpu_collectives_implementation` chose another (e.g. mpi); this affects
  only CPU devices (multi-process CPU runs and tests): GPU and TPU bring their own collectives.
  """
  import jax  # Local: flags are parsed before JAX starts.
  if not (FLAGS.multiprocess_gpu or FLAGS.coordinator_address):
    return
  if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.process_count,
                             process_id=FLAGS.process_index)


def enable_compilation_cache(path: str) -> None:
  """Points JAX's persistent compilation cache at `path` ('' or None: leave it off).

  Must run before the process compiles anything. A cache folder the user gave JAX directly
  (JAX_COMPILATION_CACHE_DIR / jax_compilation_cache_dir) is kept. JAX stores only programs that
  took over a second to compile (`jax_persistent_cache_min_compile_time_secs`).
  """
  import jax  # Local: flags are parsed before JAX starts.
  if not path or jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


def _is_user_error(error: BaseException) -> bool:
  return any(cls.__name__ in _USER_ERROR_NAMES for cls in type(error).__mro__)


def _configured_call(command: Callable[..., Any]) -> Any:
  """Parses the gin stack, builds the model config and calls the gin-bound `command`."""
  from prompt_tuning import api, gin_utils  # Local: keep `--help` fast.
  from prompt_tuning.models import config as model_config

  _initialize_distributed()
  enable_compilation_cache(FLAGS.compilation_cache_dir)
  if FLAGS.tfds_data_dir:
    import seqio
    seqio.set_tfds_data_dir_override(FLAGS.tfds_data_dir)
  gin_utils.parse_gin_config(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  try:  # These constructors only check values: what they reject is a configuration error.
    config = gin_utils.call_configured(model_config.T5Config)
    prompt_config = api._prompt_config_from_gin()
  except (ValueError, TypeError) as error:
    if _is_user_error(error):
      raise
    from prompt_tuning import errors  # Local: keep `--help` fast.
    raise errors.ConfigValueError(
        f"invalid model configuration: {str(error).strip().splitlines()[0]}") from error
  kwargs: dict[str, Any] = dict(model_config=config, prompt_config=prompt_config)
  if "config_text" in getattr(command, "__code__").co_varnames:
    kwargs["config_text"] = gin_utils.config_str()
  return gin_utils.call_configured(command, **kwargs)


def execute(command_fn: Callable[[], Callable[..., Any]], argv: Sequence[str]) -> Any:
  """Parses `argv` (program name first) and runs the command in this process; returns its result.

  Errors propagate (see `run` for the one-line CLI behaviour); used by tests and notebooks.
  """
  define_flags()
  FLAGS.unparse_flags()
  FLAGS(rewrite_gin_args(argv))
  return _configured_call(command_fn())


def user_error_message(error: BaseException) -> str | None:
  """The one-line message of an error the user can fix, or None for a bug (keep the traceback)."""
  if _is_user_error(error) or isinstance(error, FileNotFoundError):
    # gin appends "In call to configurable ..." lines; the first line is the message.
    return f"error: {str(error).strip().splitlines()[0]}"
  from prompt_tuning import errors  # Local: keep `--help` fast.
  if errors.os_errno(error) in errors.ENVIRONMENT_ERRNOS:
    fix = ("free space on that disk (or use another folder)" if errors.is_disk_full(error)
           else "fix its permissions (or use another folder)")
    return f"error: {errors.storage_problem(error)}: {fix}, then run the command again."
  return None


def run(command_fn: Callable[[], Callable[..., Any]], argv: Sequence[str] | None = None) -> None:
  """Runs a command (a function returning the gin-bound callable) with absl flag parsing."""
  define_flags()
  try:
    argv = rewrite_gin_args(sys.argv if argv is None else argv)
  except UsageError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  quiet = not any(a.startswith(("--verbosity", "-v=", "--alsologtostderr")) for a in argv)

  def main(unused_argv: Sequence[str]) -> None:
    if quiet:  # Library INFO logs (orbax, seqio) drown the progress lines.
      from absl import logging
      logging.set_verbosity(logging.WARNING)
    try:
      _configured_call(command_fn())
    except Exception as error:  # pylint: disable=broad-except
      message = user_error_message(error)
      if message is None:
        raise
      print(message, file=sys.stderr, flush=True)
      sys.exit(1)

  app.run(main, argv=argv)
