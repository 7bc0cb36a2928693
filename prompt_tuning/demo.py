"""The embedded default job: build a tiny T5 1.1 from the shipped gin files and decode, offline.

Until the trainer lands this runs the model path end to end (gin -> model -> forward ->
greedy and beam decoding with a KV cache) on random weights and prints what it did.
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
  import prompt_tuning  # Imported here so `--help`-style failures are cheap.

  started = time.perf_counter()
  model = prompt_tuning.load_model(["models/sizes/tiny.gin", "architectures/t5_1_1.gin"],
                                   bindings=["NUM_EMBEDDINGS=128"])
  count = sum(int(np.prod(p.shape)) for p in __import__("jax").tree_util.tree_leaves(model.params))
  print(f"built {model.config.architecture} model: {count:,} parameters "
        f"(embed {model.config.emb_dim}, {model.config.num_encoder_layers}+"
        f"{model.config.num_decoder_layers} layers)")
  rng = np.random.default_rng(0)
  inputs = rng.integers(2, 128, size=(4, 12)).astype(np.int32)
  inputs[:, -1] = 1  # EOS
  inputs[2:, 8:] = 0  # padding on two rows
  logits = model.logits(inputs, np.zeros((4, 1), np.int32))
  print(f"forward: logits {tuple(logits.shape)}, finite={bool(np.isfinite(logits).all())}")
  print("greedy:", model.generate(inputs, 8).tolist())
  print("beam(4):", model.generate(inputs, 8, method="beam", num_beams=4).tolist())
  print(f"done in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
  main()
