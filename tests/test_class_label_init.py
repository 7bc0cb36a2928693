"""Class-label and sampled-vocabulary init from the restored model's own embedding table.

The table is the one the run restored (orbax, Hugging Face, ...; `token_embedder/embedding`, or
the decoder's for decoder-only models) and the labels are tokenized with the task's vocabulary
(here seqio's ByteVocabulary, not the T5 SentencePiece model).
"""

from __future__ import annotations

import numpy as np
import pytest
import seqio

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli, prompts
from prompt_tuning.checkpoints import huggingface, orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.train import __main__ as train_main
from prompt_tuning.train import model_setup

TASK = "class_label_init_sentiment"
FROZEN_STEP = 20
LABELS = ("positive", "negative")
VOCAB = seqio.ByteVocabulary()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """The tiny T5 saved as orbax and as Hugging Face, and a byte-vocabulary task."""
  folder = tmp_path_factory.mktemp("class_label_init")
  train, dev = write_sentiment_tsvs(folder)
  file_tasks.register_file_task(TASK, train_path=train, validation_path=dev,
                                input_template="{text}", label_names=LABELS,
                                vocabulary=VOCAB)
  frozen = api.load_model(["test/t5_1_1_tiny.gin"], seed=7)
  orbax_format.save_params(folder / "orbax", frozen.params, FROZEN_STEP)
  huggingface.save_hf_t5_checkpoint(frozen.params, frozen.config, folder / "hf")
  return folder, np.asarray(frozen.params["token_embedder"]["embedding"])


def _label_rows(table: np.ndarray) -> np.ndarray:
  return np.stack([table[VOCAB.encode(label)].mean(axis=0) for label in LABELS])


def _is_table_row(row: np.ndarray, table: np.ndarray, population: int) -> bool:
  return any(np.array_equal(row, candidate) for candidate in table[:population])


def test_training_starts_from_the_label_embeddings_of_the_restored_orbax_model(workspace):
  folder, table = workspace
  result = cli.execute(train_main._command, [
      "train", "--gin_file=test/t5_1_1_tiny_prompt.gin",
      "--gin_file=prompts/from_class_labels.gin", "--gin_file=runs/prompt_finetune.gin",
      f"--gin.CLASS_LABELS={list(LABELS)}", f"--gin.MODEL_DIR='{folder / 'run'}'",
      f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}",
      f"--gin.INITIAL_CHECKPOINT_PATH='{folder / 'orbax'}'", f"--gin.TRAIN_STEPS={FROZEN_STEP + 1}",
      "--gin.BATCH_SIZE=4", "--gin.EVAL_PERIOD=None", "--gin.SAMPLED_VOCAB_SIZE=50",
      # AdamW with learning rate 0 (and no weight decay) leaves the prompt as initialised.
      "--gin.OPTIMIZER=@optim.adamw", "--gin.LEARNING_RATE=0.0"])
  prompt = result.trainable["encoder"]["prompt"]["prompt"]["prompt"]
  np.testing.assert_allclose(prompt[:2], _label_rows(table), rtol=1e-6)
  assert all(_is_table_row(row, table, 50) for row in prompt[2:])


@pytest.mark.parametrize("fmt", ["orbax", "hf"])
def test_initial_params_use_the_restored_table_and_the_task_vocabulary(workspace, fmt):
  folder, table = workspace
  from prompt_tuning import gin_utils
  from prompt_tuning.models import config as model_config
  from prompt_tuning.train import data
  gin_utils.parse_gin_config(["test/t5_1_1_tiny_prompt.gin", "prompts/from_class_labels.gin"],
                             [f"CLASS_LABELS={list(LABELS)}", "SAMPLED_VOCAB_SIZE=50"])
  prompt_config = api._prompt_config_from_gin()  # pylint: disable=protected-access
  run = model_setup.build_run_model(gin_utils.configured(model_config.T5Config)(), prompt_config)
  dataset = data.DatasetConfig(mixture_or_task_name=TASK,
                               task_feature_lengths={'inputs': 24, 'targets': 4}, split="train",
                               batch_size=4)
  vocabulary = model_setup.vocabulary_for_init(run.prompt_config, dataset)
  assert isinstance(vocabulary, seqio.ByteVocabulary)
  params = model_setup.initial_params(run, str(folder / fmt), vocabulary=vocabulary)
  prompt = np.asarray(params["encoder"]["prompt"]["prompt"]["prompt"])
  np.testing.assert_allclose(prompt[:2], _label_rows(table), rtol=1e-6)
  assert all(_is_table_row(row, table, 50) for row in prompt[2:])


def test_decoder_only_models_use_the_decoders_table():
  model = api.load_model(["test/decoder_only_tiny_prompt.gin", "prompts/from_class_labels.gin"],
                         bindings=[f"CLASS_LABELS={list(LABELS)}"], vocabulary=VOCAB, seed=2)
  table = np.asarray(model.params["decoder"]["token_embedder"]["embedding"])
  np.testing.assert_allclose(np.asarray(model.params["decoder"]["prompt"]["prompt"]["prompt"])[:2],
                             _label_rows(table), rtol=1e-6)


def test_sampled_vocab_init_from_an_explicit_embedding_file(workspace, tmp_path):
  _, table = workspace
  other = np.arange(32128 * 4, dtype=np.float32).reshape(32128, 4)
  np.save(tmp_path / "table.npy", other)
  model = api.load_model(["test/t5_1_1_tiny_prompt.gin", "prompts/from_sampled_vocab.gin"],
                         bindings=[f"EMBEDDING_FILE='{tmp_path / 'table.npy'}'",
                                   "SAMPLED_VOCAB_SIZE=10"])
  prompt = np.asarray(model.params["encoder"]["prompt"]["prompt"]["prompt"])
  assert all(_is_table_row(row, other, 10) for row in prompt)


def test_a_label_with_no_tokens_is_one_line_naming_it(workspace):
  folder, _ = workspace
  with pytest.raises(Exception) as caught:
    cli.execute(train_main._command, [
        "train", "--gin_file=test/t5_1_1_tiny_prompt.gin",
        "--gin_file=prompts/from_class_labels.gin", "--gin_file=runs/prompt_finetune.gin",
        "--gin.CLASS_LABELS=['positive', '']", f"--gin.MODEL_DIR='{folder / 'empty_label'}'",
        f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}",
        f"--gin.INITIAL_CHECKPOINT_PATH='{folder / 'orbax'}'",
        f"--gin.TRAIN_STEPS={FROZEN_STEP + 1}", "--gin.BATCH_SIZE=4"])
  message = cli.user_error_message(caught.value)
  assert message is not None and "\n" not in message
  assert "label ''" in message and "no tokens" in message


def test_unbound_initializers_wait_for_the_model():
  init = prompts.from_embedded_list(texts=LABELS)
  assert init.needs_context and "the model's" in repr(init)
  config = prompts.PromptConfig(length=3, initializer=init)
  assert prompts.needs_model_context(config)
  table = np.arange(300 * 2, dtype=np.float32).reshape(300, 2)
  bound = prompts.bind_model_context(config, prompts.ModelContext(table, VOCAB))
  assert not prompts.needs_model_context(bound)
  got = np.asarray(bound.initializer(np.zeros(2, np.uint32), (3, 2)))
  np.testing.assert_allclose(got[:2], _label_rows(table))
  with pytest.raises(prompts.PromptInitError, match="needs a vocabulary"):
    prompts.bind_model_context(config, prompts.ModelContext(table, None))
  with pytest.raises(prompts.PromptInitError, match="beyond the model's 10-row"):
    prompts.bind_model_context(config, prompts.ModelContext(table[:10], VOCAB)).initializer(
        np.zeros(2, np.uint32), (3, 2))
