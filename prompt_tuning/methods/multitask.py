"""Multi-task prompts: a shared prompt combined with a task-specific prompt chosen per example.

Parameters (inside the prompt module, so `.*/prompt/.*` selects them; encoder-decoder:
`encoder/prompt/prompt/{shared_prompt,task_prompts}`, decoder-only: `decoder/prompt/prompt/...`):
  `shared_prompt` [P, D], axes ("prompt", "prompt_embed");
  `task_prompts` [num_tasks, P_t, D], axes ("tasks", "prompt", "prompt_embed").
Combination: "add" (P_t == P) -> shared + task, [P, D]; "concat" -> [shared; task], [P + P_t, D]
(shared rows first).

The task of each example comes from an explicit `task_ids_B` argument or, with the prompt-method
protocol's `(tokens_BT, embedded_BTD)` call alone, from the first non-padding input token used
as a task sentinel, so the batch format stays the usual one:
  * `sentinel_vocab_size` set (the gin default, 32100 for T5's vocabulary): the token is
    `<extra_id_k>` = sentinel_vocab_size - 1 - k and the task is k, the convention of the
    original multi-task prompts and of our `task_index_` data variants
    (`data.preprocessors.add_sentinel_to_beginning`);
  * otherwise the task is token - task_token_offset (a plain index token).
"First non-padding" makes the rule hold for right-padded encoder inputs, left-padded
decoder-only inputs and T5X decoder-only training rows (`[0, sentinel, ...]`). A row with no
token at all (batch padding) uses task 0 rather than producing NaNs.

Difference from the original code: the sentinel stays in the input as an ordinary token
(the original drops its embedding), which keeps every sequence length, mask and loss weight
unchanged.
"""

from __future__ import annotations

import dataclasses
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
        "sentinel_vocab_size / task_token_offset).")


def combine_prompts(shared_PD: jax.Array, task_prompts_KQD: jax.Array, task_ids_B: jax.Array,
                    combine: Combine = "concat", check_ids: bool = True) -> jax.Array:
  """Per-example prompts from a shared prompt and a table of task prompts.

  Args:
    shared_PD: shared prompt [P, D].
    task_prompts_KQD: task-specific prompts [num_tasks, P_t, D].
    task_ids_B: int [batch], each in [0, num_tasks). Under jit, an out-of-range id yields NaN
      rows (never another task's prompt).
    combine: "add" (needs P_t == P) or "concat" (shared rows first).
    check_ids: raise on concrete out-of-range ids (off while initialising from dummy inputs).

  Returns:
    [batch, P, D] for "add", [batch, P + P_t, D] for "concat".
  """
  num_tasks, task_length, width = task_prompts_KQD.shape
  if shared_PD.shape[-1] != width:
    raise ValueError(
        f"Shared prompt {shared_PD.shape} and task prompts {task_prompts_KQD.shape} differ in "
        "width D; both must be [.., D] with the model's embedding width.")
  if check_ids:
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


def task_ids_from_sentinel(tokens_BT: jax.Array, task_token_offset: int = 0,
                           sentinel_vocab_size: Optional[int] = None) -> jax.Array:
  """Task index int32 [batch] from each row's first non-padding token s (token 0 is padding).

  task = sentinel_vocab_size - 1 - s (`<extra_id_task>`) when `sentinel_vocab_size` is given,
  else s - task_token_offset; 0 for a row of padding only.
  """
  batch, length = tokens_BT.shape
  if length == 0:
    return jnp.zeros((batch,), jnp.int32)
  present_BT = tokens_BT != 0
  first_B = jnp.argmax(present_BT, axis=1)
  sentinel_B = jnp.take_along_axis(tokens_BT, first_B[:, None], axis=1)[:, 0].astype(jnp.int32)
  if sentinel_vocab_size is not None:
    task_B = sentinel_vocab_size - 1 - sentinel_B
  else:
    task_B = sentinel_B - task_token_offset
  return jnp.where(present_BT.any(axis=1), task_B, 0).astype(jnp.int32)


class MultiTaskPrompt(nn.Module):
  """Shared + task-specific prompt; satisfies the prompt-method protocol.

  Attributes:
    length: shared prompt length P.
    num_tasks: number of task prompts.
    task_length: task prompt length P_t (defaults to P; must equal P for "add").
    combine: "add" -> [B, P, D]; "concat" -> [B, P + P_t, D].
    shared_init / task_init: `(rng, shape) -> array` initializers ([P, D] and
      [num_tasks, P_t, D]).
    sentinel_vocab_size: with no `task_ids_B`, the task k of a row whose first token is
      `<extra_id_k>` = sentinel_vocab_size - 1 - k (see the module docstring).
    task_token_offset: used when `sentinel_vocab_size` is None: task = first token - offset.
  """

  length: int
  num_tasks: int
  task_length: Optional[int] = None
  combine: Combine = "concat"
  shared_init: prompts.Initializer = prompts.uniform(0.5)
  task_init: prompts.Initializer = prompts.uniform(0.5)
  task_token_offset: int = 0
  sentinel_vocab_size: Optional[int] = None

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
      task_ids_B = task_ids_from_sentinel(tokens_BT, self.task_token_offset,
                                          self.sentinel_vocab_size)
    dtype = embedded_BTD.dtype
    # Initialising from dummy tokens (no sentinel) must not fail; real calls are checked.
    return combine_prompts(shared_PD.astype(dtype), task_prompts_KQD.astype(dtype), task_ids_B,
                           self.combine, check_ids=not self.is_initializing())


def _checked(init: prompts.Initializer) -> prompts.Initializer:
  """Wraps an initializer to cast to the parameter dtype and check the shape it returns."""

  def param_init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    value = jnp.asarray(init(rng, shape), dtype)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(f"Multi-task prompt initializer returned shape {tuple(value.shape)}, "
                       f"expected {tuple(shape)}.")
    return value

  return param_init


@dataclasses.dataclass(frozen=True)
class MultiTaskPromptConfig:
  """Multi-task prompts as a prompt method for `prompt_tuning.layers.build_prompt_model` / gin.

  Same contract as `prompt_tuning.prompts.PromptConfig` (length, placement,
  decoder_attends_to_prompt, `make_method()`). Bound in
  configs/architectures/multitask_prompts.gin.

  Attributes:
    length: shared prompt length P.
    num_tasks: number of task prompts (task ids 0..num_tasks-1).
    task_length: task prompt length P_t (None: P; must equal P for "add").
    combine: "add" or "concat" (see `combine_prompts`).
    shared_initializer / task_initializer: `(rng, shape) -> array` for [P, D] and
      [num_tasks, P_t, D].
    sentinel_vocab_size / task_token_offset: how the task is read from the first input token
      (see `MultiTaskPrompt`).
    placement / decoder_attends_to_prompt: as in `PromptConfig`.
  """

  method: str = "multitask_prompts"
  length: int = 100
  num_tasks: int = 1
  task_length: Optional[int] = None
  combine: Combine = "concat"
  shared_initializer: prompts.Initializer = prompts.uniform()
  task_initializer: prompts.Initializer = prompts.uniform()
  sentinel_vocab_size: Optional[int] = 32100
  task_token_offset: int = 0
  placement: str = "prefix"
  decoder_attends_to_prompt: bool = True

  def __post_init__(self):
    if self.method != "multitask_prompts":
      raise ValueError(f"MultiTaskPromptConfig.method={self.method!r}; it describes "
                       "'multitask_prompts' only.")
    if self.combine not in ("add", "concat"):
      raise ValueError(f"MultiTaskPromptConfig.combine={self.combine!r}; use 'add' or 'concat'.")
    task_length = self.length if self.task_length is None else self.task_length
    if self.length < 0 or task_length < 0 or self.num_tasks < 1:
      raise ValueError(f"MultiTaskPromptConfig needs length >= 0, task_length >= 0 and "
                       f"num_tasks >= 1; got length={self.length}, "
                       f"task_length={self.task_length}, num_tasks={self.num_tasks}.")
    if self.combine == "add" and task_length != self.length:
      raise ValueError(f"MultiTaskPromptConfig: combine='add' needs task_length == length, got "
                       f"{task_length} and {self.length}; set them equal or use 'concat'.")
    if self.placement not in prompts.PLACEMENTS:
      raise ValueError(f"MultiTaskPromptConfig.placement={self.placement!r}; use one of "
                       f"{prompts.PLACEMENTS}.")

  def make_method(self) -> MultiTaskPrompt:
    """The (unbound) prompt module of this method."""
    return MultiTaskPrompt(length=self.length, num_tasks=self.num_tasks,
                           task_length=self.task_length, combine=self.combine,
                           shared_init=self.shared_initializer, task_init=self.task_initializer,
                           task_token_offset=self.task_token_offset,
                           sentinel_vocab_size=self.sentinel_vocab_size)
