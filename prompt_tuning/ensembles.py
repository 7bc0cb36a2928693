"""Prompt ensembles in one forward pass (Lester et al. 2021, section 6).

N prompts trained for one task on one frozen model are ensembled at inference by batching: each
example runs with every prompt in one call over N x B rows, so the frozen weights are read once
per step for all prompts, and the answers are combined (majority vote for generation, mean
log-probability for rank classification).

Rows are prompt-major: row n * B + b holds example b with prompt n. `EnsemblePrompt` is the
prompt method that gives each row its prompt (parameter `prompt` [N, P, D]); it plugs into the
same prompt models (`layers.PromptEncoderDecoder` / `PromptDecoderOnly`) through the usual
insert / mask functions, so placements, masks and positions are those of a single prompt. Any
method whose inference prompt is a plain [P, D] array ensembles this way: prompt tuning, and
P-tuning through its exported prompt.

Majority vote: the most frequent decoded sequence (compared up to and including its EOS);
ties go to the sequence produced by the lowest prompt index (deterministic, and with one prompt
per vote it is the first prompt's answer).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.models.layers import param_with_axes

ENSEMBLE_AXES = ("ensemble", "prompt", "prompt_embed")


class EnsemblePrompt(nn.Module):
  """N prompts [N, P, D] (parameter `prompt`), one per block of rows of a prompt-major batch.

  Satisfies the prompt-method protocol of `prompt_tuning.layers`; the batch size must be a
  multiple of N (row r uses prompt r // (rows / N)).
  """

  length: int
  num_prompts: int

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array) -> jax.Array:
    """Tokens [N*B, T], embeddings [N*B, T, D] -> prompts [N*B, P, D] (prompt-major rows)."""
    prompts_NPD = param_with_axes(self, "prompt", nn.initializers.zeros,
                                  (self.num_prompts, self.length, embedded_BTD.shape[-1]),
                                  ENSEMBLE_AXES)
    rows = embedded_BTD.shape[0]
    if rows % self.num_prompts:
      raise ValueError(f"an ensemble of {self.num_prompts} prompts needs a batch of N x B rows; "
                       f"got {rows}.")
    return jnp.repeat(prompts_NPD.astype(embedded_BTD.dtype), rows // self.num_prompts, axis=0)


def stack_prompts(prompts: Any, read_prompt) -> np.ndarray:
  """Prompts as float32 [N, P, D] from an [N, P, D] array or a list of [P, D] arrays / `.npy`
  paths (each read and checked by `read_prompt`)."""
  if isinstance(prompts, (np.ndarray, jax.Array)) and np.ndim(prompts) == 3:
    return np.stack([read_prompt(p) for p in np.asarray(prompts)])
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
    raise ValueError("prompts must be an [N, P, D] array or a non-empty list of [P, D] arrays "
                     "or .npy paths.")
  return np.stack([read_prompt(p) for p in prompts])


def ensemble_module(module: nn.Module, num_prompts: int) -> nn.Module:
  """The prompt model `module` with its prompt method replaced by an N-prompt ensemble."""
  method = getattr(module, "prompt_method", None)
  if method is None or not hasattr(module, "prompt_length"):
    raise ValueError(
        f"prompt ensembles need an input-prompt model (prompt tuning, or P-tuning / deep prompts "
        f"through exported [P, D] prompts), got {type(module).__name__}: load the model with "
        "e.g. 'architectures/prompt_tuning.gin'.")
  if hasattr(method, "layer_inputs_fn"):
    raise ValueError("deep prompts add per-layer prompts, which an ensemble of [P, D] prompts "
                     "cannot carry; load the model with 'architectures/prompt_tuning.gin' to "
                     "ensemble their input prompts.")
  length = module.prompt_length
  return module.clone(parent=None, prompt_method=EnsemblePrompt(length, num_prompts))


def ensemble_params(params: dict, stack: str, prompts_NPD: np.ndarray) -> dict:
  """`params` whose prompt method's subtree (`<stack>/prompt/prompt`, whatever the trained
  method was) is the ensemble's {"prompt": [N, P, D]}."""
  inserter = dict(params[stack]["prompt"], prompt={"prompt": jnp.asarray(prompts_NPD,
                                                                         jnp.float32)})
  return dict(params, **{stack: dict(params[stack], prompt=inserter)})


def tile_rows(array: Any, num_prompts: int) -> Any:
  """[B, ...] -> [N*B, ...]: the batch repeated once per prompt (prompt-major)."""
  if array is None:
    return None
  return jnp.tile(jnp.asarray(array), (num_prompts,) + (1,) * (np.ndim(array) - 1))


def _answer(row: np.ndarray, eos: set[int]) -> tuple[int, ...]:
  """A decoded row up to and including its first EOS (the rest is padding)."""
  out = []
  for token in row.tolist():
    out.append(int(token))
    if token in eos:
      break
  return tuple(out)


def majority_vote(per_prompt_NBL: np.ndarray, eos_ids: Sequence[int]) -> np.ndarray:
  """[B, L]: for each example the most frequent of its N answers (ties: lowest prompt index)."""
  eos = set(int(e) for e in eos_ids)
  num_prompts, batch, _ = per_prompt_NBL.shape
  combined = np.empty(per_prompt_NBL.shape[1:], per_prompt_NBL.dtype)
  for b in range(batch):
    answers = [_answer(per_prompt_NBL[n, b], eos) for n in range(num_prompts)]
    counts = collections.Counter(answers)
    best = max(range(num_prompts), key=lambda n: (counts[answers[n]], -n))
    combined[b] = per_prompt_NBL[best, b]
  return combined
