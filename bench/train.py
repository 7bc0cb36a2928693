"""Training-step throughput of prompt tuning (and of full fine-tuning, for the ratio).

  python bench/train.py --shape small --batch 8 --inputs 128 --targets 8 --prompt 20 \
      --dropout 0.1 --dtype float32 --steps 10 [--full-finetune] [--json OUT]

Runs the library's own jitted `train_step` (prompt_tuning.train.trainer) on a fixed random batch
with random frozen weights and prints examples_per_second, seconds_per_step,
useful_gflops_per_second, matmul_peak_gflops_per_second and peak_rss_mb.

Useful FLOPs are the frozen model's forward FLOPs plus its activation-gradient FLOPs (what prompt
tuning must compute); weight-gradient FLOPs are not counted, also for `--full-finetune`, so the two
figures compare the same work. Per example: every matmul with a weight counts 2*m*n*k forward and
the same again for the activation gradient; attention's score and value matmuls count three times
(forward plus gradients for both operands).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from prompt_tuning import api, prompts
from prompt_tuning.checkpoints import tree
from prompt_tuning.models import T5Config
from prompt_tuning.train import models, optim, partitioning, trainer


def forward_flops(config: T5Config, inputs: int, targets: int, prompt: int) -> tuple[float, float]:
  """(weight matmul FLOPs, attention score/value FLOPs) of one example's forward pass."""
  d, inner, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  mlp_mats = len(config.mlp_activations) + 1
  encoder_tokens = inputs + prompt
  per_token_dense = 4 * 2 * d * inner + mlp_mats * 2 * d * mlp
  dense = encoder_tokens * config.num_encoder_layers * per_token_dense
  attention = encoder_tokens * config.num_encoder_layers * 2 * 2 * encoder_tokens * inner
  # Decoder: self-attention + MLP + cross-attention queries/outputs per target token, cross keys and
  # values per encoder token, and the logits.
  dense += targets * config.num_decoder_layers * (per_token_dense + 2 * 2 * d * inner)
  dense += encoder_tokens * config.num_decoder_layers * 2 * 2 * d * inner
  dense += targets * 2 * d * config.vocab_size
  attention += targets * config.num_decoder_layers * 2 * 2 * (targets + encoder_tokens) * inner
  return float(dense), float(attention)


def useful_flops_per_example(config: T5Config, inputs: int, targets: int, prompt: int) -> float:
  dense, attention = forward_flops(config, inputs, targets, prompt)
  return 2 * dense + 3 * attention


def random_params(shapes: dict, head_dim: int, seed: int = 0) -> dict:
  """Random parameters of the given shapes (a tree of ShapeDtypeStruct), drawn in numpy.

  Scales follow the model's initialisers (kernels: normal with variance 1/fan_in, queries also
  divided by sqrt(head_dim); embedding: unit normal; norm scales: ones; prompts and position
  biases: uniform). Unlike `api.init_params` under jit, which compiles one large program and
  holds ~2x the parameters in XLA temporaries (~1.2 GB peak RSS for T5-small), this never holds
  more than the parameters plus one leaf, so the benchmark's peak RSS reflects training.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape_dtype in tree.flatten_params(shapes).items():
    shape = shape_dtype.shape
    if path.endswith("/scale"):
      value = np.ones(shape, np.float32)
    elif re.search(r"(/prompt/|/prefix/|rel_embedding)", path):
      value = rng.uniform(-0.5, 0.5, size=shape).astype(np.float32)
    else:
      value = rng.standard_normal(size=shape, dtype=np.float32)
      if path.endswith("/kernel"):
        value *= np.float32(shape[0] ** -0.5)
        if path.endswith("query/kernel"):
          value *= np.float32(head_dim ** -0.5)
    flat[path] = jnp.asarray(value)
    del value
  return tree.unflatten_params(flat)


def release_freed_host_memory() -> None:
  """Hands memory that glibc holds but no longer uses back to the OS (`malloc_trim`).

  XLA's compiler frees ~150 MB of working memory for T5-small that glibc keeps mapped; without
  this it would count in the peak RSS although training never touches it. No-op off glibc.
  """
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def new_state(tx, trainable: dict) -> trainer.TrainState:
  """Step 0 training state of `trainable` parameters."""
  return trainer.TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                            opt_state=tx.init(trainable))


def time_steps(fn, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
  """(wall seconds, process CPU seconds) of `repeats` blocked calls of `fn`, after `warmup`."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return wall, cpu


def random_batch(rng: np.random.Generator, batch: int, inputs: int, targets: int,
                 vocab: int) -> dict[str, np.ndarray]:
  """A full-length encoder-decoder batch of random tokens (no padding), targets ending in EOS."""
  target_tokens = rng.integers(2, vocab, size=(batch, targets)).astype(np.int32)
  target_tokens[:, -1] = 1
  decoder_inputs = np.concatenate([np.zeros((batch, 1), np.int32), target_tokens[:, :-1]], axis=1)
  return {"encoder_input_tokens": rng.integers(2, vocab, size=(batch, inputs)).astype(np.int32),
          "decoder_input_tokens": decoder_inputs, "decoder_target_tokens": target_tokens,
          "decoder_loss_weights": np.ones((batch, targets), np.float32)}


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser, shapes=("small",))
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=20)
  parser.add_argument("--dropout", type=float, default=0.1)
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
  parser.add_argument("--full-finetune", action="store_true",
                      help="train every parameter (the comparison for prompt tuning)")
  parser.add_argument("--skip-peak", action="store_true", help="do not measure matmul peak")
  args = parser.parse_args(argv)

  config = common.shape_config(args.shape, dtype=args.dtype, dropout_rate=args.dropout)
  prompt_config = prompts.PromptConfig(length=args.prompt, initializer=prompts.uniform(0.5))
  module = api.build_any_model(config, prompt_config)
  regex = ".*" if args.full_finetune else optim.DEFAULT_TRAINABLE_REGEX
  tx = optim.adafactor(learning_rate=0.3)
  mesh = partitioning.make_mesh(1)
  replicated = partitioning.replicated(mesh)
  step_fn = trainer.make_train_step(module, tx, models.LossConfig(), dropout=args.dropout > 0)
  jitted = trainer.jit_train_step(step_fn, replicated, replicated, mesh)
  batch = partitioning.shard_batch(
      random_batch(np.random.default_rng(0), args.batch, args.inputs, args.targets,
                   config.vocab_size), mesh)
  rng = trainer.dropout_key(1)

  # Compiled from shapes before any parameter exists, so compilation and training memory do not
  # add up in the peak RSS.
  shapes = api.param_shapes(module, config)
  trainable_shapes, frozen_shapes = optim.split_params(shapes, regex)
  start = time.perf_counter()
  compiled = jitted.lower(jax.eval_shape(lambda t: new_state(tx, t), trainable_shapes),
                          frozen_shapes, batch, rng).compile()
  compile_seconds = time.perf_counter() - start
  release_freed_host_memory()

  trainable, frozen = optim.split_params(random_params(shapes, config.head_dim), regex)
  release_freed_host_memory()  # numpy's per-leaf buffers.
  num_trainable = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(trainable)))
  # Placed as the step's outputs are (a jitted call with the unplaced state would compile again).
  state = partitioning.place(new_state(tx, trainable), replicated)
  frozen = partitioning.place(frozen, replicated)
  del trainable  # Donated with the state.
  holder = {"state": state}
  del state

  def one_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch, rng)
    return metrics["loss"]

  seconds, cpu_seconds = time_steps(one_step, repeats=args.steps, warmup=2)
  per_step = statistics.median(seconds)
  flops = useful_flops_per_example(config, args.inputs, args.targets, args.prompt) * args.batch
  record = {
      "benchmark": "train", "shape": args.shape, "mode": "full_finetune" if args.full_finetune
      else "prompt_tuning", "batch": args.batch, "inputs": args.inputs, "targets": args.targets,
      "prompt": args.prompt, "dropout": args.dropout, "dtype": args.dtype,
      "trainable_parameters": num_trainable,
      "compile_seconds": compile_seconds,
      "seconds_per_step": per_step,
      "examples_per_second": args.batch / per_step,
      "useful_gflops_per_step": flops / 1e9,
      "useful_gflops_per_second": flops / per_step / 1e9,
      **common.summarize_times(seconds, prefix="step_"),
      # Process CPU time (all threads) per step: the work done, less sensitive than wall time
      # to other processes on a shared machine (with 2 idle cores it is <= 2x seconds_per_step).
      "cpu_seconds_per_step": statistics.median(cpu_seconds),
  }
  # Memory of training only: recorded before the matmul-peak probe allocates its matrices.
  record.update(common.memory_record())
  if not args.skip_peak:
    record["matmul_peak_gflops_per_second"] = common.matmul_peak_gflops(args.dtype)
    record["fraction_of_peak"] = (record["useful_gflops_per_second"] /
                                  record["matmul_peak_gflops_per_second"])
  record.update(common.environment())
  common.print_record(record)
  common.write_json(args.json, record)


if __name__ == "__main__":
  main(sys.argv[1:])
