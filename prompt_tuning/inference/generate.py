"""Generation with a cached model: encoder-decoder and decoder-only, any decoding algorithm.

The jitted entry points (`generate_encoder_decoder`, `generate_decoder_only`) build the decoding
state (encoder pass and cross-attention keys/values, or the decoder-only prefill of the
left-aligned inputs and the prompt), then run greedy / beam / sampling search
(`inference.decoding`) one cached step at a time. `LoadedModel.generate`, evaluation,
inference and prompt ensembles all generate through them.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.inference import decoding

DECODER_START_TOKEN = 0  # T5X's decoder start token (others: `ModelConfig.decoder_start_token_id`).


def fill_after_eos(tokens_BL: np.ndarray, eos_id: int | Sequence[int], fill: int) -> np.ndarray:
  """`tokens_BL` with every position after a row's first EOS set to `fill`."""
  eos = np.isin(tokens_BL, np.asarray(eos_id).reshape(-1))
  after = np.cumsum(eos, axis=1) - eos > 0
  return np.where(after, fill, tokens_BL).astype(tokens_BL.dtype)


def search(tokens_to_logits, cache, start_tokens_B, start_step, rng, *, method: str,
           max_decode_length: int, num_beams: int, alpha: float, temperature: float,
           top_k: int, top_p: float, eos_id: decoding.EosIds,
           length_penalty: Optional[float] = None, early_stopping=None,
           constraints: Optional[decoding.Constraints] = None,
           context_BC: Optional[jax.Array] = None) -> jax.Array:
  """Runs the chosen search from `start_tokens_B` at `start_step` -> tokens [B, L].

  `context_BC`: the tokens before the generated ones that no-repeat n-grams see (default: the
  start tokens).
  """
  common = dict(max_decode_len=max_decode_length, eos_id=eos_id, start_step=start_step,
                constraints=constraints, context_BC=context_BC)
  if method == "beam":
    output = decoding.beam_search(tokens_to_logits, cache, start_tokens_B, num_beams=num_beams,
                                  alpha=alpha, length_penalty=length_penalty,
                                  early_stopping=early_stopping, **common)
    return output.tokens_BKL[:, 0]
  if method == "sample":
    return decoding.sample_decode(tokens_to_logits, cache, start_tokens_B, rng=rng,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  **common).tokens_BL
  return decoding.greedy_decode(tokens_to_logits, cache, start_tokens_B, **common).tokens_BL


def tokens_to_logits_fn(module: nn.Module, variables: dict) -> decoding.TokensToLogits:
  """The one-step function the decoding algorithms call: cached step -> logits [B, V]."""

  def tokens_to_logits(tokens_B1, cache, step):
    logits_B1V, cache = module.apply(variables, tokens_B1, cache, step, method=module.decode_step)
    return logits_B1V[:, 0], cache

  return tokens_to_logits


# Static arguments of the jitted generate functions (hashable options).
STATIC = ("module", "method", "max_decode_length", "num_beams", "alpha", "temperature", "top_k",
          "top_p", "eos_id", "length_penalty", "early_stopping", "constraints")


@functools.partial(jax.jit, static_argnames=STATIC)
def generate_encoder_decoder(module: nn.Module, params: dict, encoder_input_tokens: jax.Array,
                              rng: jax.Array, prompt_slots: Optional[jax.Array] = None,
                              **options) -> jax.Array:
  """Encodes once, fills the cross-attention cache, then decodes from the model's decoder start
  token (`ModelConfig.decoder_start_token_id`; T5: 0).

  `prompt_slots` [B, K]: a template model's slot positions among the inputs.
  """
  variables = {"params": params}
  slots = {} if prompt_slots is None else {"prompt_slots": prompt_slots}
  encoded_BSD, encoder_mask_BS = module.apply(variables, encoder_input_tokens,
                                              method=module.encode_with_mask, **slots)
  cache = module.apply(variables, encoded_BSD, encoder_mask_BS, options["max_decode_length"],
                       method=module.init_decode_cache)

  start = getattr(module.config, "decoder_start_token_id", DECODER_START_TOKEN)
  start_B = jnp.full((encoder_input_tokens.shape[0],), start, jnp.int32)
  return search(tokens_to_logits_fn(module, variables), cache, start_B, 0, rng, **options)


def left_align_padding(tokens_BT: jax.Array,
                       valid_BT: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """Moves each row's padding to the left, keeping token order: [a b _ _] -> [_ _ a b].

  Padding: `valid_BT` False (default: token 0). Returns (tokens [B, T], validity [B, T]).
  """
  valid_BT = tokens_BT > 0 if valid_BT is None else valid_BT > 0
  order_BT = jnp.argsort(valid_BT, axis=1, stable=True)  # pads first, then real tokens.
  return (jnp.take_along_axis(tokens_BT, order_BT, axis=1),
          jnp.take_along_axis(valid_BT, order_BT, axis=1))


def left_align_slots(slots_BK: jax.Array, valid_BT: jax.Array) -> jax.Array:
  """Slot positions [B, K] among tokens [B, T] -> the same slots after `left_align_padding`
  (each before the same real token: the row's padding count + the real tokens before it)."""
  valid_BT = valid_BT > 0
  padding_B1 = jnp.sum(~valid_BT, axis=1, keepdims=True)
  real_before_BT1 = jnp.concatenate(
      [jnp.zeros_like(padding_B1), jnp.cumsum(valid_BT, axis=1)], axis=1)
  slots_BK = jnp.clip(jnp.asarray(slots_BK, jnp.int32), 0, valid_BT.shape[1])
  return (padding_B1 + jnp.take_along_axis(real_before_BT1, slots_BK, axis=1)).astype(jnp.int32)


def _tokens_or_first_embedding(module: nn.Module, variables: dict,
                               first_step: int) -> decoding.TokensToLogits:
  """A template model's step function: its state is (cache, first embedding [B, D]); the step
  at `first_step` feeds that embedding (the last prefill position), later steps the token."""

  def tokens_to_logits(tokens_B1, state, step):
    cache, first_BD = state
    embedded_B1D = module.apply(variables, tokens_B1, method=module.embed)
    embedded_B1D = jnp.where(step == first_step, first_BD[:, None].astype(embedded_B1D.dtype),
                             embedded_B1D)
    logits_B1V, cache = module.apply(variables, embedded_B1D, cache, step,
                                     method=module.decode_embedded_step)
    return logits_B1V[:, 0], (cache, first_BD)

  return tokens_to_logits


@functools.partial(jax.jit, static_argnames=STATIC)
def generate_decoder_only(module: nn.Module, params: dict, input_tokens: jax.Array,
                           rng: jax.Array, input_valid: Optional[jax.Array] = None,
                           prompt_slots: Optional[jax.Array] = None, **options) -> jax.Array:
  """Prefills the cache with the (left-aligned) inputs, then continues after the last one.

  `input_valid` [B, T] marks the real input tokens (default: the model's convention, T5:
  token 0 is padding). A prompt model's cache has P more positions; its prefill writes the
  prompt (always). A template model's segments go to `prompt_slots` [B, K] (token positions
  among `input_tokens`; a slot after the last token puts its segment right before the
  generated text).
  """
  variables = {"params": params}
  if input_valid is None:
    input_valid = module.apply(variables, input_tokens, method=module.prefill_validity)
  tokens_BT, valid_BT = left_align_padding(input_tokens, input_valid)
  batch, length = tokens_BT.shape
  num_prompt = getattr(module, "prompt_length", 0)
  cache = module.apply(variables, batch, length + options["max_decode_length"],
                       method=module.init_decode_cache)
  if getattr(module, "template", None):
    if prompt_slots is not None:
      prompt_slots = left_align_slots(prompt_slots, input_valid)
    cache, first_BD = module.apply(variables, tokens_BT, cache, valid_BT, prompt_slots,
                                   method=module.prefill_template)
    step_fn = _tokens_or_first_embedding(module, variables, length - 1 + num_prompt)
    return search(step_fn, (cache, first_BD), tokens_BT[:, -1], length - 1 + num_prompt, rng,
                  context_BC=tokens_BT, **options)
  if prompt_slots is not None:
    raise ValueError("prompt_slots are for models with a prompt template (PROMPT_TEMPLATE).")
  if length > 1 or num_prompt:
    cache = module.apply(variables, tokens_BT[:, :-1], cache, valid_BT[:, :-1],
                         method=module.prefill)

  return search(tokens_to_logits_fn(module, variables), cache, tokens_BT[:, -1],
                length - 1 + num_prompt, rng, context_BC=tokens_BT, **options)
