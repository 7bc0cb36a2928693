"""Evidence that prompt tuning works on the embedded demo: accuracy before and after.

Loads the shipped frozen demo model with a fresh prompt (`models/demo_tiny_prompt.gin`,
checkpoint prompt_tuning/assets/demo/model), trains only the prompt on `demo_reverse`
(bare letters -> reversed; the frozen model copies them) with a small optax loop on T5X's
loss, and prints greedy exact match on the validation split before (untrained prompt) and
after training, with the steps and wall time used. The frozen weights are checked to be
bit-identical afterwards.

  python tools/check_demo_prompt_tuning.py [--steps 300] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio

import prompt_tuning
from prompt_tuning import api
from prompt_tuning.checkpoints import tree
from prompt_tuning.data import demo_tasks
from prompt_tuning.data import feature_converters
from prompt_tuning.train import losses

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "prompt_tuning" / "assets" / "demo" / "model"
GIN_FILE = "models/demo_tiny_prompt.gin"


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", type=pathlib.Path, default=DEFAULT_CHECKPOINT)
  parser.add_argument("--task", default=demo_tasks.DEMO_TASK)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--optimizer", choices=("adam", "adafactor"), default="adam")
  parser.add_argument("--learning_rate", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--eval_every", type=int, default=0,
                      help="also evaluate every N steps (0: only before and after)")
  return parser.parse_args(argv)


def train_batches(task: str, prompt_length: int, batch_size: int, seed: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless shuffled batches of `task`'s train split (text lengths; the model adds the prompt)."""
  ds = seqio.get_mixture_or_task(task).get_dataset(
      demo_tasks.TASK_FEATURE_LENGTHS, split="train", shuffle=True, seed=seed, num_epochs=None)
  converter = feature_converters.PromptEncDecFeatureConverter(prompt_length=prompt_length)
  ds = converter(ds, demo_tasks.TASK_FEATURE_LENGTHS)
  return ds.batch(batch_size, drop_remainder=True).as_numpy_iterator()


def validation_set(task: str) -> tuple[np.ndarray, list[str]]:
  """Encoder tokens [N, T] and target texts of `task`'s validation split."""
  examples = list(seqio.get_mixture_or_task(task).get_dataset(
      demo_tasks.TASK_FEATURE_LENGTHS, split="validation", shuffle=False).as_numpy_iterator())
  inputs = [e["inputs_pretokenized"].decode() for e in examples]
  targets = [e["targets_pretokenized"].decode() for e in examples]
  return demo_tasks.encode_texts(inputs, demo_tasks.TASK_FEATURE_LENGTHS["inputs"]), targets


def exact_match(model: api.LoadedModel, prompt_PD: Any, tokens_NT: np.ndarray,
                targets: list[str]) -> tuple[float, list[str]]:
  """Greedy exact match (%) of the model with `prompt_PD`, and its decoded outputs."""
  outputs = demo_tasks.decode_tokens(model.generate(
      tokens_NT, demo_tasks.TASK_FEATURE_LENGTHS["targets"], prompt=prompt_PD))
  return 100.0 * float(np.mean([t == o for t, o in zip(targets, outputs)])), outputs


def make_train_step(model: api.LoadedModel, optimizer: optax.GradientTransformation):
  """A jitted step over the prompt only: (prompt, opt_state, frozen, batch) -> (..., metrics)."""
  prompt_path = api.prompt_param_path(model.params)

  def loss_fn(prompt_PD, frozen, batch):
    params = tree.unflatten_params({**tree.flatten_params(frozen), prompt_path: prompt_PD})
    logits_BSV = model.module.apply({"params": params}, batch["encoder_input_tokens"],
                                    batch["decoder_input_tokens"], batch["decoder_target_tokens"])
    terms = losses.weighted_cross_entropy(logits_BSV, batch["decoder_target_tokens"],
                                          batch["decoder_loss_weights"])
    return terms.loss / terms.weight_sum, terms

  @jax.jit
  def train_step(prompt_PD, opt_state, frozen, batch):
    (loss, terms), grad_PD = jax.value_and_grad(loss_fn, has_aux=True)(prompt_PD, frozen, batch)
    updates, opt_state = optimizer.update(grad_PD, opt_state, prompt_PD)
    prompt_PD = optax.apply_updates(prompt_PD, updates)
    return prompt_PD, opt_state, {"loss": loss, "token_accuracy": terms.correct / terms.weight_sum}

  return train_step


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
  if name == "adafactor":  # The paper's: Adafactor, constant lr 0.3, no parameter scaling.
    return optax.adafactor(learning_rate, multiply_by_parameter_scale=False,
                           decay_rate=0.8, clipping_threshold=1.0)
  return optax.adam(learning_rate)


def main(argv: list[str]) -> dict[str, Any]:
  args = parse_args(argv)
  started = time.perf_counter()
  demo_tasks.register_demo_tasks()
  model = prompt_tuning.load_model(GIN_FILE, checkpoint=args.checkpoint, seed=args.seed)
  prompt_path = api.prompt_param_path(model.params)
  flat = tree.flatten_params(model.params)
  prompt_PD = flat.pop(prompt_path)
  frozen = tree.unflatten_params(flat)
  frozen_before = jax.tree_util.tree_map(np.array, frozen)
  print(f"{GIN_FILE} + {args.checkpoint}: trainable {prompt_path} {list(prompt_PD.shape)}; "
        f"task {args.task}", flush=True)

  tokens_NT, targets = validation_set(args.task)
  before, outputs = exact_match(model, prompt_PD, tokens_NT, targets)
  print(f"before: exact match {before:.1f}% (untrained prompt), e.g. "
        f"{demo_tasks.decode_tokens(tokens_NT[:1])[0]!r} -> {outputs[0]!r} "
        f"(target {targets[0]!r})", flush=True)

  optimizer = make_optimizer(args.optimizer, args.learning_rate)
  opt_state = optimizer.init(prompt_PD)
  train_step = make_train_step(model, optimizer)
  batches = train_batches(args.task, model.prompt_config.length, args.batch_size, args.seed)
  train_started = time.perf_counter()
  window = []
  for step in range(1, args.steps + 1):
    batch = {k: jnp.asarray(v) for k, v in next(batches).items()}
    prompt_PD, opt_state, metrics = train_step(prompt_PD, opt_state, frozen, batch)
    window.append(metrics)
    if step % args.log_every == 0 or step == args.steps:
      mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
      window = []
      line = (f"step {step:4d}  loss {mean['loss']:.4f}  token acc {mean['token_accuracy']:.3f}  "
              f"{time.perf_counter() - train_started:5.0f}s")
      if args.eval_every and step % args.eval_every == 0:
        line += f"  exact match {exact_match(model, prompt_PD, tokens_NT, targets)[0]:.1f}%"
      print(line, flush=True)
  train_seconds = time.perf_counter() - train_started

  after, outputs = exact_match(model, prompt_PD, tokens_NT, targets)
  print(f"after {args.steps} steps ({train_seconds:.0f}s of training): exact match {after:.1f}%, "
        f"e.g. {demo_tasks.decode_tokens(tokens_NT[:1])[0]!r} -> {outputs[0]!r}", flush=True)
  unchanged = all(np.array_equal(a, np.asarray(b)) for a, b in zip(
      jax.tree_util.tree_leaves(frozen_before), jax.tree_util.tree_leaves(frozen)))
  print(f"frozen weights bit-identical: {unchanged}; total {time.perf_counter() - started:.0f}s",
        flush=True)
  if not unchanged:
    raise AssertionError("prompt training changed frozen weights; only the prompt may change.")
  return {"before": before, "after": after, "steps": args.steps,
          "train_seconds": round(train_seconds, 1), "optimizer": args.optimizer,
          "learning_rate": args.learning_rate, "batch_size": args.batch_size,
          "prompt_length": int(prompt_PD.shape[0]), "seed": args.seed,
          "command": f"python tools/check_demo_prompt_tuning.py --steps {args.steps}"}


if __name__ == "__main__":
  main(sys.argv[1:])
