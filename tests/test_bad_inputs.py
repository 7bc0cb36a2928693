"""Bad inputs give one clear `error:` line through the real commands, and leave MODEL_DIR intact.

Each case runs `python -m prompt_tuning.train` / `.eval` / `.infer`'s entry point (`cli.run`: flag
parsing, the gin stack, the one-line error printer) in this process, on the same MODEL_DIR as an
earlier good run, and checks: exit code 1, exactly one `error:` line on stderr naming the
problem (key words), no traceback anywhere on stderr (library logs included), and that the earlier
run's checkpoint and prompt files still load unchanged. A few cases run as a subprocess too.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
import seqio

from conftest import shared_fixture, write_sentiment_tsvs
from prompt_tuning import api, cli, gin_utils
from prompt_tuning import eval as eval_main
from prompt_tuning import infer as infer_main
from prompt_tuning.checkpoints import CheckpointReadError
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.scripts import diff_checkpoints
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import data

TASK = "bad_inputs_sentiment"
FROZEN_STEP = 10
GOOD_STEPS = FROZEN_STEP + 2
PROMPT_NPY = "encoder.prompt.prompt.prompt.npy"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """A registered task, a frozen tiny checkpoint and a finished 2-step run in `good/`."""
  folder = tmp_path_factory.mktemp("bad_inputs")
  train, dev = write_sentiment_tsvs(folder)
  if TASK not in seqio.TaskRegistry.names():
    file_tasks.register_file_task(TASK, train_path=train, validation_path=dev,
                                  input_template="{text}", label_names=("negative", "positive"),
                                  vocabulary=seqio.ByteVocabulary())
  orbax_format.save_params(folder / "frozen", api.load_model(["test/t5_1_1_tiny.gin"]).params,
                           FROZEN_STEP)
  cli.execute(train_main._command, _train_argv(folder, f"--gin.TRAIN_STEPS={GOOD_STEPS}"))
  return folder


def _train_argv(workspace: pathlib.Path, *extra: str) -> list[str]:
  flags = {"MODEL_DIR": f"'{workspace / 'good'}'", "MIXTURE_OR_TASK_NAME": f"'{TASK}'",
           "TASK_FEATURE_LENGTHS": "{'inputs': 24, 'targets': 10}",
           "TRAIN_STEPS": str(GOOD_STEPS + 2),
           "INITIAL_CHECKPOINT_PATH": f"'{workspace / 'frozen'}'", "BATCH_SIZE": "4",
           "EVAL_PERIOD": "None", "LOG_PERIOD": "1", "SAVING_PERIOD": "1"}
  return (["train", "--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_finetune.gin"]
          + [f"--gin.{k}={v}" for k, v in flags.items()] + list(extra))


def _infer_argv(workspace: pathlib.Path, command: str, *extra: str) -> list[str]:
  prompt = workspace / "good" / "numpy_checkpoints" / f"checkpoint_{GOOD_STEPS}" / PROMPT_NPY
  run_gin = "runs/prompt_eval.gin" if command == "eval" else "runs/prompt_infer.gin"
  out_flag = "EVAL_OUTPUT_DIR" if command == "eval" else "INFER_OUTPUT_DIR"
  return [command, "--gin_file=test/t5_1_1_tiny_prompt.gin", f"--gin_file={run_gin}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'", f"--gin.PROMPT_FILE='{prompt}'",
          f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 10}", "--gin.BATCH_SIZE=4",
          f"--gin.{out_flag}='{workspace / command}'", *extra]


def _copy_writable(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  if target.exists():
    shutil.rmtree(target)
  shutil.copytree(source, target)
  for path in [target, *target.rglob("*")]:
    path.chmod(0o755 if path.is_dir() else 0o644)
  return target


def _truncated_t5x(workspace: pathlib.Path) -> pathlib.Path:
  folder = _copy_writable(shared_fixture("t5x_tiny_checkpoint_3"), workspace / "t5x_truncated")
  contents = (folder / "checkpoint").read_bytes()
  (folder / "checkpoint").write_bytes(contents[:len(contents) // 3])
  return folder


def _corrupt_t5x_chunk(workspace: pathlib.Path) -> pathlib.Path:
  folder = _copy_writable(shared_fixture("t5x_tiny_checkpoint_3"), workspace / "t5x_bad_chunk")
  (folder / "target.encoder.layers_0.mlp.wi_0.kernel" / "0.0").write_bytes(b"not gzip data")
  return folder


def _corrupt_orbax_chunks(folder: pathlib.Path) -> pathlib.Path:
  """Overwrites every TensorStore data file of `folder`'s newest step's arrays."""
  for chunk in folder.rglob("d/*"):
    if chunk.is_file():
      chunk.write_bytes(b"garbage")
  return folder


def _resumed_run_with_corrupt_checkpoint(workspace):
  model_dir = _copy_writable(workspace / "good", workspace / "good_copy_corrupt")
  _corrupt_orbax_chunks(model_dir / f"checkpoint_{GOOD_STEPS}" / "params")
  return train_main, _train_argv(workspace, f"--gin.MODEL_DIR='{model_dir}'")


def _bad_utf8_task(workspace):
  folder = workspace / "utf8"
  folder.mkdir(exist_ok=True)
  train, dev = write_sentiment_tsvs(folder)
  with open(train, "ab") as f:
    f.write(b"caf\xe9 latte film\tpositive\n")
  module = workspace / "bad_utf8_task_module.py"
  module.write_text(
      "import seqio\nfrom prompt_tuning.data import file_tasks\n"
      f"file_tasks.register_file_task('bad_utf8_task', train_path={train!r}, "
      f"validation_path={dev!r}, input_template='{{text}}', "
      "label_names=('negative', 'positive'), vocabulary=seqio.ByteVocabulary())\n")
  sys.path.insert(0, str(workspace))
  return train_main, _train_argv(workspace, "--gin.MIXTURE_OR_TASK_NAME='bad_utf8_task'",
                                 "--gin.MIXTURE_OR_TASK_MODULE='bad_utf8_task_module'")


def _t5_vocabulary_task_on_the_demo_model(workspace):
  """The issue's case: a T5 SentencePiece (32k) task on the demo model's 384-row embedding."""
  vocabulary = seqio.SentencePieceVocabulary(str(shared_fixture("t5_sentencepiece.model")))
  name = "bad_inputs_t5_vocabulary"
  if name not in seqio.TaskRegistry.names():
    file_tasks.register_file_task(name, train_path=str(workspace / "train.tsv"),
                                  validation_path=str(workspace / "dev.tsv"),
                                  input_template="{text}", label_names=("negative", "positive"),
                                  vocabulary=vocabulary)
  return train_main, _train_argv(workspace, "--gin_file=models/demo_tiny_prompt.gin",
                                 f"--gin.MIXTURE_OR_TASK_NAME='{name}'")


def _missing_vocabulary_file(workspace):
  """A task whose SentencePiece model file is not there (e.g. offline, no local copy)."""
  name = "bad_inputs_missing_vocabulary"
  if name not in seqio.TaskRegistry.names():
    file_tasks.register_file_task(
        name, train_path=str(workspace / "train.tsv"), validation_path=str(workspace / "dev.tsv"),
        input_template="{text}", label_names=("negative", "positive"),
        vocabulary=seqio.SentencePieceVocabulary(str(workspace / "no_such_spm.model")))
  return train_main, _train_argv(workspace, f"--gin.MIXTURE_OR_TASK_NAME='{name}'")


# name -> (build(workspace) -> (command module, argv), key words of the error line).
CASES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "unclosed_brace": (lambda w: (train_main, _train_argv(
        w, "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 10")),
        ("TASK_FEATURE_LENGTHS", "'{' is never closed", "--gin.")),
    "gin_file_syntax": (lambda w: (train_main, _train_argv(w, f"--gin_file={_bad_gin_file(w)}")),
                        ("broken.gin", "cannot be parsed", "line 2")),
    "batch_size_zero": (lambda w: (train_main, _train_argv(w, "--gin.BATCH_SIZE=0")),
                        ("BATCH_SIZE=0", "positive", "--gin.BATCH_SIZE=")),
    "batch_size_negative": (lambda w: (train_main, _train_argv(w, "--gin.BATCH_SIZE=-8")),
                            ("BATCH_SIZE=-8", "positive")),
    "batch_size_string": (lambda w: (train_main, _train_argv(w, "--gin.BATCH_SIZE='32'")),
                          ("BATCH_SIZE='32'", "whole number")),
    "train_steps_string": (lambda w: (train_main, _train_argv(w, "--gin.TRAIN_STEPS='many'")),
                           ("TRAIN_STEPS='many'", "--gin.TRAIN_STEPS=")),
    "log_period_zero": (lambda w: (train_main, _train_argv(w, "--gin.LOG_PERIOD=0")),
                        ("LOG_PERIOD=0", "positive")),
    "microbatches_not_dividing": (lambda w: (train_main, _train_argv(
        w, "--gin.NUM_MICROBATCHES=3")), ("NUM_MICROBATCHES=3", "BATCH_SIZE=4")),
    "num_partitions": (lambda w: (train_main, _train_argv(w, "--gin.NUM_PARTITIONS=3")),
                       ("NUM_PARTITIONS=3", "divides")),
    "feature_length_negative": (lambda w: (train_main, _train_argv(
        w, "--gin.TASK_FEATURE_LENGTHS={'inputs': -4, 'targets': 10}")),
        ("TASK_FEATURE_LENGTHS", "'inputs' -> -4")),
    "feature_length_missing": (lambda w: (train_main, _train_argv(
        w, "--gin.TASK_FEATURE_LENGTHS={'inputs': 24}")), ("no length for 'targets'", TASK)),
    "missing_initial_checkpoint": (lambda w: (train_main, _train_argv(
        w, f"--gin.INITIAL_CHECKPOINT_PATH='{w / 'no_such_checkpoint'}'")),
        ("no_such_checkpoint", "does not exist")),
    "truncated_t5x_checkpoint": (lambda w: (train_main, _train_argv(
        w, f"--gin.INITIAL_CHECKPOINT_PATH='{_truncated_t5x(w)}'")),
        ("t5x_truncated", "truncated or corrupt", "copy the checkpoint again")),
    "corrupt_t5x_chunk": (lambda w: (train_main, _train_argv(
        w, f"--gin.INITIAL_CHECKPOINT_PATH='{_corrupt_t5x_chunk(w)}'")),
        ("encoder/layers_0/mlp/wi_0/kernel", "t5x_bad_chunk", "copy the checkpoint again")),
    "corrupt_orbax_frozen_checkpoint": (lambda w: (train_main, _train_argv(
        w, "--gin.INITIAL_CHECKPOINT_PATH="
        f"'{_corrupt_orbax_chunks(_copy_writable(w / 'frozen', w / 'frozen_corrupt'))}'")),
        ("frozen_corrupt", "cannot be read", "copy it again")),
    "corrupt_resumed_checkpoint": (_resumed_run_with_corrupt_checkpoint,
                                   (f"checkpoint_{GOOD_STEPS}", "cannot be read", "delete that")),
    "vocabulary_larger_than_embedding": (lambda w: (train_main, _train_argv(
        w, "--gin.NUM_EMBEDDINGS=200")), ("259 ids", "200 rows", "NUM_EMBEDDINGS")),
    "t5_vocabulary_on_a_384_row_model": (_t5_vocabulary_task_on_the_demo_model,
                                         ("32000 ids", "384 rows", "NUM_EMBEDDINGS")),
    "vocabulary_file_missing": (_missing_vocabulary_file,
                                ("no_such_spm.model", "cannot be loaded", "PROMPT_TUNING_T5_VOCAB")),
    "non_utf8_tsv": (_bad_utf8_task, ("train.tsv", "line 50", "UTF-8")),
    "eval_split_typo_while_training": (lambda w: (train_main, _train_argv(
        w, "--gin.EVAL_PERIOD=1", "--gin.EVAL_SPLIT='validaton'")),
        ("'validaton'", "did you mean 'validation'", "EVAL_SPLIT")),
    "infer_split_typo": (lambda w: (infer_main, _infer_argv(w, "infer", "--gin.INFER_SPLIT='tset'")),
                         ("no split 'tset'", "train, validation", "INFER_SPLIT")),
    "eval_examples_zero": (lambda w: (eval_main, _infer_argv(w, "eval", "--gin.EVAL_EXAMPLES=0")),
                           ("EVAL_EXAMPLES", "positive")),
    "learning_rate_string": (lambda w: (train_main, _train_argv(w, "--gin.LEARNING_RATE='fast'")),
                             ("LEARNING_RATE='fast'", "--gin.LEARNING_RATE=")),
    "dropout_rate_above_one": (lambda w: (train_main, _train_argv(w, "--gin.DROPOUT_RATE=1.5")),
                               ("DROPOUT_RATE=1.5", "[0, 1)")),
    "prompt_length_zero": (lambda w: (train_main, _train_argv(w, "--gin.PROMPT_LENGTH=0")),
                           ("PROMPT_LENGTH", "[0, 4]")),
    "prompt_length_negative": (lambda w: (train_main, _train_argv(w, "--gin.PROMPT_LENGTH=-5")),
                               ("length=-5", "invalid model configuration")),
    "embed_dim_zero": (lambda w: (train_main, _train_argv(w, "--gin.EMBED_DIM=0")),
                       ("EMBED_DIM=0", "--gin.EMBED_DIM=")),
    "activation_dtype": (lambda w: (train_main, _train_argv(w, "--gin.ACTIVATION_DTYPE='float17'")),
                         ("float17", "float32")),
    "frozen_dtype": (lambda w: (train_main, _train_argv(w, "--gin.FROZEN_DTYPE='bfloat17'")),
                     ("FROZEN_DTYPE='bfloat17'", "bfloat16")),
    "trainable_regex_invalid": (lambda w: (train_main, _train_argv(
        w, "--gin.TRAINABLE_REGEX='(['")), ("TRAINABLE_REGEX='(['", "regular expression")),
    "model_dir_none": (lambda w: (train_main, _train_argv(w, "--gin.MODEL_DIR=None")),
                       ("MODEL_DIR=None", "--gin.MODEL_DIR=")),
    "eval_output_dir_is_a_file": (lambda w: (eval_main, _infer_argv(
        w, "eval", f"--gin.EVAL_OUTPUT_DIR='{w / 'good' / 'config.gin'}'")),
        ("EVAL_OUTPUT_DIR", "config.gin", "not writable")),
    "beam_size_zero": (lambda w: (infer_main, _infer_argv(
        w, "infer", "--gin_file=models/decoding/beam_search.gin", "--gin.BEAM_SIZE=0")),
        ("BEAM_SIZE=0", "positive")),
    "tfds_not_prepared": (lambda w: (train_main, _train_argv(
        w, "--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v002'",
        "--gin.MIXTURE_OR_TASK_MODULE='prompt_tuning.data.glue'",
        f"--tfds_data_dir={_empty_folder(w / 'tfds')}")),
        ("glue/sst2", "not prepared", str(pathlib.Path("tfds")), "tfds build")),
}


def _bad_gin_file(workspace: pathlib.Path) -> pathlib.Path:
  path = workspace / "broken.gin"
  path.write_text("BATCH_SIZE = 4\nTASK_FEATURE_LENGTHS = {'inputs': 24,, 'targets': 10}\n")
  return path


def _empty_folder(path: pathlib.Path) -> pathlib.Path:
  path.mkdir(exist_ok=True)
  return path


def run_command(module, argv, capfd) -> tuple[int, str, str]:
  """Runs a command's entry point as `python -m` would, in this process: (exit code, stderr,
  stdout)."""
  capfd.readouterr()
  cli.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exited:
    cli.run(module._command, argv)
  captured = capfd.readouterr()
  return exited.value.code, captured.err, captured.out


def assert_one_error_line(code, stderr, keywords) -> str:
  assert "Traceback" not in stderr, stderr
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, stderr
  assert code == 1, stderr
  for keyword in keywords:
    assert keyword in errors[0], (keyword, errors[0])
  return errors[0]


def assert_good_run_intact(workspace):
  model_dir = workspace / "good"
  params = orbax_format.load_params(model_dir)
  assert orbax_format.checkpoint_step(model_dir) == GOOD_STEPS
  exported = np.load(model_dir / "numpy_checkpoints" / f"checkpoint_{GOOD_STEPS}" / PROMPT_NPY)
  np.testing.assert_array_equal(exported, params["encoder"]["prompt"]["prompt"]["prompt"])
  assert (model_dir / "config.gin").read_text().count("TRAIN_STEPS = 12") == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_error_line(workspace, capfd, case):
  build, keywords = CASES[case]
  module, argv = build(workspace)
  code, stderr, _ = run_command(module, argv, capfd)
  assert_one_error_line(code, stderr, keywords)
  assert_good_run_intact(workspace)


def test_bad_binding_in_load_model_is_a_gin_error():
  with pytest.raises(gin_utils.GinConfigError, match=r"'\(' is never closed") as caught:
    api.load_model(["test/t5_1_1_tiny.gin"], bindings=["EMBED_DIM = (64"])
  assert "EMBED_DIM" in str(caught.value)


def test_load_model_names_a_truncated_or_missing_checkpoint(workspace):
  with pytest.raises(CheckpointReadError, match="truncated or corrupt"):
    api.load_model(["test/t5_1_1_tiny.gin"], checkpoint=_truncated_t5x(workspace))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    api.load_model(["test/t5_1_1_tiny.gin"], checkpoint=workspace / "no_such_checkpoint")


def test_diff_checkpoints_names_a_truncated_checkpoint(workspace, capsys):
  truncated = _truncated_t5x(workspace)
  code = diff_checkpoints.main([diff_checkpoints.PROG, str(truncated), str(truncated)])
  err = capsys.readouterr().err
  assert code == 1 and "Traceback" not in err
  assert len(err.strip().splitlines()) == 1 and "truncated or corrupt" in err


def test_a_bug_keeps_its_traceback(capfd):
  def broken_command():
    def command(**unused_kwargs):
      return {}["a bug"]
    return command

  cli.FLAGS.unparse_flags()
  with pytest.raises(KeyError):
    cli.run(broken_command, ["train", "--gin_file=test/t5_1_1_tiny_prompt.gin"])


def test_long_inputs_warn_once_with_a_count(workspace, capfd):
  capfd.readouterr()
  config = data.DatasetConfig(TASK, {"inputs": 12, "targets": 10}, split="validation")
  assert data.warn_if_truncated(config) == 10
  err = capfd.readouterr().err
  warnings = [line for line in err.splitlines() if line.startswith("warning:")]
  assert len(warnings) == 1
  assert "10 of 10 examples" in warnings[0] and "inputs up to" in warnings[0]
  assert data.warn_if_truncated(
      data.DatasetConfig(TASK, {"inputs": 64, "targets": 10}, split="validation")) == 0


def test_disk_full_during_a_checkpoint_write(workspace, capfd, tmp_path):
  """A full disk while writing checkpoint_13: one line; checkpoint_12 and its prompt stay, and
  the same command resumes from it once there is space again."""
  mount = tmp_path / "small_disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                    capture_output=True).returncode:
    pytest.skip("mounting a small tmpfs needs root")
  try:
    model_dir = mount / "run"
    shutil.copytree(workspace / "good", model_dir)
    free = shutil.disk_usage(mount).free
    with open(mount / "filler", "wb") as f:  # Leave ~24 KB: enough to start, not to checkpoint.
      f.write(b"\0" * (free - 24 * 1024))
    code, stderr, _ = run_command(
        train_main, _train_argv(workspace, f"--gin.MODEL_DIR='{model_dir}'"), capfd)
    line = assert_one_error_line(code, stderr, ("No space left on device", "free space"))
    assert "rerun" in line or "run the command again" in line
    assert orbax_format.checkpoint_step(model_dir) == GOOD_STEPS
    np.testing.assert_array_equal(
        np.load(model_dir / "numpy_checkpoints" / f"checkpoint_{GOOD_STEPS}" / PROMPT_NPY),
        orbax_format.load_params(model_dir)["encoder"]["prompt"]["prompt"]["prompt"])
    (mount / "filler").unlink()
    code, stderr, stdout = run_command(
        train_main, _train_argv(workspace, f"--gin.MODEL_DIR='{model_dir}'"), capfd)
    assert code in (None, 0), stderr
    assert f"Resuming from {model_dir} at step {GOOD_STEPS}" in stdout
    assert orbax_format.checkpoint_step(model_dir) == GOOD_STEPS + 2
    assert not list(model_dir.glob("*orbax-checkpoint-tmp*"))
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)  # -l: files may still be open.


def test_command_line_unclosed_brace_subprocess(workspace):
  """The real `python -m prompt_tuning.train` process: exit 1, one line, no traceback."""
  argv = _train_argv(workspace, "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 10")[1:]
  result = subprocess.run([sys.executable, "-m", "prompt_tuning.train", *argv],
                          capture_output=True, text=True, timeout=300)
  assert_one_error_line(result.returncode, result.stderr,
                        ("TASK_FEATURE_LENGTHS", "never closed"))
  assert_good_run_intact(workspace)
