"""Hugging Face PEFT's prompt-tuning training step on a Llama-family model, for bench/train.py.

  python tools/bench_peft_train.py [--checkpoint PATH.gguf] --batch 8 --inputs 128 --targets 8 \
      --prompt 20 --steps 5 [--threads 2]

The same work as `python bench/train.py --arch llama`: a frozen LlamaForCausalLM (the SmolLM2-135M
shape with random weights, or a real GGUF / Hugging Face checkpoint), a PEFT prompt-tuning
adapter of `prompt` virtual tokens, one causal-LM row per example (inputs then targets, labels
-100 on the inputs), eager attention, float32; one step = forward + backward + AdamW update.
Prints examples_per_second (median over the timed steps, after one warm-up step).
Needs the `tools` extra (torch, transformers, peft).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import peft
import torch
import transformers

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
               rope_theta=100000.0, tie_word_embeddings=True, max_position_embeddings=8192,
               bos_token_id=1, eos_token_id=2, pad_token_id=2)


def base_model(checkpoint: str | None) -> transformers.PreTrainedModel:
  if checkpoint is None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SMOLLM2)
    return transformers.LlamaForCausalLM(config).eval()
  folder, name = os.path.split(os.path.abspath(checkpoint))
  if name.endswith(".gguf"):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                             dtype=torch.float32)
  return transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default=None)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=20)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  model = base_model(args.checkpoint)
  model.config._attn_implementation = "eager"  # pylint: disable=protected-access
  config = peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM,
                                   num_virtual_tokens=args.prompt)
  model = peft.get_peft_model(model, config)
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3)
  generator = torch.Generator().manual_seed(0)
  length = args.inputs + args.targets
  input_ids = torch.randint(3, model.config.vocab_size, (args.batch, length), generator=generator)
  labels = input_ids.clone()
  labels[:, :args.inputs] = -100
  mask = torch.ones_like(input_ids)

  def step() -> float:
    optimizer.zero_grad()
    loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    return float(loss)

  step()
  seconds = []
  for _ in range(args.steps):
    start = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - start)
  per_step = statistics.median(seconds)
  record = {"implementation": f"peft {peft.__version__} / torch {torch.__version__}",
            "batch": args.batch, "inputs": args.inputs, "targets": args.targets,
            "prompt": args.prompt, "threads": args.threads, "seconds_per_step": per_step,
            "examples_per_second": args.batch / per_step,
            "step_seconds": seconds, "load_average_1m": round(os.getloadavg()[0], 2)}
  print(json.dumps(record, indent=2))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(record, f, indent=2)


if __name__ == "__main__":
  main()
