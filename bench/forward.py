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
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import common
from decode import greedy_options
from prompt_tuning import api
from prompt_tuning.models import build_model


def _median_seconds(fn, repeats: int) -> float:
  return statistics.median(common.time_calls(fn, repeats))


def measure(shape: str, batch: int, inputs: int, targets: int, decode: int, repeats: int,
            dtype: str) -> dict:
  config = common.shape_config(shape, dtype)
  module = build_model(config)
  params = jax.jit(lambda rng: api.init_params(module, config, rng))(jax.random.PRNGKey(0))
  model = api.LoadedModel(config, module, params)
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
  return lambda: api.generate_encoder_decoder(
      model.module, model.params, encoder_tokens, jax.random.PRNGKey(0),
      **greedy_options(steps))  # EOS disabled: every run decodes `steps` tokens.


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="tiny,small")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--decode", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=common.DTYPES)
  parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
  args = parser.parse_args()

  rows = [measure(s, args.batch, args.inputs, args.targets, args.decode, args.repeats, args.dtype)
          for s in args.shapes.split(",")]
  env = common.environment()
  print(f"device: {env['device']} x{env['device_count']}, cpu threads: {env['cpu_count']}, "
        f"jax {env['jax_version']}, load average {env.get('load_average_1m', '?')}")
  header = (f"{'shape':<6} {'dtype':<9} {'batch':>5} {'in+tgt':>7} {'fwd s':>8} {'fwd tok/s':>10} "
            f"{'greedy s':>9} {'decode tok/s':>12}")
  print(header)
  print("-" * len(header))
  for r in rows:
    print(f"{r['shape']:<6} {r['dtype']:<9} {r['batch']:>5} {r['inputs'] + r['targets']:>7} "
          f"{r['forward_seconds']:>8.4f} {r['forward_tokens_per_second']:>10.0f} "
          f"{r['greedy_seconds']:>9.4f} {r['greedy_tokens_per_second']:>12.1f}")
  common.write_json(args.json, [{**r, **common.memory_record(), **env} for r in rows])


if __name__ == "__main__":
  main()
