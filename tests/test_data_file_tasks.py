"""Users' TSV / CSV / JSONL tasks, including the errors bad files give."""

from __future__ import annotations

import pytest
import seqio

from prompt_tuning.data import file_tasks
from prompt_tuning.data import metrics
from prompt_tuning.data import vocab

LABELS = ("negative", "positive")


def _examples(task, split):
  ds = task.get_dataset(None, split=split, shuffle=False,
                        try_in_mem_cache=False)
  return list(ds.as_numpy_iterator())


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_tsv_and_jsonl_task(tmp_path, t5_vocab_path):
  v = vocab.t5_vocabulary(t5_vocab_path)
  train = _write(tmp_path, "train.tsv",
                 "text\tlabel\tnote\nit is good\tpositive\tx\n\n"
                 "bad \"movie\"\t0\ty\n")
  dev = _write(tmp_path, "dev.jsonl",
               '{"text": "fine", "label": "positive"}\n'
               '{"text": "meh", "label": 0, "extra": [1]}\n')
  task = file_tasks.register_file_task(
      "test_file_sentiment", train_path=train, validation_path=dev,
      input_template="review: {text}", target_column="label",
      label_names=LABELS, metrics=("accuracy", "f1"), vocabulary=v)
  assert task.splits == ("train", "validation")
  out = _examples(task, "train")
  assert [(o["inputs_pretokenized"], o["targets_pretokenized"], o["label"],
           o["idx"]) for o in out] == [
               (b"review: it is good", b"positive", 1, 0),
               (b'review: bad "movie"', b"negative", 0, 1)]
  assert out[0]["inputs"].tolist() == v.encode("review: it is good") + [1]
  out = _examples(task, "validation")
  assert [(o["inputs_pretokenized"], o["label"]) for o in out] == [
      (b"review: fine", 1), (b"review: meh", 0)]
  assert task.postprocess_fn(b"positive", is_target=True) == 1
  assert task.postprocess_fn("neutral") == -1
  assert task.metric_fns == [metrics.accuracy, metrics.f1]
  assert file_tasks.file_task_label_names("test_file_sentiment") == LABELS
  # Re-registering replaces the task.
  file_tasks.register_file_task("test_file_sentiment", train_path=train,
                                input_template="{text}", label_names=LABELS,
                                vocabulary=v)
  assert seqio.get_mixture_or_task("test_file_sentiment").splits == ("train",)


def test_rank_classification_variant(tmp_path, t5_vocab_path):
  dev = _write(tmp_path, "dev.csv", 'text,label\n"fine, really",positive\n')
  file_tasks.register_file_task(
      "test_file_rank", validation_path=dev, input_template="{text}",
      label_names=LABELS, vocabulary=vocab.t5_vocabulary(t5_vocab_path))
  task = seqio.get_mixture_or_task("test_file_rank_rank_classification")
  out = _examples(task, "validation")
  assert [(o["inputs_pretokenized"], o["targets_pretokenized"],
           o["idx"].tolist(), bool(o["is_correct"])) for o in out] == [
               (b"fine, really", b"negative", [0, 0], False),
               (b"fine, really", b"positive", [0, 1], True)]
  targets = [task.postprocess_fn(o["targets_pretokenized"], example=o,
                                 is_target=True) for o in out]
  scores = [-3.0, -1.0]
  result = task.score_metric_fns[0](targets, scores)
  assert result["accuracy"] == pytest.approx(100.0)


def test_unlabeled_test_file_and_text_targets(tmp_path, t5_vocab_path):
  test = _write(tmp_path, "test.tsv", "question\nwhy?\n")
  train = _write(tmp_path, "train.jsonl",
                 '{"question": "who?", "answer": "me"}\n')
  task = file_tasks.register_file_task(
      "test_file_qa", train_path=train, test_path=test,
      input_template="q: {question}", target_column="answer",
      metrics=("exact_match",), vocabulary=vocab.t5_vocabulary(t5_vocab_path))
  assert [o["targets_pretokenized"] for o in _examples(task, "train")] == [
      b"me"]
  assert [o["targets_pretokenized"] for o in _examples(task, "test")] == [b""]
  assert task.postprocess_fn(b"me", is_target=True) == "me"


@pytest.mark.parametrize("name,text,kwargs,message", [
    ("missing.tsv", "text\tlabel\nhi\tpositive\n", {"input_template": "{body}"},
     "line 2, column 'body': input_template '{body}' uses this column"),
    ("ragged.tsv", "text\tlabel\nhi\tpositive\nyo\tpositive\textra\n", {},
     "line 3: expected 2 fields (text, label), got 3"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 1}\n', {},
     "line 2, column 15: invalid JSON: Expecting property name"),
    ("label.jsonl", '{"text": "a", "label": "positive"}\n'
     '{"text": "b", "label": "great"}\n', {},
     "line 2, column 'label': label 'great' is not one of label_names"),
    ("target.csv", "text,stars\nhi,5\n", {},
     "line 2, column 'label': the target column is missing"),
    ("empty.tsv", "", {}, "the file is empty"),
    ("data.txt", "text\n", {}, "cannot infer the format"),
])
def test_bad_files_name_file_line_and_column(tmp_path, name, text, kwargs,
                                             message):
  path = _write(tmp_path, name, text)
  args = {"input_template": "{text}", "label_names": LABELS,
          "vocabulary": vocab.sentencepiece_vocabulary("unused.model")}
  args.update(kwargs)
  with pytest.raises(file_tasks.FileTaskError) as error:
    file_tasks.register_file_task("test_file_bad", train_path=path, **args)
  assert str(error.value).startswith(path)
  assert message in str(error.value)
  assert isinstance(error.value, ValueError)


def test_other_errors(tmp_path):
  with pytest.raises(file_tasks.FileTaskError, match="no such file"):
    file_tasks.register_file_task("test_file_x",
                                  train_path=str(tmp_path / "none.tsv"))
  with pytest.raises(ValueError, match="at least one of train_path"):
    file_tasks.register_file_task("test_file_x")
  path = _write(tmp_path, "ok.tsv", "sentence\tlabel\nhi\tpositive\n")
  with pytest.raises(ValueError, match="Unknown metric name 'bleu'"):
    file_tasks.register_file_task("test_file_x", train_path=path,
                                  metrics=("bleu",))
  with pytest.raises(ValueError, match="positional field"):
    file_tasks.register_file_task("test_file_x", train_path=path,
                                  input_template="{0}")
  assert file_tasks.template_columns("a {x} b {y.z} {x}") == ["x", "y"]


@pytest.mark.parametrize("suffix,compress", [
    (".gz", __import__("gzip").compress), (".bz2", __import__("bz2").compress),
    (".xz", __import__("lzma").compress)])
def test_compressed_files_read_like_plain_ones(tmp_path, t5_vocab_path, suffix, compress):
  v = vocab.t5_vocabulary(t5_vocab_path)
  path = tmp_path / f"train.jsonl{suffix}"
  path.write_bytes(compress('{"text": "fine", "label": "positive"}\n'
                            '{"text": "b\\u00e4d", "label": 0}\n'.encode()))
  task = file_tasks.register_file_task("test_file_compressed", train_path=str(path),
                                       input_template="{text}", label_names=LABELS,
                                       vocabulary=v)
  assert [(o["inputs_pretokenized"], o["label"]) for o in _examples(task, "train")] == [
      (b"fine", 1), ("bäd".encode(), 0)]


def test_a_damaged_compressed_file_is_named(tmp_path):
  path = _write(tmp_path, "train.tsv.gz", "text\tlabel\nnot gzip\tpositive\n")
  with pytest.raises(file_tasks.FileTaskError, match="cannot decompress the .gz file"):
    file_tasks.register_file_task("test_file_bad_gz", train_path=path, label_names=LABELS,
                                  vocabulary=vocab.sentencepiece_vocabulary("unused.model"))
