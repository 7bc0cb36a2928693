"""Rank-classification scoring throughput (examples/s) of a decoder-only prompt model, three ways.

  python bench/score.py [--checkpoint PATH | --shape smollm2-135m] --batch 32 --labels 2
                        --inputs 64 --label_tokens 2 --prompt 20 [--repeats 5] [--json OUT]

One timed call scores a batch of `batch` examples x `labels` label continuations (`batch *
labels` causal-LM rows [BOS, inputs, label tokens], as the rank-classification preprocessor
makes them; inputs of random length in [inputs / 2, inputs], random tokens) with a prompt-tuning
prompt of `prompt` tokens, through `prompt_tuning.train.scoring`:
  full_logits     : one pass, every position projected to [rows, S, V] logits (the old way);
  target_window   : one pass, only the label positions projected (`score_window`);
  shared_contexts : each distinct input prefilled once into a cache, each row feeding only its
                    label tokens (`shared_context_rows`; what evaluation uses now).
Calls alternate (medians; compilation excluded); the three give the same scores (checked).
examples_per_second = batch / seconds.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import common
from decode import build
from prompt_tuning.train import scoring


def rank_rows(rng: np.random.Generator, batch: int, labels: int, inputs: int,
              label_tokens: int, vocab: int, bos: int) -> dict[str, np.ndarray]:
  """`batch` examples x `labels` rows of causal-LM features (right-padded)."""
  label_ids = rng.integers(3, vocab, (labels, label_tokens))
  length = 1 + inputs + label_tokens
  rows = batch * labels
  batch_rows = {name: np.zeros((rows, length - 1), np.int32) for name in
                ("decoder_input_tokens", "decoder_target_tokens", "decoder_attention_mask")}
  batch_rows["decoder_loss_weights"] = np.zeros((rows, length - 1), np.float32)
  for example in range(batch):
    text = [bos] + rng.integers(3, vocab, rng.integers(inputs // 2, inputs + 1)).tolist()
    for label in range(labels):
      row, sequence = example * labels + label, text + label_ids[label].tolist()
      count = len(sequence) - 1
      batch_rows["decoder_input_tokens"][row, :count] = sequence[:-1]
      batch_rows["decoder_target_tokens"][row, :count] = sequence[1:]
      batch_rows["decoder_attention_mask"][row, :count] = 1
      batch_rows["decoder_loss_weights"][row, len(text) - 1:count] = 1
  return batch_rows


def measure(args: argparse.Namespace) -> dict:
  config = common.shape_config(args.shape, args.dtype, "llama", checkpoint=args.checkpoint)
  model = build(config, args.prompt)
  if args.checkpoint:  # Real frozen weights; the prompt stays random.
    from prompt_tuning import api
    from prompt_tuning.checkpoints import tree
    flat = tree.flatten_params(model.params)
    flat.update(tree.flatten_params(api.load_model(checkpoint=args.checkpoint).params))
    model.params = tree.unflatten_params(flat)
  host = rank_rows(np.random.default_rng(0), args.batch, args.labels, args.inputs,
                   args.label_tokens, config.vocab_size, config.bos_token_id or 1)
  device = {name: jnp.asarray(value) for name, value in host.items()}
  place = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # pylint: disable=unnecessary-lambda-assignment
  module, params = model.module, model.params
  full_fn = jax.jit(lambda p, b: scoring.score_batch(module, p, b))
  windowed = scoring.Scorer(module, place, share_contexts=False)
  shared = scoring.Scorer(module, place, share_contexts=True)
  calls = {"full_logits": lambda: full_fn(params, device),
           "target_window": lambda: windowed(params, host),
           "shared_contexts": lambda: shared(params, host)}
  reference = np.asarray(calls["full_logits"]())
  for name in ("target_window", "shared_contexts"):
    np.testing.assert_allclose(np.asarray(calls[name]()), reference, rtol=2e-4, atol=2e-3)
  timings = common.time_interleaved(calls, args.repeats)
  record = {"shape": args.shape or ("checkpoint" if args.checkpoint else "smollm2-135m"),
            "batch": args.batch, "labels": args.labels, "inputs": args.inputs,
            "label_tokens": args.label_tokens, "prompt": args.prompt, "dtype": args.dtype}
  for name, seconds in timings.items():
    median = common.summarize_times(seconds)["seconds_median"]
    record[f"{name}_seconds"] = median
    record[f"{name}_examples_per_second"] = args.batch / median
  record["shared_over_full"] = record["shared_contexts_seconds"] / record["full_logits_seconds"]
  record.update(common.environment())
  return record


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument("--checkpoint", default=None, help="HF directory or .gguf (real weights)")
  parser.add_argument("--labels", type=int, default=2)
  parser.add_argument("--inputs", type=int, default=64, help="longest input, tokens")
  parser.add_argument("--label_tokens", type=int, default=2)
  parser.add_argument("--prompt", type=int, default=20)
  args = parser.parse_args()
  record = measure(args)
  common.print_record(record)
  common.write_json(args.json, record)


if __name__ == "__main__":
  main()
