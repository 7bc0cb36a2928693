"""seqio tasks from users' own TSV / CSV / JSONL files.

One call, bindable from gin, registers a task:

  register_file_task("my_sentiment", train_path="train.tsv",
                     validation_path="dev.tsv",
                     input_template="review: {text}", target_column="label",
                     label_names=("negative", "positive"))

TSV / CSV files have a header row; JSONL files hold one JSON object a line.
Each row becomes `{"inputs": input_template.format(**row), "targets": <target
column>, "idx": <row number>}` plus, with `label_names`, `"label"`: the class
id (a target may be the label text or its integer id). With `label_names` a
`<name>_rank_classification` scoring task is also registered. Files are read
and checked when the task is registered; problems raise `FileTaskError`
naming the file, line and column.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import lzma
import functools
import io
import json
import os
import string
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning import templates
from prompt_tuning.data import metrics as metrics_lib
from prompt_tuning.data import postprocessors
from prompt_tuning.data import rank_classification
from prompt_tuning.data import registry
from prompt_tuning.data import template_inputs
from prompt_tuning.data import vocab as vocab_lib

FORMATS = ("tsv", "csv", "jsonl")
_EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl",
               ".json": "jsonl"}
# Compressed files are read whole; the extension before the compression suffix names the format.
_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}
_FLOAT_METRICS = ("pearson", "spearman")
RANK_CLASSIFICATION_SUFFIX = "_rank_classification"

_LABEL_NAMES: dict[str, tuple[str, ...] | None] = {}


class FileTaskError(ValueError):
  """A problem in a task's data file, located by file, line and column."""

  def __init__(self, path: str, line: int | None, column: str | int | None,
               problem: str):
    where = [str(path)]
    if line is not None:
      where.append(f"line {line}")
    if column is not None:
      where.append(f"column {column!r}" if isinstance(column, str)
                   else f"column {column}")
    super().__init__(f"{', '.join(where)}: {problem}")
    self.path, self.line, self.column, self.problem = (
        str(path), line, column, problem)


def infer_format(path: str, file_format: str | None = None) -> str:
  """`file_format` if given, else the format its extension names."""
  if file_format is not None:
    if file_format not in FORMATS:
      raise FileTaskError(path, None, None,
                          f"unknown file_format {file_format!r}; use one of "
                          f"{FORMATS}")
    return file_format
  stem, extension = os.path.splitext(str(path))
  if extension.lower() in _DECOMPRESSORS:
    extension = os.path.splitext(stem)[1]
  extension = extension.lower()
  if extension not in _EXTENSIONS:
    raise FileTaskError(
        path, None, None,
        f"cannot infer the format from the extension {extension!r}; name the "
        f"file .tsv, .csv or .jsonl (optionally .gz / .bz2 / .xz) or pass file_format (one of "
        f"{FORMATS})")
  return _EXTENSIONS[extension]


def template_columns(template: str) -> list[str]:
  """The column names `template` refers to ("q: {question}" -> ["question"])."""
  columns = []
  for _, field, _, _ in string.Formatter().parse(template):
    if field is None:
      continue
    column = field.split(".")[0].split("[")[0]
    if not column or column.isdigit():
      raise ValueError(
          f"input_template {template!r} has a positional field {{{field}}}; "
          "name a column instead, e.g. {sentence}.")
    if column not in columns:
      columns.append(column)
  return columns


def _read_delimited(path: str, text: str, delimiter: str
                    ) -> Iterator[tuple[int, dict[str, str]]]:
  """(line number, row) of a TSV / CSV text with a header row."""
  quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                      quoting=quoting)
  header = None
  try:
    for row in reader:
      if not row or row == [""]:
        continue
      if header is None:
        header = row
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
          raise FileTaskError(path, reader.line_num, repeated[0],
                              "the header names this column twice")
        continue
      if len(row) != len(header):
        raise FileTaskError(
            path, reader.line_num, None,
            f"expected {len(header)} fields ({', '.join(header)}), got "
            f"{len(row)}; check the delimiter and quoting of this row")
      yield reader.line_num, dict(zip(header, row))
  except csv.Error as e:
    raise FileTaskError(path, reader.line_num, None, f"bad CSV: {e}") from e
  if header is None:
    raise FileTaskError(path, None, None, "the file is empty; it needs a "
                        "header row and at least one example")


def _read_jsonl(path: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) of each non-blank line of a JSONL text."""
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise FileTaskError(path, number, e.colno,
                          f"invalid JSON: {e.msg}") from e
    if not isinstance(row, dict):
      raise FileTaskError(path, number, None,
                          f"expected a JSON object, got {type(row).__name__}")
    yield number, row


def read_rows(path: str, file_format: str | None = None
              ) -> list[tuple[int, dict[str, Any]]]:
  """(line number, row) pairs of a TSV / CSV / JSONL file."""
  path = os.fspath(path)
  file_format = infer_format(path, file_format)
  if not tf.io.gfile.exists(path):
    raise FileTaskError(path, None, None, "no such file")
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read()
  raw = _decompressed(path, raw)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    raise FileTaskError(
        path, line, None,
        f"byte {raw[e.start:e.start + 1]!r} at character {column} is not UTF-8 text ({e.reason}): "
        "save the file as UTF-8") from e
  if file_format == "jsonl":
    rows = list(_read_jsonl(path, text))
  else:
    rows = list(_read_delimited(path, text,
                                "\t" if file_format == "tsv" else ","))
  if not rows:
    raise FileTaskError(path, None, None, "the file has no examples")
  return rows


def _decompressed(path: str, raw: bytes) -> bytes:
  """`raw` decompressed when `path` ends in .gz / .bz2 / .xz."""
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in _DECOMPRESSORS:
    return raw
  try:
    return _DECOMPRESSORS[suffix](raw)
  except (OSError, EOFError, lzma.LZMAError) as e:
    raise FileTaskError(path, None, None,
                        f"cannot decompress the {suffix} file ({e}): it is damaged or not "
                        f"{suffix}-compressed; compress it again or rename it") from e


def _label_id(path: str, line: int, column: str, value: Any,
              label_names: Sequence[str]) -> int:
  """The class id of a target given as a label text or an integer id."""
  text = str(value)
  if text in label_names:
    return list(label_names).index(text)
  if isinstance(value, int) or text.strip().lstrip("-").isdigit():
    index = int(text)
    if 0 <= index < len(label_names):
      return index
  raise FileTaskError(
      path, line, column,
      f"label {value!r} is not one of label_names {list(label_names)} (nor "
      f"an id 0..{len(label_names) - 1}); fix the row or label_names")


def load_examples(path: str,
                  input_template: str,
                  target_column: str,
                  label_names: Sequence[str] | None = None,
                  file_format: str | None = None,
                  require_target: bool = True) -> dict[str, np.ndarray]:
  """Columns `inputs`, `targets`, `idx` (and `label`) of a file's examples.

  A missing target column is allowed when `require_target` is False (an
  unlabeled test file): targets are "" and labels -1.
  """
  columns = template_columns(input_template)
  template = templates.parse_template(input_template) if templates.has_slots(
      input_template) else None
  inputs, targets, labels, pieces = [], [], [], []
  for line, row in read_rows(path, file_format):
    for column in columns:
      if column not in row:
        raise FileTaskError(path, line, column,
                            f"input_template {input_template!r} uses this "
                            f"column but the row has only {sorted(row)}")
    if target_column not in row and require_target:
      raise FileTaskError(path, line, target_column,
                          f"the target column is missing (the row has "
                          f"{sorted(row)}); set target_column")
    if template is None:
      inputs.append(input_template.format(**row))
    else:
      inputs.append(template.render(row))
      pieces.append(template.render_pieces(row))
    target = row.get(target_column)
    if target is None:
      targets.append("")
      labels.append(-1)
    elif label_names is None:
      targets.append(str(target))
    else:
      labels.append(_label_id(path, line, target_column, target, label_names))
      targets.append(label_names[labels[-1]])
  out = {"inputs": np.array(inputs, dtype=object),
         "targets": np.array(targets, dtype=object),
         "idx": np.arange(len(inputs), dtype=np.int32)}
  if label_names is not None:
    out["label"] = np.array(labels, dtype=np.int64)
  if template is not None:
    out[template_inputs.PIECES] = np.array(pieces, dtype=object)
  return out


def _dataset_fn(examples: Mapping[str, Mapping[str, np.ndarray]],
                split: str, shuffle_files: bool = False,
                seed: int | None = None) -> tf.data.Dataset:
  del shuffle_files, seed  # One file a split; seqio shuffles examples.
  columns = examples[split]
  return tf.data.Dataset.from_tensor_slices(
      {k: tf.constant(v.tolist() if v.dtype == object else v)
       for k, v in columns.items()})


def _text(output: Any, example: Mapping[str, Any] | None = None,
          is_target: bool = False) -> str:
  """Decoded text, unchanged otherwise (the postprocessor of text metrics)."""
  del example, is_target
  return postprocessors.as_text(output)


def _choose_postprocessor(metric_names: Sequence[str],
                          label_names: Sequence[str] | None) -> Callable:
  if label_names is not None:
    return functools.partial(postprocessors.string_label_to_class_id,
                             label_classes=tuple(label_names))
  if metric_names and all(m in _FLOAT_METRICS for m in metric_names):
    return postprocessors.string_to_float
  if "squad" in metric_names:
    return postprocessors.qa
  return _text


def register_file_task(
    name: str,
    train_path: str | None = None,
    validation_path: str | None = None,
    test_path: str | None = None,
    input_template: str = "sentence: {sentence}",
    target_column: str = "label",
    label_names: Sequence[str] | None = None,
    metrics: Sequence[str | Callable[..., Any]] = ("accuracy",),
    file_format: str | None = None,
    vocabulary: seqio.Vocabulary | None = None,
    postprocess_fn: Callable[..., Any] | None = None,
    target_template: str | None = None,
    add_inputs_eos: bool = True) -> seqio.Task:
  """Registers (or replaces) the seqio Task `name` over the given files.

  Args:
    name: the task name (use it as MIXTURE_OR_TASK_NAME).
    train_path, validation_path, test_path: the split files (at least one).
    input_template: `str.format` template over the columns, e.g.
      "premise: {premise} hypothesis: {hypothesis}". It may hold prompt slots
      `[P:n]` (`prompt_tuning.templates`): the text pieces between them are then
      tokenized separately and the examples carry `prompt_slots` for a model built
      with the same PROMPT_TEMPLATE.
    target_column: the column holding the target text / label.
    label_names: class names; targets may be these or their ids. Enables
      class-label prompt initialization (see `file_task_label_names`) and the
      `<name>_rank_classification` task.
    metrics: names from `metrics.METRICS_BY_NAME` or metric functions.
    file_format: "tsv", "csv" or "jsonl"; inferred from extensions if None.
    vocabulary: T5's when None.
    postprocess_fn: overrides the postprocessor chosen from the metrics
      (class ids with label_names, floats for pearson / spearman only, answer
      lists for squad, decoded text otherwise).
    target_template: how a label becomes the target text the model sees, e.g.
      " {label}" (byte-level BPE models read a word after a space as one
      token); None: the label itself. Predictions are matched to labels with
      surrounding spaces ignored.
    add_inputs_eos: append EOS to the inputs (T5: yes; a decoder-only LLM
      reads inputs and targets as one text, so no).

  Returns:
    The registered task.
  """
  paths = {"train": train_path, "validation": validation_path,
           "test": test_path}
  paths = {split: os.fspath(p) for split, p in paths.items() if p is not None}
  if not paths:
    raise ValueError(f"register_file_task({name!r}) needs at least one of "
                     "train_path, validation_path, test_path.")
  label_names = None if label_names is None else tuple(label_names)
  examples = {
      split: load_examples(path, input_template, target_column, label_names,
                           file_format, require_target=split != "test")
      for split, path in paths.items()}
  label_texts = label_names
  if target_template is not None:
    _check_target_template(target_template)
    for columns in examples.values():
      columns["targets"] = np.array(
          [target_template.format(label=t) if t else t for t in columns["targets"]],
          dtype=object)
    if label_names is not None:
      label_texts = tuple(target_template.format(label=n) for n in label_names)
  metric_names = [m for m in metrics if isinstance(m, str)]
  metric_fns = [metrics_lib.METRICS_BY_NAME[m] if isinstance(m, str) else m
                for m in metrics]
  if "squad" in metric_names:
    for columns in examples.values():
      columns["answers"] = columns["targets"].reshape(-1, 1)
  if postprocess_fn is None:
    postprocess_fn = _choose_postprocessor(metric_names, label_texts)
  output_features = vocab_lib.t5_output_features(vocabulary, add_inputs_eos=add_inputs_eos)
  source = seqio.FunctionDataSource(
      functools.partial(_dataset_fn, examples), splits=list(examples))
  tail = [seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
          seqio.preprocessors.append_eos_after_trim]
  passthrough = None
  if templates.has_slots(input_template):  # Pieces tokenized apart; slots kept in the text.
    tail = [functools.partial(template_inputs.tokenize_template, template=input_template),
            seqio.CacheDatasetPlaceholder(), seqio.preprocessors.append_eos_after_trim,
            template_inputs.trim_prompt_slots]
    passthrough = [template_inputs.PIECES]
  task = registry.add_task(name, source=source, preprocessors=tail,
                           output_features=output_features,
                           postprocess_fn=postprocess_fn,
                           metric_fns=metric_fns)
  _LABEL_NAMES[name] = label_texts
  if label_names is not None:
    registry.add_task(
        name + RANK_CLASSIFICATION_SUFFIX, source=source,
        preprocessors=[functools.partial(
            rank_classification.rank_classification_from_labels,
            label_texts=label_texts, mode="eval",
            passthrough_feature_keys=passthrough)] + tail,
        output_features=output_features,
        postprocess_fn=rank_classification.rank_classification_postprocessor,
        metric_fns=[functools.partial(
            rank_classification.rank_classification_metric,
            num_classes=len(label_names))])
  return task


def _check_target_template(template: str) -> None:
  fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
  if fields != ["label"]:
    raise FileTaskError(template, None, None,
                        "target_template must use {label} exactly once, e.g. ' {label}'")


def file_task_label_names(name: str) -> tuple[str, ...] | None:
  """The label texts a file task's targets use (its label_names, through target_template;
  None: none given)."""
  if name not in _LABEL_NAMES:
    raise ValueError(f"{name!r} is not a registered file task; known: "
                     f"{sorted(_LABEL_NAMES)}.")
  return _LABEL_NAMES[name]


@dataclasses.dataclass(frozen=True)
class FileRoute:
  """A task made from files named on the command line (TRAIN_FILE, VALIDATION_FILE, ...).

  `label_names` (CLASS_LABELS) makes it a classification task, also registered for rank
  classification (`<name>_rank_classification`); `target_template` None picks the model
  vocabulary's natural continuation (`default_target_template`).
  """

  train_file: str | None = None
  validation_file: str | None = None
  test_file: str | None = None
  input_template: str = "{text}"
  target_column: str = "label"
  label_names: tuple[str, ...] | None = None
  target_template: str | None = None
  file_format: str | None = None

  @property
  def has_files(self) -> bool:
    return any((self.train_file, self.validation_file, self.test_file))


def default_target_template(vocabulary: seqio.Vocabulary) -> str:
  """" {label}" when the vocabulary reads a word after a space as its own space-prefixed token
  (byte-level BPE: GPT-2, Llama 3, SmolLM2, Qwen2), else "{label}" (SentencePiece adds the
  word-start marker itself)."""
  spaced = list(vocabulary.encode(" b"))
  in_context = list(vocabulary.encode("a b"))
  if spaced and spaced != list(vocabulary.encode("b")) and \
      in_context == list(vocabulary.encode("a")) + spaced:
    return " {label}"
  return "{label}"


def register_route(name: str, route: FileRoute, vocabulary: seqio.Vocabulary,
                   add_inputs_eos: bool = True) -> tuple[str, str | None]:
  """Registers the route's task (and rank-classification task) over `vocabulary`; returns
  (task name, rank-classification task name or None)."""
  template = route.target_template
  if template is None:
    template = default_target_template(vocabulary) if route.label_names else None
  register_file_task(
      name, train_path=route.train_file, validation_path=route.validation_file,
      test_path=route.test_file, input_template=route.input_template,
      target_column=route.target_column, label_names=route.label_names,
      file_format=route.file_format, vocabulary=vocabulary, target_template=template,
      add_inputs_eos=add_inputs_eos)
  return name, (name + RANK_CLASSIFICATION_SUFFIX if route.label_names else None)
