"""The commands' first minutes: --help, --dry_run, misspelt macros, T5X bindings, optimizer macros.

Everything here reads gin files as text (`gin_stack`) or runs the pre-flight checks, so it is
fast; the subprocess tests check that help and config errors come before TensorFlow is imported.
"""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import cli, gin_stack, gin_utils
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import optim

TINY_STACK = ["test/t5_1_1_tiny_prompt.gin", "runs/prompt_finetune.gin"]
REQUIRED = {"MODEL_DIR": "'/tmp/unused_model_dir'", "MIXTURE_OR_TASK_NAME": "'some_task'",
            "TASK_FEATURE_LENGTHS": "{'inputs': 16, 'targets': 4}", "TRAIN_STEPS": "12",
            "INITIAL_CHECKPOINT_PATH": "None"}


def _bindings(**extra: str) -> list[str]:
  return [f"{k}={v}" for k, v in {**REQUIRED, **extra}.items()]


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  """Runs `python -m module args` and reports whether TensorFlow / JAX were imported."""
  code = ("import runpy, sys\n"
          f"sys.argv = [{module!r}] + {list(args)!r}\n"
          "try:\n"
          f"  runpy.run_module({module!r}, run_name='__main__')\n"
          "except SystemExit as exit_:\n"
          "  print('imported tensorflow:', 'tensorflow' in sys.modules,\n"
          "        'jax:', 'jax' in sys.modules)\n"
          "  raise\n")
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_help_exits_0_and_lists_required_and_optional_macros_without_heavy_imports():
  result = _run_module("prompt_tuning.train", "--help")
  assert result.returncode == 0, result.stderr
  out = result.stdout
  required = out.split("Required macros")[1].split("Optional macros")[0]
  for name in ("MODEL_DIR", "TRAIN_STEPS", "INITIAL_CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME",
               "TASK_FEATURE_LENGTHS"):
    assert name in required
  assert "BATCH_SIZE = 32" in out and "LEARNING_RATE = 0.3" in out  # read from the gin file.
  assert "runs/prompt_finetune.gin" in out and "prompts/from_class_labels.gin" in out
  assert "--gin_file" in out and "--dry_run" in out and "README.md" in out
  assert "imported tensorflow: False jax: False" in out


def test_eval_help_describes_its_own_run_file():
  stack = gin_stack.read_stack(["runs/prompt_eval.gin"])
  assert set(stack.missing_macros()) == {"MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS",
                                          "EVAL_OUTPUT_DIR", "INITIAL_CHECKPOINT_PATH",
                                          "PROMPT_FILE"}


def test_help_with_gin_files_lists_what_is_still_missing(capsys):
  cli.define_flags()
  cli.print_help("train", ["train", *(f"--gin_file={f}" for f in TINY_STACK),
                           "--gin_bindings=MODEL_DIR='/tmp/x'", "--help"])
  out = capsys.readouterr().out
  required = out.split("Required macros")[1].split("Optional macros")[0]
  assert "TRAIN_STEPS" in required and "MODEL_DIR" not in required
  assert "EMBED_DIM = 4" in out  # The model file's settings are listed with their file.


def test_misspelt_macro_fails_before_tensorflow_loads_and_names_the_close_name():
  result = _run_module("prompt_tuning.train", *(f"--gin_file={f}" for f in TINY_STACK),
                       *(f"--gin.{b}" for b in _bindings()), "--gin.LEARNNG_RATE=0.1")
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in result.stderr
  assert "LEARNNG_RATE" in errors[0] and "did you mean LEARNING_RATE" in errors[0]
  assert "imported tensorflow: False" in result.stdout


@pytest.mark.parametrize("typo, close", [("LERNING_RATE", "LEARNING_RATE"),
                                         ("BACH_SIZE", "BATCH_SIZE"),
                                         ("EVAL_PERIODS", "EVAL_PERIOD")])
def test_unused_command_line_macro_is_an_error_naming_the_close_name(typo, close):
  stack = gin_stack.read_stack(TINY_STACK, _bindings(**{typo: "1"}))
  with pytest.raises(gin_utils.GinConfigError, match=f"--gin.{typo} .*did you mean {close}\\?"):
    stack.check()
  stack.check(allow_unused=True)  # An intentional extra is kept with --allow_unused_macros.


def test_macros_read_only_by_another_binding_count_as_used():
  stack = gin_stack.read_stack(TINY_STACK, _bindings(MY_RATE="0.1", LEARNING_RATE="%MY_RATE"))
  stack.check()


def test_binding_that_does_not_parse_names_the_flag():
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"--gin.TASK_FEATURE_LENGTHS=\{'inputs': 16 cannot be parsed: "
                           r"a '\{' is never closed"):
    gin_stack.read_stack(TINY_STACK, _bindings(TASK_FEATURE_LENGTHS="{'inputs': 16"))


def test_every_shipped_model_passes_the_preflight_with_each_run_file():
  config_dir = gin_utils.default_config_dir()
  models = sorted(str(p.relative_to(config_dir)) for folder in ("models", "test")
                  for p in (config_dir / folder).glob("*_prompt.gin"))
  assert len(models) >= 10
  for run_gin, extra in [("runs/prompt_finetune.gin", {}),
                         ("runs/prompt_eval.gin", {"EVAL_OUTPUT_DIR": "'/tmp/e'",
                                                   "PROMPT_FILE": "None"}),
                         ("runs/prompt_infer.gin", {"INFER_OUTPUT_DIR": "'/tmp/i'",
                                                    "PROMPT_FILE": "None"})]:
    bindings = {k: v for k, v in REQUIRED.items()
                if run_gin.endswith("finetune.gin") or k not in ("MODEL_DIR", "TRAIN_STEPS")}
    for model in models:
      sized = [model] if "EMBED_DIM" in gin_stack.read_stack([model]).final_settings() else [
          model, "models/sizes/tiny.gin"]  # Size-less recipes, e.g. models/t5_1_1_prompt.gin.
      files = sized + ["prompts/from_class_labels.gin", run_gin]
      gin_stack.read_stack(files, [f"{k}={v}" for k, v in {**bindings, **extra,
                                                           "CLASS_LABELS": "['a']"}.items()]
                           ).check()


def test_t5x_bindings_on_the_command_line_are_read_as_ours():
  bindings, notes = gin_stack.translate_t5x_bindings([
      "utils.SaveCheckpointConfig.keep=20", "utils.SaveCheckpointConfig.period=500",
      "prompt_init/linen.initializers.uniform.scale=0.7",
      "prompt_init/prompts.from_samples_of_embeddings.population_size=300",
      "train_script.train.eval_period=250", "partitioning.PjitPartitioner.num_partitions=2",
      "adafactor.Adafactor.decay_rate=0.9", "utils.create_learning_rate_scheduler.factors="
      "'constant * rsqrt_decay'", "MODEL_DIR='/tmp/x'"])
  assert bindings == ["KEEP_CHECKPOINTS=20", "SAVING_PERIOD=500", "prompts.uniform.scale=0.7",
                      "SAMPLED_VOCAB_SIZE=300", "EVAL_PERIOD=250", "NUM_PARTITIONS=2",
                      "optim.adafactor.decay_rate=0.9", "LR_SCHEDULE='rsqrt'",
                      "MODEL_DIR='/tmp/x'"]
  assert len(notes) == 8 and "KEEP_CHECKPOINTS=20" in notes[0]


def test_t5x_bindings_without_equivalent_or_in_a_gin_file_name_ours(tmp_path):
  with pytest.raises(gin_utils.GinConfigError, match="train.eval_steps.*EVAL_EXAMPLES"):
    gin_stack.translate_t5x_bindings(["train.eval_steps=20"])
  wild = tmp_path / "t5x_style.gin"
  wild.write_text("include 'runs/prompt_finetune.gin'\nutils.SaveCheckpointConfig.period = 100\n")
  stack = gin_stack.read_stack(["test/t5_1_1_tiny_prompt.gin", str(wild)], _bindings())
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"t5x_style.gin:2 binds T5X's utils.SaveCheckpointConfig.period.*"
                           "SAVING_PERIOD"):
    stack.check()


def test_dry_run_prints_the_final_configuration_and_does_nothing(tmp_path, capsys):
  model_dir = tmp_path / "never_created"
  argv = (["train"] + [f"--gin_file={f}" for f in TINY_STACK]
          + [f"--gin.{b}" for b in _bindings(MODEL_DIR=f"'{model_dir}'")]
          + ["--gin.utils.SaveCheckpointConfig.keep=3", "--gin.OPTIMIZER=@optim.adamw",
             "--dry_run"])
  try:
    assert cli.execute(train_main._command, argv) is None
  finally:
    cli.FLAGS.dry_run = False
  out = capsys.readouterr().out
  assert "KEEP_CHECKPOINTS = 3" in out and "--gin.KEEP_CHECKPOINTS" in out
  assert "BATCH_SIZE = 32" in out and "runs/prompt_finetune.gin:" in out
  assert "OPTIMIZER = @optim.adamw" in out and "Model: ModelConfig(" in out
  assert not model_dir.exists()


def test_learning_rate_schedules():
  assert optim.make_schedule("constant", 0.3) == 0.3
  linear = optim.make_schedule("linear", 0.3, start_step=100, total_steps=110)
  assert [round(float(linear(jnp.asarray(s))), 6) for s in (100, 105, 110)] == [0.3, 0.15, 0.0]
  cosine = optim.make_schedule("cosine", 1.0, start_step=0, total_steps=10)
  assert float(cosine(jnp.asarray(5))) == pytest.approx(0.5)
  warm = optim.make_schedule("constant", 1.0, warmup_steps=4, start_step=10)
  assert [float(warm(jnp.asarray(s))) for s in (10, 11, 13, 20)] == [0.25, 0.5, 1.0, 1.0]
  rsqrt = optim.make_schedule("rsqrt", 2.0, warmup_steps=100)  # T5X's constant * rsqrt_decay.
  assert float(rsqrt(jnp.asarray(400))) == pytest.approx(2.0 / np.sqrt(400))
  assert float(rsqrt(jnp.asarray(10))) == pytest.approx(2.0 / np.sqrt(100))
  with pytest.raises(optim.ScheduleError, match="'cosine', 'rsqrt'"):
    optim.make_schedule("exponential", 0.3)


def test_checkpoint_config_overrides_pass_the_typo_guard_without_a_model_file():
  # No models/*.gin: the sizes come from the checkpoint and these bindings override its config.
  stack = gin_stack.read_stack(["architectures/prompt_tuning.gin", "runs/prompt_finetune.gin"],
                               _bindings(DROPOUT_RATE="0.2", ACTIVATION_DTYPE="'bfloat16'",
                                         REMAT_POLICY="'full'"))
  stack.check()
