"""Training-step throughput of prompt tuning (and of full fine-tuning, for the ratio).

  python bench/train.py --shape small --batch 8 --inputs 128 --targets 8 --prompt 20 \
      --dropout 0.1 --dtype float32 --steps 10 [--full-finetune] [--frozen_dtype bfloat16]
      [--loss_chunk N] [--remat none|minimal|full] [--json OUT]
  python bench/train.py --arch llama [--shape smollm2-135m | --checkpoint PATH.gguf] ...

`--arch llama` trains a prompt on a Llama-family decoder-only LLM (default shape SmolLM2-135M;
`--checkpoint` a real Hugging Face dir / GGUF file, shape and weights from it): one causal-LM
row per example, the prompt + inputs + targets, loss on the targets, no dropout.

Runs the library's own jitted `train_step` (prompt_tuning.train.trainer) on a fixed random batch
with random frozen weights and prints examples_per_second, seconds_per_step,
useful_gflops_per_second, matmul_peak_gflops_per_second and peak_rss_mb.

Useful FLOPs are the frozen model's forward FLOPs plus its activation-gradient FLOPs (what prompt
tuning must compute); weight-gradient FLOPs are not counted, also for `--full-finetune`, so the two
figures compare the same work. Per example: every matmul with a weight counts 2*m*n*k forward and
the same again for the activation gradient; attention's score and value matmuls count three times
(forward plus gradients for both operands). These matmul FLOPs equal the dot FLOPs in XLA's
optimised forward program exactly (tiny and small shapes), and XLA's cost analysis of the
prompt-only gradient (121.4 GFLOP for small, elementwise work included) is within 0.4% of
2x dense + 3x attention (121.0): no weight gradient is computed.

peak_rss_mb is the training's: the step is compiled from parameter shapes first, the compiler's
freed memory is handed back to the OS, the random weights are drawn in numpy into buffers that
XLA uses without a copy, and the memory figures are taken before the matmul-peak probe.
cpu_seconds_per_step (process CPU time, all threads) tells a busy machine from a slow step.
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
from prompt_tuning.train import model_setup, models, optim, partitioning, trainer


def forward_flops(config: T5Config, inputs: int, targets: int, prompt: int) -> tuple[float, float]:
  """(weight matmul FLOPs, attention score/value FLOPs) of one example's forward pass.

  Only the logits of target positions count as useful (the loss needs no others).
  """
  d, inner, mlp = config.emb_dim, config.num_heads * config.head_dim, config.mlp_dim
  mlp_mats = len(config.mlp_activations) + 1
  if config.architecture == "decoder_only":
    tokens = prompt + inputs + targets
    kv = config.kv_heads * config.head_dim
    per_token_dense = 2 * d * (2 * inner + 2 * kv) + mlp_mats * 2 * d * mlp
    dense = tokens * config.num_decoder_layers * per_token_dense + targets * 2 * d * (
        config.vocab_size)
    attention = config.num_decoder_layers * 2 * 2 * tokens * tokens * inner
    return float(dense), float(attention)
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


def _aligned_empty(shape: tuple[int, ...], dtype=np.float32, alignment: int = 64) -> np.ndarray:
  """An uninitialised array whose data starts on an `alignment`-byte boundary.

  `jax.device_put` shares such a buffer on CPU instead of copying it.
  """
  dtype = np.dtype(dtype)
  size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.empty(size + alignment, np.uint8)
  offset = -raw.ctypes.data % alignment
  return raw[offset:offset + size].view(dtype).reshape(shape)


def random_params(shapes: dict, head_dim: int, seed: int = 0) -> dict:
  """Random numpy parameters of the given shapes and dtypes (a tree of ShapeDtypeStruct).

  Scales follow the model's initialisers (kernels: normal with variance 1/fan_in, queries also
  divided by sqrt(head_dim); embedding: unit normal; norm scales: ones; prompts and position
  biases: uniform). Unlike `api.init_params` under jit, which compiles one large program and
  holds ~2x the parameters in XLA temporaries (~1.2 GB peak RSS for T5-small), this holds only
  the parameters, in 64-byte aligned buffers that `jax.device_put` uses without a copy on CPU.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape_dtype in tree.flatten_params(shapes).items():
    value = _aligned_empty(shape_dtype.shape)
    if path.endswith("/scale"):
      value.fill(1.0)
    elif re.search(r"(/prompt/|/prefix/|rel_embedding)", path):
      value[...] = rng.uniform(-0.5, 0.5, size=value.shape)
    else:
      rng.standard_normal(dtype=np.float32, out=value)
      if path.endswith("/kernel"):
        value *= np.float32(value.shape[0] ** -0.5)
        if path.endswith("query/kernel"):
          value *= np.float32(head_dim ** -0.5)
    if np.dtype(shape_dtype.dtype) != value.dtype:  # e.g. bfloat16 frozen weights.
      cast = _aligned_empty(value.shape, shape_dtype.dtype)
      cast[...] = value
      value = cast
    flat[path] = value
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


def random_causal_lm_batch(rng: np.random.Generator, batch: int, inputs: int, targets: int,
                           vocab: int) -> dict[str, np.ndarray]:
  """A full-length causal-LM batch (inputs then targets in one row, loss on the targets)."""
  tokens = rng.integers(3, vocab, size=(batch, inputs + targets + 1)).astype(np.int32)
  weights = (np.arange(inputs + targets)[None] >= inputs - 1).astype(np.int32)
  return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
          "decoder_loss_weights": np.repeat(weights, batch, axis=0),
          "decoder_attention_mask": np.ones((batch, inputs + targets), np.int32)}


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
  parser.add_argument("--frozen_dtype", default="float32", choices=("float32", "bfloat16"),
                      help="dtype the frozen weights are held in (computation stays --dtype)")
  parser.add_argument("--remat", default="none", choices=("none", "minimal", "full"),
                      help="layer rematerialization policy (REMAT_POLICY)")
  parser.add_argument("--loss_chunk", type=int, default=0,
                      help="target positions per logits chunk of the loss (0: all at once)")
  parser.add_argument("--skip-peak", action="store_true", help="do not measure matmul peak")
  parser.add_argument("--arch", default="encoder_decoder", choices=("encoder_decoder", "llama"),
                      help="T5 encoder-decoder, or a Llama-family decoder-only LLM")
  parser.add_argument("--checkpoint", default=None,
                      help="a real model (Hugging Face dir or .gguf; sets the shape and weights)")
  args = parser.parse_args(argv)

  llm = args.arch == "llama" or args.checkpoint is not None
  if llm:
    args.dropout = 0.0  # Llama-family models have no dropout.
  config = common.shape_config(args.shape, dtype=args.dtype, architecture=args.arch,
                               dropout_rate=args.dropout, checkpoint=args.checkpoint).replace(
                                   remat_policy=args.remat)
  args.shape = args.shape or ("checkpoint" if args.checkpoint else
                              common.default_shape(args.arch))
  prompt_config = prompts.PromptConfig(length=args.prompt, initializer=prompts.uniform(0.5))
  module = api.build_any_model(config, prompt_config)
  regex = ".*" if args.full_finetune else optim.DEFAULT_TRAINABLE_REGEX
  tx = optim.adafactor(learning_rate=0.3)
  mesh = partitioning.make_mesh(1)
  replicated = partitioning.replicated(mesh)
  loss_config = models.LossConfig(logits_chunk_size=args.loss_chunk,
                                  logits_window=args.targets if llm else None)
  step_fn = trainer.make_train_step(module, tx, loss_config, dropout=args.dropout > 0)
  jitted = trainer.jit_train_step(step_fn, replicated, replicated, mesh)
  make_batch = random_causal_lm_batch if llm else random_batch
  batch = partitioning.shard_batch(
      make_batch(np.random.default_rng(0), args.batch, args.inputs, args.targets,
                 config.vocab_size), mesh)
  rng = trainer.dropout_key(1)

  # Compiled from shapes before any parameter exists, so compilation and training memory do not
  # add up in the peak RSS.
  shapes = api.with_frozen_dtype(api.param_shapes(module, config), args.frozen_dtype, regex)
  trainable_shapes, frozen_shapes = optim.split_params(shapes, regex)
  start = time.perf_counter()
  compiled = jitted.lower(jax.eval_shape(lambda t: new_state(tx, t), trainable_shapes),
                          frozen_shapes, batch, rng).compile()
  compile_seconds = time.perf_counter() - start
  release_freed_host_memory()

  if args.checkpoint:
    params = model_setup.initial_params(model_setup.build_run_model(config, prompt_config),
                                        args.checkpoint, frozen_dtype=args.frozen_dtype,
                                        trainable_regex=regex)
    trainable, frozen = optim.split_params(jax.device_get(params), regex)
    del params
  else:
    trainable, frozen = optim.split_params(random_params(shapes, config.head_dim), regex)
  num_trainable = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(trainable)))
  # Frozen weights share the numpy buffers; the trained ones are copied (the step donates them).
  # Placed as the step's outputs are (a jitted call with the unplaced state would compile again).
  frozen = jax.device_put(frozen, replicated)
  state = jax.device_put(new_state(tx, jax.tree_util.tree_map(jnp.array, trainable)), replicated)
  del trainable
  holder = {"state": state}
  del state

  def one_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch, rng)
    return metrics["loss"]

  seconds, cpu_seconds = time_steps(one_step, repeats=args.steps, warmup=2)
  per_step = statistics.median(seconds)
  flops = useful_flops_per_example(config, args.inputs, args.targets, args.prompt) * args.batch
  record = {
      "benchmark": "train", "shape": args.shape, "arch": config.family, "mode": "full_finetune" if args.full_finetune
      else "prompt_tuning", "batch": args.batch, "inputs": args.inputs, "targets": args.targets,
      "prompt": args.prompt, "dropout": args.dropout, "dtype": args.dtype,
      "frozen_dtype": args.frozen_dtype, "loss_chunk": args.loss_chunk,
      "remat": args.remat,
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
