"""seqio postprocessors: decoded model outputs and targets -> metric inputs.

Each is `fn(output, example=None, is_target=False)`: `output` is the decoded
string (str or bytes), `example` the full numpy example (strings as bytes), and
`is_target` says whether `output` is the reference rather than a prediction.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# Words dropped before comparing a WSC prediction with the referent.
_WSC_DETERMINERS = frozenset({
    "a", "an", "few", "her", "his", "each", "every", "many", "much", "my",
    "our", "some", "that", "the", "their", "these", "this", "those", "which",
    "whose", "your"
})


def as_text(value: Any) -> str:
  """A str from str, bytes or a 0-d numpy string array."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return str(value)


def _require(example: Mapping[str, Any] | None, key: str, caller: str) -> Any:
  """example[key], or an error saying the target needs that feature."""
  if example is None or key not in example:
    have = "no example" if example is None else f"keys {sorted(example)}"
    raise ValueError(
        f"{caller} needs the example feature {key!r} to build a target, got "
        f"{have}; keep {key!r} in the task's preprocessed examples.")
  return example[key]


def _answer_list(example: Mapping[str, Any] | None, caller: str) -> list[str]:
  """All strings of example["answers"], decoded."""
  answers = _require(example, "answers", caller)
  return [as_text(a) for a in np.asarray(answers, dtype=object).reshape(-1)]


def string_label_to_class_id(output: Any,
                             label_classes: Sequence[Any],
                             default: int = -1,
                             example: Mapping[str, Any] | None = None,
                             is_target: bool = False) -> int:
  """Index of the output string in `label_classes`, or `default` if absent (surrounding spaces
  ignored: byte-level BPE targets often start with one)."""
  del example, is_target  # Same mapping for targets and predictions.
  classes = [as_text(c).strip() for c in label_classes]
  text = as_text(output).strip()
  return classes.index(text) if text in classes else default


def string_to_float(output: Any,
                    default: float = -1.0,
                    example: Mapping[str, Any] | None = None,
                    is_target: bool = False) -> float:
  """The output parsed as a float, or `default` when it is not a number."""
  del example, is_target
  try:
    return float(as_text(output))
  except ValueError:
    return default


def qa(answer: Any,
       example: Mapping[str, Any] | None = None,
       is_target: bool = False) -> str | list[str]:
  """Prediction: the answer string; target: all answers from the example."""
  if is_target:
    return _answer_list(example, "qa")
  return as_text(answer)


def record(answer: Any,
           example: Mapping[str, Any] | None = None,
           is_target: bool = False) -> str | list[str]:
  """ReCoRD. Prediction: the answer string; target: all answers of the query."""
  if is_target:
    return _answer_list(example, "record")
  return as_text(answer)


def _idx_field(example: Mapping[str, Any] | None, field: str,
               caller: str) -> int:
  """An index such as 'question', from flat 'idx/<field>' or nested 'idx'."""
  if example is not None and f"idx/{field}" in example:
    return int(np.asarray(example[f"idx/{field}"]))
  idx = _require(example, "idx", caller)
  if isinstance(idx, Mapping) and field in idx:
    return int(np.asarray(idx[field]))
  raise ValueError(
      f"{caller} needs example['idx/{field}'] or example['idx']['{field}'], "
      f"got idx={idx!r}.")


def record_grouped(answer: Any,
                   example: Mapping[str, Any] | None = None,
                   is_target: bool = False) -> dict[str, Any]:
  """ReCoRD for inputs repeated once per answer: t5-style {"value", "group"}.

  Targets carry group (passage, query) so that `metrics.record` counts each
  query once; predictions are {"value": answer string}.
  """
  if is_target:
    group = (_idx_field(example, "passage", "record_grouped"),
             _idx_field(example, "query", "record_grouped"))
    return {"value": _answer_list(example, "record_grouped"), "group": group}
  return {"value": as_text(answer)}


def multirc(string_label: Any,
            example: Mapping[str, Any] | None = None,
            is_target: bool = False) -> dict[str, int]:
  """{"value": class id of "False" / "True"}; targets add "group" (question)."""
  result = {"value": string_label_to_class_id(string_label, ("False", "True"))}
  if is_target:
    result["group"] = _idx_field(example, "question", "multirc")
  return result


def axg(output: Any,
        example: Mapping[str, Any] | None = None,
        is_target: bool = False) -> dict[str, Any]:
  """AX-g: {"value": class id}; targets add "group", the minimal-pair id.

  Pairs are examples (2k, 2k+1) of the AX-g file, so the group is idx // 2;
  this stays right when the data source reorders examples.
  """
  result = {"value": string_label_to_class_id(
      output, ("entailment", "not_entailment"))}
  if is_target:
    result["group"] = int(np.asarray(_require(example, "idx", "axg"))) // 2
  return result


def _wsc_clean(text: Any) -> str:
  """Lower-cased words without determiners, space separated."""
  words = as_text(text).strip().lower().split(" ")
  return " ".join(w for w in words if w not in _WSC_DETERMINERS)


def wsc_simple(prediction: Any,
               example: Mapping[str, Any] | None = None,
               is_target: bool = False) -> int:
  """WSC: 1 if the predicted noun phrase names the referent, else 0.

  Targets give the example's label. A prediction matches when, ignoring case
  and determiners, its words are a subset or superset of the referent's
  (`targets_pretokenized`) and both or neither are possessive. An empty
  prediction gives -1 so that it never matches a label.
  """
  if is_target:
    return int(np.asarray(_require(example, "label", "wsc_simple")))
  prediction = _wsc_clean(prediction)
  if not prediction:
    return -1
  if example is not None and "targets_pretokenized" not in example:
    referent_key = "targets_plaintext"  # Older seqio / t5 name.
  else:
    referent_key = "targets_pretokenized"
  referent = _wsc_clean(_require(example, referent_key, "wsc_simple"))
  if ("'" in prediction) != ("'" in referent):
    return 0  # "Bob" does not name "Bob's hat".
  prediction_words = set(prediction.split(" "))
  referent_words = set(referent.split(" "))
  return int(prediction_words <= referent_words
             or referent_words <= prediction_words)
