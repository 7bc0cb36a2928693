"""Reference greedy decoding by full (uncached) forward passes, for cached-decoding tests."""

from __future__ import annotations

import numpy as np

from prompt_tuning import api


def greedy_encoder_decoder(model: api.LoadedModel, encoder_tokens: np.ndarray,
                           steps: int) -> np.ndarray:
  """Greedy tokens [batch, steps] from re-running the whole model on the growing decoder input.

  Later (still zero) decoder positions cannot influence position `step` under the causal mask,
  so one fixed shape serves every step (one compilation).
  """
  batch = encoder_tokens.shape[0]
  decoder = np.zeros((batch, steps + 1), np.int32)
  done = np.zeros(batch, bool)
  for step in range(steps):
    logits = np.asarray(model.logits(encoder_tokens, decoder[:, :-1]))
    next_token = logits[:, step].argmax(-1)
    decoder[:, step + 1] = np.where(done, 0, next_token)
    done |= next_token == api.EOS_ID
  return decoder[:, 1:]


def greedy_decoder_only(model: api.LoadedModel, inputs: list[int], steps: int) -> list[int]:
  """Greedy continuation of one unpadded input, by full passes over a right-padded row."""
  tokens, out = list(inputs), []
  for _ in range(steps):
    padded = np.array([tokens + [0] * (len(inputs) + steps - len(tokens))])
    next_token = int(np.asarray(model.logits(padded))[0, len(tokens) - 1].argmax())
    out.append(next_token)
    if next_token == api.EOS_ID:
      break
    tokens.append(next_token)
  return out + [0] * (steps - len(out))
