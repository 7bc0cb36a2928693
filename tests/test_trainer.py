"""The trainer end to end on the tiny model: CLI train -> eval -> infer, frozen weights, resume."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.checkpoints import tree
from prompt_tuning.data import file_tasks
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import optim

TASK = "trainer_test_sentiment"
FROZEN_STEP = 100


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """A registered byte-vocabulary task and a frozen tiny checkpoint (orbax, step 100)."""
  folder = tmp_path_factory.mktemp("trainer")
  train, dev = write_sentiment_tsvs(folder)
  file_tasks.register_file_task(TASK, train_path=train, validation_path=dev,
                                input_template="{text}", label_names=("negative", "positive"),
                                metrics=("accuracy",), vocabulary=seqio.ByteVocabulary())
  frozen = api.load_model(["test/t5_1_1_tiny.gin"], seed=3)
  orbax_format.save_params(folder / "frozen", frozen.params, FROZEN_STEP)
  return folder


def _flags(workspace, model_dir, *extra):
  return ["train",
          "--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_finetune.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}",
          f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'",
          "--gin.BATCH_SIZE=4", "--gin.LOG_PERIOD=1", "--gin.EVAL_PERIOD=None", *extra]


def _losses(model_dir) -> dict[int, float]:
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def _train(workspace, model_dir, *extra):
  return cli.execute(train_main._command, _flags(workspace, model_dir, *extra))


def test_train_then_eval_and_infer_from_the_exported_prompt(workspace, capsys):
  model_dir = workspace / "e2e"
  result = _train(workspace, model_dir, f"--gin.TRAIN_STEPS={FROZEN_STEP + 2}",
                  "--gin.EVAL_PERIOD=2", "--gin.SAVING_PERIOD=2")
  assert result.step == FROZEN_STEP + 2  # The frozen checkpoint's step counts (T5X semantics).
  losses = _losses(model_dir)
  assert sorted(losses) == [FROZEN_STEP + 1, FROZEN_STEP + 2]
  assert all(np.isfinite(v) and v > 0 for v in losses.values())
  records = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
  record = records[0]
  for field in ("step", "loss", "loss_per_nonpadding_target_token", "token_accuracy",
                "learning_rate"):
    assert field in record
  assert "examples_per_second" in [r for r in records if r["split"] == "train"][1]  # Step 1 compiles.
  assert record["learning_rate"] == pytest.approx(0.3)
  assert (model_dir / "config.gin").exists()
  assert "accuracy" in result.eval_metrics[FROZEN_STEP + 2][TASK]
  prompt_file = (model_dir / "numpy_checkpoints" / f"checkpoint_{FROZEN_STEP + 2}" /
                 "encoder.prompt.prompt.prompt.npy")
  prompt = np.load(prompt_file)
  assert prompt.shape == (5, 4)
  np.testing.assert_array_equal(prompt, result.trainable["encoder"]["prompt"]["prompt"]["prompt"])

  from prompt_tuning import eval as eval_main
  from prompt_tuning import infer as infer_main
  common = ["--gin_file=test/t5_1_1_tiny_prompt.gin",
            f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'",
            f"--gin.PROMPT_FILE='{prompt_file}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}", "--gin.BATCH_SIZE=4"]
  metrics = cli.execute(eval_main._command, ["eval", *common, "--gin_file=runs/prompt_eval.gin",
                                             f"--gin.EVAL_OUTPUT_DIR='{workspace / 'eval'}'"])
  assert metrics[TASK] == result.eval_metrics[FROZEN_STEP + 2][TASK]
  assert json.load(open(workspace / "eval" / "metrics.json"))["metrics"] == metrics
  written = cli.execute(infer_main._command, ["infer", *common, "--gin_file=runs/prompt_infer.gin",
                                              f"--gin.INFER_OUTPUT_DIR='{workspace / 'infer'}'"])
  lines = open(written[TASK]).read().splitlines()
  assert len(lines) == 10 and "prediction" in json.loads(lines[0])


def test_only_the_prompt_changes(workspace):
  model_dir = workspace / "frozen_check"
  result = _train(workspace, model_dir, f"--gin.TRAIN_STEPS={FROZEN_STEP + 3}")
  before = tree.flatten_params(orbax_format.load_params(workspace / "frozen"))
  after = tree.flatten_params(jax.device_get(result.frozen))
  assert set(after) == set(before) - {p for p in before if "/prompt/" in p}
  for path, value in after.items():
    np.testing.assert_array_equal(np.asarray(value), before[path], err_msg=path)
  trained = tree.flatten_params(result.trainable)
  assert list(trained) == ["encoder/prompt/prompt/prompt"]
  # Only trainable parameters (and their optimizer state) are saved.
  assert list(tree.flatten_params(orbax_format.load_params(model_dir))) == list(trained)


def test_resume_continues_exactly(workspace):
  straight, resumed = workspace / "straight", workspace / "resumed"
  common = ("--gin.SAVING_PERIOD=2", "--gin.DROPOUT_RATE=0.1")
  end = FROZEN_STEP + 4
  full = _train(workspace, straight, f"--gin.TRAIN_STEPS={end}", *common)
  _train(workspace, resumed, f"--gin.TRAIN_STEPS={FROZEN_STEP + 2}", *common)
  second = _train(workspace, resumed, f"--gin.TRAIN_STEPS={end}", *common)
  assert _losses(resumed) == _losses(straight)
  assert len(_losses(straight)) == 4
  np.testing.assert_array_equal(
      second.trainable["encoder"]["prompt"]["prompt"]["prompt"],
      full.trainable["encoder"]["prompt"]["prompt"]["prompt"])


def test_split_covers_every_leaf_once():
  params = {"encoder": {"prompt": {"prompt": {"prompt": 1}}, "layers_0": {"w": 2}},
            "decoder": {"w": 3}}
  trainable, frozen = optim.split_params(params, ".*/prompt/.*")
  assert tree.flatten_params(trainable) == {"encoder/prompt/prompt/prompt": 1}
  assert tree.flatten_params(frozen) == {"encoder/layers_0/w": 2, "decoder/w": 3}
  assert optim.merge_params(trainable, frozen) == params
  with pytest.raises(optim.NothingToTrainError, match="matches none"):
    optim.split_params(params, ".*/nothing/.*")


@pytest.mark.slow  # Default-suite time; related cases stay in the default suite.
def test_p_tuning_run_exports_a_plain_prompt(workspace):
  model_dir = workspace / "p_tuning"
  flags = _flags(workspace, model_dir, f"--gin.TRAIN_STEPS={FROZEN_STEP + 1}")
  flags[1] = "--gin_file=test/t5_1_1_tiny_p_tuning.gin"
  result = cli.execute(train_main._command, flags)
  exported = [f for f in result.prompt_files if "for_inference" in f]
  assert [os.path.basename(f) for f in exported] == ["encoder.prompt.prompt.prompt.npy"]
  from prompt_tuning.methods import p_tuning
  expected = p_tuning.export_prompt(result.trainable["encoder"]["prompt"]["prompt"])
  np.testing.assert_array_equal(np.load(exported[0]), expected)
  # The exported prompt drives the plain prompt-tuning model like the encoder drives P-tuning.
  tokens = np.array([[5, 6, 7, 1]], np.int32)
  p_model = api.load_model(["test/t5_1_1_tiny_p_tuning.gin"],
                           checkpoint=str(workspace / "frozen"))
  p_params = optim.merge_params(result.trainable, optim.split_params(p_model.params)[1])
  plain = api.load_model(["test/t5_1_1_tiny_prompt.gin"], checkpoint=str(workspace / "frozen"))
  decoder_inputs = np.zeros((1, 2), np.int32)
  np.testing.assert_allclose(
      plain.logits(tokens, decoder_inputs, prompt=exported[0]),
      p_model.module.apply({"params": p_params}, tokens, decoder_inputs), atol=1e-5)


def _bfloat16_rounded(params):
  return jax.tree_util.tree_map(
      lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)), params)


def _dtypes(params) -> set:
  return {np.dtype(x.dtype) for x in jax.tree_util.tree_leaves(params)}


@pytest.mark.slow  # Default-suite time; related cases stay in the default suite.
def test_bfloat16_frozen_weights_train_as_their_float32_rounding(workspace):
  """FROZEN_DTYPE='bfloat16' holds the frozen weights in bfloat16 and computes in float32: the
  losses and trained prompt equal a float32 run on the bfloat16-rounded weights."""
  rounded = workspace / "frozen_rounded"
  frozen = orbax_format.load_params(workspace / "frozen")
  orbax_format.save_params(rounded, _bfloat16_rounded(frozen), FROZEN_STEP)
  steps = f"--gin.TRAIN_STEPS={FROZEN_STEP + 2}"
  half = _train(workspace, workspace / "bf16_frozen", steps, "--gin.FROZEN_DTYPE='bfloat16'")
  flags = _flags(workspace, workspace / "rounded_f32", steps)
  flags = [f"--gin.INITIAL_CHECKPOINT_PATH='{rounded}'" if f.startswith(
      "--gin.INITIAL_CHECKPOINT_PATH") else f for f in flags]
  full = cli.execute(train_main._command, flags)
  assert _dtypes(half.frozen) == {np.dtype(jnp.bfloat16)}
  assert _dtypes(half.trainable) == {np.dtype(np.float32)}
  half_losses, full_losses = _losses(workspace / "bf16_frozen"), _losses(workspace / "rounded_f32")
  assert sorted(half_losses) == sorted(full_losses) == [FROZEN_STEP + 1, FROZEN_STEP + 2]
  for step, loss in full_losses.items():
    assert half_losses[step] == pytest.approx(loss, rel=1e-5)
  np.testing.assert_allclose(half.trainable["encoder"]["prompt"]["prompt"]["prompt"],
                             full.trainable["encoder"]["prompt"]["prompt"]["prompt"],
                             rtol=1e-5, atol=1e-6)
  for path, value in tree.flatten_params(jax.device_get(half.frozen)).items():
    np.testing.assert_array_equal(  # Read straight into bfloat16 and never changed.
        np.asarray(value, np.float32),
        tree.flatten_params(jax.device_get(full.frozen))[path], err_msg=path)


def test_load_model_keeps_frozen_weights_in_bfloat16(workspace):
  half = api.load_model(["test/t5_1_1_tiny_prompt.gin"], checkpoint=str(workspace / "frozen"),
                        frozen_dtype="bfloat16")
  full = api.load_model(["test/t5_1_1_tiny_prompt.gin"], checkpoint=str(workspace / "frozen"))
  flat = tree.flatten_params(half.params)
  assert flat["encoder/prompt/prompt/prompt"].dtype == np.float32
  assert {v.dtype for p, v in flat.items() if "/prompt/" not in p} == {np.dtype(jnp.bfloat16)}
  rounded = dict(tree.flatten_params(_bfloat16_rounded(full.params)))
  rounded["encoder/prompt/prompt/prompt"] = flat["encoder/prompt/prompt/prompt"]
  tokens, decoder_inputs = np.array([[5, 6, 7, 1]], np.int32), np.zeros((1, 3), np.int32)
  reference = api.LoadedModel(full.config, full.module, tree.unflatten_params(rounded),
                              full.prompt_config)
  np.testing.assert_allclose(half.logits(tokens, decoder_inputs),
                             reference.logits(tokens, decoder_inputs), rtol=1e-5, atol=1e-5)
