"""The train / eval / infer commands: T5X's flags, the gin stack, one-line errors.

Flags (as `python -m t5x.train`): `--gin_file` (repeatable; models -> prompts -> decoding -> runs,
later files win), `--gin.NAME=VALUE` (a binding; e.g. `--gin.MODEL_DIR="'/tmp/run'"`),
`--gin_bindings`, `--gin_search_paths`, `--tfds_data_dir`, and for multi-host runs
`--multiprocess_gpu` / `--coordinator_address` / `--process_count` / `--process_index`
(passed to `jax.distributed.initialize`; on TPU pods `jax.distributed.initialize()` needs none).
`--compilation_cache_dir` keeps XLA's compiled programs between runs (JAX's persistent cache), so
a second run of the same command skips compiling.
`--help` lists the flags, the gin stack order and the command's required and optional macros
(read from its gin files); `--dry_run` prints the final configuration and stops. Before anything
heavy is imported, the gin stack is read as text (`gin_stack`): a macro read but never set, a
command-line macro no gin file reads (a typo; `--allow_unused_macros` keeps it), a syntax error
and T5X-only bindings fail in well under a second; T5X's common bindings (e.g.
`--gin.utils.SaveCheckpointConfig.keep=20`) are read as ours (`t5x_bindings`).
This module and `gin_utils` are the only places gin is parsed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

from absl import app, flags

# Errors a user can fix from their command line: printed as one line, no traceback.
_USER_ERROR_NAMES = (
    "GinConfigError", "CheckpointMismatchError", "TaskNotFoundError", "ModelDirError",
    "NonFiniteLossError", "TrainStepsError", "NothingToTrainError", "PromptFileError",
    "UnknownLogicalAxisError", "FileTaskError", "UsageError", "PromptInitError",
    "BestMetricError", "ScheduleError", "ModelConfigError", "UserInputError", "TemplateError")

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
  flags.DEFINE_bool("dry_run", False, "print the final configuration (gin files, every macro's "
                    "value and where it was set, the model) and stop before reading any "
                    "checkpoint or data.")
  flags.DEFINE_bool("allow_unused_macros", False, "accept --gin.NAME=VALUE macros that no gin "
                    "file of the command reads (by default an error: usually a misspelt name).")


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


@dataclasses.dataclass(frozen=True)
class CommandLine:
  """The gin part of a command line as it will be used (T5X bindings already rewritten)."""

  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  gin_search_paths: tuple[str, ...]
  tfds_data_dir: Optional[str] = None


def _preflight() -> tuple[CommandLine, Any]:
  """Reads the gin stack as text and checks its macros; nothing heavy is imported yet.

  Returns the command line to use and the `gin_stack.GinStack`.
  """
  from prompt_tuning import gin_stack  # Local: gin only, no JAX / TensorFlow.
  bindings, notes = gin_stack.translate_t5x_bindings(FLAGS.gin_bindings)
  for note in notes:
    print(note, file=sys.stderr, flush=True)
  stack = gin_stack.read_stack(FLAGS.gin_file, bindings, FLAGS.gin_search_paths)
  stack.check(allow_unused=FLAGS.allow_unused_macros)
  return CommandLine(tuple(FLAGS.gin_file), tuple(bindings), tuple(FLAGS.gin_search_paths),
                     FLAGS.tfds_data_dir), stack


def _configured_call(command_fn: Callable[[], Callable[..., Any]]) -> Any:
  """Checks and parses the gin stack, builds the model config and calls the gin-bound command
  that `command_fn()` returns (imported only after the checks)."""
  command_line, stack = _preflight()
  from prompt_tuning import log_noise  # Local: keep `--help` and the checks above fast.
  if _quiet:
    log_noise.import_tensorflow_quietly()
    log_noise.drop_seqio_noise()
  from prompt_tuning import api, gin_utils
  from prompt_tuning.models import config as model_config

  _initialize_distributed()
  enable_compilation_cache(FLAGS.compilation_cache_dir)
  if FLAGS.tfds_data_dir:
    import seqio
    seqio.set_tfds_data_dir_override(FLAGS.tfds_data_dir)
  gin_utils.parse_gin_config(command_line.gin_files, command_line.bindings,
                             command_line.gin_search_paths, before_finalize=_bind_command_defaults)
  try:  # These constructors only check values: what they reject is a configuration error.
    if gin_utils.binds_model_config():
      config = gin_utils.call_configured(model_config.ModelConfig)
    else:  # No models/*.gin: the architecture and sizes come from the checkpoint (HF, GGUF).
      checkpoint = (gin_utils.macro_value("INITIAL_CHECKPOINT_PATH") or
                    gin_utils.macro_value("CHECKPOINT_PATH"))
      config = api.checkpoint_model_config(checkpoint, command_line.bindings)
    prompt_config = api._prompt_config_from_gin()
  except (ValueError, TypeError) as error:
    if _is_user_error(error):
      raise
    from prompt_tuning import errors  # Local: keep `--help` fast.
    raise errors.ConfigValueError(
        f"invalid model configuration: {str(error).strip().splitlines()[0]}") from error
  if FLAGS.dry_run:
    from prompt_tuning import cli_help
    print(cli_help.dry_run_text(stack, config, prompt_config, gin_utils.config_str()), flush=True)
    return None
  command = command_fn()
  _register_file_route(config, getattr(command, "__name__", ""))
  kwargs: dict[str, Any] = dict(model_config=config, prompt_config=prompt_config)
  arguments = getattr(command, "__code__").co_varnames
  if "config_text" in arguments:
    kwargs["config_text"] = gin_utils.config_str()
  if "command_line" in arguments:
    kwargs["command_line"] = command_line
  return gin_utils.call_configured(command, **kwargs)


# Macros of the command-line file route -> `file_tasks.FileRoute` fields (the commands read
# them, not a gin configurable; `gin_stack` knows them).
FILE_ROUTE_MACROS = {"TRAIN_FILE": "train_file", "VALIDATION_FILE": "validation_file",
                     "TEST_FILE": "test_file", "INPUT_TEMPLATE": "input_template",
                     "TARGET_COLUMN": "target_column", "CLASS_LABELS": "label_names",
                     "TARGET_TEMPLATE": "target_template", "FILE_FORMAT": "file_format"}
FILE_MACROS = ("TRAIN_FILE", "VALIDATION_FILE", "TEST_FILE")
# Where each command's dataset takes its task from (rank classification for evaluation).
_EVAL_DATASETS = {"train": "train_eval/data.DatasetConfig.mixture_or_task_name",
                  "evaluate": "data.DatasetConfig.mixture_or_task_name"}


FILE_TASK_NAME = "file_task"


def _bind_command_defaults() -> None:
  """Defaults that depend on other macros: with TRAIN_FILE / VALIDATION_FILE / TEST_FILE,
  MIXTURE_OR_TASK_NAME defaults to "file_task" (the name the route registers); with
  PROMPT_FILES (an ensemble), PROMPT_FILE to None; with an INPUT_TEMPLATE holding [P:n] slots,
  PROMPT_TEMPLATE to it."""
  from prompt_tuning import gin_utils
  if any(gin_utils.macro_value(m) for m in FILE_MACROS):
    gin_utils.bind_default("MIXTURE_OR_TASK_NAME", FILE_TASK_NAME)
  if gin_utils.macro_value("PROMPT_FILES") is not None:
    gin_utils.bind_default("PROMPT_FILE", None)
  input_template = gin_utils.macro_value("INPUT_TEMPLATE")
  if isinstance(input_template, str) and "[P:" in input_template:
    gin_utils.bind_default("PROMPT_TEMPLATE", input_template)  # The model follows the data.


def _register_file_route(config: Any, command_name: str) -> None:
  """Registers the task TRAIN_FILE / VALIDATION_FILE / TEST_FILE describe, when given.

  Its vocabulary is the model's (the checkpoint's tokenizer); MIXTURE_OR_TASK_NAME, when unset,
  becomes "file_task"; with CLASS_LABELS, evaluation scores the labels (rank classification).
  """
  from prompt_tuning import gin_utils
  values = {field: gin_utils.macro_value(macro) for macro, field in FILE_ROUTE_MACROS.items()}
  values = {field: value for field, value in values.items() if value is not None}
  if not any(values.get(f) for f in ("train_file", "validation_file", "test_file")):
    return
  from prompt_tuning.data import file_tasks, model_vocab  # Local: pulls in TensorFlow.
  if "label_names" in values:
    values["label_names"] = tuple(values["label_names"])
  prompt_template = gin_utils.macro_value("PROMPT_TEMPLATE")
  if prompt_template and "input_template" not in values:
    values["input_template"] = prompt_template  # The inputs follow the model's template.
  _check_templates(values.get("input_template"), prompt_template)
  route = file_tasks.FileRoute(**values)
  checkpoint = (gin_utils.macro_value("INITIAL_CHECKPOINT_PATH") or
                gin_utils.macro_value("CHECKPOINT_PATH"))
  vocabulary = model_vocab.vocabulary_for(checkpoint, config)
  name = gin_utils.macro_value("MIXTURE_OR_TASK_NAME") or FILE_TASK_NAME
  llm = config.architecture == "decoder_only" and not config.zero_is_padding
  _, rank_task = file_tasks.register_route(name, route, vocabulary, add_inputs_eos=not llm)
  gin_utils.bind("%MIXTURE_OR_TASK_NAME", name)
  if rank_task and command_name in _EVAL_DATASETS:
    gin_utils.bind(_EVAL_DATASETS[command_name], rank_task)


def _check_templates(input_template: Any, prompt_template: Any) -> None:
  """INPUT_TEMPLATE and PROMPT_TEMPLATE must have the same [P:n] slots when both have slots."""
  from prompt_tuning import templates
  if not (templates.has_slots(input_template) and prompt_template):
    return
  data_slots = templates.parse_template(input_template).slot_lengths
  model_slots = templates.parse_template(prompt_template).slot_lengths
  if data_slots != model_slots:
    raise UsageError(f"INPUT_TEMPLATE {input_template!r} has prompt slots {list(data_slots)} but "
                     f"PROMPT_TEMPLATE {prompt_template!r} has {list(model_slots)}: give the "
                     "same [P:n] slots (or set only INPUT_TEMPLATE; the model follows it).")


def execute(command_fn: Callable[[], Callable[..., Any]], argv: Sequence[str]) -> Any:
  """Parses `argv` (program name first) and runs the command in this process; returns its result.

  Errors propagate (see `run` for the one-line CLI behaviour); used by tests and notebooks.
  """
  define_flags()
  FLAGS.unparse_flags()
  FLAGS(rewrite_gin_args(argv))
  return _configured_call(command_fn)


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


# Whether to drop the log lines `log_noise` lists (off with --verbosity / --alsologtostderr).
_quiet = True
_HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


def print_help(name: str, argv: Sequence[str]) -> None:
  """Prints the command's help page; `--gin_file`s in `argv` select the stack it describes."""
  from prompt_tuning import cli_help, gin_stack  # Local: gin only.
  command = cli_help.COMMANDS[name]
  FLAGS.unparse_flags()  # Values of an earlier command in this process must not leak in.
  try:
    FLAGS([a for a in argv if a not in _HELP_ARGS])
  except flags.Error:
    FLAGS.unparse_flags()
  user_files = list(FLAGS.gin_file) if FLAGS.is_parsed() else []
  bindings = list(FLAGS.gin_bindings) if FLAGS.is_parsed() else []
  paths = list(FLAGS.gin_search_paths) if FLAGS.is_parsed() else []
  stack = gin_stack.read_stack(user_files or [command.run_gin], bindings if user_files else (),
                               paths)
  flag_lines = []
  for flag_name in ("gin_file", "gin_bindings", "gin_search_paths", "tfds_data_dir", "dry_run",
                    "allow_unused_macros", "compilation_cache_dir", "multiprocess_gpu",
                    "coordinator_address", "process_count", "process_index"):
    flag = FLAGS[flag_name]
    default = "" if flag.default in (None, [], "", False) else f" (default: {flag.default_as_str})"
    flag_lines.append(f"  --{flag_name}: {flag.help.split(';')[0]}{default}")
  flag_lines.append("  --verbosity=0 / --alsologtostderr: show every library log line.")
  print(cli_help.help_text(command, stack, flag_lines, user_files))


def run(command_fn: Callable[[], Callable[..., Any]], argv: Sequence[str] | None = None,
        *, name: str = "train") -> None:
  """Runs a command (a function returning the gin-bound callable) with absl flag parsing.

  `name` ('train', 'eval' or 'infer') selects the help page.
  """
  global _quiet
  define_flags()
  try:
    argv = rewrite_gin_args(sys.argv if argv is None else argv)
  except UsageError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  if any(arg in _HELP_ARGS for arg in argv[1:]):
    _one_line_errors(print_help, name, argv)
    sys.exit(0)
  _quiet = not any(a.startswith(("--verbosity", "-v=", "--alsologtostderr")) for a in argv)

  def main(unused_argv: Sequence[str]) -> None:
    if _quiet:  # Library INFO logs (orbax, seqio) drown the progress lines.
      from absl import logging
      logging.set_verbosity(logging.WARNING)
    _one_line_errors(_configured_call, command_fn)

  app.run(main, argv=argv)


def _one_line_errors(fn: Callable[..., Any], *args: Any) -> Any:
  """Calls `fn`; an error the user can fix exits 1 with its one `error:` line (no traceback)."""
  try:
    return fn(*args)
  except Exception as error:  # pylint: disable=broad-except
    message = user_error_message(error)
    if message is None:
      raise
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)
