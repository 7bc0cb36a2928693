"""SuperGLUE tasks: names, and exact text on TFDS mock / hand-written data."""

from __future__ import annotations

import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import super_glue
from prompt_tuning.data import vocab

LENGTHS = {"inputs": 256, "targets": 32}


@pytest.fixture
def test_vocab(t5_vocab_path):
  """The shared T5 vocabulary; SuperGLUE registered with it under "test_"."""
  v = vocab.t5_vocabulary(t5_vocab_path)
  super_glue.register_super_glue_tasks(v, prefix="test_")
  return v


def _get(name, split, rows=None):
  """A task's examples on random mock data, or on `rows` when given."""
  kwargs = {"num_examples": 3, "policy": tfds.testing.MockPolicy.USE_CODE}
  if rows is not None:

    def as_dataset(builder, *args, **unused_kwargs):
      del args
      return tf.data.Dataset.from_generator(
          lambda: iter(rows), output_types=builder.info.features.dtype,
          output_shapes=builder.info.features.shape)

    kwargs = {"as_dataset_fn": as_dataset}
  task = seqio.get_mixture_or_task(name)
  with tfds.testing.mock_data(**kwargs):
    return list(task.get_dataset(LENGTHS, split=split, shuffle=False,
                                 try_in_mem_cache=False).as_numpy_iterator())


def _raw(config, split):
  source = seqio.TfdsDataSource(tfds_name=f"super_glue/{config}:1.0.2")
  with tfds.testing.mock_data(num_examples=3,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    return list(source.get_dataset(split=split, shuffle=False)
                .as_numpy_iterator())


def test_original_task_names_are_registered():
  names = set(seqio.TaskRegistry.names())
  for base in ["super_glue_boolq_v102", "super_glue_cb_v102",
               "super_glue_copa_v102", "super_glue_multirc_v102",
               "super_glue_record_v102", "super_glue_rte_v102",
               "super_glue_wic_v102", "super_glue_axb_v102",
               "super_glue_axg_v102", "super_glue_wsc_v102",
               "super_glue_wsc.fixed_v102", "super_glue_wsc_v102_simple_train",
               "super_glue_wsc_v102_simple_eval", "dpr_v001_simple"]:
    for family in ("", "taskless_", "task_index_"):
      for suffix in ("", "_examples"):
        for model in ("", "mt5_"):
          assert f"{model}{family}{base}{suffix}" in names
  mixtures = set(seqio.MixtureRegistry.names())
  for name in ("super_glue_v102_proportional",
               "task_index_super_glue_v102_examples_proportional",
               "task_index_super_glue_with_dpr_v102_examples_proportional",
               "taskless_super_glue_wsc_and_dev_v102_simple_examples"):
    assert name in mixtures
  index = super_glue.super_glue_task_index()
  assert (index["boolq"], index["rte"], index["axb"], index["wsc"],
          index["wsc.fixed"]) == (0, 5, 5, 7, 7)
  assert seqio.get_mixture_or_task("super_glue_axg_v102").splits == ("test",)
  assert seqio.get_mixture_or_task(
      "super_glue_wsc_v102_simple_train").splits == ("train",)


def test_boolq_variants_on_mock_data(test_vocab):
  raw = _raw("boolq", "validation")
  plain = _get("test_super_glue_boolq_v102", "validation")
  indexed = _get("test_task_index_super_glue_boolq_v102_examples",
                 "validation")
  assert len(plain) == len(indexed) == 3
  for r, p, i in zip(raw, plain, indexed):
    text = (f"passage: {r['passage'].decode()} "
            f"question: {r['question'].decode()}")
    assert p["inputs_pretokenized"].decode() == f"boolq {text}"
    assert p["targets_pretokenized"].decode() == ("False", "True")[r["label"]]
    # <extra_id_0>, boolq's task index, is the last id (32099).
    assert i["inputs"].tolist() == [32099] + test_vocab.encode(text) + [1]


def test_record_multirc_axb_copa_on_mock_data(test_vocab):
  del test_vocab
  raw = _raw("record", "train")
  out = _get("test_super_glue_record_v102", "train")
  assert len(out) == sum(max(1, len(r["answers"])) for r in raw)
  first = raw[0]
  assert out[0]["inputs_pretokenized"].decode() == (
      f"record query: {first['query'].decode()} entities: "
      f"{', '.join(e.decode() for e in first['entities'])} passage: "
      f"{first['passage'].decode()}")
  assert out[0]["targets_pretokenized"] == first["answers"][0]

  raw = _raw("multirc", "validation")
  out = _get("test_taskless_super_glue_multirc_v102", "validation")
  for r, o in zip(raw, out):
    assert o["inputs_pretokenized"].decode() == (
        f"question: {r['question'].decode()} answer: {r['answer'].decode()} "
        f"paragraph: {r['paragraph'].decode()}")
    assert o["idx/question"] == r["idx"]["question"]

  raw = _raw("axb", "test")
  out = _get("test_super_glue_axb_v102", "test")
  for r, o in zip(raw, out):
    assert o["inputs_pretokenized"].decode() == (
        f"rte hypothesis: {r['sentence2'].decode()} "
        f"premise: {r['sentence1'].decode()}")

  out = _get("test_super_glue_copa_v102", "train")
  assert all(o["inputs_pretokenized"].startswith(b"copa choice1: ") and
             o["targets_pretokenized"] in (b"choice1", b"choice2")
             for o in out)


WSC_ROWS = [
    {"text": "Bob told Tom he won .", "span1_index": 0, "span1_text": "Bob",
     "span2_index": 3, "span2_text": "he", "label": 1, "idx": 0},
    {"text": "Bob told Tom he won .", "span1_index": 2, "span1_text": "Tom",
     "span2_index": 3, "span2_text": "he", "label": 0, "idx": 1},
]


def test_wsc_tasks_on_hand_written_rows(test_vocab):
  del test_vocab
  train = _get("test_taskless_super_glue_wsc_v102_simple_train", "train",
               WSC_ROWS)
  assert [(o["inputs_pretokenized"], o["targets_pretokenized"])
          for o in train] == [(b"Bob told Tom *he* won .", b"Bob")]
  evaluation = _get("test_super_glue_wsc_v102_simple_eval", "validation",
                    WSC_ROWS)
  assert [(o["inputs_pretokenized"], o["targets_pretokenized"])
          for o in evaluation] == [(b"wsc: Bob told Tom *he* won .", b"Bob"),
                                   (b"wsc: Bob told Tom *he* won .", b"Tom")]
  classification = _get("test_super_glue_wsc.fixed_v102", "validation",
                        WSC_ROWS)
  assert [(o["inputs_pretokenized"], o["targets_pretokenized"])
          for o in classification] == [
              (b"wsc text: * Bob * told Tom # he # won .", b"True"),
              (b"wsc text: Bob told * Tom * # he # won .", b"False")]


def test_dpr_on_hand_written_rows(test_vocab):
  del test_vocab
  rows = [{"sentence": "Bob asked Tom if he can lend some money.",
           "pronoun": "he", "candidates": ["Bob", "Tom"], "label": 1}]
  out = _get("test_task_index_dpr_v001_simple", "train", rows)
  assert out[0]["inputs_pretokenized"] == (
      b"Bob asked Tom if *he* can lend some money.")
  assert out[0]["targets_pretokenized"] == b"Tom"
  assert out[0]["inputs"][0] == 32100 - 8  # <extra_id_7>: wsc's index.
