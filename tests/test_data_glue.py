"""GLUE tasks: names, and exact text / tokens on TFDS mock data (offline)."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from prompt_tuning.data import examples
from prompt_tuning.data import glue
from prompt_tuning.data import vocab

LENGTHS = {"inputs": 128, "targets": 8}


@pytest.fixture
def test_vocab(t5_vocab_path):
  """The shared T5 vocabulary; GLUE registered with it under "test_"."""
  v = vocab.t5_vocabulary(t5_vocab_path)
  glue.register_glue_tasks(v, prefix="test_")
  return v


def _get(name, split):
  task = seqio.get_mixture_or_task(name)
  with tfds.testing.mock_data(num_examples=3,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = task.get_dataset(LENGTHS, split=split, shuffle=False,
                          try_in_mem_cache=False)
    return list(ds.as_numpy_iterator())


def _raw(tfds_name, split):
  source = seqio.TfdsDataSource(tfds_name=tfds_name)
  with tfds.testing.mock_data(num_examples=3,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    return list(source.get_dataset(split=split, shuffle=False)
                .as_numpy_iterator())


def test_original_task_names_are_registered():
  names = set(seqio.TaskRegistry.names())
  for config in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_matched",
                 "mnli_mismatched", "qnli", "rte", "wnli", "ax"):
    for version in ("v002", "v200"):
      for family in ("", "taskless_", "task_index_"):
        for suffix in ("", "_examples"):
          for model in ("", "mt5_"):
            assert f"{model}{family}glue_{config}_{version}{suffix}" in names
  assert "taskless_glue_sst2_v200_examples" in names  # sst2-demo.sh.
  mixture = seqio.get_mixture_or_task(
      "taskless_glue_mnli_and_dev_v200_examples")
  assert sorted(t.name for t in mixture.tasks) == [
      "taskless_glue_mnli_matched_v200_examples",
      "taskless_glue_mnli_mismatched_v200_examples",
      "taskless_glue_mnli_v200_examples"]
  proportional = seqio.get_mixture_or_task("glue_v002_proportional")
  assert proportional.get_rate(
      seqio.get_mixture_or_task("glue_sst2_v002")) == 67_349.
  assert seqio.get_mixture_or_task("glue_ax_v002").splits == ("test",)
  assert glue.glue_task_index()["sst2"] == 6
  assert glue.glue_task_index()["ax"] == glue.glue_task_index()["mnli"] == 1


def test_registration_is_idempotent():
  before = len(seqio.TaskRegistry.names())
  glue.register_all()
  assert len(seqio.TaskRegistry.names()) == before


def test_default_vocabulary_does_no_io():
  task = seqio.get_mixture_or_task("glue_sst2_v002")
  assert task.output_features["targets"].vocabulary.sentencepiece_model_file \
      == vocab.DEFAULT_T5_VOCAB_PATH
  assert task.output_features["inputs"].add_eos
  mt5 = seqio.get_mixture_or_task("mt5_glue_sst2_v002")
  assert mt5.output_features["inputs"].vocabulary.sentencepiece_model_file \
      == vocab.DEFAULT_MT5_VOCAB_PATH


def test_sst2_variants_on_mock_data(test_vocab):
  raw = _raw("glue/sst2:2.0.0", "validation")
  labels = ("negative", "positive")
  plain = _get("test_glue_sst2_v200", "validation")
  taskless = _get("test_taskless_glue_sst2_v200_examples", "validation")
  indexed = _get("test_task_index_glue_sst2_v200", "validation")
  assert len(raw) == len(plain) == len(taskless) == len(indexed) == 3
  for r, p, t, i in zip(raw, plain, taskless, indexed):
    sentence = r["sentence"].decode()
    assert p["inputs_pretokenized"].decode() == f"sst2 sentence: {sentence}"
    assert p["targets_pretokenized"].decode() == labels[r["label"]]
    assert p["idx"] == r["idx"]
    assert t["inputs_pretokenized"].decode() == f"sentence: {sentence}"
    expected = test_vocab.encode(f"sentence: {sentence}") + [1]
    assert t["inputs"].tolist() == expected
    # <extra_id_6> (sst2's task index) = 32100 - 7.
    assert i["inputs"].tolist() == [32093] + expected
    assert p["targets"].tolist() == test_vocab.encode(labels[r["label"]]) + [1]


def test_v002_reads_tfds_1_0_0_and_stsb_targets(test_vocab):
  del test_vocab
  raw = _raw("glue/stsb:1.0.0", "train")
  out = _get("test_glue_stsb_v002", "train")
  for r, o in zip(raw, out):
    assert o["inputs_pretokenized"].decode() == (
        f"stsb sentence1: {r['sentence1'].decode()} "
        f"sentence2: {r['sentence2'].decode()}")
    rounded = np.round(np.float32(r["label"]) * np.float32(5)) / np.float32(5)
    assert o["targets_pretokenized"].decode() == f"{rounded:.1f}"


def test_mnli_matched_and_ax_are_mnli(test_vocab):
  del test_vocab
  raw = _raw("glue/ax:2.0.0", "test")
  out = _get("test_taskless_glue_ax_v200", "test")
  names = ("entailment", "neutral", "contradiction")
  for r, o in zip(raw, out):
    assert o["inputs_pretokenized"].decode() == (
        f"hypothesis: {r['hypothesis'].decode()} "
        f"premise: {r['premise'].decode()}")
    assert o["targets_pretokenized"].decode() in names + ("<unk>",)
  out = _get("test_glue_mnli_matched_v200", "validation")
  assert all(o["inputs_pretokenized"].startswith(b"mnli hypothesis: ")
             for o in out)


def test_examples_variant_postprocesses_and_reports_examples(test_vocab):
  del test_vocab
  task = seqio.get_mixture_or_task("test_taskless_glue_sst2_v200_examples")
  example = {"inputs_pretokenized": b"sentence: good",
             "targets_pretokenized": b"positive"}
  target = task.postprocess_fn(b"positive", example=example, is_target=True)
  prediction = task.postprocess_fn("negative", example=example,
                                   is_target=False)
  assert target == 1
  assert prediction == {"prediction": 0, "prediction_text": "negative",
                        "inputs_pretokenized": "sentence: good",
                        "targets_pretokenized": "positive"}
  results = {}
  for metric in task.metric_fns:
    results.update(metric([1, 0], [prediction, {"prediction": 0}]))
  assert results["accuracy"] == pytest.approx(50.0)
  text = results["sst2_examples"]
  assert isinstance(text, seqio.metrics.Text)
  assert text.textdata == examples.format_examples(
      [1, 0], [prediction, {"prediction": 0}])
  assert "inputs_pretokenized: sentence: good" in text.textdata
  plain = seqio.get_mixture_or_task("test_taskless_glue_sst2_v200")
  assert plain.postprocess_fn("negative", example=example) == 0
