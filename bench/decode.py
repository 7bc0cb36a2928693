"""Greedy decoding throughput with a prompt (tokens/s), on random weights.

  python bench/decode.py --shape {tiny,small,base} --batch 8 --inputs 128 --new_tokens 8
                         --prompt 20 --dtype float32 [--arch encoder_decoder|decoder_only|llama]
                         [--checkpoint PATH] [--repeats 10] [--ensemble N] [--json OUT]

One timed call generates `new_tokens` tokens for a batch of `batch` random inputs of length
`inputs` (no padding; EOS disabled so every call decodes all steps) and includes everything a
new batch needs: for encoder-decoder models the encoder pass over prompt + inputs, the
cross-attention keys/values and the greedy loop; for decoder-only models the prefill and the
loop. tokens_per_second = batch * new_tokens / seconds_per_batch (median of `repeats` calls,
compilation excluded).

Decoder-only models are measured twice, alternating call by call: with the prompt's keys/values
computed once and reused by every batch (`prompt_tuning.prompt_cache`; the headline figure),
and recomputing the prompt in every batch's prefill (`recompute_prompt_*`).

`--ensemble N` measures a prompt ensemble instead (Lester et al. 2021, section 6): one call
that decodes the batch with N prompts at once (N x batch rows, `ensembles.ensemble_module`;
decoder-only: the N prompts' keys/values cached once) against N single-prompt calls on the same
batch, alternating, medians: `ensemble_seconds`, `separate_seconds` and their ratio. Both give
the same tokens (checked). On a CPU the encoder pass (and a decoder-only prefill) is
compute-bound, so N prompts cost N passes either way; what an ensemble saves is the per-step
weight reads and per-call overhead of the decoding loop, which dominate at small batches.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import common
from prompt_tuning import api, ensembles, layers, prompt_cache, prompts
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


def measure_ensemble(args: argparse.Namespace) -> dict:
  """One N-prompt ensembled call vs N single-prompt calls at the same batch (see the docstring)."""
  if args.prompt < 1:
    raise SystemExit("--ensemble needs a prompt (--prompt P with P >= 1).")
  config = common.shape_config(args.shape, args.dtype, args.arch, checkpoint=args.checkpoint)
  args.shape = args.shape or ("checkpoint" if args.checkpoint else common.default_shape(args.arch))
  model = build(config, args.prompt)
  num = args.ensemble
  prompts_NPD = np.random.default_rng(1).uniform(
      -0.5, 0.5, (num, args.prompt, config.emb_dim)).astype(np.float32)
  module = ensembles.ensemble_module(model.module, num)
  stack = "decoder" if config.architecture == "decoder_only" else "encoder"
  ensemble_params = ensembles.ensemble_params(model.params, stack, prompts_NPD)
  singles = [model.with_prompt(prompt) for prompt in prompts_NPD]
  inputs = jnp.asarray(
      np.random.default_rng(0).integers(2, config.vocab_size, (args.batch, args.inputs)),
      jnp.int32)
  tiled = ensembles.tile_rows(inputs, num)
  rng = jax.random.PRNGKey(0)
  options = greedy_options(args.new_tokens)
  # pylint: disable=protected-access
  if config.architecture == "encoder_decoder":
    ensemble = lambda: api.generate_encoder_decoder(module, ensemble_params, tiled, rng, **options)
    separate = lambda: [api.generate_encoder_decoder(model.module, params, inputs, rng, **options)
                        for params in singles]
  else:  # Prompt keys/values computed once (N rows / one per prompt), as inference does.
    cache = prompt_cache.build_prompt_cache(module, ensemble_params)
    caches = [prompt_cache.build_prompt_cache(model.module, params) for params in singles]
    valid, tiled_valid = jnp.ones_like(inputs, bool), jnp.ones_like(tiled, bool)
    ensemble = lambda: prompt_cache.generate_from_cache(module, ensemble_params, cache, tiled,
                                                        rng, tiled_valid, **options)
    separate = lambda: [prompt_cache.generate_from_cache(model.module, params, one, inputs, rng,
                                                         valid, **options)
                        for params, one in zip(singles, caches)]
  # pylint: enable=protected-access
  np.testing.assert_array_equal(np.asarray(ensemble()).reshape(num, args.batch, -1),
                                np.stack([np.asarray(t) for t in separate()]))
  timings = common.time_interleaved({"ensemble": ensemble, "separate": separate}, args.repeats)
  ensemble_s, separate_s = (statistics.median(timings[k]) for k in ("ensemble", "separate"))
  record = {"ensemble_seconds": ensemble_s, "separate_seconds": separate_s,
            "ensemble_to_separate_ratio": ensemble_s / separate_s, "num_prompts": num,
            **common.summarize_times(timings["ensemble"], "ensemble_"),
            **common.summarize_times(timings["separate"], "separate_"),
            "shape": args.shape, "arch": args.arch, "dtype": args.dtype, "batch": args.batch,
            "inputs": args.inputs, "new_tokens": args.new_tokens, "prompt": args.prompt}
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
  parser.add_argument("--ensemble", type=int, default=0, metavar="N",
                      help="time an N-prompt ensemble (one call) against N single-prompt calls")
  args = parser.parse_args()
  record = measure_ensemble(args) if args.ensemble > 0 else measure(args)
  common.print_record(record)
  common.write_json(args.json, record)


if __name__ == "__main__":
  main()
