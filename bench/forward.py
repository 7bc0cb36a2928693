"""Encoder-decoder forward pass and greedy decoding throughput (tokens/s) on this machine.

  python bench/forward.py [--shapes tiny,small] [--batch 8] [--inputs 128] [--targets 8]
                          [--decode 8] [--repeats 5] [--dtype float32] [--json OUT]

Forward tokens/s counts encoder + decoder positions (batch * (inputs + targets)) per second of a
jitted teacher-forced pass; decoding tokens/s counts generated tokens (batch * decode) per second
of a jitted greedy generation (encoder pass + cross-attention cache + KV-cached steps). Both exclude
compilation (one warm-up call) and report the median of `--repeats` timed calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import api
from prompt_tuning.models import T5Config, build_model

SHAPES = {
    # The shared T5X fixture's shape.
    "tiny": T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=2,
                     num_decoder_layers=2, relpos_num_buckets=4, relpos_max_distance=8),
    # T5 1.1 small: d_model 512, 6 heads x 64, MLP 1024 gated GELU, 8 + 8 layers, vocab 32128.
    "small": T5Config(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_encoder_layers=8,
                      num_decoder_layers=8),
    "base": T5Config(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, num_encoder_layers=12,
                     num_decoder_layers=12),
}


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile + warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(shape: str, batch: int, inputs: int, targets: int, decode: int, repeats: int,
            dtype: str) -> dict:
  config = SHAPES[shape].replace(dtype=dtype)
  module = build_model(config)
  model = api.LoadedModel(config, module, api.init_params(module, config, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(0)
  encoder_tokens = jnp.asarray(rng.integers(2, config.vocab_size, (batch, inputs)), jnp.int32)
  decoder_tokens = jnp.asarray(rng.integers(2, config.vocab_size, (batch, targets)), jnp.int32)
  decoder_tokens = decoder_tokens.at[:, 0].set(0)

  forward_s = _median_seconds(lambda: model.logits(encoder_tokens, decoder_tokens), repeats)
  greedy = greedy_generator(model, encoder_tokens, decode)
  decode_s = _median_seconds(greedy, repeats)
  return {
      "shape": shape, "dtype": dtype, "batch": batch, "inputs": inputs, "targets": targets,
      "decode_steps": decode,
      "forward_seconds": forward_s,
      "forward_tokens_per_second": batch * (inputs + targets) / forward_s,
      "greedy_seconds": decode_s,
      "greedy_tokens_per_second": batch * decode / decode_s,
  }


def greedy_generator(model: api.LoadedModel, encoder_tokens: jax.Array, steps: int):
  """A zero-argument greedy generation returning a device array (no host copy)."""
  return lambda: api._generate_encoder_decoder(  # pylint: disable=protected-access
      model.module, model.params, encoder_tokens, jax.random.PRNGKey(0), method="greedy",
      max_decode_length=steps, num_beams=1, alpha=0.0, temperature=1.0, top_k=0, top_p=1.0,
      eos_id=-1)  # eos_id -1: never stop early, so every run decodes `steps` tokens.


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="tiny,small")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--decode", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
  args = parser.parse_args()

  rows = [measure(s, args.batch, args.inputs, args.targets, args.decode, args.repeats, args.dtype)
          for s in args.shapes.split(",")]
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"cpu threads: {os.cpu_count()}, jax {jax.__version__}")
  header = (f"{'shape':<6} {'dtype':<9} {'batch':>5} {'in+tgt':>7} {'fwd s':>8} {'fwd tok/s':>10} "
            f"{'greedy s':>9} {'decode tok/s':>12}")
  print(header)
  print("-" * len(header))
  for r in rows:
    print(f"{r['shape']:<6} {r['dtype']:<9} {r['batch']:>5} {r['inputs'] + r['targets']:>7} "
          f"{r['forward_seconds']:>8.4f} {r['forward_tokens_per_second']:>10.0f} "
          f"{r['greedy_seconds']:>9.4f} {r['greedy_tokens_per_second']:>12.1f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
