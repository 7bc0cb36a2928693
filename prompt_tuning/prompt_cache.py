"""A decoder-only model's prompt keys/values, computed once and reused by every generation.

A decoder-only prompt model (`layers.PromptDecoderOnly`) places its P prompt positions right
before each row's first real token. The prompt does not depend on the inputs (prompt tuning,
P-tuning, deep prompts) and T5 has only relative positions, and the padding in front of the
prompt is masked: so the prompt's keys/values in every layer are the same for every row and
every batch. `build_prompt_cache` runs the prompt through the decoder once ([1, P] positions);
`generate` then, per batch:

  1. makes the usual empty cache [B, P + T + new] and copies the prompt's keys/values into each
     row at the row's prompt position (after its left padding), exactly where the model's own
     prefill would have computed them;
  2. prefills only the inputs (cache positions P..P+T-2), whose padding is not written
     (`Decoder.decode_step` writes valid positions only), so the prompt stays in place;
  3. continues with the usual greedy / beam / sampling loop from position P+T-1.

The generated tokens equal those of `api.LoadedModel.generate` (which recomputes the prompt in
every batch's prefill) up to float rounding; the prefill skips the P prompt positions.
The cache belongs to one set of parameters: rebuild it after the prompt changes.

Ensembles (`ensembles.EnsemblePrompt`, N prompts riding in the batch, prompt-major rows) cache
all N prompts at once: the cache holds N rows, and row r of a batch of N x B rows gets the
keys/values of prompt r // B.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import api, combine
from prompt_tuning.inference import generate as generation
from prompt_tuning.models.attention import KVCache
from prompt_tuning.models.transformer import DecoderCache


@flax.struct.dataclass
class PromptCache:
  """The prompt's keys/values in every decoder layer.

  self_attention: per-layer KVCache with leaves [N, heads, P, head_dim] (N prompts: 1, or an
    ensemble's N).
  """

  self_attention: tuple[KVCache, ...]

  @property
  def length(self) -> int:
    """P, the number of prompt positions."""
    return self.self_attention[0].key_BNSH.shape[2]

  @property
  def num_prompts(self) -> int:
    """N, the number of prompts cached (rows of every leaf)."""
    return self.self_attention[0].key_BNSH.shape[0]


def num_prompts(module: nn.Module) -> int:
  """How many prompts a prompt model carries: an ensemble's N, else 1."""
  return int(getattr(getattr(module, "prompt_method", None), "num_prompts", 1))


def _check_module(module: nn.Module) -> int:
  """The prompt length P of a decoder-only prompt model; a clear error for anything else."""
  prompt_length = getattr(module, "prompt_length", None)
  if getattr(module, "config", None) is None or module.config.architecture != "decoder_only" or (
      not isinstance(prompt_length, int)) or not hasattr(module, "prefill"):
    raise ValueError(
        f"prompt caches are for decoder-only prompt models (layers.PromptDecoderOnly), got "
        f"{type(module).__name__}: build the model with a decoder-only gin file and a prompt "
        "(e.g. 'models/decoder_only_small.gin' + a prompt config), or call "
        "LoadedModel.generate, which needs no prompt cache.")
  if getattr(module, "placement", "prefix") != "prefix" or getattr(module, "slot_lengths", None):
    raise ValueError(f"prompt caches need the prompt before all tokens (placement 'prefix'); "
                     f"this model places it {module.placement!r}: call LoadedModel.generate.")
  if prompt_length < 1:
    raise ValueError("the model's prompt length is 0: there is nothing to cache; call "
                     "LoadedModel.generate instead.")
  return prompt_length


@functools.partial(jax.jit, static_argnums=(0,))
def build_prompt_cache(module: nn.Module, params: dict) -> PromptCache:
  """Runs the prompt alone (cache positions 0..P-1, one row per prompt) -> its keys/values per
  layer.

  Uses the model's own prefill with zero input tokens, so every prompt method that does not
  read the inputs (prompt tuning, P-tuning, deep prompts) is cached exactly as it is computed
  in a batch. A method that reads the inputs (a multi-task prompt choosing by task token)
  cannot be cached this way.
  """
  prompt_length = _check_module(module)
  variables = {"params": params}
  rows = num_prompts(module)
  cache = module.apply(variables, rows, 0, method=module.init_decode_cache)
  if cache.key_valid_BS.shape[1] != prompt_length:
    raise ValueError(f"{type(module).__name__}.init_decode_cache({rows}, 0) made a cache of "
                     f"length {cache.key_valid_BS.shape[1]}; it must have the prompt length "
                     f"{prompt_length} (P prompt positions + max_decode_length).")
  cache = module.apply(variables, jnp.zeros((rows, 0), jnp.int32), cache, method=module.prefill)
  return PromptCache(self_attention=tuple(cache.self_attention))


def _place_rows(cache_BNLH: jax.Array, prompt_BNPH: jax.Array, index_B: jax.Array) -> jax.Array:
  """Writes row b's prompt into row b at cache positions index[b]..index[b]+P-1."""

  def place(row_NLH, prompt_NPH, start):
    return jax.lax.dynamic_update_slice(row_NLH, prompt_NPH.astype(row_NLH.dtype), (0, start, 0))

  return jax.vmap(place)(cache_BNLH, prompt_BNPH, index_B)


def _row_prompts(num_cached: int, batch: int) -> jax.Array:
  """Index [B] of the cached prompt each row uses: row r of N x B' prompt-major rows -> r // B'."""
  if batch % num_cached:
    raise ValueError(f"the prompt cache holds {num_cached} prompts, so the batch must have "
                     f"N x B rows (prompt-major); got {batch} rows.")
  return jnp.arange(batch) // (batch // num_cached)


def cache_with_prompt(module: nn.Module, params: dict, prompt_cache: PromptCache,
                      tokens_BT: jax.Array, max_decode_length: int,
                      valid_BT: Optional[jax.Array] = None) -> DecoderCache:
  """The decoding cache of left-aligned tokens [B, T] holding the prompt and tokens[:, :-1].

  `valid_BT` marks the real tokens (default: the model's convention, T5: token 0 is padding).
  With N cached prompts the B rows are prompt-major: row r gets prompt r // (B / N).
  Equals `module.prefill(tokens_BT[:, :-1], ...)` on a fresh cache (the prompt at each row's
  first real token, then the tokens at positions P..P+T-2) without recomputing the prompt.
  """
  prompt_length = _check_module(module)
  if prompt_cache.length != prompt_length:
    raise ValueError(f"the prompt cache has {prompt_cache.length} positions but the model's "
                     f"prompt has {prompt_length}: rebuild it with build_prompt_cache(module, "
                     "params) for this model.")
  variables = {"params": params}
  batch, length = tokens_BT.shape
  cache = module.apply(variables, batch, length + max_decode_length,
                       method=module.init_decode_cache)
  if valid_BT is None:
    valid_BT = module.apply(variables, tokens_BT, method=module.prefill_validity)
  prefix_BT, prefix_valid_BT = tokens_BT[:, :-1], valid_BT[:, :-1] > 0
  # The model's prefill puts the prompt right before the first real token of `prefix_BT`.
  index_B = combine.first_valid_index(prefix_valid_BT)
  rows_B = _row_prompts(prompt_cache.num_prompts, batch)
  layers = tuple(
      KVCache(_place_rows(layer.key_BNSH, prompt.key_BNSH[rows_B], index_B),
              _place_rows(layer.value_BNSH, prompt.value_BNSH[rows_B], index_B))
      for layer, prompt in zip(cache.self_attention, prompt_cache.self_attention))
  ones_1P = jnp.ones((1, prompt_length), cache.key_valid_BS.dtype)
  valid_BS = jax.vmap(lambda row, start: jax.lax.dynamic_update_slice(row, ones_1P[0], (start,)))(
      cache.key_valid_BS, index_B)
  cache = cache.replace(self_attention=layers, key_valid_BS=valid_BS)
  if length > 1:  # Real tokens of row b sit at P + j, padding (not written) in front of them.
    _, cache = module.apply(variables, prefix_BT, cache, prompt_length, prefix_valid_BT,
                            method=module.decode_step)
  return cache




@functools.partial(jax.jit, static_argnames=generation.STATIC)
def generate_from_cache(module: nn.Module, params: dict, prompt_cache: PromptCache,
                        input_tokens: jax.Array, rng: jax.Array, input_valid: jax.Array,
                        **options) -> jax.Array:
  """Like api.generate_decoder_only, with the prompt's keys/values copied from the cache.

  For an ensemble module the rows are prompt-major (N x B) and the cache holds its N prompts.
  """
  tokens_BT, valid_BT = generation.left_align_padding(input_tokens, input_valid)
  length = tokens_BT.shape[1]
  cache = cache_with_prompt(module, params, prompt_cache, tokens_BT,
                            options["max_decode_length"], valid_BT)
  # pylint: disable=protected-access
  step_fn = generation.tokens_to_logits_fn(module, {"params": params})
  return generation.search(step_fn, cache, tokens_BT[:, -1], length - 1 + module.prompt_length,
                           rng, context_BC=tokens_BT, **options)


_generate = generate_from_cache  # The name the benchmarks and older tests use.


def generate(model: api.LoadedModel,
             prompt_cache: PromptCache,
             inputs: Any,
             max_decode_length: int = 32,
             *,
             method: str = "greedy",
             num_beams: int = 4,
             alpha: float = 0.6,
             temperature: float = 1.0,
             top_k: int = 0,
             top_p: float = 1.0,
             rng: Optional[jax.Array] = None,
             eos_id: Optional[int] = None,
             attention_mask: Any = None,
             as_numpy: bool = True) -> np.ndarray | jax.Array:
  """`model.generate(inputs, ...)` for a decoder-only prompt model, reusing `prompt_cache`.

  `prompt_cache` comes from `build_prompt_cache(model.module, model.params)`. Arguments and
  result are those of `api.LoadedModel.generate` (int32 [B, max_decode_length]; after EOS the
  model's pad id); `as_numpy=False` returns the device array (raw: 0 after EOS) without
  waiting for it.
  """
  if method not in ("greedy", "beam", "sample"):
    raise ValueError(f"generate(method={method!r}): use 'greedy', 'beam' or 'sample'.")
  rng = jax.random.PRNGKey(0) if rng is None else rng
  (tokens_BT,), mask = model._token_arrays((inputs,), attention_mask, left_pad=True)  # pylint: disable=protected-access
  if mask is None:
    mask = model.module.apply({"params": model.params}, tokens_BT, method="prefill_validity")
  eos = model.config.eos_token_ids if eos_id is None else (eos_id,)
  eos = eos[0] if len(eos) == 1 else tuple(eos)
  tokens = generate_from_cache(model.module, model.params, prompt_cache, tokens_BT, rng, mask,
                     method=method, max_decode_length=int(max_decode_length),
                     num_beams=num_beams, alpha=float(alpha), temperature=float(temperature),
                     top_k=int(top_k), top_p=float(top_p), eos_id=eos)
  if not as_numpy:
    return tokens
  return generation.fill_after_eos(np.asarray(tokens), eos, model.config.output_pad_id)


__all__ = ["PromptCache", "build_prompt_cache", "cache_with_prompt", "generate",
           "generate_from_cache", "num_prompts"]
