"""The runs/ and decoding gin files parse, bind what the commands need, and work end to end."""

from __future__ import annotations

import gin
import jax
import numpy as np
import pytest
import seqio

from prompt_tuning import api, cli, gin_utils
from prompt_tuning import eval as eval_main
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.train import data, models, scoring

TASK = "run_configs_sentiment"
SST2_STACK = ["models/t5_1_1_base_prompt.gin", "prompts/from_class_labels.gin",
              "runs/prompt_finetune.gin"]
SST2_BINDINGS = ["CLASS_LABELS=['positive', 'negative']", "MODEL_DIR='/tmp/unused'",
                 "MIXTURE_OR_TASK_NAME='taskless_glue_sst2_v200_examples'",
                 "TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 8}", "TRAIN_STEPS=1_150_000",
                 "INITIAL_CHECKPOINT_PATH='/tmp/unused_checkpoint'"]


def test_sst2_demo_stack_binds_the_papers_settings():
  gin_utils.parse_gin_config(SST2_STACK, SST2_BINDINGS)
  config = gin_utils.call_configured(__import__("prompt_tuning.models.config",
                                                fromlist=["T5Config"]).T5Config)
  assert (config.emb_dim, config.num_encoder_layers, config.dropout_rate) == (768, 12, 0.1)
  prompt_config = api._prompt_config_from_gin()  # pylint: disable=protected-access
  assert prompt_config.length == 100
  train_cfg = gin_utils.configured(data.DatasetConfig)
  with gin.config_scope("train"):
    train = train_cfg()
  assert (train.mixture_or_task_name, train.batch_size, train.split) == (
      "taskless_glue_sst2_v200_examples", 32, "train")
  assert train.task_feature_lengths == {"inputs": 512, "targets": 8}
  assert gin_utils.call_configured(models.LossConfig) == models.LossConfig(z_loss=1e-4)
  assert gin.query_parameter("prompt_tuning.train.optim.adafactor.decay_rate") == 0.8
  assert gin.query_parameter("prompt_tuning.train.optim.adafactor.weight_decay") == 1e-5
  assert gin.query_parameter("prompt_tuning.train.optim.adafactor."
                             "multiply_by_parameter_scale") is False
  assert gin.query_parameter("%LEARNING_RATE") == 0.3


@pytest.mark.parametrize("decoding, method", [("models/decoding/beam_search.gin", "beam"),
                                              ("models/decoding/nucleus_sampling.gin", "sample")])
def test_decoding_files_select_the_search(decoding, method):
  gin_utils.parse_gin_config(["test/t5_1_1_tiny_prompt.gin", decoding])
  assert gin_utils.call_configured(models.DecodeConfig).method == method


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  folder = tmp_path_factory.mktemp("run_configs")
  rows = "text\tlabel\n" + "".join(f"film {i}\t{'positive' if i % 2 else 'negative'}\n"
                                   for i in range(6))
  (folder / "dev.tsv").write_text(rows)
  file_tasks.register_file_task(TASK, validation_path=str(folder / "dev.tsv"),
                                input_template="{text}", label_names=("negative", "positive"),
                                vocabulary=seqio.ByteVocabulary())
  orbax_format.save_params(folder / "frozen", api.load_model(["test/t5_1_1_tiny.gin"]).params, 7)
  np.save(folder / "prompt.npy", np.full((5, 4), 0.1, np.float32))
  return folder


def test_eval_with_beam_search_equals_greedy_with_one_beam(workspace):
  def evaluate(*extra):
    return cli.execute(eval_main._command, [
        "eval", "--gin_file=test/t5_1_1_tiny_prompt.gin", *extra, "--gin_file=runs/prompt_eval.gin",
        f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'",
        f"--gin.PROMPT_FILE='{workspace / 'prompt.npy'}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.BATCH_SIZE=4",
        f"--gin.EVAL_OUTPUT_DIR='{workspace / 'eval'}'"])

  greedy = evaluate()
  one_beam = evaluate("--gin_file=models/decoding/beam_search.gin", "--gin.BEAM_SIZE=1",
                      "--gin.models.DecodeConfig.alpha=0.0")
  assert set(greedy[TASK]) == {"accuracy"}
  assert one_beam == greedy


def test_released_prompt_evaluates_through_prompt_eval_gin_on_a_base_shape(tmp_path):
  """The paper's released SST-2 prompt [100, 768] plugs into T5 1.1 base via runs/prompt_eval.gin.

  Frozen weights stay abstract (`jax.eval_shape`); the prompt is the real file, unconverted.
  """
  from conftest import shared_fixture
  from prompt_tuning.models import config as model_config
  from prompt_tuning.train import model_setup
  prompt_path = shared_fixture("released_prompts/t5_1_1_lm100k_base/sst2.npy")
  gin_utils.parse_gin_config(
      ["models/t5_1_1_base_prompt.gin", "runs/prompt_eval.gin"],
      [f"PROMPT_FILE='{prompt_path}'", "INITIAL_CHECKPOINT_PATH='/unused'",
       f"EVAL_OUTPUT_DIR='{tmp_path}'", "MIXTURE_OR_TASK_NAME='taskless_glue_sst2_v200_examples'",
       "TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 8}"])
  config = gin_utils.call_configured(model_config.T5Config)
  run = model_setup.build_run_model(config, api._prompt_config_from_gin())  # pylint: disable=protected-access
  params = model_setup.with_prompt_file(run.shapes, gin.query_parameter("%PROMPT_FILE"))
  prompt = params["encoder"]["prompt"]["prompt"]["prompt"]
  np.testing.assert_array_equal(np.asarray(prompt), np.load(prompt_path))
  batch = {"encoder_input_tokens": np.ones((2, 512), np.int32),
           "decoder_input_tokens": np.zeros((2, 8), np.int32),
           "decoder_target_tokens": np.ones((2, 8), np.int32),
           "decoder_loss_weights": np.ones((2, 8), np.float32)}
  scores = jax.eval_shape(lambda p: scoring.score_batch(run.module, p, batch), params)
  assert scores.shape == (2,)
