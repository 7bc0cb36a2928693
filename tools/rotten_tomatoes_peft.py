"""The Rotten Tomatoes measurement of `prompt_tuning.examples.rotten_tomatoes`, with Hugging Face
PEFT (PyTorch) instead of this library: the PEFT column of the README's table.

  python tools/rotten_tomatoes_peft.py [--methods prompt_tuning p_tuning prefix_tuning]
      [--steps 120] [--batch 16] [--output /tmp/rotten_tomatoes_peft]

Same model (SmolLM2-135M-Instruct's Q4_1 GGUF, dequantized to float32 by transformers' own GGUF
loader), same data and split (`prompt_tuning.data.rotten_tomatoes`), same text format
("Review: <text> Sentiment:" followed by " negative" / " positive" and EOS, inputs cut to 64
tokens), same prompt length (20), batch size, step budget, evaluation schedule (rank
classification on the first 200 validation examples every 40 steps, the best kept) and test
evaluation (rank classification of the two labels on the whole test split). The optimizer is
what PEFT's own examples use: AdamW, lr 3e-2 (prompt / P-tuning) and 1e-2 (prefix tuning).
Prompt tuning starts from PEFT's TEXT init with the label words ("negative positive") repeated
to the prompt length, the closest PEFT offers to class-label init.
Needs the `tools` extra (torch, transformers, peft) and `fetch_assets smollm2-135m rotten_tomatoes`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import time

import peft
import torch
import transformers

from prompt_tuning import assets
from prompt_tuning.data import rotten_tomatoes

TEMPLATE = "Review: {text} Sentiment:"
LABELS = (" negative", " positive")
INPUT_LENGTH = 64
PROMPT_LENGTH = 20


def read_split(path: pathlib.Path) -> list[tuple[str, int]]:
  rows = path.read_text(encoding="utf-8").splitlines()[1:]
  return [(text, int(label == "positive")) for text, label in
          (row.rsplit("\t", 1) for row in rows)]


def peft_config(method: str, tokenizer) -> peft.PeftConfig:
  common = dict(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=PROMPT_LENGTH)
  if method == "prompt_tuning":
    words = ("negative positive " * PROMPT_LENGTH).strip()
    text = tokenizer.decode(tokenizer(words)["input_ids"][:PROMPT_LENGTH])
    return peft.PromptTuningConfig(prompt_tuning_init=peft.PromptTuningInit.TEXT,
                                   prompt_tuning_init_text=text,
                                   tokenizer_name_or_path=None, **common)
  if method == "p_tuning":
    return peft.PromptEncoderConfig(encoder_hidden_size=128, **common)
  return peft.PrefixTuningConfig(**common)


class Batcher:
  """Token batches: [inputs..., label, EOS] rows with labels -100 on the inputs."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer
    self.labels = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in LABELS]

  def inputs(self, text: str) -> list[int]:
    return self.tokenizer(TEMPLATE.format(text=text),
                          add_special_tokens=False)["input_ids"][:INPUT_LENGTH]

  def rows(self, examples, targets) -> dict[str, torch.Tensor]:
    ids, labels = [], []
    for (text, _), target in zip(examples, targets):
      head = self.inputs(text)
      tail = self.labels[target] + [self.tokenizer.eos_token_id]
      ids.append(head + tail)
      labels.append([-100] * len(head) + tail)
    width = max(len(row) for row in ids)
    pad = self.tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in ids]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
        "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels]),
    }


@torch.no_grad()
def rank_accuracy(model, batcher: Batcher, examples, batch: int) -> float:
  """Rank classification: the label whose tokens (+ EOS) are likelier is the prediction."""
  correct = 0
  for start in range(0, len(examples), batch):
    chunk = examples[start:start + batch]
    scores = []
    for target in (0, 1):
      rows = batcher.rows(chunk, [target] * len(chunk))
      logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
      logits = logits[:, -rows["input_ids"].shape[1]:]  # Drop virtual-token positions.
      log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
      labels = rows["labels"][:, 1:]
      picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
      scores.append((picked * (labels != -100)).sum(-1))
    predictions = (scores[1] > scores[0]).long()
    correct += int((predictions == torch.tensor([label for _, label in chunk])).sum())
  return 100.0 * correct / len(examples)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", nargs="+",
                      default=["prompt_tuning", "p_tuning", "prefix_tuning"])
  parser.add_argument("--steps", type=int, default=120)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--eval_period", type=int, default=40)
  parser.add_argument("--validation_examples", type=int, default=200)
  parser.add_argument("--test_examples", type=int, default=None)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--output", default="/tmp/rotten_tomatoes_peft")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  gguf = assets.fetch("smollm2-135m")
  splits = rotten_tomatoes.prepare(assets.fetch("rotten_tomatoes"))
  train, validation, test = (read_split(splits[s]) for s in ("train", "validation", "test"))
  validation = validation[:args.validation_examples]
  test = test[:args.test_examples] if args.test_examples else test
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
  base = transformers.AutoModelForCausalLM.from_pretrained(
      str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
  base.config._attn_implementation = "eager"  # pylint: disable=protected-access
  batcher = Batcher(tokenizer)
  results = {}
  for method in args.methods:
    model = peft.get_peft_model(copy.deepcopy(base), peft_config(method, tokenizer))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2 if method == "prefix_tuning" else 3e-2)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=generator).tolist()
    best, best_step, best_state, history = -1.0, 0, None, []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
      picks = [train[order[(step - 1) * args.batch + i]] for i in range(args.batch)]
      rows = batcher.rows(picks, [label for _, label in picks])
      model.train()
      loss = model(**rows).loss
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      if step % args.eval_period == 0 or step == args.steps:
        model.eval()
        accuracy = rank_accuracy(model, batcher, validation, 32)
        history.append((step, accuracy, float(loss)))
        print(f"{method} step {step}: loss {float(loss):.3f} validation accuracy "
              f"{accuracy:.1f}", flush=True)
        if accuracy > best:
          best, best_step = accuracy, step
          best_state = {k: v.detach().clone() for k, v in
                        peft.get_peft_model_state_dict(model).items()}
    seconds = time.perf_counter() - start
    peft.set_peft_model_state_dict(model, best_state)
    model.eval()
    accuracy = rank_accuracy(model, batcher, test, 32)
    results[method] = {"method": method, "trained_parameters": sum(p.numel() for p in trainable),
                       "steps": args.steps, "wall_seconds": seconds, "best_step": best_step,
                       "validation_history": history, "test_accuracy": accuracy,
                       "load_average_1m": os.getloadavg()[0]}
    print(json.dumps(results[method]), flush=True)
  pathlib.Path(args.output).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(args.output) / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  main()
