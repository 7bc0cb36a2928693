"""Multi-task prompts: a shared prompt combined with a task-specific prompt chosen per example.

Parameters (inside the prompt module, so `.*/prompt/.*` selects them):
  `shared_prompt` [P, D], axes ("prompt", "prompt_embed");
  `task_prompts` [num_tasks, P_t, D], axes ("tasks", "prompt", "prompt_embed").
Combination: "add" (P_t == P) -> shared + task, [P, D]; "concat" -> [shared; task], [P + P_t, D]
(shared rows first).

The task of each example comes from an explicit `task_ids_B` argument or, with the prompt-method
protocol's `(tokens_BT, embedded_BTD)` call alone, from the first input token used as a task
index sentinel (task = tokens_BT[:, 0] - task_token_offset), as the original multi-task
variants do. The sentinel stays in the input; a task that does not want it there strips it in
preprocessing and passes `task_ids_B` instead.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import prompts
from prompt_tuning.models.layers import param_with_axes

Combine = Literal["add", "concat"]
TASK_PROMPT_AXES = ("tasks",) + prompts.PROMPT_AXES


def _check_task_ids(task_ids_B: jax.Array, num_tasks: int) -> None:
  """Raises when concrete task ids fall outside [0, num_tasks); traced ids are not checkable."""
  if isinstance(task_ids_B, jax.core.Tracer):
    return
  ids = np.asarray(task_ids_B)
  bad = ids[(ids < 0) | (ids >= num_tasks)]
  if bad.size:
    raise ValueError(
        f"Task ids {sorted(set(bad.tolist()))} are outside [0, {num_tasks}); the multi-task "
        f"prompt has num_tasks={num_tasks}. Check task_ids (or the task sentinel token and "
        "task_token_offset).")


def combine_prompts(shared_PD: jax.Array, task_prompts_KQD: jax.Array, task_ids_B: jax.Array,
                    combine: Combine = "concat") -> jax.Array:
  """Per-example prompts from a shared prompt and a table of task prompts.

  Args:
    shared_PD: shared prompt [P, D].
    task_prompts_KQD: task-specific prompts [num_tasks, P_t, D].
    task_ids_B: int [batch], each in [0, num_tasks). Under jit, an out-of-range id yields NaN
      rows (never another task's prompt).
    combine: "add" (needs P_t == P) or "concat" (shared rows first).

  Returns:
    [batch, P, D] for "add", [batch, P + P_t, D] for "concat".
  """
  num_tasks, task_length, width = task_prompts_KQD.shape
  if shared_PD.shape[-1] != width:
    raise ValueError(
        f"Shared prompt {shared_PD.shape} and task prompts {task_prompts_KQD.shape} differ in "
        "width D; both must be [.., D] with the model's embedding width.")
  _check_task_ids(task_ids_B, num_tasks)
  task_BQD = jnp.take(task_prompts_KQD, task_ids_B.astype(jnp.int32), axis=0, mode="fill",
                      fill_value=jnp.nan)
  batch = task_BQD.shape[0]
  shared_BPD = jnp.broadcast_to(shared_PD[None], (batch,) + shared_PD.shape)
  if combine == "add":
    if shared_PD.shape[0] != task_length:
      raise ValueError(
          f"combine='add' needs equal lengths, but the shared prompt is {shared_PD.shape} and "
          f"the task prompts are {task_prompts_KQD.shape}; set task_length == length or use "
          "combine='concat'.")
    return shared_BPD + task_BQD.astype(shared_BPD.dtype)
  if combine == "concat":
    return jnp.concatenate([shared_BPD, task_BQD.astype(shared_BPD.dtype)], axis=1)
  raise ValueError(f"combine={combine!r} is not known; use 'add' or 'concat'.")


def task_ids_from_sentinel(tokens_BT: jax.Array, task_token_offset: int = 0) -> jax.Array:
  """Task index [batch] from the first input token: tokens_BT[:, 0] - task_token_offset."""
  return tokens_BT[:, 0].astype(jnp.int32) - task_token_offset


class MultiTaskPrompt(nn.Module):
  """Shared + task-specific prompt; satisfies the prompt-method protocol.

  Attributes:
    length: shared prompt length P.
    num_tasks: number of task prompts.
    task_length: task prompt length P_t (defaults to P; must equal P for "add").
    combine: "add" -> [B, P, D]; "concat" -> [B, P + P_t, D].
    shared_init / task_init: `(rng, shape) -> array` initializers ([P, D] and
      [num_tasks, P_t, D]).
    task_token_offset: with no `task_ids_B`, task = first input token - this offset.
  """

  length: int
  num_tasks: int
  task_length: Optional[int] = None
  combine: Combine = "concat"
  shared_init: prompts.Initializer = prompts.uniform(0.5)
  task_init: prompts.Initializer = prompts.uniform(0.5)
  task_token_offset: int = 0

  @property
  def output_length(self) -> int:
    """Length of the produced prompt: P ("add") or P + P_t ("concat")."""
    task_length = self.length if self.task_length is None else self.task_length
    return self.length + task_length if self.combine == "concat" else self.length

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array,
               task_ids_B: Optional[jax.Array] = None) -> jax.Array:
    """Tokens [B, T], embeddings [B, T, D] (, task ids [B]) -> prompts [B, P', D]."""
    width = embedded_BTD.shape[-1]
    task_length = self.length if self.task_length is None else self.task_length
    shared_PD = param_with_axes(self, "shared_prompt", _checked(self.shared_init),
                                (self.length, width), prompts.PROMPT_AXES)
    task_prompts_KQD = param_with_axes(self, "task_prompts", _checked(self.task_init),
                                       (self.num_tasks, task_length, width), TASK_PROMPT_AXES)
    if task_ids_B is None:
      task_ids_B = task_ids_from_sentinel(tokens_BT, self.task_token_offset)
    dtype = embedded_BTD.dtype
    return combine_prompts(shared_PD.astype(dtype), task_prompts_KQD.astype(dtype), task_ids_B,
                           self.combine)


def _checked(init: prompts.Initializer) -> prompts.Initializer:
  """Wraps an initializer to cast to the parameter dtype and check the shape it returns."""

  def param_init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    value = jnp.asarray(init(rng, shape), dtype)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(f"Multi-task prompt initializer returned shape {tuple(value.shape)}, "
                       f"expected {tuple(shape)}.")
    return value

  return param_init
