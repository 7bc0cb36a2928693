"""Prompt templates through the data pipeline and the commands: file tasks, converters, train."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import seqio

from conftest import write_sentiment_tsvs
from prompt_tuning import api, cli, templates
from prompt_tuning.data import feature_converters, file_tasks, template_inputs
from prompt_tuning.train import __main__ as train_main
from prompt_tuning import infer as infer_main
from prompt_tuning.checkpoints import orbax as orbax_format
from tiny_llms import write_tiny_llama

LENGTHS = {"inputs": 12, "targets": 4}


def _rows(ds, *names):
  return [{n: ex[n] for n in names} for ex in ds.as_numpy_iterator()]


def test_file_task_tokenizes_pieces_apart_and_converters_shift_slots(tmp_path):
  (tmp_path / "dev.tsv").write_text("text\tlabel\nab\tpositive\nvery long text here\tnegative\n")
  file_tasks.register_file_task(
      "template_pieces", validation_path=str(tmp_path / "dev.tsv"),
      input_template="[P:2] {text} [P:3] It", label_names=("negative", "positive"),
      vocabulary=seqio.ByteVocabulary())
  task = seqio.get_mixture_or_task("template_pieces")
  examples = _rows(task.get_dataset(LENGTHS, split="validation", shuffle=False),
                   "inputs", "prompt_slots", "inputs_pretokenized")
  vocab = seqio.ByteVocabulary()
  assert list(examples[0]["inputs"]) == [*vocab.encode("ab"), *vocab.encode("It"), 1]
  assert list(examples[0]["prompt_slots"]) == [templates.BEFORE_ALL, 2]
  assert examples[0]["inputs_pretokenized"] == b"[P:2] ab [P:3] It"
  # Trimmed to 12 tokens (11 + EOS): the slot stays inside the text, before the EOS.
  assert len(examples[1]["inputs"]) == 12 and list(examples[1]["prompt_slots"]) == [-1, 11]
  ds = task.get_dataset(LENGTHS, split="validation", shuffle=False)
  encdec = _rows(feature_converters.PromptEncDecFeatureConverter(5)(ds, LENGTHS), "prompt_slots")
  prefix_lm = _rows(feature_converters.PromptDecoderFeatureConverter(5)(ds, LENGTHS),
                    "prompt_slots", "decoder_input_tokens")
  causal = _rows(feature_converters.PromptCausalLMFeatureConverter(5, bos_id=7)(ds, LENGTHS),
                 "prompt_slots", "decoder_input_tokens")
  assert [list(e["prompt_slots"]) for e in encdec] == [[0, 2], [0, 11]]
  assert [list(e["prompt_slots"]) for e in prefix_lm] == [[0, 3], [0, 12]]  # after start token.
  assert [list(e["prompt_slots"]) for e in causal] == [[0, 3], [0, 12]]     # after BOS.
  assert causal[0]["decoder_input_tokens"][3] == vocab.encode("It")[0]
  # Rank classification keeps the pieces: every candidate carries the slots.
  ranked = _rows(seqio.get_mixture_or_task("template_pieces_rank_classification").get_dataset(
      LENGTHS, split="validation", shuffle=False), "prompt_slots")
  assert [list(e["prompt_slots"]) for e in ranked] == [[-1, 2]] * 2 + [[-1, 11]] * 2
  # Batches without a template are converted exactly as before (no prompt_slots feature).
  plain = feature_converters.PromptEncDecFeatureConverter(5)(
      task.get_dataset(LENGTHS, split="validation", shuffle=False).map(
          lambda ex: {k: v for k, v in ex.items() if k != "prompt_slots"}), LENGTHS)
  assert "prompt_slots" not in plain.element_spec


def test_format_template_fills_pieces_from_fields():
  import tensorflow as tf
  ds = tf.data.Dataset.from_tensors({"sentence": tf.constant("a film"), "n": tf.constant(3)})
  out = next(template_inputs.format_template(ds, "[P:1] {sentence} ({n}) [P:2] It was")
             .as_numpy_iterator())
  assert list(out["inputs_pieces"]) == [b"", b"a film (3)", b"It was"]
  assert out["inputs"] == b"[P:1] a film (3) [P:2] It was"


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
  folder = tmp_path_factory.mktemp("templates_cli")
  model_dir = write_tiny_llama(folder / "llama", seed=2)
  facts = "subject\tobject\n" + "".join(f"city {i} is in\tland {i % 3}\n" for i in range(16))
  (folder / "facts.tsv").write_text(facts)
  return folder, model_dir


@pytest.mark.slow  # Default-suite time; related cases stay in the default suite.
def test_lama_cloze_template_from_the_command_line_trains_and_infers(llm, tmp_path):
  """INPUT_TEMPLATE='[P:2] {subject} [P:2]' on a Llama-family model: the model takes the
  template (PROMPT_TEMPLATE follows INPUT_TEMPLATE), trains, and its predictions equal
  `generate` on `encode_template`'s rows."""
  folder, model_dir = llm
  common = [f"--gin.INITIAL_CHECKPOINT_PATH='{model_dir}'",
            f"--gin.VALIDATION_FILE='{folder / 'facts.tsv'}'",
            "--gin.INPUT_TEMPLATE='[P:2] {subject} [P:2]'", "--gin.TARGET_COLUMN='object'",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.BATCH_SIZE=4"]
  result = cli.execute(train_main._command, [
      "train", "--gin_file=architectures/prompt_tuning.gin", "--gin_file=runs/prompt_finetune.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'", f"--gin.TRAIN_FILE='{folder / 'facts.tsv'}'",
      "--gin.TRAIN_STEPS=2", "--gin.EVAL_PERIOD=2", *common])
  assert result.trainable["decoder"]["prompt"]["prompt"]["prompt"].shape == (4, 32)
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    losses = [json.loads(line)["loss"] for line in f if '"train"' in line]
  assert losses and all(np.isfinite(losses))
  written = cli.execute(infer_main._command, [
      "infer", "--gin_file=architectures/prompt_tuning.gin", "--gin_file=runs/prompt_infer.gin",
      f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'infer'}'", "--gin.PROMPT_FILE=None",
      f"--gin.TRAINED_CHECKPOINT_PATH='{tmp_path / 'run'}'", "--gin.INFER_EXAMPLES=4", *common])
  records = [json.loads(line) for line in open(written["file_task"], encoding="utf-8")]
  assert records[0]["inputs"] == "[P:2] city 0 is in [P:2]"
  model = api.load_model(["architectures/prompt_tuning.gin"],
                         ["PROMPT_TEMPLATE='[P:2] {subject} [P:2]'"], checkpoint=model_dir)
  model.params = api.replace_prompt(model.params,
                                    result.trainable["decoder"]["prompt"]["prompt"]["prompt"])
  tokens, mask, slots = model.encode_template([{"subject": f"city {i} is in"} for i in range(4)])
  # The command decodes up to the batch length (inputs + targets).
  expected = model.decode(model.generate(tokens, 20, attention_mask=mask, prompt_slots=slots))
  assert [r["prediction"] for r in records] == expected


def test_gin_prompt_template_trains_t5_on_a_template_task(tmp_path):
  """PROMPT_TEMPLATE in gin + a task of one's own whose inputs come from the same template."""
  train, dev = write_sentiment_tsvs(tmp_path)
  template = "[P:2] {text} [P:4] It was"  # P = 6, not the gin file's PROMPT_LENGTH.
  file_tasks.register_file_task("template_t5_sentiment", train_path=train, validation_path=dev,
                                input_template=template, label_names=("negative", "positive"),
                                vocabulary=seqio.ByteVocabulary())
  orbax_format.save_params(tmp_path / "frozen", api.load_model(["test/t5_1_1_tiny.gin"]).params, 3)
  result = cli.execute(train_main._command, [
      "train", "--gin_file=test/t5_1_1_tiny_prompt.gin", "--gin_file=runs/prompt_finetune.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'", f"--gin.PROMPT_TEMPLATE='{template}'",
      "--gin.MIXTURE_OR_TASK_NAME='template_t5_sentiment'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
      f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path / 'frozen'}'", "--gin.BATCH_SIZE=4",
      "--gin.TRAIN_STEPS=5", "--gin.EVAL_PERIOD=2"])  # Steps 4 and 5 (the checkpoint's is 3).
  assert result.trainable["encoder"]["prompt"]["prompt"]["prompt"].shape == (6, 4)
  assert set(result.eval_metrics[max(result.eval_metrics)]) == {"template_t5_sentiment"}


def test_mismatched_templates_are_one_clear_error(llm, tmp_path):
  folder, model_dir = llm
  with pytest.raises(cli.UsageError, match="same \\[P:n\\] slots"):
    cli.execute(train_main._command, [
        "train", "--gin_file=architectures/prompt_tuning.gin",
        "--gin_file=runs/prompt_finetune.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
        f"--gin.TRAIN_FILE='{folder / 'facts.tsv'}'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{model_dir}'",
        "--gin.INPUT_TEMPLATE='[P:2] {subject} [P:2]'", "--gin.PROMPT_TEMPLATE='[P:4] {subject}'",
        "--gin.TARGET_COLUMN='object'", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
        "--gin.TRAIN_STEPS=1"])
  assert os.path.exists(folder)
