"""The training step and loop: gradients of the trained part only, jitted once, sharded by mesh.

`train_step(state, frozen, batch, rng)` merges the trained and frozen parameter trees inside the
jitted function and differentiates the loss with respect to `state.trainable` alone, so XLA never
computes gradients of the frozen weights (it only back-propagates activations through them).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prompt_tuning.train import losses, models, optim, partitioning

Metrics = dict[str, float]


@flax.struct.dataclass
class TrainState:
  """What changes during training: the global step, the trained parameters, optimizer state."""

  step: jax.Array          # int32 scalar; T5X's global step (counts the frozen model's steps).
  trainable: Any           # nested dict of the trained parameters.
  opt_state: Any


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite."""

  def __init__(self, step: int, loss: float, last_checkpoint: Optional[int]):
    kept = (f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None else "no checkpoint was written yet")
    super().__init__(
        f"loss is {loss} at step {step}; training stopped and {kept}. Lower the learning rate, "
        "check the data for empty targets, or use float32 activations (ACTIVATION_DTYPE).")
    self.step = step


# Dropout bits come from XLA's RngBitGenerator ("rbg") rather than threefry: it compiles ~2x
# faster and runs faster on CPU/GPU; keys still fold in the step, so runs and resumes repeat
# exactly. (As in T5X with rbg, dropout masks can differ between mesh shapes.)
DROPOUT_PRNG_IMPL = "rbg"


def dropout_key(seed: int) -> jax.Array:
  """The base dropout key of a run (folded with the step inside `train_step`)."""
  return jax.random.key(seed, impl=DROPOUT_PRNG_IMPL)


def _sum_terms(a: losses.LossTerms, b: losses.LossTerms) -> losses.LossTerms:
  return jax.tree_util.tree_map(jnp.add, a, b)


def make_train_step(module: nn.Module, optimizer: optax.GradientTransformationExtraArgs,
                    loss_config: models.LossConfig, *, dropout: bool,
                    num_microbatches: int = 1) -> Callable:
  """The pure step `(state, frozen, batch, rng) -> (state, metrics)`.

  With `num_microbatches` > 1 the batch is split along its first axis and gradients are summed
  over the pieces (the loss is a sum, so this equals one big batch).
  """

  def loss_and_grad(trainable, frozen, batch, rng):
    def loss_fn(trainable):
      params = optim.merge_params(trainable, frozen)
      terms = models.loss_terms(module, params, batch, loss_config,
                                dropout_rng=rng if dropout else None)
      return terms.loss, terms

    return jax.grad(loss_fn, has_aux=True)(trainable)

  def step_fn(state: TrainState, frozen: Any, batch: Mapping[str, jax.Array],
              rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    step_rng = jax.random.fold_in(rng, state.step)
    if num_microbatches == 1:
      grads, terms = loss_and_grad(state.trainable, frozen, batch, step_rng)
    else:
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape((num_microbatches, x.shape[0] // num_microbatches) + x.shape[1:]),
          dict(batch))

      def accumulate(carry, index):
        grads_sum, terms_sum = carry
        piece = jax.tree_util.tree_map(lambda x: x[index], micro)
        grads, terms = loss_and_grad(state.trainable, frozen, piece,
                                     jax.random.fold_in(step_rng, index))
        return (jax.tree_util.tree_map(jnp.add, grads_sum, grads), _sum_terms(terms_sum, terms)), None

      zero_grads = jax.tree_util.tree_map(jnp.zeros_like, state.trainable)
      zero_terms = losses.LossTerms(*(jnp.zeros((), jnp.float32) for _ in losses.LossTerms._fields))
      (grads, terms), _ = jax.lax.scan(accumulate, (zero_grads, zero_terms),
                                       jnp.arange(num_microbatches))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable, step=state.step)
    trainable = optax.apply_updates(state.trainable, updates)
    # 1 when the loss or the updated parameters are NaN/inf (checked before any checkpoint).
    nonfinite = jnp.logical_not(jnp.isfinite(terms.loss) & jnp.isfinite(optax.global_norm(trainable)))
    metrics = dict(terms._asdict(), grad_norm=optax.global_norm(grads),
                   nonfinite=nonfinite.astype(jnp.float32))
    return TrainState(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

  return step_fn


def jit_train_step(step_fn: Callable, state_shardings: Any, frozen_shardings: Any,
                   mesh: jax.sharding.Mesh) -> Callable:
  """`step_fn` jitted with explicit shardings; the state is donated (updated in place)."""
  batch = partitioning.batch_sharding(mesh)
  replicated = partitioning.replicated(mesh)
  return jax.jit(step_fn, in_shardings=(state_shardings, frozen_shardings, batch, replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def summarize(metrics: Mapping[str, Any]) -> Metrics:
  """T5X's logged figures from the summed loss pieces of one or more steps (T5X's token
  "accuracy" is named `token_accuracy`, apart from the per-example eval accuracy)."""
  host = {name: float(np.asarray(value)) for name, value in metrics.items()}
  tokens = max(host["weight_sum"], 1.0)
  if host.get("nonfinite", 0.0) > 0 and np.isfinite(host["loss"]):
    host["loss"] = float("nan")  # The update made the parameters non-finite.
  return {
      "loss": host["loss"],
      "z_loss": host["z_loss"],
      "loss_per_nonpadding_target_token": host["loss"] / tokens,
      "token_accuracy": host["correct"] / tokens,  # T5X logs it as "accuracy".
      "nonpadding_target_tokens": host["weight_sum"],
      "grad_norm": host["grad_norm"],
  }


@dataclasses.dataclass
class LoopHooks:
  """Callbacks of the training loop (each optional); `step` is the global step just reached."""

  on_log: Optional[Callable[[int, Metrics], None]] = None
  on_eval: Optional[Callable[[int, TrainState], None]] = None
  on_checkpoint: Optional[Callable[[int, TrainState], None]] = None
  # Asked after each evaluation; True stops the run there (early stopping), after a checkpoint.
  should_stop: Optional[Callable[[int], bool]] = None


@dataclasses.dataclass
class LoopConfig:
  total_steps: int                 # absolute global step to stop at (TRAIN_STEPS).
  log_period: int = 10
  eval_period: Optional[int] = None
  checkpoint_period: Optional[int] = 1000
  batch_size: int = 32


def _checkpoint(hooks: LoopHooks, step: int, state: TrainState,
                pending: Sequence[Mapping[str, jax.Array]], last_checkpoint: Optional[int]) -> None:
  """Calls `on_checkpoint` after checking the not yet logged losses (never saves a NaN state)."""
  if pending:
    summed = summarize(jax.tree_util.tree_map(lambda *xs: sum(xs), *pending))
    if not np.isfinite(summed["loss"]):
      raise NonFiniteLossError(step, summed["loss"], last_checkpoint)
  hooks.on_checkpoint(step, state)


def train_loop(train_step: Callable, state: TrainState, frozen: Any,
               batches: Iterator[Mapping[str, jax.Array]], rng: jax.Array, config: LoopConfig,
               hooks: LoopHooks, last_checkpoint: Optional[int] = None) -> TrainState:
  """Steps from `state.step` to `config.total_steps`, logging, evaluating and checkpointing.

  Checkpoints at every `checkpoint_period` and at the end; stops with NonFiniteLossError (after
  no new checkpoint) when a logged loss is NaN/inf, and early (after a checkpoint) when
  `hooks.should_stop` says so. Throughput and `seconds_per_step` leave out the first step, which
  compiles; the first logged figures carry its time as `first_step_seconds`.
  """
  step = int(state.step)
  pending: list[dict[str, jax.Array]] = []
  started, timed_steps = time.perf_counter(), 0
  first_step_seconds: Optional[float] = None
  first_logged = False
  while step < config.total_steps:
    state, metrics = train_step(state, frozen, next(batches), rng)
    step += 1
    pending.append(metrics)
    if first_step_seconds is None:  # Compilation: timed on its own, not in the ETA.
      jax.block_until_ready(metrics)
      first_step_seconds = time.perf_counter() - started
      started = time.perf_counter()
    else:
      timed_steps += 1
    at_end = step == config.total_steps
    if step % config.log_period == 0 or at_end:
      summed = jax.tree_util.tree_map(lambda *xs: sum(xs), *pending)
      figures = summarize(summed)
      figures["loss"] /= len(pending)  # Mean per-step loss, as T5X logs it.
      figures["z_loss"] /= len(pending)
      if not np.isfinite(figures["loss"]):
        raise NonFiniteLossError(step, figures["loss"], last_checkpoint)
      elapsed = time.perf_counter() - started
      if timed_steps:
        figures["examples_per_second"] = timed_steps * config.batch_size / max(elapsed, 1e-9)
        figures["seconds_per_step"] = elapsed / timed_steps
      if not first_logged:
        figures["first_step_seconds"] = first_step_seconds
        first_logged = True
      if hooks.on_log:
        hooks.on_log(step, figures)
      pending, timed_steps, started = [], 0, time.perf_counter()
    if hooks.on_checkpoint and (at_end or (config.checkpoint_period and
                                           step % config.checkpoint_period == 0)):
      _checkpoint(hooks, step, state, pending, last_checkpoint)
      last_checkpoint = step
    if hooks.on_eval and config.eval_period and (step % config.eval_period == 0 or at_end):
      hooks.on_eval(step, state)
      if hooks.should_stop and not at_end and hooks.should_stop(step):
        if hooks.on_checkpoint and last_checkpoint != step:
          _checkpoint(hooks, step, state, pending, last_checkpoint)
        return state
    if not pending:  # Throughput counts training steps only, not hooks.
      started = time.perf_counter()
  return state
