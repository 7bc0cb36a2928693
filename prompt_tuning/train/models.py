"""What the trainer asks of a model: loss on a batch, predictions (decoding) and target scores.

Batches are seqio feature-converter outputs (no packing):
  encoder-decoder: encoder_input_tokens [B, T], decoder_input_tokens / decoder_target_tokens /
                   decoder_loss_weights [B, S];
  decoder-only:    decoder_input_tokens / decoder_target_tokens / decoder_loss_weights /
                   decoder_causal_attention [B, S];
  with a prompt template also prompt_slots [B, K] (the slots' positions among the model's input
  tokens).
The prompt is spliced in by the model itself, so these keep text lengths.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning import api, errors
from prompt_tuning.train import losses

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """T5X loss options (see `losses`); the paper's prompt tuning uses z_loss 1e-4."""

  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  loss_normalizing_factor: Optional[float] = None
  # Target positions per logits chunk: the loss is computed a chunk at a time from the decoder's
  # final hidden states (never the whole [B, S, V] float32 logits). None / 0: all at once.
  logits_chunk_size: Optional[int] = None
  # Causal-LM rows (inputs and targets in one sequence, weighted positions contiguous): project
  # only this many positions per row, from the row's first weighted one, to logits; the input
  # positions' logits are never computed. None: every position (T5 features).
  logits_window: Optional[int] = None

  def __post_init__(self):
    for name, macro in (("logits_chunk_size", "LOSS_CHUNK_SIZE"),
                        ("logits_window", "LossConfig.logits_window")):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or isinstance(value, bool) or
                                value < 0):
        raise errors.ConfigValueError(
            f"{macro}: {name}={value!r}: use a positive integer (positions), or None / 0 for "
            "all positions at once.")
    for name, value in (("Z_LOSS", self.z_loss), ("LABEL_SMOOTHING", self.label_smoothing)):
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise errors.ConfigValueError(f"{name}={value!r} must be a number >= 0: pass e.g. "
                                      f"--gin.{name}={0.0001 if name == 'Z_LOSS' else 0.0}.")
    factor = self.loss_normalizing_factor
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float))
                               or factor <= 0):
      raise errors.ConfigValueError(
          f"LOSS_NORMALIZING_FACTOR={factor!r} must be a positive number or None (the summed "
          "loss, as T5X fine-tuning): pass e.g. --gin.LOSS_NORMALIZING_FACTOR=None.")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How predictions are decoded during evaluation and inference."""

  method: str = "greedy"        # 'greedy', 'beam' or 'sample'.
  num_beams: int = 4
  alpha: float = 0.6            # T5X brevity penalty for beam search.
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_decode_length: Optional[int] = None  # None: the batch's target length.

  def __post_init__(self):
    if self.method not in ("greedy", "beam", "sample"):
      raise errors.ConfigValueError(
          f"DecodeConfig.method={self.method!r}: use 'greedy', 'beam' or 'sample' (include "
          "models/decoding/beam_search.gin or nucleus_sampling.gin).")
    errors.check_int(self.num_beams, "BEAM_SIZE", example=4)
    errors.check_int(self.top_k, "DecodeConfig.top_k", minimum=0, example=40)
    errors.check_int(self.max_decode_length, "DecodeConfig.max_decode_length", allow_none=True,
                     example=64)
    if self.method == "sample" and not (isinstance(self.temperature, (int, float))
                                        and self.temperature > 0
                                        and isinstance(self.top_p, (int, float))
                                        and 0 < self.top_p <= 1):
      raise errors.ConfigValueError(
          f"sampling needs TEMPERATURE > 0 and 0 < TOP_P <= 1 (got TEMPERATURE="
          f"{self.temperature!r}, TOP_P={self.top_p!r}): pass e.g. --gin.TEMPERATURE=0.7 "
          "--gin.TOP_P=0.95.")


def is_decoder_only(module: nn.Module) -> bool:
  return module.config.architecture == "decoder_only"


def _teacher_forced(module: nn.Module, params: Any, batch: Batch,
                    dropout_rng: Optional[jax.Array], return_hidden: bool) -> jax.Array:
  """The model's teacher-forced pass: logits [B, S, V], or hidden states [B, S, D]."""
  rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
  common = dict(decoder_target_tokens=batch["decoder_target_tokens"],
                enable_dropout=dropout_rng is not None, return_hidden=return_hidden)
  common.update(_slots(module, batch))
  if is_decoder_only(module):
    if "decoder_attention_mask" in batch:  # Causal-LM features (LLM families).
      common["decoder_attention_mask"] = batch["decoder_attention_mask"]
    return module.apply({"params": params}, batch["decoder_input_tokens"],
                        decoder_causal_attention=batch.get("decoder_causal_attention"),
                        rngs=rngs, **common)
  return module.apply({"params": params}, batch["encoder_input_tokens"],
                      batch["decoder_input_tokens"], rngs=rngs, **common)


def _slots(module: nn.Module, batch: Batch) -> dict[str, jax.Array]:
  """{"prompt_slots": [B, K]} for a template model's batch (`prompt_tuning.templates`), else {}."""
  if "prompt_slots" not in batch:
    return {}
  if not getattr(module, "template", None):
    from prompt_tuning import templates  # Local: only template batches need it.
    raise templates.TemplateError(
        "the task's inputs have prompt slots ([P:n] in INPUT_TEMPLATE) but the model has no "
        "prompt template: use prompt tuning or P-tuning with PROMPT_TEMPLATE set to the same "
        "template, or drop the [P:n] slots.")
  return {"prompt_slots": batch["prompt_slots"]}


def logits(module: nn.Module, params: Any, batch: Batch, *,
           dropout_rng: Optional[jax.Array] = None) -> jax.Array:
  """Teacher-forced logits [B, S, V] of the batch's targets; dropout when `dropout_rng` is set."""
  return _teacher_forced(module, params, batch, dropout_rng, return_hidden=False)


def hidden_states(module: nn.Module, params: Any, batch: Batch, *,
                  dropout_rng: Optional[jax.Array] = None) -> jax.Array:
  """The decoder's final hidden states [B, S, D] (the output projection's inputs) of `batch`.

  `project_fn(module, params)` maps them to exactly the logits `logits` returns.
  """
  return _teacher_forced(module, params, batch, dropout_rng, return_hidden=True)


def project_fn(module: nn.Module, params: Any) -> Callable[[jax.Array], jax.Array]:
  """The model's output projection: hidden [.., D] -> logits [.., V] float32."""
  return lambda hidden: module.apply({"params": params}, hidden, method="project_hidden")


def loss_terms(module: nn.Module, params: Any, batch: Batch, config: LossConfig,
               dropout_rng: Optional[jax.Array] = None) -> losses.LossTerms:
  """T5X's summed loss pieces of `batch` (loss weights: `decoder_loss_weights`).

  With `config.logits_chunk_size` the logits are computed (and recomputed for the gradient) a
  chunk of target positions at a time; the terms are the same.
  """
  options = dict(z_loss=config.z_loss, label_smoothing=config.label_smoothing,
                 loss_normalizing_factor=config.loss_normalizing_factor)
  targets_BS, weights_BS = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  if config.logits_window and "decoder_attention_mask" in batch:
    hidden_BSD = hidden_states(module, params, batch, dropout_rng=dropout_rng)
    hidden_BSD, targets_BS, weights_BS = target_window(hidden_BSD, targets_BS, weights_BS,
                                                       config.logits_window)
    if config.logits_chunk_size:
      return losses.chunked_weighted_cross_entropy(
          hidden_BSD, project_fn(module, params), targets_BS, weights_BS,
          chunk_size=config.logits_chunk_size, **options)
    return losses.weighted_cross_entropy(project_fn(module, params)(hidden_BSD), targets_BS,
                                         weights_BS, **options)
  if config.logits_chunk_size:
    hidden_BSD = hidden_states(module, params, batch, dropout_rng=dropout_rng)
    return losses.chunked_weighted_cross_entropy(
        hidden_BSD, project_fn(module, params), targets_BS, weights_BS,
        chunk_size=config.logits_chunk_size, **options)
  logits_BSV = logits(module, params, batch, dropout_rng=dropout_rng)
  return losses.weighted_cross_entropy(logits_BSV, targets_BS, weights_BS, **options)


def target_window(hidden_BSD: jax.Array, targets_BS: jax.Array, weights_BS: jax.Array,
                  window: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The `window` positions of each row from its first weighted one: hidden [B, W, D], targets
  and weights [B, W] (positions past the row's end get weight 0)."""
  length = hidden_BSD.shape[1]
  window = min(window, length)
  first_B1 = jnp.argmax(weights_BS > 0, axis=1)[:, None]
  index_BW = first_B1 + jnp.arange(window)[None, :]
  inside_BW = index_BW < length
  index_BW = jnp.minimum(index_BW, length - 1)
  hidden_BWD = jnp.take_along_axis(hidden_BSD, index_BW[..., None], axis=1)
  targets_BW = jnp.take_along_axis(targets_BS, index_BW, axis=1)
  weights_BW = jnp.take_along_axis(weights_BS, index_BW, axis=1) * inside_BW
  return hidden_BWD, targets_BW, weights_BW


def decoder_only_inputs(batch: Batch) -> tuple[jax.Array, Optional[jax.Array]]:
  """The generation prompt of decoder-only rows: (tokens [B, S], real positions [B, S] or None).

  Causal-LM features (`decoder_attention_mask`): the real input positions up to and including
  the first one whose next token is a target. T5X prefix-LM features: seqio marks the inputs
  plus one shifted position as fully visible, so an example with n input tokens has n + 1 ones
  in `decoder_causal_attention`; the targets are zeroed (token 0 is padding).
  """
  if "decoder_attention_mask" in batch:
    weights_BS = batch["decoder_loss_weights"] > 0
    first_B1 = jnp.argmax(weights_BS, axis=1)[:, None]
    positions_BS = jnp.arange(weights_BS.shape[1])[None, :]
    valid_BS = (batch["decoder_attention_mask"] > 0) & (positions_BS <= first_B1)
    return batch["decoder_input_tokens"], valid_BS
  causal_BS = batch["decoder_causal_attention"]
  num_inputs_B1 = jnp.sum(causal_BS, axis=1, keepdims=True) - 1
  positions_BS = jnp.arange(causal_BS.shape[1])[None, :]
  return jnp.where(positions_BS < num_inputs_B1, batch["decoder_target_tokens"], 0), None


def generation_slots(batch: Batch) -> jax.Array:
  """A template batch's slots [B, K] among the generation prompt of `decoder_only_inputs`:
  causal-LM rows keep their positions; T5X prefix-LM rows drop the decoder start token."""
  slots_BK = batch["prompt_slots"]
  if "decoder_attention_mask" in batch:
    return slots_BK
  return jnp.maximum(slots_BK - 1, 0)


def eos_option(config: Any) -> int | tuple[int, ...]:
  """The decoding `eos_id` of a model config: its one EOS id, or the tuple of several."""
  eos = tuple(config.eos_token_ids)
  return eos[0] if len(eos) == 1 else eos


def predict_batch(module: nn.Module, params: Any, batch: Batch, config: DecodeConfig,
                  rng: Optional[jax.Array] = None, prompt_cache: Any = None) -> jax.Array:
  """Decoded output tokens [B, L] (0 after EOS) for the batch's inputs.

  `prompt_cache` (decoder-only prompt models, `prompt_cache.build_prompt_cache`): the prompt's
  keys/values, reused instead of recomputed in the prefill.
  """
  max_length = config.max_decode_length or batch["decoder_target_tokens"].shape[1]
  # The checkpoint's own decoding settings (BART's length penalty, no-repeat n-grams, forced
  # tokens) apply; the decode config picks the method and the beam count.
  options = api.decoding_options(
      module.config, method=config.method, max_decode_length=int(max_length),
      num_beams=config.num_beams, alpha=float(config.alpha),
      temperature=float(config.temperature), top_k=int(config.top_k), top_p=float(config.top_p),
      eos_id=eos_option(module.config))
  rng = jax.random.PRNGKey(0) if rng is None else rng
  slots_BK = _slots(module, batch).get("prompt_slots")
  if is_decoder_only(module):
    tokens_BS, valid_BS = decoder_only_inputs(batch)
    if slots_BK is not None:
      return api.generate_decoder_only(module, params, tokens_BS, rng, valid_BS,
                                       generation_slots(batch), **options)
    if prompt_cache is not None:
      from prompt_tuning import prompt_cache as cache_lib  # Local: only cached decoding.
      return cache_lib.generate_from_cache(module, params, prompt_cache, tokens_BS, rng,
                                           tokens_BS > 0 if valid_BS is None else valid_BS,
                                           **options)
    return api.generate_decoder_only(module, params, tokens_BS, rng, valid_BS, **options)
  return api.generate_encoder_decoder(module, params, batch["encoder_input_tokens"], rng,
                                       slots_BK, **options)
