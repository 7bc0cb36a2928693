"""Makes the embedded demo's frozen model: prompt_tuning/assets/demo/model (+ its README).

Pretrains the tiny T5 1.1 of configs/models/demo_tiny.gin (our own `prompt_tuning.models`,
seqio.ByteVocabulary) from random weights on the `demo_pretrain` mixture of
prompt_tuning/data/demo_tasks.py (copy / reverse / sort / upper / shift with an instruction
word, and bare letters -> copy), with a plain optax AdamW loop on T5X's loss
(`prompt_tuning.train.losses.weighted_cross_entropy`, mean over target tokens). Then it
measures greedy exact match on every task's validation split, including the demo task
`demo_reverse` (which the frozen model is expected to fail: it copies bare letters), saves the
weights with `prompt_tuning.checkpoints.orbax.save_params`, runs the prompt-tuning check of
tools/check_demo_prompt_tuning.py on the saved model (exact match on `demo_reverse` before and
after training a prompt) and writes README.md and results.json next to the weights.

Deterministic for a given seed on one machine (JAX PRNG for the weights, seeded seqio/tf.data
shuffling). Runs on CPU; with the defaults about 7 minutes on 2 (shared) cores:

  python tools/make_demo_assets.py                       # writes prompt_tuning/assets/demo/
  python tools/make_demo_assets.py --steps 50 --out /tmp/demo_try   # a quick trial
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio

import check_demo_prompt_tuning  # tools/ (this script's folder is on sys.path).
import prompt_tuning
from prompt_tuning.checkpoints import orbax as orbax_ckpt
from prompt_tuning.data import demo_tasks
from prompt_tuning.train import losses

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "prompt_tuning" / "assets" / "demo"
GIN_FILE = "models/demo_tiny.gin"
EVAL_TASKS = demo_tasks.pretrain_task_names() + [demo_tasks.DEMO_TASK]


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                      help="asset folder; the model goes to OUT/model (replaced)")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--learning_rate", type=float, default=3e-3)
  parser.add_argument("--warmup_steps", type=int, default=200)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--log_every", type=int, default=200)
  parser.add_argument("--check_steps", type=int, default=300,
                      help="prompt-tuning steps of the final check (0: skip it)")
  return parser.parse_args(argv)


def train_batches(batch_size: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
  """Endless EncDecFeatureConverter batches of the pretraining mixture (text lengths)."""
  mixture = seqio.get_mixture_or_task(demo_tasks.PRETRAIN_MIXTURE)
  ds = mixture.get_dataset(demo_tasks.TASK_FEATURE_LENGTHS, split="train", shuffle=True,
                           seed=seed, num_epochs=None)
  ds = seqio.EncDecFeatureConverter(pack=False)(ds, demo_tasks.TASK_FEATURE_LENGTHS)
  return ds.batch(batch_size, drop_remainder=True).as_numpy_iterator()


def make_train_step(module: Any, optimizer: optax.GradientTransformation):
  """A jitted step: (params, opt_state, batch) -> (params, opt_state, metrics)."""

  def loss_fn(params, batch):
    logits_BSV = module.apply({"params": params}, batch["encoder_input_tokens"],
                              batch["decoder_input_tokens"], batch["decoder_target_tokens"])
    terms = losses.weighted_cross_entropy(logits_BSV, batch["decoder_target_tokens"],
                                          batch["decoder_loss_weights"])
    return terms.loss / terms.weight_sum, terms

  @jax.jit
  def train_step(params, opt_state, batch):
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, "token_accuracy": terms.correct / terms.weight_sum,
               "grad_norm": optax.global_norm(grads)}
    return params, opt_state, metrics

  return train_step


def exact_match(model: Any, params: dict, task: str, max_examples: int | None = None
                ) -> tuple[float, list[tuple[str, str, str]]]:
  """Greedy exact match (%) on `task`'s validation split and a few (input, target, output)."""
  examples = list(seqio.get_mixture_or_task(task).get_dataset(
      demo_tasks.TASK_FEATURE_LENGTHS, split="validation", shuffle=False).as_numpy_iterator())
  if max_examples is not None:
    examples = examples[:max_examples]
  inputs = [e["inputs_pretokenized"].decode() for e in examples]
  targets = [e["targets_pretokenized"].decode() for e in examples]
  tokens_NT = demo_tasks.encode_texts(inputs, demo_tasks.TASK_FEATURE_LENGTHS["inputs"])
  loaded = prompt_tuning.api.LoadedModel(config=model.config, module=model.module, params=params)
  outputs = demo_tasks.decode_tokens(
      loaded.generate(tokens_NT, demo_tasks.TASK_FEATURE_LENGTHS["targets"]))
  hits = [t == o for t, o in zip(targets, outputs)]
  return 100.0 * float(np.mean(hits)), list(zip(inputs, targets, outputs))[:3]


def evaluate(model: Any, params: dict) -> dict[str, dict[str, Any]]:
  results = {}
  for task in EVAL_TASKS:
    score, samples = exact_match(model, params, task)
    results[task] = {"exact_match": score, "samples": samples}
    print(f"  {task:24s} exact match {score:6.2f}%   e.g. {samples[0][0]!r} -> "
          f"{samples[0][2]!r} (target {samples[0][1]!r})", flush=True)
  return results


def folder_bytes(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_readme(out: pathlib.Path, record: dict[str, Any]) -> None:
  rows = "\n".join(f"| `{task}` | {r['exact_match']:.1f} | `{r['samples'][0][0]}` -> "
                   f"`{r['samples'][0][2]}` |" for task, r in record["validation"].items())
  check = ""
  if "prompt_tuning_check" in record:
    c = record["prompt_tuning_check"]
    check = (f"\nPrompt tuning check (`{c['command']}`):\na {c['prompt_length']}-position "
             f"prompt trained on `demo_reverse` with {c['optimizer']} lr {c['learning_rate']}, batch "
             f"{c['batch_size']}: greedy exact match {c['before']:.1f}% with the untrained prompt "
             f"->\n{c['after']:.1f}% after {c['steps']} steps ({c['train_seconds']:.0f} s of "
             "training); the frozen weights stay bit-identical.\n")
  text = f"""# Embedded demo assets

Made by `python tools/make_demo_assets.py` (this folder is its output; rerun it to regenerate).

- `model/checkpoint_{record['steps']}`: orbax checkpoint (`prompt_tuning.checkpoints.orbax`) of
  the frozen demo model, the tiny T5 1.1 of `configs/models/demo_tiny.gin`
  ({record['num_params']:,} parameters, float32, {record['model_bytes'] / 1e6:.2f} MB on disk),
  vocabulary `seqio.ByteVocabulary` (no file; ids 0 pad, 1 EOS, 2 UNK, byte b at b + 3;
  embedding table padded to {record['config']['vocab_size']}).
- Load it with `prompt_tuning.load_model("models/demo_tiny.gin", checkpoint=<this folder>/model)`
  (or `models/demo_tiny_prompt.gin` for prompt tuning).
- Data: `prompt_tuning/data/demo_tasks.py` (strings of {demo_tasks.MIN_LENGTH}-{demo_tasks.MAX_LENGTH}
  distinct lowercase letters, generated in memory with seed {record['data_seed']}).

Pretraining: mixture `{demo_tasks.PRETRAIN_MIXTURE}` (equal rates), {record['steps']} steps of batch
{record['batch_size']}, AdamW lr {record['learning_rate']} (linear warmup {record['warmup_steps']},
cosine decay), weight seed {record['seed']}; final training loss {record['final_loss']:.4f};
wall time {record['train_seconds'] / 60:.1f} min on {record['machine']}.

Greedy exact match on each task's validation split ({demo_tasks.SPLIT_SIZES['validation']} examples;
no validation string occurs in any training split):

| task | exact match (%) | example |
| --- | --- | --- |
{rows}

`demo_reverse` (bare letters -> reversed) is the demo task: the frozen model copies bare letters,
so it fails it; a prompt trained on `demo_reverse` can stand in for the missing "reverse: "
(see `tools/check_demo_prompt_tuning.py`).
{check}"""
  (out / "README.md").write_text(text)


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  started = time.perf_counter()
  demo_tasks.register_demo_tasks()
  model = prompt_tuning.load_model(GIN_FILE, seed=args.seed)
  params = model.params
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
  print(f"model {GIN_FILE}: {num_params:,} parameters; {args.steps} steps of batch "
        f"{args.batch_size}", flush=True)

  schedule = optax.warmup_cosine_decay_schedule(0.0, args.learning_rate, args.warmup_steps,
                                                args.steps, end_value=0.0)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, b2=0.98, weight_decay=0.01))
  opt_state = optimizer.init(params)
  train_step = make_train_step(model.module, optimizer)
  batches = train_batches(args.batch_size, args.seed)

  train_started = time.perf_counter()
  window = []
  metrics = {}
  for step in range(1, args.steps + 1):
    batch = {k: jnp.asarray(v) for k, v in next(batches).items()}
    params, opt_state, metrics = train_step(params, opt_state, batch)
    window.append(metrics)
    if step % args.log_every == 0 or step == args.steps:
      mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
      window = []
      elapsed = time.perf_counter() - train_started
      print(f"step {step:5d}  loss {mean['loss']:.4f}  token acc {mean['token_accuracy']:.4f}  "
            f"grad norm {mean['grad_norm']:.3f}  lr {float(schedule(step)):.2e}  "
            f"{elapsed:6.0f}s", flush=True)
  train_seconds = time.perf_counter() - train_started
  final_loss = float(metrics["loss"])

  print("validation (greedy decoding):", flush=True)
  results = evaluate(model, params)

  model_dir = args.out / "model"
  if model_dir.exists():
    shutil.rmtree(model_dir)
  args.out.mkdir(parents=True, exist_ok=True)
  meta = {"gin_file": GIN_FILE, "mixture": demo_tasks.PRETRAIN_MIXTURE, "seed": args.seed,
          "data_seed": demo_tasks.DEFAULT_SEED, "batch_size": args.batch_size,
          "learning_rate": args.learning_rate, "made_by": "tools/make_demo_assets.py"}
  orbax_ckpt.save_params(model_dir, jax.device_get(params), args.steps, meta=meta)
  record = {**meta, "steps": args.steps, "warmup_steps": args.warmup_steps,
            "num_params": num_params, "final_loss": final_loss,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "model_bytes": folder_bytes(model_dir),
            "machine": f"{os.cpu_count()} CPU cores ({jax.devices()[0].platform})",
            "config": {k: v for k, v in vars(model.config).items()},
            "validation": results}
  if args.check_steps:
    print("prompt tuning check:", flush=True)
    record["prompt_tuning_check"] = check_demo_prompt_tuning.main(
        ["--checkpoint", str(model_dir), "--steps", str(args.check_steps)])
  (args.out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
  write_readme(args.out, record)
  print(f"saved {model_dir} ({record['model_bytes'] / 1e6:.2f} MB); total "
        f"{record['total_seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
