"""Shared helpers for the benchmarks under bench/ (never imported by the library or the tests).

What a benchmark script typically does:

  from common import SHAPES, shape_config, time_calls, summarize_times, matmul_peak_gflops, ...
  config = shape_config("small", dtype="float32")           # a ModelConfig preset
  seconds = time_calls(lambda: step(...), repeats=10)        # compile + warm-up excluded
  record = {"seconds_per_step": statistics.median(seconds), **summarize_times(seconds),
            "matmul_peak_gflops_per_second": matmul_peak_gflops("float32"),
            "peak_rss_mb": peak_rss_mb(), **environment()}
  print_record(record); write_json(args.json, record)

`time_calls` blocks on every result (`jax.block_until_ready`), so asynchronous dispatch never
hides work. Benchmarks run from the repository root as `python bench/NAME.py`; Python puts
bench/ on the path, so `import common` works without installing anything.

Timings on a shared machine are noisy: every helper reports medians over repeats, and
`environment()` records the load average so a reader can tell a busy run from a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp

from prompt_tuning.models import ModelConfig, T5Config

# Decoder-only LLM shapes (`--arch llama`), as their checkpoints' configs say.
LLM_SHAPES: dict[str, ModelConfig] = {
    # SmolLM2-135M(-Instruct): 30 layers, d 576, 9 heads / 3 KV heads x 64, SwiGLU 1536, tied
    # 49152-token head, RoPE theta 1e5, RMSNorm 1e-5.
    "smollm2-135m": ModelConfig(
        family="llama", architecture="decoder_only", vocab_size=49152, emb_dim=576, num_heads=9,
        num_kv_heads=3, head_dim=64, mlp_dim=1536, num_encoder_layers=0, num_decoder_layers=30,
        mlp_activations=("silu", "linear"), logits_via_embedding=True,
        rescale_tied_logits=False, position_embedding="rope", rope_theta=100000.0,
        scale_attention=True, layer_norm_epsilon=1e-5, zero_is_padding=False, bos_token_id=1,
        eos_token_ids=(2,), pad_token_id=2),
}

# Model shapes by name. Dropout, dtype and architecture are set per run with `shape_config`.
SHAPES: dict[str, T5Config] = {
    # The shared T5X fixture's shape (tests/fixtures, ../shared/fixtures/t5x_tiny_checkpoint_3).
    "tiny": T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=2,
                     num_decoder_layers=2, relpos_num_buckets=4, relpos_max_distance=8),
    # T5 1.1 small (configs/models/sizes/small.gin): d_model 512, 6 heads x 64, MLP 1024 gated
    # GELU, 8 + 8 layers, vocab 32128.
    "small": T5Config(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_encoder_layers=8,
                      num_decoder_layers=8),
    # T5 1.1 base (configs/models/sizes/base.gin): d_model 768, 12 heads x 64, MLP 2048, 12 + 12.
    "base": T5Config(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, num_encoder_layers=12,
                     num_decoder_layers=12),
}

DTYPES = ("float32", "bfloat16")
# "decoder_only" is the T5X decoder-only LM; "llama" the Llama-family LLMs (LLM_SHAPES).
ARCHITECTURES = ("encoder_decoder", "decoder_only", "llama")


def default_shape(architecture: str) -> str:
  return "smollm2-135m" if architecture == "llama" else "small"


def shape_config(shape: Optional[str], dtype: str = "float32",
                 architecture: str = "encoder_decoder", dropout_rate: float = 0.0,
                 checkpoint: Optional[str] = None) -> ModelConfig:
  """The config of preset `shape` (or of `checkpoint`) with the run's activation dtype,
  architecture and dropout.

  A T5 decoder-only model keeps the preset's decoder layers and has no encoder; "llama" shapes
  keep their own (no dropout: Llama has none).
  """
  if checkpoint:
    from prompt_tuning import api
    return api.checkpoint_model_config(checkpoint).replace(dtype=dtype)
  shape = shape or default_shape(architecture)
  if architecture == "llama":
    if shape not in LLM_SHAPES:
      raise ValueError(f"--arch llama takes one of the shapes {sorted(LLM_SHAPES)}, not {shape!r}.")
    return LLM_SHAPES[shape].replace(dtype=dtype)
  if shape not in SHAPES:
    raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}.")
  config = SHAPES[shape].replace(dtype=dtype, architecture=architecture,
                                 dropout_rate=dropout_rate)
  if architecture == "decoder_only":
    config = config.replace(num_encoder_layers=0)
  return config


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
  """Wall-clock seconds of `repeats` calls of `fn` (each blocked until ready), after `warmup`.

  The warm-up calls compile and fill caches; they are not timed.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn())
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - start)
  return seconds


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                     warmup: int = 1) -> dict[str, list[float]]:
  """Like `time_calls` for several functions, alternating them call by call.

  On a shared machine, load changes over time; alternating makes A/B comparisons fair.
  """
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  seconds: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      seconds[name].append(time.perf_counter() - start)
  return seconds


def summarize_times(seconds: Sequence[float], prefix: str = "") -> dict[str, float]:
  """{PREFIX+'seconds_median', 'seconds_min', 'seconds_max'} of a list of timings."""
  return {f"{prefix}seconds_median": statistics.median(seconds),
          f"{prefix}seconds_min": min(seconds),
          f"{prefix}seconds_max": max(seconds)}


def _matmul_seconds(n: int, dtype: jnp.dtype, repeats: int) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
  matmul = jax.jit(jnp.dot)
  return statistics.median(time_calls(lambda: matmul(a, b), repeats))


def matmul_peak_gflops(dtype: str = "float32", n: Optional[int] = None, repeats: int = 5,
                       target_seconds: float = 0.3) -> float:
  """Dense matmul throughput of XLA on the default device, GFLOP/s (2 n^3 FLOPs per call).

  A jitted `jnp.dot` of two square [n, n] matrices of `dtype`, median of `repeats` timed calls.
  With `n=None` the size is chosen so one call takes about `target_seconds` (0.2-1 s on a CPU;
  capped at 16384 on accelerators): a quick probe at n=1024 estimates the rate first.
  """
  jdtype = jnp.dtype(dtype)
  if n is None:
    probe = 1024
    rate = 2 * probe**3 / _matmul_seconds(probe, jdtype, 3)
    n = int(round((target_seconds * rate / 2) ** (1 / 3) / 256)) * 256
    n = min(max(n, 512), 16384)
  return 2 * n**3 / _matmul_seconds(n, jdtype, repeats) / 1e9


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far, in MB (Linux ru_maxrss is in KiB)."""
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 / 1024  # macOS reports bytes
  return kib * scale


def device_peak_memory_mb() -> Optional[float]:
  """Peak device memory in use (MB) from `memory_stats()` on accelerators; None where absent."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def memory_record() -> dict[str, Optional[float]]:
  """{'peak_rss_mb', 'device_peak_memory_mb'} (the latter None on CPU)."""
  return {"peak_rss_mb": peak_rss_mb(), "device_peak_memory_mb": device_peak_memory_mb()}


def environment() -> dict[str, Any]:
  """Where the figures come from: device, CPU count, library versions, 1-minute load average."""
  device = jax.devices()[0]
  record = {"device": f"{device.platform}:{device.device_kind}", "device_count": jax.device_count(),
            "cpu_count": os.cpu_count(), "jax_version": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
  if hasattr(os, "getloadavg"):
    record["load_average_1m"] = round(os.getloadavg()[0], 2)
  return record


def add_common_args(parser: argparse.ArgumentParser, shapes: Iterable[str] = ("small",)) -> None:
  """Adds --shape, --batch, --dtype, --repeats and --json (the flags every benchmark shares)."""
  parser.add_argument("--shape", default=None, choices=sorted(SHAPES) + sorted(LLM_SHAPES),
                      help="model shape preset (default: small; smollm2-135m with --arch llama)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32", choices=DTYPES)
  parser.add_argument("--repeats", type=int, default=10, help="timed calls (median reported)")
  parser.add_argument("--json", default=None, metavar="OUT",
                      help="also write the printed record as JSON to this path")


def print_record(record: dict[str, Any]) -> None:
  """Prints `key: value` lines (floats with 4 significant digits)."""
  width = max(len(k) for k in record)
  for key, value in record.items():
    shown = f"{value:.4g}" if isinstance(value, float) else value
    print(f"{key:<{width}} : {shown}")


def write_json(path: Optional[str], record: Any) -> None:
  """Writes `record` as indented JSON to `path` (no-op when path is None)."""
  if path:
    with open(path, "w") as f:
      json.dump(record, f, indent=2)
      f.write("\n")
