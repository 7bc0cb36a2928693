"""Trainable / frozen split of the parameter tree, and the optimizers applied to the trainable part.

`adafactor` reproduces T5X's `t5x.adafactor.Adafactor` update (the optimizer of the prompt-tuning
paper) as an optax transformation: second-moment decay `1 - (step + 1 - step_offset)^-decay_rate`
on the *global* step (the one restored from the frozen checkpoint, as T5X counts it), factored
second moments for parameters whose two largest dimensions are >= `min_dim_size_to_factor`,
update clipping at RMS `clipping_threshold`, optional parameter-scale multiplication and momentum,
and decoupled weight decay `param <- (1 - weight_decay) * param - lr * update`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prompt_tuning import errors
from prompt_tuning.checkpoints import tree

DEFAULT_TRAINABLE_REGEX = ".*/prompt/.*"
Schedule = Callable[[jax.Array], jax.Array]


class NothingToTrainError(ValueError):
  """The trainable regex selects no parameter."""


def split_params(params: dict, trainable_regex: str = DEFAULT_TRAINABLE_REGEX) -> tuple[dict, dict]:
  """(trainable, frozen) nested trees; every leaf lands in exactly one of them.

  A leaf is trainable when its '/'-joined path fully matches `trainable_regex`.
  """
  try:
    pattern = re.compile(trainable_regex)
  except (re.error, TypeError) as error:
    raise errors.ConfigValueError(
        f"TRAINABLE_REGEX={trainable_regex!r} is not a regular expression ({error}): pass e.g. "
        "--gin.TRAINABLE_REGEX=\"'.*/prompt/.*'\" (or None for the prompt method's "
        "parameters).") from error
  trainable, frozen = {}, {}
  for path, leaf in tree.flatten_params(params).items():
    (trainable if pattern.fullmatch(path) else frozen)[path] = leaf
  if not trainable:
    paths = list(tree.flatten_params(params))
    raise NothingToTrainError(
        f"the trainable regex {trainable_regex!r} matches none of the model's {len(paths)} "
        f"parameters (e.g. {paths[:3]}): include a prompt-method gin file (e.g. "
        "architectures/prompt_tuning.gin) or set --gin.TRAINABLE_REGEX to a regex of paths.")
  return tree.unflatten_params(trainable), tree.unflatten_params(frozen)


def merge_params(trainable: dict, frozen: dict) -> dict:
  """The full parameter tree from its two halves (inverse of `split_params`)."""
  flat = tree.flatten_params(frozen)
  flat.update(tree.flatten_params(trainable))
  return tree.unflatten_params(flat)


def constant_schedule(learning_rate: float) -> Schedule:
  """T5X's `factors='constant'` schedule (the prompt-tuning paper's 0.3)."""
  return lambda step: jnp.asarray(learning_rate, jnp.float32)


def rsqrt_schedule(learning_rate: float = 1.0, warmup_steps: int = 10_000) -> Schedule:
  """T5X's 'constant * rsqrt_decay': lr / sqrt(max(step, warmup_steps))."""
  return lambda step: learning_rate * jax.lax.rsqrt(
      jnp.maximum(jnp.asarray(step, jnp.float32), warmup_steps))


class ScheduleError(ValueError):
  """An LR_SCHEDULE / WARMUP_STEPS that cannot be used."""


SCHEDULES = ("constant", "linear", "cosine", "rsqrt")


def make_schedule(name: str, learning_rate: float, *, warmup_steps: int = 0,
                  start_step: int = 0, total_steps: Optional[int] = None
                  ) -> Union[float, Schedule]:
  """The learning rate over the global step, as LR_SCHEDULE names it.

  'constant': T5X's constant (the paper's 0.3); 'linear' / 'cosine': decay from
  `learning_rate` at `start_step` (the frozen checkpoint's step) to 0 at `total_steps`;
  'rsqrt': T5X's 'constant * rsqrt_decay', `learning_rate / sqrt(max(step, warmup_steps))` on the
  global step. Except for 'rsqrt', `warmup_steps` > 0 ramps linearly from 0 over the run's first
  `warmup_steps` steps. A constant with no warmup is returned as a float.
  """
  if name not in SCHEDULES:
    raise ScheduleError(f"LR_SCHEDULE={name!r}: use one of {list(SCHEDULES)}.")
  if warmup_steps < 0:
    raise ScheduleError(f"WARMUP_STEPS={warmup_steps} must be >= 0.")
  if name == "rsqrt":
    return rsqrt_schedule(learning_rate, max(int(warmup_steps), 1))
  if name == "constant" and not warmup_steps:
    return float(learning_rate)
  span = None
  if name in ("linear", "cosine"):
    if total_steps is None or total_steps <= start_step:
      raise ScheduleError(f"LR_SCHEDULE={name!r} decays to 0 at TRAIN_STEPS, which must be above "
                          f"the starting step {start_step}.")
    span = float(total_steps - start_step)

  def schedule(step: jax.Array) -> jax.Array:
    run_step = jnp.asarray(step, jnp.float32) - start_step
    rate = jnp.asarray(learning_rate, jnp.float32)
    if name == "linear":
      rate = rate * jnp.clip(1.0 - run_step / span, 0.0, 1.0)
    elif name == "cosine":
      rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(run_step / span, 0.0, 1.0)))
    if warmup_steps:
      rate = rate * jnp.clip((run_step + 1.0) / warmup_steps, 0.0, 1.0)
    return rate

  return schedule


class ParamState(NamedTuple):
  """Adafactor moments of one parameter ([1] placeholders where unused, as T5X)."""

  v_row: jax.Array
  v_col: jax.Array
  v: jax.Array
  m: jax.Array


class AdafactorState(NamedTuple):
  per_param: Any  # tree of ParamState, the structure of the trainable params.


def factored_dims(shape: tuple[int, ...], min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
  """(second largest, largest) dimension to factor over, or None (T5X's heuristic)."""
  if len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def adafactor(learning_rate: Union[float, Schedule] = 0.3, *, decay_rate: float = 0.8,
              step_offset: int = 0, multiply_by_parameter_scale: bool = False,
              clipping_threshold: Optional[float] = 1.0, weight_decay: Optional[float] = 1e-5,
              factored: bool = True, min_dim_size_to_factor: int = 128,
              beta1: Optional[float] = None, epsilon1: float = 1e-30,
              epsilon2: float = 1e-3) -> optax.GradientTransformationExtraArgs:
  """T5X's Adafactor; `update(grads, state, params, step=global_step)` needs the global step."""
  schedule = learning_rate if callable(learning_rate) else constant_schedule(learning_rate)

  def init_param(param: jax.Array) -> ParamState:
    # Distinct [1] placeholders (one shared buffer could not be donated four times).
    state = {name: jnp.zeros((1,), jnp.float32) for name in ParamState._fields}
    dims = factored_dims(param.shape, min_dim_size_to_factor) if factored else None
    if dims is None:
      state["v"] = jnp.zeros(param.shape, jnp.float32)
    else:
      second, largest = dims
      state["v_row"] = jnp.zeros(np.delete(param.shape, largest), jnp.float32)
      state["v_col"] = jnp.zeros(np.delete(param.shape, second), jnp.float32)
    if beta1 is not None:
      state["m"] = jnp.zeros(param.shape, jnp.float32)
    return ParamState(**state)

  def init(params: Any) -> AdafactorState:
    return AdafactorState(per_param=jax.tree_util.tree_map(init_param, params))

  def update_param(grad: jax.Array, state: ParamState, param: jax.Array, step: jax.Array,
                   lr: jax.Array) -> tuple[jax.Array, ParamState]:
    grad = grad.astype(jnp.float32)
    t = jnp.asarray(step - step_offset, jnp.float32) + 1.0
    decay = 1.0 - t**(-decay_rate)
    mixing = 1.0 - decay
    scale = lr
    if multiply_by_parameter_scale:
      scale = scale * jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(param))), epsilon2)
    grad_sqr = grad * grad + epsilon1
    new = state._asdict()
    dims = factored_dims(param.shape, min_dim_size_to_factor) if factored else None
    if dims is None:
      new["v"] = decay * state.v + mixing * grad_sqr
      y = grad * new["v"]**-0.5
    else:
      second, largest = dims
      new["v_row"] = decay * state.v_row + mixing * jnp.mean(grad_sqr, axis=largest)
      new["v_col"] = decay * state.v_col + mixing * jnp.mean(grad_sqr, axis=second)
      reduced = second - 1 if second > largest else second
      row_factor = (new["v_row"] / jnp.mean(new["v_row"], axis=reduced, keepdims=True))**-0.5
      col_factor = new["v_col"]**-0.5
      y = grad * jnp.expand_dims(row_factor, largest) * jnp.expand_dims(col_factor, second)
    if clipping_threshold is not None:
      y = y / jnp.maximum(1.0, jnp.sqrt(jnp.mean(y * y)) / clipping_threshold)
    subtrahend = scale * y
    if beta1 is not None:
      new["m"] = beta1 * state.m + (1.0 - beta1) * subtrahend
      subtrahend = new["m"]
    delta = -subtrahend
    if weight_decay is not None:
      delta = delta - weight_decay * param.astype(jnp.float32)
    return delta.astype(param.dtype), ParamState(**new)

  def update(grads: Any, state: AdafactorState, params: Any = None, *, step: jax.Array = 0,
             **unused_extra_args: Any) -> tuple[Any, AdafactorState]:
    if params is None:
      raise ValueError("adafactor needs `params` (weight decay and parameter scale use them).")
    lr = schedule(step)
    is_state = lambda x: isinstance(x, ParamState)
    flat_states, _ = jax.tree_util.tree_flatten(state.per_param, is_leaf=is_state)
    flat_grads, treedef = jax.tree_util.tree_flatten(grads)
    flat_params = treedef.flatten_up_to(params)
    outs = [update_param(g, s, p, step, lr) for g, s, p in zip(flat_grads, flat_states, flat_params)]
    updates = treedef.unflatten([delta for delta, _ in outs])
    new_states = treedef.unflatten([s for _, s in outs])
    return updates, AdafactorState(per_param=new_states)

  return optax.GradientTransformationExtraArgs(init, update)


def adamw(learning_rate: Union[float, Schedule] = 1e-3, *, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.0) -> optax.GradientTransformationExtraArgs:
  """optax AdamW whose learning rate follows the global `step` passed to `update`."""
  schedule = learning_rate if callable(learning_rate) else constant_schedule(learning_rate)
  inner = optax.adamw(1.0, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)

  def update(grads, state, params=None, *, step: jax.Array = 0, **unused):
    updates, state = inner.update(grads, state, params)
    lr = schedule(step)
    return jax.tree_util.tree_map(lambda u: (lr * u).astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(inner.init, update)


def learning_rate_at(optimizer_schedule: Union[float, Schedule], step: int) -> float:
  """The learning rate a schedule (or constant) gives at `step`, for logging."""
  if callable(optimizer_schedule):
    return float(optimizer_schedule(jnp.asarray(step)))
  return float(optimizer_schedule)
