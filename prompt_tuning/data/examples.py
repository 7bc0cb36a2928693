"""The `_examples` task variants: metrics that also report decoded examples.

The postprocessor of an `_examples` task wraps each prediction in a dict that
also holds the raw model text and the example's pretokenized inputs / targets;
its metrics unwrap the dicts, plus one metric (`text_examples`) that returns a
few examples as `seqio.metrics.Text` (written by seqio's TensorBoard logger)
and logs them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import seqio

PREDICTION = "prediction"
PREDICTION_TEXT = "prediction_text"
EXAMPLE_FIELDS = ("inputs_pretokenized", "targets_pretokenized")
DEFAULT_NUM_EXAMPLES = 8

Postprocessor = Callable[..., Any]
MetricFn = Callable[..., Mapping[str, Any]]


def _text(value: Any) -> Any:
  """UTF-8 bytes as str; anything else unchanged."""
  return value.decode("utf-8") if isinstance(value, bytes) else value


def postprocess_with_examples(postprocess_fn: Postprocessor | None,
                              output: Any,
                              example: Mapping[str, Any] | None = None,
                              is_target: bool = False,
                              **kwargs: Any) -> Any:
  """`postprocess_fn(output)`; for predictions a dict with the example's text.

  Returns the plain postprocessed value for targets, and for predictions
  `{"prediction": value, "prediction_text": output, "inputs_pretokenized": ...,
  "targets_pretokenized": ...}`.
  """
  value = output
  if postprocess_fn is not None:
    value = postprocess_fn(output, example=example, is_target=is_target,
                           **kwargs)
  if is_target:
    return value
  example = example or {}
  result = {PREDICTION: value, PREDICTION_TEXT: _text(output)}
  for field in EXAMPLE_FIELDS:
    result[field] = _text(example.get(field))
  return result


def _prediction(value: Any) -> Any:
  return value[PREDICTION] if isinstance(value, Mapping) else value


def metric_with_examples(metric_fn: MetricFn, targets: Sequence[Any],
                         predictions: Sequence[Any]) -> Mapping[str, Any]:
  """`metric_fn` on the unwrapped predictions of `postprocess_with_examples`."""
  return metric_fn(targets, [_prediction(p) for p in predictions])


def format_examples(targets: Sequence[Any], predictions: Sequence[Any],
                    num_examples: int = DEFAULT_NUM_EXAMPLES) -> str:
  """The first `num_examples` examples, one markdown paragraph each."""
  blocks = []
  for i, (target, prediction) in enumerate(zip(targets, predictions)):
    if i >= num_examples:
      break
    lines = []
    if isinstance(prediction, Mapping):
      for field in EXAMPLE_FIELDS:
        if prediction.get(field) is not None:
          lines.append(f"{field}: {prediction[field]}")
      lines.append(f"prediction_text: {prediction.get(PREDICTION_TEXT)}")
    lines.append(f"target: {target}")
    lines.append(f"prediction: {_prediction(prediction)}")
    blocks.append("  \n".join(lines))
  return "\n\n".join(blocks)


def text_examples(targets: Sequence[Any], predictions: Sequence[Any],
                  task_name: str,
                  num_examples: int = DEFAULT_NUM_EXAMPLES
                  ) -> dict[str, seqio.metrics.Text]:
  """A metric whose value is a few decoded examples as text (also logged)."""
  text = format_examples(targets, predictions, num_examples)
  logging.info("%s examples:\n%s", task_name, text)
  return {f"{task_name}_examples": seqio.metrics.Text(textdata=text)}


def with_examples(postprocess_fn: Postprocessor | None,
                  metric_fns: Sequence[MetricFn],
                  task_name: str) -> tuple[Postprocessor, list[MetricFn]]:
  """The postprocessor and metrics of the `_examples` variant of a task."""
  postprocess = functools.partial(postprocess_with_examples, postprocess_fn)
  metrics = [functools.partial(metric_with_examples, fn) for fn in metric_fns]
  metrics.append(functools.partial(text_examples, task_name=task_name))
  return postprocess, metrics
