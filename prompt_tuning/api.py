"""`load_model`: the Python entry point that builds a model from gin files and restores weights."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import checkpoints, gin_stack, prompts
from prompt_tuning.checkpoints import tree
from prompt_tuning.train import losses
from prompt_tuning.inference import decoding  # noqa: F401  (api.decoding: the older path)
# Generation and parameter-tree helpers, importable from here as before.
from prompt_tuning.inference.generate import (DECODER_START_TOKEN, fill_after_eos,  # noqa: F401
                                              generate_decoder_only, generate_encoder_decoder,
                                              left_align_padding, left_align_slots)
from prompt_tuning.model_params import (METHOD_PARAMS_REGEX, PROMPT_PARAMS_REGEX,  # noqa: F401
                                        init_params, method_subtree, param_axes, param_shapes,
                                        prompt_param_path, prompt_subtree, read_prompt,
                                        replace_prompt, subtree_matching, with_frozen_dtype)
from prompt_tuning.models import ModelConfig, build_model

T5Config = ModelConfig  # Older name, kept for code written against it.
EOS_ID = 1  # T5's; other families' come from their config (`ModelConfig.eos_token_ids`).
# Macros that, passed as bindings, override a config read from a checkpoint.
CHECKPOINT_CONFIG_OVERRIDES = dict(zip(gin_stack.CHECKPOINT_CONFIG_MACROS,
                                       ("dtype", "dropout_rate", "remat_policy")))


class ModelConfigError(ValueError):
  """No usable model architecture: neither the gin files nor the checkpoint give one."""


def _pad_rows(rows: Sequence[Sequence[int]], pad_id: int,
              left: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Token rows -> (tokens int32 [B, T], mask int32 [B, T]), padded right (or left)."""
  length = max([len(row) for row in rows] + [1])
  tokens = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for index, row in enumerate(rows):
    span = slice(length - len(row), length) if left else slice(0, len(row))
    tokens[index, span] = row
    mask[index, span] = 1
  return tokens, mask


def _is_texts(value: Any) -> bool:
  return isinstance(value, str) or (isinstance(value, (list, tuple)) and bool(value) and
                                    all(isinstance(v, str) for v in value))


@dataclasses.dataclass
class LoadedModel:
  """A built model with restored parameters, ready for logits, scoring and generation.

  Inputs are token arrays or, with a `vocabulary` (the checkpoint's own tokenizer), lists of
  strings. For the LLM families token id 0 is a real token: padding is an `attention_mask`
  (1 = real token), made from the strings' lengths when strings are given.
  """

  config: ModelConfig
  module: nn.Module
  params: dict
  # The prompt-learning method's config (prompts.PromptConfig, p_tuning.PTuningConfig,
  # prefix_tuning.PrefixConfig), or None for a plain model.
  prompt_config: Any = None
  # Where the weights came from (None: random); the tokenizer is read from there.
  checkpoint: Optional[str] = None
  _vocabulary: Any = dataclasses.field(default=None, repr=False)
  # The last decoder-only ensemble's prompt keys/values ({"key": ..., "cache": PromptCache}).
  _prompt_caches: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def is_decoder_only(self) -> bool:
    return self.config.architecture == "decoder_only"

  @property
  def vocabulary(self) -> Any:
    """The checkpoint's tokenizer as a `seqio.Vocabulary` (read on first use).

    Hugging Face directories: tokenizer.json (or a SentencePiece model); GGUF files: the
    embedded tokenizer; T5X / orbax T5 checkpoints: the T5 SentencePiece vocabulary.
    """
    if self._vocabulary is None:
      from prompt_tuning.data import model_vocab  # Local: pulls in seqio / tokenizers.
      self._vocabulary = model_vocab.vocabulary_for(self.checkpoint, self.config)
    return self._vocabulary

  @vocabulary.setter
  def vocabulary(self, vocabulary: Any) -> None:
    self._vocabulary = vocabulary

  def encode(self, texts: Sequence[str] | str, *, add_bos: Optional[bool] = None,
             left_pad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (tokens int32 [B, T], attention_mask int32 [B, T]) with the model's tokenizer.

    A BOS is prepended when the tokenizer adds one by default (`add_bos` overrides).
    """
    from prompt_tuning.data import model_vocab  # Local: pulls in seqio / tokenizers.
    texts = [texts] if isinstance(texts, str) else list(texts)
    rows = [model_vocab.encode_for_model(self.vocabulary, text, add_bos=add_bos)
            for text in texts]
    pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
    return _pad_rows(rows, pad, left=left_pad)

  def encode_inputs(self, texts: Sequence[str] | str) -> np.ndarray:
    """Encoder-decoder inputs: strings -> tokens int32 [B, T] as the model reads them (BOS
    first when the tokenizer adds one, e.g. BART's `<s>`; then EOS), padded with the pad id."""
    from prompt_tuning.data import model_vocab  # Local: pulls in seqio / tokenizers.
    texts = [texts] if isinstance(texts, str) else list(texts)
    eos = int(self.vocabulary.eos_id)
    rows = [model_vocab.encode_for_model(self.vocabulary, text) + [eos] for text in texts]
    return _pad_rows(rows, self.config.pad_token_id or 0)[0]

  def decode(self, tokens: Any) -> list[str]:
    """Token rows [B, L] -> strings (each cut at its first EOS, special tokens dropped)."""
    return [self.vocabulary.decode([int(t) for t in row]) for row in np.asarray(tokens)]

  def _token_arrays(self, tokens: tuple, attention_mask: Any,
                    left_pad: bool = False) -> tuple[tuple[jax.Array, ...], Optional[jax.Array]]:
    """Token arrays (strings encoded) and the attention mask to pass, if any."""
    if tokens and _is_texts(tokens[0]):
      if len(tokens) != 1:
        raise ValueError("strings are accepted as the model's inputs only (one list of texts); "
                         "pass token arrays for decoder inputs.")
      if attention_mask is not None:
        raise ValueError("pass either strings (the mask is made from their lengths) or tokens "
                         "with an attention_mask, not strings and a mask.")
      if not self.is_decoder_only:  # Encoder inputs: [BOS] text EOS, padded with the pad id.
        return (jnp.asarray(self.encode_inputs(tokens[0])),), None
      array, mask = self.encode(tokens[0], left_pad=left_pad)
      return (jnp.asarray(array),), jnp.asarray(mask)
    arrays = tuple(jnp.asarray(t, jnp.int32) for t in tokens)
    if attention_mask is not None:
      if not self.is_decoder_only:
        raise ValueError("attention_mask is for decoder-only models; T5 encoder-decoder inputs "
                         "mark padding with token id 0.")
      attention_mask = jnp.asarray(attention_mask, jnp.int32)
      if attention_mask.shape != arrays[0].shape:
        raise ValueError(f"attention_mask has shape {list(attention_mask.shape)} but the tokens "
                         f"{list(arrays[0].shape)}; give one 0/1 entry per token.")
    return arrays, attention_mask

  @property
  def prompt_params(self) -> dict:
    """The prompt method's parameters (nested, T5X paths); empty for a plain model."""
    return prompt_subtree(self.params)

  @property
  def method_params(self) -> dict:
    """Every prompt-learning parameter (prompts, prompt encoders, prefixes), nested."""
    return method_subtree(self.params)

  def with_prompt(self, prompt: Any) -> dict:
    """`params` with the prompt parameter replaced by `prompt` ([P, D] array or `.npy` path)."""
    return replace_prompt(self.params, prompt, self.config)

  def _params(self, prompt: Any) -> dict:
    return self.params if prompt is None else self.with_prompt(prompt)

  def logits(self, *tokens: Any, attention_mask: Any = None, prompt: Any = None,
             **kwargs: Any) -> jax.Array:
    """Encoder-decoder: `logits(encoder_input_tokens [B, T], decoder_input_tokens [B, S])`;
    decoder-only: `logits(input_tokens [B, S], attention_mask=None)` or `logits(list of str)`
    -> float32 [B, S, vocab], the logits at each input position (a prompt's own positions are
    not returned).

    Padding: T5 models read it from token id 0; decoder-only LLMs from `attention_mask`
    [B, S] (1 = real token; None = all real). `prompt` ([P, D] array or `.npy` path) replaces a
    prompt model's prompt for this call (decoder-only: placed before all tokens, as PEFT does).
    Extra keyword arguments (e.g. `decoder_target_tokens`) go to the module's `__call__`.
    """
    arrays, mask = self._token_arrays(tokens, attention_mask)
    if mask is not None:
      kwargs["decoder_attention_mask"] = mask
    return _apply_call(self.module, self._params(prompt), arrays, **kwargs)

  def score(self, inputs: Any, targets: Any, *, prompt: Any = None) -> np.ndarray:
    """Log-likelihood [N] of each target text given its input text (decoder-only models).

    `inputs` / `targets`: lists of N strings (a single input is paired with every target), as
    rank classification scores label continuations: the target's tokens follow the input's
    (BOS first when the tokenizer adds one) and only they are scored.
    """
    rows, starts = self._score_rows(inputs, targets)
    return _target_log_likelihoods(self.module, self._params(prompt), rows, starts,
                                   self.config.pad_token_id or 0)

  def _score_rows(self, inputs: Any, targets: Any) -> tuple[list[list[int]], list[int]]:
    """Token rows (input then target) and where each row's target starts, for scoring."""
    from prompt_tuning.data import model_vocab  # Local: pulls in seqio / tokenizers.
    if not self.is_decoder_only:
      raise ValueError("score() is for decoder-only models; score encoder-decoder targets with "
                       "logits(encoder_tokens, decoder_tokens).")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if len(inputs) == 1 and len(targets) > 1:
      inputs = inputs * len(targets)
    if len(inputs) != len(targets):
      raise ValueError(f"score() got {len(inputs)} inputs and {len(targets)} targets; give one "
                       "input per target (or one input for all).")
    rows, starts = [], []
    for text, target in zip(inputs, targets):
      head = model_vocab.encode_for_model(self.vocabulary, text)
      tail = list(self.vocabulary.encode(target))
      if not tail:
        raise ValueError(f"target {target!r} tokenizes to no tokens; it cannot be scored.")
      rows.append(head + tail)
      starts.append(len(head))
    return rows, starts

  def _ensemble(self, prompts: Any) -> tuple[nn.Module, dict, int]:
    """(ensemble module, its params, N) for N prompts ([N, P, D] or a list of [P, D] / .npy)."""
    from prompt_tuning import ensembles  # Local: only ensembles need it.
    ensembles.ensemble_module(self.module, 1)  # Checks the model can take an ensemble.
    length, width = self.module.prompt_length, self.config.emb_dim
    prompts_NPD = ensembles.stack_prompts(
        prompts, lambda p: read_prompt(p, self.config, length=length, width=width))
    module = ensembles.ensemble_module(self.module, len(prompts_NPD))
    stack = "decoder" if self.is_decoder_only else "encoder"
    return module, ensembles.ensemble_params(self.params, stack, prompts_NPD), len(prompts_NPD)

  def generate_ensemble(self, inputs: Any, prompts: Any, max_decode_length: int = 32, *,
                        attention_mask: Any = None, method: str = "greedy",
                        num_beams: Optional[int] = None,
                        alpha: float = 0.6, temperature: float = 1.0, top_k: int = 0,
                        top_p: float = 1.0, rng: Optional[jax.Array] = None,
                        eos_id: Optional[int | Sequence[int]] = None,
                        prompt_slots: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Generates with N prompts at once and combines the answers by majority vote.

    `prompts`: an [N, P, D] array or a list of N [P, D] arrays / `.npy` paths (prompt tuning,
    or P-tuning's exported prompts). The N x B rows run in one call (the frozen weights read
    once per step). Options are `generate`'s. Returns (combined [B, L], per_prompt [N, B, L]);
    the vote keeps the most frequent sequence (up to its EOS), ties going to the lowest prompt
    index.
    """
    from prompt_tuning import ensembles  # Local: only ensembles need it.
    if method not in ("greedy", "beam", "sample"):
      raise ValueError(f"generate_ensemble(method={method!r}): use 'greedy', 'beam' or 'sample'.")
    rng = jax.random.PRNGKey(0) if rng is None else rng
    module, params, num_prompts = self._ensemble(prompts)
    (inputs,), mask = self._token_arrays((inputs,), attention_mask, left_pad=True)
    eos = self._eos(eos_id)
    options = decoding_options(self.config, method=method, max_decode_length=max_decode_length,
                               num_beams=num_beams, alpha=alpha, temperature=temperature,
                               top_k=top_k, top_p=top_p, eos_id=eos)
    tiled = ensembles.tile_rows(inputs, num_prompts)
    slots = ensembles.tile_rows(None if prompt_slots is None else
                                jnp.asarray(prompt_slots, jnp.int32), num_prompts)
    if self.is_decoder_only:
      if mask is None:
        mask = self.module.apply({"params": self.params}, inputs, method="prefill_validity")
      mask = ensembles.tile_rows(mask, num_prompts)
      cache = self._ensemble_prompt_cache(module, params)
      if cache is None:
        tokens = generate_decoder_only(module, params, tiled, rng, mask, slots, **options)
      else:
        from prompt_tuning import prompt_cache  # Local: it imports this module.
        tokens = prompt_cache.generate_from_cache(module, params, cache, tiled, rng, mask,
                                                  **options)
    else:
      tokens = generate_encoder_decoder(module, params, tiled, rng, slots, **options)
    per_prompt = fill_after_eos(np.asarray(tokens), eos, self.config.output_pad_id)
    per_prompt = per_prompt.reshape((num_prompts, inputs.shape[0]) + per_prompt.shape[1:])
    eos_ids = (eos,) if isinstance(eos, int) else eos
    return ensembles.majority_vote(per_prompt, eos_ids), per_prompt

  def _ensemble_prompt_cache(self, module: nn.Module, params: dict) -> Any:
    """The N prompts' keys/values of a decoder-only ensemble (`prompt_cache`), built on first
    use and kept for later calls with the same prompts and frozen weights; None where the
    placement is not a plain prefix (the prompt is then recomputed in each prefill)."""
    from prompt_tuning import prompt_cache  # Local: it imports this module.
    if getattr(module, "placement", "prefix") != "prefix" or getattr(module, "slot_lengths",
                                                                     None):
      return None
    prompts_NPD = np.asarray(ensemble_prompts(params, module))
    key = (id(self.params), prompts_NPD.shape, hashlib.sha1(prompts_NPD.tobytes()).hexdigest())
    if self._prompt_caches.get("key") != key:
      self._prompt_caches.clear()
      self._prompt_caches.update(key=key, cache=prompt_cache.build_prompt_cache(module, params))
    return self._prompt_caches["cache"]

  def score_ensemble(self, inputs: Any, targets: Any, prompts: Any) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Rank-classification scores with N prompts in one pass (decoder-only, as `score`).

    Returns (mean log-likelihood over the prompts [K], per-prompt log-likelihoods [N, K]).
    """
    rows, starts = self._score_rows(inputs, targets)
    module, params, num_prompts = self._ensemble(prompts)
    # Prompt-major rows: every example once per prompt (`ensembles.tile_rows`).
    per_prompt = _target_log_likelihoods(module, params, rows * num_prompts,
                                         starts * num_prompts, self.config.pad_token_id or 0)
    per_prompt = per_prompt.reshape(num_prompts, len(rows))
    return per_prompt.mean(axis=0), per_prompt

  def _eos(self, eos_id: Optional[int | Sequence[int]]) -> int | tuple[int, ...]:
    """The decoding `eos_id` option: given, or the checkpoint's id(s)."""
    eos = self.config.eos_token_ids if eos_id is None else eos_id
    eos = int(eos) if isinstance(eos, (int, np.integer)) else tuple(int(e) for e in eos)
    return eos[0] if isinstance(eos, tuple) and len(eos) == 1 else eos

  def generate(self,
               inputs: Any,
               max_decode_length: int = 32,
               *,
               attention_mask: Any = None,
               method: str = "greedy",
               num_beams: Optional[int] = None,
               alpha: float = 0.6,
               temperature: float = 1.0,
               top_k: int = 0,
               top_p: float = 1.0,
               rng: Optional[jax.Array] = None,
               eos_id: Optional[int | Sequence[int]] = None,
               prompt: Any = None,
               prompt_slots: Any = None,
               length_penalty: Optional[float] = None,
               early_stopping: Any = None,
               no_repeat_ngram_size: Optional[int] = None,
               min_new_tokens: Optional[int] = None) -> np.ndarray:
    """Generates up to `max_decode_length` tokens after `inputs` (token array [B, T], or a list
    of strings for decoder-only models).

    Padding: T5 reads it from token id 0; decoder-only LLMs from `attention_mask` (1 = real
    token, padding on either side). method: "greedy", "beam" (best of `num_beams`, T5X
    brevity penalty `alpha`) or "sample" (temperature / top-k / top-p). `eos_id` (default: the
    checkpoint's end-of-sequence id(s)) ends a row. `prompt` ([P, D] array or `.npy` path)
    replaces a prompt model's prompt. `prompt_slots` [B, K]: a template model's slot
    positions among the input tokens (`encode_template` makes both). Returns int32
    [B, max_decode_length] of new tokens; positions after EOS hold the pad id (T5: 0).
    `decode(...)` turns them into strings.

    Hugging Face's decoding options (default: the checkpoint's `generation_defaults`, e.g.
    BART's): `length_penalty` / `early_stopping` score and stop beams as transformers does;
    `no_repeat_ngram_size`, `min_new_tokens`; the config's forced first / last tokens always
    apply. `num_beams` defaults to the checkpoint's, else 4.
    """
    if method not in ("greedy", "beam", "sample"):
      raise ValueError(f"generate(method={method!r}): use 'greedy', 'beam' or 'sample'.")
    if rng is None:
      rng = jax.random.PRNGKey(0)
    (inputs,), mask = self._token_arrays((inputs,), attention_mask, left_pad=True)
    eos = self._eos(eos_id)
    options = decoding_options(
        self.config, method=method, max_decode_length=max_decode_length, num_beams=num_beams,
        alpha=alpha, temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos,
        length_penalty=length_penalty, early_stopping=early_stopping,
        no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens)
    params = self._params(prompt)
    slots = None if prompt_slots is None else jnp.asarray(prompt_slots, jnp.int32)
    if self.is_decoder_only:
      if mask is None:
        mask = self.module.apply({"params": params}, inputs, method="prefill_validity")
      tokens = generate_decoder_only(self.module, params, inputs, rng, mask, slots, **options)
    else:
      tokens = generate_encoder_decoder(self.module, params, inputs, rng, slots, **options)
    return fill_after_eos(np.asarray(tokens), eos, self.config.output_pad_id)

  def encode_template(self, rows: Sequence[Mapping[str, Any]], template: Optional[str] = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Examples (dicts of the template's fields) -> (tokens int32 [B, T], attention_mask
    [B, T], prompt_slots int32 [B, K]) for a template model's `generate` / `logits`.

    `template`: default the model's own (PROMPT_TEMPLATE). The text pieces between slots are
    tokenized separately; decoder-only rows start with BOS when the tokenizer adds one, T5
    rows end with EOS (as the tasks' inputs do). Right-padded.
    """
    from prompt_tuning import templates  # Local: only templates need it.
    from prompt_tuning.data import model_vocab  # Local: pulls in seqio / tokenizers.
    template = template or getattr(self.prompt_config, "template", None)
    if not template:
      raise ValueError("encode_template needs a template: the model has none (load it with "
                       "PROMPT_TEMPLATE='[P:3] {x} ...') and none was given.")
    parsed = templates.parse_template(template)
    head = [int(self.vocabulary.bos_id)] if (
        self.is_decoder_only and model_vocab.adds_bos(self.vocabulary)) else []
    tail = [] if self.is_decoder_only else [int(self.vocabulary.eos_id)]
    token_rows, slot_rows = [], []
    for row in rows:
      pieces = [list(self.vocabulary.encode(p)) if p else []
                for p in parsed.render_pieces(row)]
      slots = templates.text_slots([len(p) for p in pieces], parsed.leading)
      token_rows.append(head + [t for piece in pieces for t in piece] + tail)
      slot_rows.append(templates.model_slots(slots, len(head)))
    pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
    tokens, mask = _pad_rows(token_rows, pad)
    return tokens, mask, np.asarray(slot_rows, np.int32)


def decoding_options(config: ModelConfig, *, method: str, max_decode_length: int,
                     num_beams: Optional[int], alpha: float, temperature: float, top_k: int,
                     top_p: float, eos_id: int | tuple[int, ...],
                     length_penalty: Optional[float] = None, early_stopping: Any = None,
                     no_repeat_ngram_size: Optional[int] = None,
                     min_new_tokens: Optional[int] = None) -> dict[str, Any]:
  """The static options of the jitted generate functions; what the caller leaves None comes
  from the checkpoint's `generation_defaults`, and its forced first / last tokens always apply."""
  defaults = config.generation_defaults

  def pick(value: Any, default: Any) -> Any:
    return default if value is None else value

  constraints = decoding.Constraints(
      no_repeat_ngram_size=int(pick(no_repeat_ngram_size, defaults.no_repeat_ngram_size)),
      min_new_tokens=int(pick(min_new_tokens, defaults.min_new_tokens)),
      forced_bos_id=config.forced_bos_token_id, forced_eos_id=config.forced_eos_token_id)
  penalty = pick(length_penalty, defaults.length_penalty)
  return dict(method=method, max_decode_length=int(max_decode_length),
              num_beams=int(pick(num_beams, pick(defaults.num_beams, 4))), alpha=float(alpha),
              temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
              eos_id=eos_id, length_penalty=None if penalty is None else float(penalty),
              early_stopping=pick(early_stopping, defaults.early_stopping),
              constraints=constraints if constraints.active else None)


def ensemble_prompts(params: dict, module: nn.Module) -> jax.Array:
  """The [N, P, D] prompts of an ensemble module's parameters (`ensembles.ensemble_params`)."""
  stack = "decoder" if module.config.architecture == "decoder_only" else "encoder"
  return params[stack]["prompt"]["prompt"]["prompt"]


def _target_log_likelihoods(module: nn.Module, params: dict, rows: Sequence[Sequence[int]],
                            starts: Sequence[int], pad_id: int) -> np.ndarray:
  """[B]: each row's summed log-probability of its tokens from `starts[b]` on (teacher forced);
  only the positions that predict them are projected to logits."""
  if min(starts) < 1:
    raise ValueError("an input tokenizes to no tokens and the tokenizer adds no BOS, so the "
                     "target's first token has no position to be predicted from: give every "
                     "target some input text.")
  tokens_BT, mask_BT = _pad_rows(rows, pad_id)
  width = max(len(row) - start for row, start in zip(rows, starts))
  index_BW = np.zeros((len(rows), width), np.int32)
  targets_BW = np.zeros((len(rows), width), np.int32)
  weights_BW = np.zeros((len(rows), width), np.float32)
  for b, (row, start) in enumerate(zip(rows, starts)):
    count = len(row) - start
    index_BW[b, :count] = np.arange(start - 1, len(row) - 1)
    targets_BW[b, :count] = row[start:]
    weights_BW[b, :count] = 1.0
  return np.asarray(_score_positions(module, params, tokens_BT, mask_BT, index_BW, targets_BW,
                                     weights_BW))


@functools.partial(jax.jit, static_argnums=(0,))
def _score_positions(module: nn.Module, params: dict, tokens_BT: jax.Array, mask_BT: jax.Array,
                     index_BW: jax.Array, targets_BW: jax.Array,
                     weights_BW: jax.Array) -> jax.Array:
  """[B]: sum over w of weights[b, w] * log p(targets[b, w]) read at position index[b, w]."""
  variables = {"params": params}
  hidden_BTD = module.apply(variables, tokens_BT, decoder_attention_mask=mask_BT,
                            return_hidden=True)
  hidden_BWD = jnp.take_along_axis(hidden_BTD, index_BW[..., None], axis=1)
  logits_BWV = module.apply(variables, hidden_BWD, method="project_hidden")
  return losses.target_log_likelihoods(logits_BWV, targets_BW, weights_BW)


@functools.partial(jax.jit, static_argnums=(0,))
def _apply_call(module: nn.Module, params: dict, tokens: tuple, **kwargs) -> jax.Array:
  return module.apply({"params": params}, *tokens, **kwargs)


def load_model(gin_files: Sequence[str] | str = (),
               bindings: Sequence[str] = (),
               checkpoint: Optional[str | os.PathLike] = None,
               *,
               gin_search_paths: Sequence[str] = (),
               restore_dtype: Any = None,
               frozen_dtype: Any = None,
               seed: int = 0,
               vocabulary: Any = None) -> LoadedModel:
  """Builds a model (gin files + `NAME=VALUE` bindings and/or the checkpoint's own config) and
  restores its weights.

  The architecture and sizes come from the gin files when they describe a model (e.g.
  "models/t5_1_1_base.gin"), else from the checkpoint: a Hugging Face directory's config.json
  or a GGUF file's metadata. So `load_model(checkpoint=PATH)` loads a plain model and
  `load_model(["architectures/prompt_tuning.gin"], ["PROMPT_LENGTH=5"], checkpoint=PATH)` the
  same model with a prompt. With a checkpoint's config, the bindings ACTIVATION_DTYPE,
  DROPOUT_RATE and REMAT_POLICY override it.

  Args:
    gin_files: gin files (names relative to the search paths, e.g. "models/t5_1_1_base.gin").
    bindings: extra gin bindings, e.g. ("ACTIVATION_DTYPE='bfloat16'",).
    checkpoint: T5X checkpoint directory, one of our orbax checkpoints, a Hugging Face
      directory or a `.gguf` file; None = random weights (seeded by `seed`).
    gin_search_paths: extra folders to resolve gin files from.
    restore_dtype: dtype to read checkpoint arrays as (parameters are then cast to float32).
    frozen_dtype: dtype to keep the frozen (non prompt-method) parameters in, e.g. "bfloat16"
      to halve their memory; None keeps float32. Computation runs in the activation dtype.
    vocabulary: a `seqio.Vocabulary` for prompt initializers that tokenize text (class labels)
      and were given none; their embedding table is the loaded model's own.
  """
  if isinstance(gin_files, (str, os.PathLike)):
    gin_files = [os.fspath(gin_files)]
  checkpoint = None if checkpoint is None else os.fspath(checkpoint)
  config, prompt_config = model_configs(gin_files, bindings, checkpoint,
                                        gin_search_paths=gin_search_paths)
  module = build_any_model(config, prompt_config)
  if checkpoint is None:
    params = with_frozen_dtype(init_params(module, config, jax.random.PRNGKey(seed)),
                               frozen_dtype)
    if prompts.needs_model_context(prompt_config):
      params = _with_fresh_method_params(module, config, params, jax.random.PRNGKey(seed),
                                         prompt_config, vocabulary)
  else:
    expected = with_frozen_dtype(param_shapes(module, config), frozen_dtype)
    allow_missing = None if prompt_config is None else METHOD_PARAMS_REGEX
    params = checkpoints.load_params(checkpoint, expected, config, restore_dtype=restore_dtype,
                                     allow_missing=allow_missing)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    if prompt_config is not None:
      if vocabulary is None and prompts.needs_model_context(prompt_config):
        from prompt_tuning.data import model_vocab  # Local: pulls in seqio / tokenizers.
        vocabulary = model_vocab.vocabulary_for(checkpoint, config)
      params = _with_fresh_method_params(module, config, params, jax.random.PRNGKey(seed),
                                         prompt_config, vocabulary)
  return LoadedModel(config=config, module=module, params=params, prompt_config=prompt_config,
                     checkpoint=checkpoint, _vocabulary=vocabulary)


def model_configs(gin_files: Sequence[str], bindings: Sequence[str] = (),
                  checkpoint: Optional[str] = None, *,
                  gin_search_paths: Sequence[str] = ()) -> tuple[ModelConfig, Any]:
  """(model config, prompt-method config or None) from gin files and / or a checkpoint.

  Gin files that bind the model config (a models/*.gin) decide it; otherwise the checkpoint's
  own config does (Hugging Face / GGUF), with ACTIVATION_DTYPE / DROPOUT_RATE / REMAT_POLICY
  bindings applied over it.
  """
  prompt_config = None
  config = None
  if gin_files or bindings:
    from prompt_tuning import gin_utils  # Local: gin is parsed only by entry points.
    gin_utils.parse_gin_config(gin_files, bindings, gin_search_paths)
    if gin_utils.binds_model_config():
      config = _config_from_gin()
    prompt_config = _prompt_config_from_gin()
  if config is None:
    config = checkpoint_model_config(checkpoint, bindings)
  return config, prompt_config


def checkpoint_model_config(checkpoint: Optional[str], bindings: Sequence[str] = ()) -> ModelConfig:
  """The model config a checkpoint carries (Hugging Face config.json, GGUF metadata), with
  ACTIVATION_DTYPE / DROPOUT_RATE / REMAT_POLICY overrides from `bindings` (parsed gin)."""
  try:
    config = None if checkpoint is None else checkpoints.config_from_checkpoint(checkpoint)
  except ValueError as error:
    raise ModelConfigError(f"cannot read a model config from {checkpoint}: {error}") from error
  if config is None:
    where = f"the checkpoint {checkpoint} (T5X / orbax) carries no model config" if checkpoint \
        else "no checkpoint was given"
    raise ModelConfigError(
        f"no model architecture: the gin files describe none and {where}. Add a model gin file "
        "(e.g. 'models/t5_1_1_base.gin'), or give a Hugging Face directory or a .gguf file.")
  overrides = {}
  if bindings:
    from prompt_tuning import gin_utils  # Local: gin is parsed only by entry points.
    for macro, value in gin_utils.bound_macros(CHECKPOINT_CONFIG_OVERRIDES, bindings).items():
      overrides[CHECKPOINT_CONFIG_OVERRIDES[macro]] = value
  return config.replace(**overrides) if overrides else config


def build_any_model(config: ModelConfig, prompt_config: Any = None) -> nn.Module:
  """The plain model of `config`, or its prompt-learning model when `prompt_config` is given."""
  if prompt_config is None:
    return build_model(config)
  if hasattr(prompt_config, "build_model"):  # Methods inside the layers (prefix tuning).
    return prompt_config.build_model(config)
  from prompt_tuning import layers  # Local: plain models do not need the prompt layers.
  return layers.build_prompt_model(config, prompt_config)


def _with_fresh_method_params(module: nn.Module, config: ModelConfig, params: dict,
                              rng: jax.Array, prompt_config: Any = None,
                              vocabulary: Any = None) -> dict:
  """Restored frozen `params` plus freshly initialised prompt-method parameters (initializers
  waiting for the model get `params`' own embedding table and `vocabulary`)."""
  if prompts.needs_model_context(prompt_config):
    context = prompts.ModelContext.from_params(params, vocabulary, config.embedding_scale)
    module = build_any_model(config, prompts.bind_model_context(prompt_config, context))

  def init_prompt(rng):  # Under jit, XLA drops the (unused) frozen-weight initialisation.
    return method_subtree(init_params(module, config, rng))

  flat = tree.flatten_params(params)
  flat.update(tree.flatten_params(jax.jit(init_prompt)(rng)))
  return tree.unflatten_params(flat)


def _config_from_gin(gin_files: Optional[Sequence[str]] = None, bindings: Sequence[str] = (),
                     gin_search_paths: Sequence[str] = ()) -> ModelConfig:
  """The model config the gin files bind (parsed here when given, else already parsed)."""
  from prompt_tuning import gin_utils  # Local: gin is parsed only by entry points.
  from prompt_tuning.models import config as model_config

  if gin_files is not None:
    gin_utils.parse_gin_config(gin_files, bindings, gin_search_paths)
  return gin_utils.configured(model_config.ModelConfig)()


def _prompt_config_from_gin() -> Any:
  """The prompt-learning method config the parsed gin files select, or None (a plain model)."""
  from prompt_tuning import gin_utils, prompts  # Local: gin is parsed only by entry points.
  from prompt_tuning.methods import prefix_tuning

  input_prompt = gin_utils.configured(prompts.prompt_config)()
  prefix = gin_utils.configured(prefix_tuning.prefix_config)()
  if input_prompt is not None and prefix is not None:
    raise gin_utils.GinConfigError(
        "the gin files select both an input prompt method and prefix tuning: include only one "
        "of configs/architectures/{prompt_tuning,p_tuning,prefix_tuning}.gin.")
  return input_prompt if input_prompt is not None else prefix
