"""A run killed at any moment resumes to exactly the outputs of an uninterrupted run.

Fast tests (default suite) build the states kills leave behind (orbax temporary folders,
half-deleted old checkpoints, committed checkpoints without their `.npy` files, temporary `.npy`
files, metrics of steps after the last checkpoint, a cut last line) and resume in this process.
Slow tests SIGKILL real `python -m prompt_tuning.train` processes: at every crash point of a
checkpoint write (`prompt_tuning.train.kill_points`), and at random moments from outside; each
restart runs the same command, and the final MODEL_DIR must hold exactly the losses, prompt and
`.npy` files of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import seqio

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli
from prompt_tuning.checkpoints import CheckpointReadError
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.checkpoints import tree
from prompt_tuning.data import file_tasks
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import checkpoints as train_checkpoints
from prompt_tuning.train import kill_points, recovery

TASK = "crash_safety_sentiment"
MODULE = "crash_safety_task"
FROZEN_STEP = 10
# The files each P-tuning (MLP) checkpoint exports: trained parameters, the inference prompt.
P_TUNING_FILES = {"encoder.prompt.prompt.embedding.npy", "encoder.prompt.prompt.mlp_0.bias.npy",
                  "encoder.prompt.prompt.mlp_0.kernel.npy", "encoder.prompt.prompt.mlp_1.bias.npy",
                  "encoder.prompt.prompt.mlp_1.kernel.npy", "encoder.prompt.prompt.mlp_2.bias.npy",
                  "encoder.prompt.prompt.mlp_2.kernel.npy",
                  os.path.join("for_inference", "encoder.prompt.prompt.prompt.npy")}
PROCESS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """Task files, a module registering the task (for subprocesses), a frozen tiny checkpoint."""
  folder = tmp_path_factory.mktemp("crash_safety")
  train, dev = write_sentiment_tsvs(folder)
  (folder / f"{MODULE}.py").write_text(textwrap.dedent(f"""
      import seqio
      from prompt_tuning.data import file_tasks

      def register_all():
        if {TASK!r} not in seqio.TaskRegistry.names():
          file_tasks.register_file_task(
              {TASK!r}, train_path={train!r}, validation_path={dev!r},
              input_template="{{text}}", label_names=("negative", "positive"),
              vocabulary=seqio.ByteVocabulary())
      """))
  if TASK not in seqio.TaskRegistry.names():
    file_tasks.register_file_task(TASK, train_path=train, validation_path=dev,
                                  input_template="{text}", label_names=("negative", "positive"),
                                  vocabulary=seqio.ByteVocabulary())
  orbax_format.save_params(folder / "frozen", api.load_model(["test/t5_1_1_tiny.gin"]).params,
                           FROZEN_STEP)
  return folder


def _flags(workspace, model_dir, steps: int, *extra: str) -> list[str]:
  """P-tuning (its MLP compiles fast) of the tiny model: trained files + a for_inference/ file."""
  return ["--gin_file=test/t5_1_1_tiny_p_tuning.gin", "--gin_file=runs/prompt_finetune.gin",
          "--gin.P_TUNING_REPARAMETERIZATION='mlp'",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          f"--gin.MIXTURE_OR_TASK_MODULE='{MODULE}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 10}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'", "--gin.BATCH_SIZE=4",
          "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=None", f"--gin.TRAIN_STEPS={FROZEN_STEP + steps}",
          *extra]


def _train_here(workspace, model_dir, steps: int, *extra: str):
  """The train command in this process."""
  return cli.execute(train_main._command, ["train", *_flags(workspace, model_dir, steps, *extra)])


def _train_records(model_dir) -> list[dict]:
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == "train"]


def _losses(model_dir) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in _train_records(model_dir)]


def _npy_files(model_dir) -> dict[str, bytes]:
  """{path under numpy_checkpoints/: file bytes} of every file there."""
  root = pathlib.Path(model_dir) / train_checkpoints.NUMPY_DIR
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- fast: the states kills leave behind, repaired on resume ---------------------------------


def test_kill_point_variable():
  os.environ.pop(kill_points.ENV, None)
  assert kill_points.requested() is None
  assert kill_points.temporary_path_class() is None
  try:
    os.environ[kill_points.ENV] = "orbax_tmp_written@14"
    assert kill_points.requested() == ("orbax_tmp_written", 14)
    assert kill_points.temporary_path_class() is not None
    kill_points.reached("orbax_tmp_written", 13)  # Another step: nothing happens.
    kill_points.reached("checkpoint_start", 14)
    os.environ[kill_points.ENV] = "somewhere@14"
    with pytest.raises(ValueError, match="checkpoint_start"):
      kill_points.requested()
  finally:
    os.environ.pop(kill_points.ENV, None)


def test_clean_removes_what_interrupted_writes_leave(tmp_path):
  orbax_format.save_params(tmp_path / "scratch", {"w": np.ones(3)}, 1)  # Any complete layout.
  complete = tmp_path / "checkpoint_12"
  for marker in ("_CHECKPOINT_METADATA", "params/_METADATA", "opt_state/_METADATA",
                 "meta/metadata"):
    (complete / marker).parent.mkdir(parents=True, exist_ok=True)
    (complete / marker).write_text("{}")
  shutil.copytree(complete, tmp_path / "checkpoint_14")
  half_deleted = tmp_path / "checkpoint_10"
  (half_deleted / "opt_state").mkdir(parents=True)  # params/ and the metadata already gone.
  temporary = tmp_path / "checkpoint_16.orbax-checkpoint-tmp-1234"
  (temporary / "params").mkdir(parents=True)
  npy_tmp = tmp_path / "numpy_checkpoints" / "checkpoint_16" / "a.npy.tmp-99"
  npy_tmp.parent.mkdir(parents=True)
  npy_tmp.write_bytes(b"x")
  kept_npy = npy_tmp.parent / "a.npy"
  kept_npy.write_bytes(b"y")
  assert recovery.leftovers(str(tmp_path)) == sorted(map(str, [half_deleted, temporary, npy_tmp]))
  recovery.clean_model_dir(str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "checkpoint_12", "checkpoint_14", "numpy_checkpoints", "scratch"]
  assert kept_npy.exists() and not npy_tmp.exists()
  assert recovery.leftovers(str(tmp_path)) == []


def test_an_incomplete_newest_checkpoint_is_reported_not_deleted(workspace, tmp_path):
  model_dir = tmp_path / "run"
  _train_here(workspace, model_dir, 1)
  shutil.rmtree(model_dir / f"checkpoint_{FROZEN_STEP + 1}" / "opt_state")
  assert recovery.leftovers(str(model_dir)) == []
  with pytest.raises(CheckpointReadError, match="incomplete.*delete that folder") as caught:
    _train_here(workspace, model_dir, 3)
  assert cli.user_error_message(caught.value).startswith("error: ")
  assert (model_dir / f"checkpoint_{FROZEN_STEP + 1}" / "params").is_dir()


def test_resume_repairs_exports_and_metrics(workspace, tmp_path):
  """A committed checkpoint without its `.npy` files (P-tuning: trained + for_inference ones)
  gets them back, byte for byte; metrics of steps after it are logged once."""
  model_dir = tmp_path / "run"
  _train_here(workspace, model_dir, 3, "--gin.SAVING_PERIOD=1", "--gin.KEEP_CHECKPOINTS=2")
  newest = FROZEN_STEP + 3
  before = _npy_files(model_dir)
  assert {name.split(os.sep, 1)[1] for name in before} == P_TUNING_FILES
  losses = _losses(model_dir)
  # What a kill between an (older version's) commit and its export, plus later steps, leave:
  shutil.rmtree(model_dir / "numpy_checkpoints" / f"checkpoint_{newest}")
  with open(model_dir / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": newest + 1, "split": "train", "loss": 1.0}) + "\n")
    f.write('{"step": ' + str(newest + 2) + ', "split": "tr')
  _train_here(workspace, model_dir, 5, "--gin.SAVING_PERIOD=1", "--gin.KEEP_CHECKPOINTS=2")
  after = _npy_files(model_dir)
  for name, contents in before.items():
    assert after[name] == contents, name
  steps = [step for step, _ in _losses(model_dir)]
  assert steps == list(range(FROZEN_STEP + 1, FROZEN_STEP + 6))
  assert _losses(model_dir)[:3] == losses
  assert recovery.leftovers(str(model_dir)) == []


# --- slow: real SIGKILLs ----------------------------------------------------------------------


def _env(workspace, cache: pathlib.Path, kill_at: str | None = None) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PROMPT_TUNING_COMPILATION_CACHE_DIR=str(cache),
             PYTHONPATH=os.pathsep.join(filter(None, [str(workspace),
                                                      os.environ.get("PYTHONPATH")])))
  env.pop(kill_points.ENV, None)
  if kill_at:
    env[kill_points.ENV] = kill_at
  return env


def _train_process(workspace, model_dir, steps, cache, kill_at=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "prompt_tuning.train",
                         *_flags(workspace, model_dir, steps, "--gin.SAVING_PERIOD=2")],
                        capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S,
                        env=_env(workspace, cache, kill_at))


def _newest_step(model_dir) -> int:
  try:
    return orbax_format.checkpoint_step(model_dir)
  except FileNotFoundError:
    return FROZEN_STEP


def _assert_same_run(model_dir, reference) -> None:
  assert _losses(model_dir) == _losses(reference)  # One record per step, bit-identical losses.
  assert _npy_files(model_dir) == _npy_files(reference)
  final = tree.flatten_params(orbax_format.load_params(model_dir))
  expected = tree.flatten_params(orbax_format.load_params(reference))
  assert final.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(final[path], value, err_msg=path)
  assert recovery.leftovers(str(model_dir)) == []


@pytest.fixture(scope="module")
def uninterrupted(workspace):
  """An uninterrupted subprocess run of 12 steps (the reference), and the compilation cache."""
  cache = workspace / "xla_cache"
  reference = workspace / "uninterrupted"
  result = _train_process(workspace, reference, 12, cache)
  assert result.returncode == 0, result.stderr[-3000:]
  return reference, cache


@pytest.mark.slow
def test_killed_at_every_point_of_a_checkpoint_write(workspace, uninterrupted):
  reference, cache = uninterrupted
  model_dir = workspace / "killed_at_points"
  kills = [("checkpoint_start", 14), ("npy_tmp_written", 16), ("exports_written", 18),
           ("orbax_tmp_written", 20), ("checkpoint_committed", 20)]
  for point, step in kills:
    result = _train_process(workspace, model_dir, 12, cache, kill_at=f"{point}@{step}")
    assert result.returncode == -signal.SIGKILL, (point, result.stderr[-3000:])
    newest = orbax_format.checkpoint_step(model_dir)
    assert newest == (step if point == "checkpoint_committed" else step - 2), point
    # Every committed checkpoint has all its files, whatever the moment of the kill.
    folder = model_dir / "numpy_checkpoints" / f"checkpoint_{newest}"
    assert {str(p.relative_to(folder)) for p in folder.rglob("*.npy")} == P_TUNING_FILES, point
    if point == "orbax_tmp_written":
      assert list(model_dir.glob(f"checkpoint_{step}.orbax-checkpoint-tmp*"))
    if point == "npy_tmp_written":
      assert list((model_dir / "numpy_checkpoints").rglob("*.npy.tmp-*"))
  result = _train_process(workspace, model_dir, 12, cache)
  assert result.returncode == 0, result.stderr[-3000:]
  _assert_same_run(model_dir, reference)


@pytest.mark.slow
def test_killed_at_random_moments(workspace, uninterrupted):
  """SIGKILL from outside once a random step's line is printed, three times, then finish."""
  reference, cache = uninterrupted
  model_dir = workspace / "killed_at_random"
  chooser = random.Random(15)
  for _ in range(3):
    done = _newest_step(model_dir)
    target = chooser.randint(done + 1, FROZEN_STEP + 11)  # Never the last step: a kill must land.
    process = subprocess.Popen(
        [sys.executable, "-m", "prompt_tuning.train",
         *_flags(workspace, model_dir, 12, "--gin.SAVING_PERIOD=2")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=_env(workspace, cache))
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    for line in process.stdout:
      if line.startswith(f"step {target}/") or time.monotonic() > deadline:
        time.sleep(chooser.uniform(0.0, 0.05))
        break
    process.kill()
    process.wait()
  result = _train_process(workspace, model_dir, 12, cache)
  assert result.returncode == 0, result.stderr[-3000:]
  _assert_same_run(model_dir, reference)
