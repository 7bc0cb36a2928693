"""Prompt ensembles in the eval / infer commands: N prompt files, one pass per batch.

PROMPT_FILES names N `.npy` prompts [P, D] (a list, a glob or a folder). Each batch of B
examples runs once as N x B prompt-major rows through the ensemble model
(`ensembles.ensemble_module`: each block of rows gets its prompt through the usual insert /
mask functions), so one compiled program serves all prompts and the frozen weights are read
once per step for all of them. A decoder-only model with a prefix prompt computes the N
prompts' keys/values once (`prompt_cache`) and reuses them in every batch.

From the per-prompt outputs:
  generation: each prompt's decoded tokens, and the ensemble's majority vote
    (`ensembles.majority_vote`: most frequent answer, ties to the lowest prompt index);
  scoring (rank classification, seqio's score_fn): each prompt's log-likelihoods, and for the
    ensemble their mean over the prompts.
seqio then computes the metrics of every prompt and of the ensemble from the same outputs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning import api, ensembles, prompt_cache, prompt_files
from prompt_tuning.train import data, evaluation, models, partitioning, scoring

ENSEMBLE = None  # The member name of the ensemble itself (prompts are 0..N-1).


@dataclasses.dataclass
class EnsembleFns:
  """Batch functions of an N-prompt ensemble model; built once per run so they compile once."""

  module: nn.Module          # the ensemble model (`ensembles.ensemble_module`).
  params: Any                # its parameters (prompt [N, P, D]).
  num_prompts: int
  decode: models.DecodeConfig
  mesh: jax.sharding.Mesh
  batch_size: int
  eos_ids: tuple[int, ...]
  cache: Optional[prompt_cache.PromptCache] = None  # decoder-only prefix prompts.

  def __post_init__(self):
    # Rows differ by prompt, so contexts are not shared; only the targets are projected.
    self._scorer = scoring.Scorer(self.module, self._place, share_contexts=False)

  def _place(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return partitioning.place(batch, partitioning.batch_sharding(self.mesh))

  def _batches(self, features: tf.data.Dataset) -> Iterable[tuple[dict[str, np.ndarray], int]]:
    """Host batches of N x B rows (each example once per prompt, prompt-major) and B's real
    rows."""
    for batch in features.batch(self.batch_size).as_numpy_iterator():
      padded, rows = data.pad_batch(batch, self.batch_size)
      tiled = {name: np.tile(value, (self.num_prompts,) + (1,) * (value.ndim - 1))
               for name, value in padded.items()}
      yield tiled, rows

  def _per_prompt(self, array: Any, rows: int) -> np.ndarray:
    """[N*B, ...] (device) -> [N, rows, ...] (host), the padding rows dropped."""
    array = evaluation._to_host(array)  # pylint: disable=protected-access
    return array.reshape((self.num_prompts, -1) + array.shape[1:])[:, :rows]

  def predict_all(self, features: tf.data.Dataset) -> np.ndarray:
    """Decoded tokens [N, examples, L] of every prompt (0 after EOS), in example order."""
    outputs = []
    for batch, rows in self._batches(features):
      tokens = models.predict_batch(self.module, self.params, self._place(batch), self.decode,
                                    prompt_cache=self.cache)
      outputs.append(self._per_prompt(tokens, rows))
    return np.concatenate(outputs, axis=1)

  def score_all(self, features: tf.data.Dataset) -> np.ndarray:
    """Target log-likelihoods [N, examples] of every prompt, in example order."""
    scores = [self._per_prompt(self._scorer(self.params, batch), rows)
              for batch, rows in self._batches(features)]
    return np.concatenate(scores, axis=1)

  def vote(self, per_prompt_NEL: np.ndarray) -> np.ndarray:
    """The ensemble's answers [E, L]: majority vote over the prompts."""
    return ensembles.majority_vote(per_prompt_NEL, self.eos_ids)


def build(run: Any, params: dict, paths: Sequence[str], decode: models.DecodeConfig,
          mesh: jax.sharding.Mesh, batch_size: int) -> EnsembleFns:
  """The ensemble of the prompt files `paths` on `run`'s model (`model_setup.RunModel`) whose
  frozen weights are `params`; each file is checked against the model's P and D."""
  try:
    ensembles.ensemble_module(run.module, 1)
  except ValueError as error:
    raise prompt_files.PromptFileError(f"PROMPT_FILES: {error}") from error
  length, width = run.prompt_length, run.config.emb_dim
  prompts_NPD = ensembles.stack_prompts(
      list(paths), lambda p: api.read_prompt(p, run.config, length=length, width=width))
  module = ensembles.ensemble_module(run.module, len(prompts_NPD))
  stack = "decoder" if models.is_decoder_only(run.module) else "encoder"
  ensemble_params = ensembles.ensemble_params(params, stack, prompts_NPD)
  cache = None
  if models.is_decoder_only(module) and getattr(module, "placement", "prefix") == "prefix" and (
      not getattr(module, "slot_lengths", None)):
    cache = prompt_cache.build_prompt_cache(module, ensemble_params)
  eos = models.eos_option(run.config)
  return EnsembleFns(module, ensemble_params, len(prompts_NPD), decode, mesh, batch_size,
                     (eos,) if isinstance(eos, int) else tuple(eos), cache)


class EnsembleOutputs:
  """Per-prompt outputs of each evaluation dataset, computed once (all prompts in one pass per
  batch) and handed to seqio once per member: each prompt, and the ensemble."""

  def __init__(self, fns: EnsembleFns):
    self._fns = fns
    self._computed: dict[tuple[str, int], tuple[Any, list[int], np.ndarray]] = {}

  def _outputs(self, kind: str, dataset: tf.data.Dataset) -> tuple[list[int], np.ndarray]:
    """(example indices, per-prompt outputs) of an (index, features) dataset, computed once."""
    key = (kind, id(dataset))
    if key not in self._computed:
      indices = [int(i) for i in dataset.map(lambda i, _: i).as_numpy_iterator()]
      features = dataset.map(lambda _, f: f)
      fn = self._fns.predict_all if kind == "predict" else self._fns.score_all
      self._computed[key] = (dataset, indices, fn(features))  # The dataset keeps its id.
    _, indices, outputs = self._computed[key]
    return indices, outputs

  def model_fn(self, kind: str, member: Optional[int]) -> Callable:
    """A seqio model fn ("predict" or "score") giving prompt `member`'s outputs (ENSEMBLE:
    the majority vote, or the mean log-likelihood)."""

    def model_fn(dataset: tf.data.Dataset, model_feature_shapes=None) -> list:
      del model_feature_shapes
      indices, per_prompt = self._outputs(kind, dataset)
      if member is not ENSEMBLE:
        chosen = per_prompt[member]
      elif kind == "predict":
        chosen = self._fns.vote(per_prompt)
      else:
        chosen = per_prompt.mean(axis=0)
      return list(zip(indices, chosen.tolist()))

    return model_fn


def evaluate(evaluator: evaluation.Evaluation, fns: EnsembleFns,
             step: int) -> tuple[dict[str, dict[str, float]], list[dict[str, dict[str, float]]]]:
  """(ensemble metrics, metrics of each prompt) as {task: {metric: value}}.

  The model runs once per batch for all prompts; seqio's logs (inference_eval/) hold the
  ensemble's outputs.
  """
  outputs = EnsembleOutputs(fns)
  per_prompt = [evaluator.evaluate_outputs(outputs.model_fn("predict", n),
                                           outputs.model_fn("score", n), step, log=False)
                for n in range(fns.num_prompts)]
  ensemble = evaluator.evaluate_outputs(outputs.model_fn("predict", ENSEMBLE),
                                        outputs.model_fn("score", ENSEMBLE), step)
  return ensemble, per_prompt


def infer_to_jsonl(fns: EnsembleFns, dataset_config: data.DatasetConfig, model: Any,
                   prompt_length: int, output_dir: str) -> dict[str, str]:
  """Decodes every example with every prompt; each JSONL record holds the ensemble's answer
  ("prediction") and each prompt's ("predictions", in PROMPT_FILES order)."""

  def records(features: tf.data.Dataset, vocabulary: seqio.Vocabulary) -> list[dict[str, Any]]:
    per_prompt = fns.predict_all(features)
    combined = fns.vote(per_prompt)
    decode = functools.partial(evaluation._decoded, vocabulary)  # pylint: disable=protected-access
    return [{"prediction": decode(combined[e]),
             "predictions": [decode(per_prompt[n, e]) for n in range(fns.num_prompts)]}
            for e in range(combined.shape[0])]

  return evaluation.write_predictions(records, dataset_config, model, prompt_length, output_dir)
