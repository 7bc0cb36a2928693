"""What the trainer asks of a model: loss on a batch, predictions (decoding) and target scores.

Batches are seqio feature-converter outputs (no packing):
  encoder-decoder: encoder_input_tokens [B, T], decoder_input_tokens / decoder_target_tokens /
                   decoder_loss_weights [B, S];
  decoder-only:    decoder_input_tokens / decoder_target_tokens / decoder_loss_weights /
                   decoder_causal_attention [B, S].
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

  def __post_init__(self):
    chunk = self.logits_chunk_size
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0):
      raise errors.ConfigValueError(
          f"LOSS_CHUNK_SIZE: logits_chunk_size={chunk!r}: use a positive integer (target "
          "positions per logits chunk), or None / 0 to compute all logits at once.")
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
  if is_decoder_only(module):
    return module.apply({"params": params}, batch["decoder_input_tokens"],
                        decoder_causal_attention=batch.get("decoder_causal_attention"),
                        rngs=rngs, **common)
  return module.apply({"params": params}, batch["encoder_input_tokens"],
                      batch["decoder_input_tokens"], rngs=rngs, **common)


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
  if config.logits_chunk_size:
    hidden_BSD = hidden_states(module, params, batch, dropout_rng=dropout_rng)
    return losses.chunked_weighted_cross_entropy(
        hidden_BSD, project_fn(module, params), targets_BS, weights_BS,
        chunk_size=config.logits_chunk_size, **options)
  logits_BSV = logits(module, params, batch, dropout_rng=dropout_rng)
  return losses.weighted_cross_entropy(logits_BSV, targets_BS, weights_BS, **options)


def score_batch(module: nn.Module, params: Any, batch: Batch) -> jax.Array:
  """Log-likelihood of each example's targets [B] (sum over weighted positions), for ranking."""
  logits_BSV = logits(module, params, batch).astype(jnp.float32)
  log_probs_BSV = jax.nn.log_softmax(logits_BSV, axis=-1)
  target_BS = jnp.take_along_axis(log_probs_BSV, batch["decoder_target_tokens"][..., None],
                                  axis=-1)[..., 0]
  return jnp.sum(target_BS * batch["decoder_loss_weights"], axis=-1)


def decoder_only_inputs(batch: Batch) -> jax.Array:
  """The inputs part [B, S] of decoder-only rows (targets zeroed), from the causal-attention mask.

  seqio marks the inputs plus one shifted position as fully visible, so an example with n input
  tokens has n + 1 ones in `decoder_causal_attention`.
  """
  causal_BS = batch["decoder_causal_attention"]
  num_inputs_B1 = jnp.sum(causal_BS, axis=1, keepdims=True) - 1
  positions_BS = jnp.arange(causal_BS.shape[1])[None, :]
  return jnp.where(positions_BS < num_inputs_B1, batch["decoder_target_tokens"], 0)


def predict_batch(module: nn.Module, params: Any, batch: Batch, config: DecodeConfig,
                  rng: Optional[jax.Array] = None) -> jax.Array:
  """Decoded output tokens [B, L] (0 after EOS) for the batch's inputs."""
  max_length = config.max_decode_length or batch["decoder_target_tokens"].shape[1]
  options = dict(method=config.method, max_decode_length=int(max_length),
                 num_beams=config.num_beams, alpha=float(config.alpha),
                 temperature=float(config.temperature), top_k=int(config.top_k),
                 top_p=float(config.top_p), eos_id=api.EOS_ID)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  if is_decoder_only(module):
    return api.generate_decoder_only(module, params, decoder_only_inputs(batch), rng, **options)
  return api.generate_encoder_decoder(module, params, batch["encoder_input_tokens"], rng,
                                       **options)
