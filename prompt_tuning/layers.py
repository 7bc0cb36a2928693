"""Models with a prompt method plugged into their embedding seam.

A prompt method is any Flax module satisfying `PromptMethod`: it maps the input tokens and
their embeddings to a batched prompt [B, P, D] and says its length P. `Prompt` (prompt tuning)
is one; P-tuning encoders, multi-task prompts (task read from the tokens) and deep prompts
(`methods.deep_prompts.DeepPromptMethod`, which also uses the stack's per-layer seam) plug in
the same way.

Parameter layout (the frozen model keeps its T5X paths):
  encoder-decoder: `encoder/prompt/prompt/...` (prompt tuning: `encoder/prompt/prompt/prompt`,
    the path of the paper's released prompts);
  decoder-only: `decoder/prompt/prompt/...`.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning import combine, masks, templates
from prompt_tuning.models.config import T5Config
from prompt_tuning.models.decoder_only import DecoderOnly
from prompt_tuning.models.t5 import EncoderDecoder
from prompt_tuning.models.transformer import (Decoder, DecoderCache, Encoder, LayerInputsFn,
                                              real_tokens)
from prompt_tuning.prompts import PromptConfig


@runtime_checkable
class PromptMethod(Protocol):
  """What a pluggable prompt module provides (a Flax module with these members).

  A method whose produced length differs from its `length` field (e.g. a multi-task prompt
  that concatenates a shared and a task prompt) also defines `output_length`, which wins.

  Optional members, used when present:
    `for_stack(embed_dim, num_layers)` -> an unbound copy sized for the stack it is plugged
      into (called by the prompt stacks before use);
    `layer_inputs_fn(start_B)` -> the stack's per-layer seam (`fn(layer, x_BTD, first_position)`)
      given the per-example prompt index [B] (deep prompts).
  """

  length: int  # P, the number of prompt positions it produces.

  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array) -> jax.Array:
    """Input tokens [B, T] and their embeddings [B, T, D] -> prompt [B, P, D]."""
    ...


def _method_length(method: Optional[nn.Module]) -> int:
  """The number of prompt positions P that `method` produces."""
  length = getattr(method, "output_length", getattr(method, "length", None))
  if method is None or not isinstance(length, int):
    raise ValueError(
        f"a prompt model needs a prompt method with an integer `length` (the prompt length P), "
        f"got {method!r}: pass e.g. prompt_method=prompts.Prompt(length=100).")
  return length


def _method_for_stack(method: nn.Module, config: T5Config, num_layers: int) -> nn.Module:
  """An unbound copy of `method`, sized by its `for_stack` for this stack when it has one."""
  method = method.clone(parent=None)
  if hasattr(method, "for_stack"):
    method = method.for_stack(config.emb_dim, num_layers)
  return method


class PromptInserter(nn.Module):
  """Runs the prompt method (child `prompt`) and inserts its output among the embeddings."""

  prompt: nn.Module

  def layer_inputs_fn(self, index_B: jax.Array) -> Optional[LayerInputsFn]:
    """The method's per-layer seam for prompts starting at `index_B` [B], or None."""
    if not hasattr(self.prompt, "layer_inputs_fn"):
      return None
    return self.prompt.layer_inputs_fn(index_B)

  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array,
               index_B: jax.Array) -> jax.Array:
    """Tokens [B, T], embeddings [B, T, D], prompt index [B] -> embeddings [B, T+P, D]."""
    prompt_BPD = self.prompt(tokens_BT, embedded_BTD)
    declared = _method_length(self.prompt)
    if prompt_BPD.shape[1] != declared:
      raise ValueError(f"prompt method {type(self.prompt).__name__} declares length {declared} "
                       f"but produced a prompt of shape {list(prompt_BPD.shape)}; make its "
                       "`length` (or `output_length`) equal the produced P.")
    return combine.insert_prompt(prompt_BPD, embedded_BTD, index_B)

  def insert_segments(self, tokens_BT: jax.Array, embedded_BTD: jax.Array, slots_BK: jax.Array,
                      slot_lengths: tuple[int, ...]) -> jax.Array:
    """A template's placement: prompt segment k before token slots[b, k] -> [B, T+P, D]."""
    prompt_BPD = self.prompt(tokens_BT, embedded_BTD)
    return combine.insert_segments(prompt_BPD, embedded_BTD, slots_BK, slot_lengths)


class _Template:
  """Template placement shared by the prompt stacks, which define the field `template` (None, or
  a template string with [P:n] slots; see `prompt_tuning.templates`)."""

  @property
  def slot_lengths(self) -> Optional[tuple[int, ...]]:
    """The template's slot lengths, or None for a named placement."""
    if not self.template:
      return None
    return templates.parse_template(self.template).slot_lengths

  def template_slots(self, tokens_BT: jax.Array, prompt_slots: Optional[jax.Array]) -> jax.Array:
    """The slots [B, K] of a batch: `prompt_slots`, or zeros for a template whose slots all
    come before the text (the prefix placement)."""
    template = templates.parse_template(self.template)
    if prompt_slots is None:
      if not template.is_prefix:
        raise templates.TemplateError(
            f"the prompt template {self.template!r} places prompt segments inside the text, "
            "so each batch needs `prompt_slots` [B, K] (the slots' token positions): use a "
            "task whose inputs come from the template (INPUT_TEMPLATE with [P:n] slots, "
            "templates.tokenize_template) or pass prompt_slots=.")
      return jnp.zeros((tokens_BT.shape[0], len(template.slot_lengths)), jnp.int32)
    return jnp.asarray(prompt_slots, jnp.int32)


def _no_slots(prompt_slots: Optional[jax.Array]) -> None:
  if prompt_slots is not None:
    raise templates.TemplateError(
        "the batch has prompt_slots but the model has no prompt template: build it with "
        "PROMPT_TEMPLATE (the same [P:n] template as the task's inputs).")


class PromptEncoder(_Template, Encoder):
  """The T5 encoder stack plus the prompt (child `prompt`), spliced in by `add_prompt`."""

  prompt_method: Optional[nn.Module] = None
  placement: str = "prefix"
  template: Optional[str] = None

  def setup(self):
    super().setup()
    _method_length(self.prompt_method)
    self.prompt = PromptInserter(prompt=_method_for_stack(
        self.prompt_method, self.config, self.config.num_encoder_layers))

  def layer_inputs_fn(self, index_B: jax.Array) -> Optional[LayerInputsFn]:
    """Per-layer seam of the method (deep prompts) for prompts at `index_B` [B], or None."""
    return self.prompt.layer_inputs_fn(index_B)

  def add_prompt(self, tokens_BT: jax.Array, embedded_BTD: jax.Array,
                 prompt_slots: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-> (embeddings [B, T+P, D], validity [B, T+P], prompt index [B]; with a template: its
    slots [B, K] instead of the index)."""
    if self.template:
      slots_BK = self.template_slots(tokens_BT, prompt_slots)
      embedded_BSD = self.prompt.insert_segments(tokens_BT, embedded_BTD, slots_BK,
                                                 self.slot_lengths)
      return embedded_BSD, masks.segments_valid(real_tokens(self.config, tokens_BT), slots_BK,
                                                self.slot_lengths), slots_BK
    _no_slots(prompt_slots)
    index_B = combine.placement_index(self.placement, tokens_BT)
    embedded_BSD = self.prompt(tokens_BT, embedded_BTD, index_B)
    valid_BS = masks.prompt_valid(real_tokens(self.config, tokens_BT), index_B,
                                  _method_length(self.prompt_method))
    return embedded_BSD, valid_BS, index_B


class PromptEncoderDecoder(EncoderDecoder):
  """T5 encoder-decoder whose encoder input carries a prompt.

  The decoder cross-attends to the prompt positions of the encoder output unless
  `decoder_attends_to_prompt` is False. Calls, logits and cached decoding keep the
  `EncoderDecoder` signatures; `encode_with_mask` returns the [B, T+P] encoding and mask.
  """

  prompt_method: Optional[nn.Module] = None
  placement: str = "prefix"
  decoder_attends_to_prompt: bool = True
  template: Optional[str] = None  # [P:n] slots among the inputs (`prompt_tuning.templates`).

  def _make_encoder(self) -> nn.Module:
    return PromptEncoder(self.config, prompt_method=self.prompt_method.clone(parent=None),
                         placement=self.placement, template=self.template)

  @property
  def prompt_length(self) -> int:
    return _method_length(self.prompt_method)

  def encode_with_mask(self, encoder_input_tokens: jax.Array, enable_dropout: bool = False,
                       prompt_slots: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """Tokens [B, T] -> (encoded [B, T+P, D], mask [B, T+P] for the decoder's cross-attention).

    `prompt_slots` [B, K]: a template's slot positions among the tokens.
    """
    embedded_BTD = self.embed(encoder_input_tokens)
    embedded_BSD, valid_BS, index = self.encoder.add_prompt(encoder_input_tokens, embedded_BTD,
                                                            prompt_slots)
    layer_inputs_fn = None if self.template else self.encoder.layer_inputs_fn(index)
    encoded_BSD = self.encode_embedded(embedded_BSD, valid_BS, enable_dropout,
                                       layer_inputs_fn=layer_inputs_fn)
    if self.decoder_attends_to_prompt:
      return encoded_BSD, valid_BS
    if self.template:
      return encoded_BSD, masks.cross_attention_valid_segments(
          self.token_validity(encoder_input_tokens), index, self.encoder.slot_lengths, False)
    return encoded_BSD, masks.cross_attention_valid(self.token_validity(encoder_input_tokens),
                                                    index, self.prompt_length, False)

  def __call__(self,
               encoder_input_tokens: jax.Array,
               decoder_input_tokens: jax.Array,
               decoder_target_tokens: Optional[jax.Array] = None,
               enable_dropout: bool = False,
               return_hidden: bool = False,
               prompt_slots: Optional[jax.Array] = None) -> jax.Array:
    """`EncoderDecoder.__call__`, plus a template's `prompt_slots` [B, K] (None: none)."""
    encoded_BSD, encoder_mask_BS = self.encode_with_mask(encoder_input_tokens, enable_dropout,
                                                         prompt_slots)
    return self.decode(encoded_BSD, encoder_mask_BS, decoder_input_tokens,
                       decoder_target_tokens, enable_dropout, return_hidden)

  def encode(self, encoder_input_tokens: jax.Array, enable_dropout: bool = False) -> jax.Array:
    """Tokens [B, T] -> encoded [B, T+P, D] (prompt positions included)."""
    return self.encode_with_mask(encoder_input_tokens, enable_dropout)[0]


# Placements a decoder-only prompt supports: before all tokens (PEFT's), or right after the
# row's BOS token (for tokenizers that start every text with one; elsewhere the same as prefix).
DECODER_ONLY_PLACEMENTS = ("prefix", "prefix_after_bos")


class PromptDecoder(_Template, Decoder):
  """The decoder stack plus the prompt (child `prompt`), for decoder-only models."""

  prompt_method: Optional[nn.Module] = None
  placement: str = "prefix"
  template: Optional[str] = None

  def setup(self):
    super().setup()
    _method_length(self.prompt_method)
    self.prompt = PromptInserter(prompt=_method_for_stack(
        self.prompt_method, self.config, self.config.num_decoder_layers))

  def layer_inputs_fn(self, index_B: jax.Array) -> Optional[LayerInputsFn]:
    """Per-layer seam of the method (deep prompts) for prompts at `index_B` [B], or None."""
    return self.prompt.layer_inputs_fn(index_B)

  def add_prompt(self, tokens_BT: jax.Array, embedded_BTD: jax.Array, valid_BT: jax.Array,
                 prompt_slots: Optional[jax.Array] = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Prompt right before each row's first valid token (so left padding stays in front), or
    after it when that token is BOS and the placement is "prefix_after_bos"; with a template,
    segment k before token `prompt_slots[b, k]`.

    -> (embeddings [B, T+P, D], validity [B, T+P], prompt index [B]; with a template: its
    slots [B, K] instead of the index).
    """
    if self.template:
      slots_BK = self.template_slots(tokens_BT, prompt_slots)
      if prompt_slots is None:  # Leading slots: before the first valid token, as "prefix".
        slots_BK = slots_BK + combine.first_valid_index(valid_BT)[:, None]
      embedded_BSD = self.prompt.insert_segments(tokens_BT, embedded_BTD, slots_BK,
                                                 self.slot_lengths)
      return embedded_BSD, masks.segments_valid(valid_BT, slots_BK, self.slot_lengths), slots_BK
    _no_slots(prompt_slots)
    index_B = combine.first_valid_index(valid_BT)
    if self.placement == "prefix_after_bos" and self.config.bos_token_id is not None:
      first_B = jnp.take_along_axis(tokens_BT, jnp.minimum(index_B, tokens_BT.shape[1] - 1)[:, None],
                                    axis=1)[:, 0]
      starts_with_bos_B = (index_B < tokens_BT.shape[1]) & (first_B == self.config.bos_token_id)
      index_B = index_B + starts_with_bos_B.astype(index_B.dtype)
    embedded_BSD = self.prompt(tokens_BT, embedded_BTD, index_B)
    valid_BS = masks.prompt_valid(valid_BT, index_B, _method_length(self.prompt_method))
    return embedded_BSD, valid_BS, index_B


class PromptDecoderOnly(DecoderOnly):
  """Decoder-only LM with a prompt before the inputs; logits are returned for the inputs only.

  With T5X's `decoder_causal_attention` the prompt joins the fully visible inputs prefix.
  Without `decoder_target_tokens`, token 0 is padding anywhere (left or right).
  """

  prompt_method: Optional[nn.Module] = None
  placement: str = "prefix"
  template: Optional[str] = None  # [P:n] slots among the inputs (`prompt_tuning.templates`).

  def _make_decoder(self) -> nn.Module:
    return PromptDecoder(self.config, shared_embedding=None, cross_attention=False,
                         prompt_method=self.prompt_method.clone(parent=None),
                         placement=self.placement, template=self.template)

  @property
  def slot_lengths(self) -> Optional[tuple[int, ...]]:
    """The template's slot lengths, or None for a named placement."""
    return None if not self.template else templates.parse_template(self.template).slot_lengths

  @property
  def prompt_length(self) -> int:
    return _method_length(self.prompt_method)

  def __call__(self,
               decoder_input_tokens: jax.Array,
               decoder_target_tokens: Optional[jax.Array] = None,
               decoder_causal_attention: Optional[jax.Array] = None,
               enable_dropout: bool = False,
               return_hidden: bool = False,
               decoder_attention_mask: Optional[jax.Array] = None,
               prompt_slots: Optional[jax.Array] = None) -> jax.Array:
    """Tokens [B, T] -> logits [B, T, V] (the prompt positions' logits are dropped).

    Real positions come from `decoder_attention_mask` when given, else from the family's
    convention (T5: token 0 is padding anywhere, left or right). With `return_hidden`: the
    final hidden states [B, T, D] of the same positions instead. With a template
    (`prompt_slots` [B, K]), row t holds the output that predicts token t + 1: that of the
    last prompt row when a segment sits between them (`combine.remove_segments_causal`).
    """
    if decoder_attention_mask is None and self.config.zero_is_padding:
      source_BT = decoder_input_tokens if decoder_target_tokens is None else decoder_target_tokens
      valid_BT = source_BT > 0
    else:
      valid_BT = self.input_validity(decoder_input_tokens, decoder_target_tokens,
                                     decoder_attention_mask)
    embedded_BSD, valid_BS, index_B = self.decoder.add_prompt(
        decoder_input_tokens, self.embed(decoder_input_tokens), valid_BT, prompt_slots)
    if self.template:
      causal_BS = masks.causal_attention_with_segments(decoder_causal_attention, index_B,
                                                       self.slot_lengths)
      outputs_BSX = self.decode_embedded(embedded_BSD, valid_BS, causal_BS, enable_dropout,
                                         return_hidden=return_hidden)
      return combine.remove_segments_causal(outputs_BSX, index_B, self.slot_lengths)
    causal_BS = masks.causal_attention_with_prompt(decoder_causal_attention, index_B,
                                                   self.prompt_length)
    outputs_BSX = self.decode_embedded(embedded_BSD, valid_BS, causal_BS, enable_dropout,
                                       layer_inputs_fn=self.decoder.layer_inputs_fn(index_B),
                                       return_hidden=return_hidden)
    return combine.remove_prompt(outputs_BSX, index_B, self.prompt_length)

  def init_decode_cache(self, batch: int, max_decode_length: int) -> DecoderCache:
    """Decoding state for `max_decode_length` token positions plus the P prompt positions."""
    return self.decoder.init_cache(batch, max_decode_length + self.prompt_length)

  def prefill(self, tokens_BT: jax.Array, cache: DecoderCache,
              valid_BT: Optional[jax.Array] = None) -> DecoderCache:
    """Writes the prompt and the left-aligned tokens [B, T] at cache positions 0..T+P-1.

    `valid_BT` marks the real tokens (default: `prefill_validity`). Deep prompts are applied
    here, where the prompt positions are; generation steps come after them (plain
    `decode_step`), so the per-layer seam would change nothing there.
    """
    valid_BT = self.prefill_validity(tokens_BT, valid_BT)
    embedded_BSD, valid_BS, index_B = self.decoder.add_prompt(tokens_BT, self.embed(tokens_BT),
                                                              valid_BT)
    return self.decoder.decode_step(embedded_BSD, cache, 0, valid_BS,
                                    layer_inputs_fn=self.decoder.layer_inputs_fn(index_B))[1]

  def prefill_template(self, tokens_BT: jax.Array, cache: DecoderCache, valid_BT: jax.Array,
                       prompt_slots: Optional[jax.Array]) -> tuple[DecoderCache, jax.Array]:
    """A template model's prefill over left-aligned tokens [B, T] with their segments (slots
    [B, K] in the same coordinates): writes all T+P positions but the last (cache positions
    0..T+P-2) and returns the last one's embedding [B, D], which the first decoding step
    feeds (`decode_embedded_step`): a trailing segment's last row, or the last token."""
    embedded_BSD, valid_BS, _ = self.decoder.add_prompt(tokens_BT, self.embed(tokens_BT),
                                                        valid_BT > 0, prompt_slots)
    cache = self.decoder.decode_step(embedded_BSD[:, :-1], cache, 0, valid_BS[:, :-1])[1]
    return cache, embedded_BSD[:, -1]

  def decode_embedded_step(self, embedded_BQD: jax.Array, cache: DecoderCache,
                           index: jax.Array | int) -> tuple[jax.Array, DecoderCache]:
    """Feeds embeddings [B, Q, D] at positions index.. -> (logits [B, Q, V], cache)."""
    return self.decoder.decode_step(embedded_BQD, cache, index)


def build_prompt_model(config: T5Config, prompt_config: PromptConfig) -> nn.Module:
  """The prompt model of `config.architecture` with `prompt_config`'s method (no I/O)."""
  method = prompt_config.make_method()
  template = getattr(prompt_config, "template", None) or None
  if template:
    parsed = templates.parse_template(template)
    if hasattr(method, "layer_inputs_fn"):
      raise templates.TemplateError(
          "prompt templates place input prompts; deep prompts add per-layer prompts at one "
          "position: drop PROMPT_TEMPLATE or use prompt tuning / P-tuning.")
    if _method_length(method) != parsed.length:
      raise templates.TemplateError(
          f"the prompt template {template!r} has {parsed.length} prompt positions but the "
          f"prompt method makes {_method_length(method)}: set PROMPT_LENGTH={parsed.length}.")
  if config.architecture == "decoder_only":
    if prompt_config.placement not in DECODER_ONLY_PLACEMENTS:
      raise ValueError(f"decoder-only prompt models place the prompt before the inputs "
                       f"{DECODER_ONLY_PLACEMENTS}; placement={prompt_config.placement!r} is for "
                       "encoder-decoder models.")
    return PromptDecoderOnly(config, prompt_method=method, placement=prompt_config.placement,
                             template=template)
  return PromptEncoderDecoder(config, prompt_method=method, placement=prompt_config.placement,
                              decoder_attends_to_prompt=prompt_config.decoder_attends_to_prompt,
                              template=template)


__all__ = ["PromptMethod", "PromptInserter", "PromptEncoder", "PromptEncoderDecoder",
           "PromptDecoder", "PromptDecoderOnly", "build_prompt_model"]
