"""Multi-host training through `jax.distributed`: 2 processes on localhost train like 1 process.

Each process is `python -m prompt_tuning.train --coordinator_address=localhost:PORT
--process_count=2 --process_index=i` with 2 CPU devices (cross-process collectives: gloo). The
run trains 2 steps on a (data 2, model 2) mesh: each process feeds its half of the batch and the
frozen weights are sharded over the 2 devices of each process. A second pair of processes resumes
it from the shared MODEL_DIR on a (data 1, model 4) mesh (the model axis spans both processes, so
both feed the whole batch) for 2 more steps and evaluates.

Data parity with one process: each process reads its seqio shard (ShardInfo(i, 2)), which for a
file task is every second example. Unshuffled, the global batch of step k is then the same set
of examples as a single process's (rows in another order: process 0's half first; so is the
stream of the 1-shard resumed leg, which skips the 2 global batches already seen), and the loss
is a sum over rows, so the losses agree to float rounding. With shuffling each shard is shuffled
on its own (a different stream than one process sees), and dropout masks follow the rows'
positions, so the comparison turns both off.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import seqio

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import partitioning

TASK = "multihost_test_sentiment"
MODULE = "multihost_test_tasks"
FROZEN_STEP = 100
PROMPT_NPY = "encoder.prompt.prompt.prompt.npy"
PROCESS_TIMEOUT_S = 400


def _gloo_available() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


def _register(train_path: str, dev_path: str) -> None:
  if TASK not in seqio.TaskRegistry.names():
    file_tasks.register_file_task(TASK, train_path=train_path, validation_path=dev_path,
                                  input_template="{text}", label_names=("negative", "positive"),
                                  metrics=("accuracy",), vocabulary=seqio.ByteVocabulary())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """Task files, a module registering the task (for the subprocesses), a frozen tiny checkpoint."""
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives (needed for multi-process CPU runs)")
  folder = tmp_path_factory.mktemp("multihost")
  train, dev = write_sentiment_tsvs(folder)
  (folder / f"{MODULE}.py").write_text(textwrap.dedent(f"""
      import seqio
      from prompt_tuning.data import file_tasks

      def register_all():
        if {TASK!r} not in seqio.TaskRegistry.names():
          file_tasks.register_file_task(
              {TASK!r}, train_path={train!r}, validation_path={dev!r},
              input_template="{{text}}", label_names=("negative", "positive"),
              metrics=("accuracy",), vocabulary=seqio.ByteVocabulary())
      """))
  _register(train, dev)  # The same task in this process (the reference run).
  frozen = api.load_model(["test/t5_1_1_tiny.gin"], seed=3)
  orbax_format.save_params(folder / "frozen", frozen.params, FROZEN_STEP)
  return folder


def _flags(workspace, model_dir, *extra) -> list[str]:
  return ["--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_finetune.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          f"--gin.MIXTURE_OR_TASK_MODULE='{MODULE}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'",
          "--gin.BATCH_SIZE=4", "--gin.LOG_PERIOD=1", "--gin.SAVING_PERIOD=2",
          "--gin.SHUFFLE_TRAIN_EXAMPLES=False", "--gin.DROPOUT_RATE=0.0", *extra]


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch_two_processes(workspace, model_dir, log_name: str, *extra) -> list[str]:
  """Runs the 2 processes of one multi-host training run; returns each one's output.

  Fails (after stopping the other) as soon as one process fails: its peer would otherwise wait
  minutes in a collective for the coordination service to time out.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=os.pathsep.join(filter(None, [str(workspace),
                                                      os.environ.get("PYTHONPATH")])))
  port = _free_port()
  logs = [workspace / f"{log_name}_process_{i}.log" for i in range(2)]
  processes = []
  for index, log in enumerate(logs):
    with open(log, "w") as out:
      processes.append(subprocess.Popen(
          [sys.executable, "-m", "prompt_tuning.train", *_flags(workspace, model_dir, *extra),
           f"--coordinator_address=localhost:{port}", "--process_count=2",
           f"--process_index={index}"],
          stdout=out, stderr=subprocess.STDOUT, env=env))
  deadline = time.monotonic() + PROCESS_TIMEOUT_S
  while any(p.poll() is None for p in processes):
    failed = any(p.poll() not in (None, 0) for p in processes)
    if failed or time.monotonic() > deadline:
      for p in processes:
        if p.poll() is None:
          p.kill()
          p.wait()
      break
    time.sleep(0.5)
  outputs = [log.read_text() for log in logs]
  for index, p in enumerate(processes):
    assert p.returncode == 0, (
        f"process {index} of {log_name} exited with {p.returncode}:\n{outputs[index][-4000:]}")
  return outputs


def _records(model_dir) -> list[dict]:
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _train_losses(model_dir) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in _records(model_dir) if r["split"] == "train"]


_SAVE_ON_TWO_DEVICES = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from prompt_tuning.checkpoints import orbax as orbax_format
    mesh = Mesh(np.asarray(jax.devices()), ("model",))
    kernel = jax.device_put(jnp.arange(8.0).reshape(2, 4), NamedSharding(mesh, PartitionSpec("model")))
    orbax_format.save_params(sys.argv[1], {"layer": {"kernel": kernel}}, 7)
""")


def test_a_checkpoint_saved_on_other_devices_loads_here(tmp_path):
  """Saved shardings name the saving devices (here 2, or another process's): loading ignores them."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run([sys.executable, "-c", _SAVE_ON_TWO_DEVICES, str(tmp_path / "ckpt")],
                          capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  loaded = orbax_format.load_params(tmp_path / "ckpt")
  np.testing.assert_array_equal(loaded["layer"]["kernel"], np.arange(8.0).reshape(2, 4))


def test_one_process_feeds_the_whole_batch():
  mesh = partitioning.make_mesh(jax.device_count())
  assert partitioning.process_batch_shard(mesh) == (0, 1)


@pytest.mark.slow  # ~2.5-3 min on 2 CPU cores (a reference run and two 2-process launches).
def test_two_processes_train_resume_and_evaluate_like_one(workspace):
  end = FROZEN_STEP + 4
  # Reference: one process (this one), all its devices on the `model` axis.
  reference_dir = workspace / "one_process"
  reference = cli.execute(train_main._command, [
      "train", *_flags(workspace, reference_dir, f"--gin.TRAIN_STEPS={end}",
                       "--gin.EVAL_PERIOD=1000", f"--gin.NUM_PARTITIONS={jax.device_count()}")])

  model_dir = workspace / "two_processes"
  _launch_two_processes(workspace, model_dir, "first", f"--gin.TRAIN_STEPS={FROZEN_STEP + 2}",
                        "--gin.EVAL_PERIOD=None", "--gin.NUM_PARTITIONS=2")
  assert (model_dir / f"checkpoint_{FROZEN_STEP + 2}" / "params").is_dir()
  outputs = _launch_two_processes(workspace, model_dir, "resumed", f"--gin.TRAIN_STEPS={end}",
                                  "--gin.EVAL_PERIOD=1000", "--gin.NUM_PARTITIONS=4")

  # Process 0 alone prints and writes metrics.jsonl: one record per step, none twice.
  assert f"at step {FROZEN_STEP + 2} (data position 2)" in outputs[0]
  assert f"step {end}/{end}" in outputs[0]
  assert "Resuming" not in outputs[1] and f"step {end}/{end}" not in outputs[1]
  losses = _train_losses(model_dir)
  reference_losses = _train_losses(reference_dir)
  assert [step for step, _ in losses] == list(range(FROZEN_STEP + 1, end + 1))
  assert [step for step, _ in reference_losses] == [step for step, _ in losses]
  np.testing.assert_allclose([loss for _, loss in losses],
                             [loss for _, loss in reference_losses], rtol=1e-5)

  # The orbax checkpoint (keep 1) and the exported prompt of the last step.
  assert sorted(p.name for p in model_dir.glob("checkpoint_*")) == [f"checkpoint_{end}"]
  prompt = np.load(model_dir / "numpy_checkpoints" / f"checkpoint_{end}" / PROMPT_NPY)
  assert prompt.shape == (5, 4) and np.all(np.isfinite(prompt))
  np.testing.assert_allclose(prompt, reference.trainable["encoder"]["prompt"]["prompt"]["prompt"],
                             rtol=1e-4, atol=5e-5)

  # Evaluation decodes on the (1, 4) mesh and gathers the predictions across processes.
  evals = [r for r in _records(model_dir) if r["split"] == "eval"]
  assert [(r["step"], r["task"]) for r in evals] == [(end, TASK)]
  assert evals[0]["accuracy"] == reference.eval_metrics[end][TASK]["accuracy"]
  predictions = f"inference_eval/{TASK}-{end:06d}.jsonl"
  lines = (model_dir / predictions).read_text().splitlines()
  assert len(lines) == 10  # Every validation example once, in order (process 0 writes).
  assert lines == (reference_dir / predictions).read_text().splitlines()
