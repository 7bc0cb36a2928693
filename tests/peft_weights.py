"""PEFT 0.21 prompt-encoder weights (torch state-dict names) -> our parameter trees (tests only)."""

from __future__ import annotations

from typing import Callable

import numpy as np

Get = Callable[[str], np.ndarray]  # A tensor by its PEFT state-dict name.


def linear(get: Get, name: str) -> dict[str, np.ndarray]:
  """torch Linear `name` -> our {"kernel" [in, out], "bias" [out]}."""
  return {"kernel": get(f"{name}.weight").T, "bias": get(f"{name}.bias")}


def p_tuning_params(get: Get, kind: str, num_lstm_layers: int = 2) -> dict:
  """PEFT PromptEncoder (MLP or bidirectional LSTM + MLP head) -> our P-tuning encoder's tree."""
  params = {"embedding": get("embedding.weight")}
  if kind == "mlp":
    for ours, theirs in (("mlp_0", 0), ("mlp_1", 2), ("mlp_2", 4)):
      params[ours] = linear(get, f"mlp_head.{theirs}")
    return params
  for layer in range(num_lstm_layers):
    for direction, suffix in (("forward", ""), ("backward", "_reverse")):
      name = lambda w, layer=layer, suffix=suffix: f"lstm_head.{w}_l{layer}{suffix}"
      params[f"lstm_{layer}_{direction}"] = {
          "kernel_input": get(name("weight_ih")).T, "kernel_hidden": get(name("weight_hh")).T,
          "bias": get(name("bias_ih")) + get(name("bias_hh"))}
  params["mlp_0"] = linear(get, "mlp_head.0")
  params["mlp_1"] = linear(get, "mlp_head.2")
  return params
