"""Greedy decoding throughput with a prompt (tokens/s), on random weights.

  python bench/decode.py --shape {tiny,small,base} --batch 8 --inputs 128 --new_tokens 8
                         --prompt 20 --dtype float32 [--arch encoder_decoder|decoder_only|llama]
                         [--checkpoint PATH] [--repeats 10] [--json OUT]

One timed call generates `new_tokens` tokens for a batch of `batch` random inputs of length
`inputs` (no padding; EOS disabled so every call decodes all steps) and includes everything a
new batch needs: for encoder-decoder models the encoder pass over prompt + inputs, the
cross-attention keys/values and the greedy loop; for decoder-only models the prefill and the
loop. tokens_per_second = batch * new_tokens / seconds_per_batch (median of `repeats` calls,
compilation excluded).

Decoder-only models are measured twice, alternating call by call: with the prompt's keys/values
computed once and reused by every batch (`prompt_tuning.prompt_cache`; the headline figure),
and recomputing the prompt in every batch's prefill (`recompute_prompt_*`).
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import common
from prompt_tuning import api, layers, prompt_cache, prompts
from prompt_tuning.models import build_model


def build(config, prompt_length: int, seed: int = 0) -> api.LoadedModel:
  """A model of `config` (with a prompt-tuning prompt of `prompt_length` if > 0), random weights."""
  prompt_config = None
  if prompt_length > 0:
    prompt_config = prompts.PromptConfig(length=prompt_length)
    module = layers.build_prompt_model(config, prompt_config)
  else:
    module = build_model(config)
  params = jax.jit(lambda rng: api.init_params(module, config, rng))(jax.random.PRNGKey(seed))
  return api.LoadedModel(config, module, params, prompt_config)


def greedy_options(new_tokens: int) -> dict:
  """Options of api._generate_*: greedy, `new_tokens` steps, EOS disabled (-1)."""
  return dict(method="greedy", max_decode_length=new_tokens, num_beams=1, alpha=0.0,
              temperature=1.0, top_k=0, top_p=1.0, eos_id=-1)


def measure(args: argparse.Namespace) -> dict:
  config = common.shape_config(args.shape, args.dtype, args.arch, checkpoint=args.checkpoint)
  args.shape = args.shape or ("checkpoint" if args.checkpoint else common.default_shape(args.arch))
  model = build(config, args.prompt)
  if args.checkpoint:  # Real frozen weights; the prompt stays random.
    from prompt_tuning.checkpoints import tree
    real = api.load_model(checkpoint=args.checkpoint).params
    flat = tree.flatten_params(model.params)
    flat.update(tree.flatten_params(real))
    model.params = tree.unflatten_params(flat)
  inputs = jnp.asarray(
      np.random.default_rng(0).integers(2, config.vocab_size, (args.batch, args.inputs)),
      jnp.int32)
  rng = jax.random.PRNGKey(0)
  options = greedy_options(args.new_tokens)
  tokens = args.batch * args.new_tokens
  record = {"shape": args.shape, "arch": args.arch, "dtype": args.dtype, "batch": args.batch,
            "inputs": args.inputs, "new_tokens": args.new_tokens, "prompt": args.prompt}

  # pylint: disable=protected-access
  if config.architecture == "encoder_decoder":
    seconds = common.time_calls(
        lambda: api.generate_encoder_decoder(model.module, model.params, inputs, rng,
                                              **options), args.repeats)
  else:
    recompute = lambda: api.generate_decoder_only(model.module, model.params, inputs, rng,
                                                   **options)
    if args.prompt > 0:
      build_seconds = common.time_calls(
          lambda: prompt_cache.build_prompt_cache(model.module, model.params), 3)
      cache = prompt_cache.build_prompt_cache(model.module, model.params)
      reuse = lambda: prompt_cache._generate(model.module, model.params, cache, inputs, rng,
                                             jnp.ones_like(inputs, bool), **options)
      timings = common.time_interleaved({"reuse": reuse, "recompute": recompute}, args.repeats)
      seconds = timings["reuse"]
      recompute_s = statistics.median(timings["recompute"])
      record.update({
          "recompute_prompt_tokens_per_second": tokens / recompute_s,
          "recompute_prompt_seconds_per_batch": recompute_s,
          "prompt_cache_build_seconds": statistics.median(build_seconds),
      })
      np.testing.assert_array_equal(reuse(), recompute())  # same tokens either way
    else:
      seconds = common.time_calls(recompute, args.repeats)
  # pylint: enable=protected-access
  seconds_per_batch = statistics.median(seconds)
  record = {"tokens_per_second": tokens / seconds_per_batch,
            "seconds_per_batch": seconds_per_batch,
            **common.summarize_times(seconds, "batch_"),
            **record}
  if not args.no_matmul_peak:
    record["matmul_peak_gflops_per_second"] = common.matmul_peak_gflops(args.dtype)
  record.update(common.memory_record())
  record.update(common.environment())
  return record


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument("--inputs", type=int, default=128, help="input tokens per example")
  parser.add_argument("--new_tokens", type=int, default=8, help="tokens generated per example")
  parser.add_argument("--prompt", type=int, default=20, help="prompt length (0: no prompt)")
  parser.add_argument("--arch", default="encoder_decoder", choices=common.ARCHITECTURES)
  parser.add_argument("--checkpoint", default=None,
                      help="a real decoder-only model (Hugging Face dir or .gguf)")
  parser.add_argument("--no_matmul_peak", action="store_true",
                      help="skip measuring the matmul peak (saves a few seconds)")
  args = parser.parse_args()
  record = measure(args)
  common.print_record(record)
  common.write_json(args.json, record)


if __name__ == "__main__":
  main()
