"""The learned prompt (Lester et al. 2021): the `Prompt` module, its initializers, `PromptConfig`.

An initializer is a closure `(rng, shape) -> float32 array of that shape`. Closures that need
data (an embedding table, a file) take either the data or a zero-argument loader, so a gin file
can bind a lazy read: nothing is read until the initializer runs. The initializers built on
embeddings (class labels, sampled vocabulary, embedded strings) may instead wait for the model:
with no table (and no vocabulary) they use the embedding table of the model the run restored,
whatever its checkpoint format, and the task's (or model's) vocabulary, bound by
`bind_model_context` before the prompt is initialised.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import templates
from prompt_tuning.models.layers import param_with_axes

Initializer = Callable[[jax.Array, Sequence[int]], jax.Array]
# An embedding table [vocab, embed], or a zero-argument function returning one.
Embeddings = Union[np.ndarray, jax.Array, Callable[[], Any]]

PROMPT_AXES = ("prompt", "prompt_embed")
PLACEMENTS = ("prefix", "prefix_after_bos", "suffix_before_eos")


def _materialize(embeddings: Embeddings) -> np.ndarray:
  """The embedding table as a float32 numpy array [vocab, embed] (calls a loader)."""
  table = embeddings() if callable(embeddings) else embeddings
  table = np.asarray(table, dtype=np.float32)
  if table.ndim != 2:
    raise ValueError(
        f"embeddings must be a 2-D table [vocab, embed], got shape {list(table.shape)}.")
  return table


class _ScaledTable:
  """An embedding table [vocab, embed] whose rows come out multiplied by `scale` when indexed
  (the model's embedding scale, e.g. Gemma's sqrt(embed)), without a scaled copy of it."""

  def __init__(self, table: np.ndarray, scale: float):
    self.table, self.scale = table, np.float32(scale)

  @property
  def shape(self) -> tuple[int, ...]:
    return self.table.shape

  def __getitem__(self, index: Any) -> np.ndarray:
    return self.table[index] * self.scale

  def take(self, rows: jax.Array) -> jax.Array:
    """The rows at (possibly traced) indices [n] -> [n, embed]."""
    return jnp.asarray(self.table)[rows] * self.scale


def _check_width(name: str, table: np.ndarray, shape: Sequence[int]) -> None:
  if len(shape) != 2 or table.shape[1] != shape[1]:
    raise ValueError(
        f"{name}: the embedding table has shape {list(table.shape)} but the prompt has shape "
        f"{list(shape)}; their last (embedding) dimensions must match: use the embedding table "
        "of the model this prompt is for.")


def uniform(scale: float = 0.5) -> Initializer:
  """Values drawn uniformly from [-scale, scale) (the paper's random init uses 0.5)."""

  def init(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    return jax.random.uniform(rng, tuple(shape), jnp.float32, -scale, scale)

  return init


class PromptInitError(ValueError):
  """A prompt initializer that cannot run as configured (a label with no tokens, no vocabulary)."""


@dataclasses.dataclass(frozen=True)
class ModelContext:
  """What a run knows once the frozen model is restored, for initializers that use it.

  embeddings: the restored model's token embedding table [vocab, embed] (its
    `token_embedder/embedding`, whatever the checkpoint format).
  vocabulary: a `seqio.Vocabulary` (anything with `encode(text) -> ids`): the task's output
    vocabulary in a training run, else the model's; None when unknown.
  embedding_scale: what the model multiplies looked-up embeddings by (`ModelConfig.
    embedding_scale`, e.g. sqrt(embed) for Gemma): rows initialised from the model's own table
    are scaled alike, so a prompt starts as the model's embedded tokens (as PEFT's text init).
  """

  embeddings: Any
  vocabulary: Any = None
  embedding_scale: float = 1.0

  @classmethod
  def from_params(cls, params: Any, vocabulary: Any = None,
                  embedding_scale: float = 1.0) -> "ModelContext":
    """The context of a restored parameter tree (`token_embedder/embedding`, or the decoder's)."""
    from prompt_tuning.checkpoints import tree  # Local: keeps this module's imports minimal.
    flat = tree.flatten_params(params)
    found = [p for p in flat if p.endswith("token_embedder/embedding") and "/prompt/" not in p]
    if not found:
      raise PromptInitError(
          "the model has no token_embedder/embedding to initialise the prompt from: set "
          "EMBEDDING_FILE to a .npy [vocab, embed] table or a checkpoint holding one.")
    path = min(found, key=lambda p: (p.count("/"), p))  # The shared table before any other.
    return cls(embeddings=flat[path], vocabulary=vocabulary, embedding_scale=embedding_scale)


class EmbeddingInitializer:
  """An initializer built on an embedding table [vocab, embed] (and, for text, a vocabulary).

  `embeddings=None` means the restored model's own table and `vocab=None` the run's vocabulary
  (the task's output vocabulary, else the model's); `bind(context)` fills them, as the training
  and evaluation commands and `load_model` do before initialising the prompt. Unbound, the
  initializer serves shape inference only: it returns zeros of the requested shape. Rows taken
  from the model's own table are multiplied by its embedding scale (`ModelContext`).
  """

  name = "embedding initializer"
  uses_vocab = False
  embedding_scale = 1.0

  def __init__(self, embeddings: Optional[Embeddings], vocab: Any = None,
               initializer: Optional[Initializer] = None):
    self.embeddings = embeddings
    self.vocab = vocab
    self.initializer = initializer if initializer is not None else uniform()

  @property
  def needs_context(self) -> bool:
    return (self.embeddings is None or (self.uses_vocab and self.vocab is None) or
            getattr(self.initializer, "needs_context", False))

  def bind(self, context: ModelContext) -> "EmbeddingInitializer":
    """A copy with the missing table / vocabulary taken from `context`."""
    bound = copy.copy(self)
    if bound.embeddings is None:
      bound.embeddings = context.embeddings
      bound.embedding_scale = context.embedding_scale
    if bound.uses_vocab and bound.vocab is None:
      if context.vocabulary is None:
        raise PromptInitError(
            f"{self.name} needs a vocabulary to tokenize its text and none is known: train on a "
            "task (its output vocabulary is used), set VOCAB_FILE to a SentencePiece model, or "
            "pass vocabulary= to load_model.")
      bound.vocab = context.vocabulary
    if isinstance(bound.initializer, EmbeddingInitializer):
      bound.initializer = bound.initializer.bind(context)
    return bound

  def __repr__(self) -> str:
    parts = ["embeddings=" + ("the model's" if self.embeddings is None else "given")]
    if self.uses_vocab:
      parts.append("vocab=" + ("the run's" if self.vocab is None else type(self.vocab).__name__))
    return f"{self.name}({', '.join(parts + self._details())})"

  def _details(self) -> list[str]:
    return []

  def _rows(self, rng: jax.Array, shape: Sequence[int], table: np.ndarray) -> jax.Array:
    raise NotImplementedError

  def __call__(self, rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    if self.needs_context:
      return jnp.zeros(tuple(shape), jnp.float32)
    table = _materialize(self.embeddings)
    _check_width(self.name, table, shape)
    if self.embedding_scale != 1.0:
      table = _ScaledTable(table, self.embedding_scale)
    return self._rows(rng, shape, table)


class _SampleOfEmbeddings(EmbeddingInitializer):
  name = "from_sample_of_embeddings"

  def __init__(self, embeddings: Optional[Embeddings], population_size: Optional[int]):
    super().__init__(embeddings)
    self.population_size = population_size

  @property
  def needs_context(self) -> bool:
    return self.embeddings is None

  def _details(self) -> list[str]:
    return [f"population_size={self.population_size}"]

  def _rows(self, rng, shape, table):
    population = table.shape[0] if self.population_size is None else int(self.population_size)
    if not 0 < population <= table.shape[0]:
      raise PromptInitError(
          f"from_sample_of_embeddings: population_size={self.population_size} must be in "
          f"[1, {table.shape[0]}] (the embedding table has {table.shape[0]} rows): lower "
          "SAMPLED_VOCAB_SIZE.")
    replace = shape[0] > population
    rows = jax.random.choice(rng, population, (shape[0],), replace=replace)
    return table.take(rows) if isinstance(table, _ScaledTable) else jnp.asarray(table)[rows]


def from_sample_of_embeddings(embeddings: Optional[Embeddings] = None,
                              population_size: Optional[int] = None) -> Initializer:
  """Rows sampled from the first `population_size` rows of `embeddings` (all when None).

  Sampled without replacement; with replacement when the prompt is longer than the population.
  `embeddings` None: the restored model's own table (see `EmbeddingInitializer`).
  """
  return _SampleOfEmbeddings(embeddings, population_size)


def _token_ids(table: np.ndarray, vocab: Any, text: str, name: str) -> np.ndarray:
  """Token ids of `text` under `vocab`, checked against the table's rows."""
  ids = np.asarray(list(vocab.encode(text)), np.int64)
  if ids.size == 0:
    raise PromptInitError(
        f"{name}: the label {text!r} tokenizes to no tokens with {type(vocab).__name__}, so it "
        "cannot initialise a prompt row: give every class label visible text.")
  if ids.max() >= table.shape[0] or ids.min() < 0:
    raise PromptInitError(
        f"{name}: the label {text!r} tokenizes to ids {ids.tolist()}, beyond the model's "
        f"{table.shape[0]}-row embedding table: the vocabulary does not belong to this model "
        "(use the task / VOCAB_FILE of the model's tokenizer).")
  return ids


def _fill_first_rows(rng: jax.Array, shape: Sequence[int], rows: np.ndarray,
                     initializer: Initializer, name: str) -> jax.Array:
  """`rows` [n, embed] as the prompt's first n rows; the rest from `initializer`."""
  if rows.shape[0] > shape[0]:
    raise PromptInitError(f"{name}: {rows.shape[0]} initial rows do not fit a prompt of shape "
                          f"{list(shape)}: raise the prompt length to at least {rows.shape[0]}.")
  prompt = jnp.asarray(initializer(rng, tuple(shape)), jnp.float32)
  return prompt.at[:rows.shape[0]].set(jnp.asarray(rows))


class _EmbeddedList(EmbeddingInitializer):
  name = "from_embedded_list"
  uses_vocab = True

  def __init__(self, embeddings, vocab, texts: Sequence[str], initializer):
    super().__init__(embeddings, vocab, initializer)
    self.texts = tuple(texts)

  def _details(self) -> list[str]:
    return [f"texts={list(self.texts)}", f"then {self.initializer!r}"]

  def _rows(self, rng, shape, table):
    rows = np.stack([table[_token_ids(table, self.vocab, t, self.name)].mean(axis=0)
                     for t in self.texts]) if self.texts else np.zeros((0, table.shape[1]),
                                                                         np.float32)
    return _fill_first_rows(rng, shape, rows, self.initializer, self.name)


def from_embedded_list(embeddings: Optional[Embeddings] = None, vocab: Any = None,
                       texts: Sequence[str] = (),
                       initializer: Optional[Initializer] = None) -> Initializer:
  """Class-label init: row i = mean sub-token embedding of `texts[i]`; the rest from
  `initializer` (default uniform(0.5)).

  `embeddings` None: the restored model's own table; `vocab` None: the run's vocabulary (the
  task's output vocabulary, else the model's); see `EmbeddingInitializer`.
  """
  return _EmbeddedList(embeddings, vocab, texts, initializer)


class _EmbeddedString(EmbeddingInitializer):
  name = "from_embedded_string"
  uses_vocab = True

  def __init__(self, embeddings, vocab, text: str, initializer):
    super().__init__(embeddings, vocab, initializer)
    self.text = text

  def _rows(self, rng, shape, table):
    rows = table[_token_ids(table, self.vocab, self.text, self.name)]
    return _fill_first_rows(rng, shape, rows, self.initializer, self.name)


def from_embedded_string(embeddings: Optional[Embeddings] = None, vocab: Any = None,
                         text: str = "", initializer: Optional[Initializer] = None) -> Initializer:
  """One row per sub-token of `text` (its embeddings, in order); rest from `initializer`.

  `embeddings` / `vocab` None: the run's own (see `EmbeddingInitializer`).
  """
  return _EmbeddedString(embeddings, vocab, text, initializer)


def needs_model_context(config: Any) -> bool:
  """Whether a prompt-method config holds initializers still waiting for `bind_model_context`."""
  return any(getattr(value, "needs_context", False) for value in _fields(config).values())


def bind_model_context(config: Any, context: ModelContext) -> Any:
  """`config` (a prompt-method dataclass) with its initializers bound to `context`."""
  fields = {name: value.bind(context) for name, value in _fields(config).items()
            if getattr(value, "needs_context", False)}
  return dataclasses.replace(config, **fields) if fields else config


def _fields(config: Any) -> dict[str, Any]:
  if config is None or not dataclasses.is_dataclass(config):
    return {}
  return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def from_array(array: Any) -> Initializer:
  """A fixed prompt (any float dtype, read as float32); its shape must equal the prompt's."""

  def init(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    del rng
    value = np.asarray(array() if callable(array) else array)
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f"from_array: the prompt must be floating point, got dtype {value.dtype}.")
    if tuple(value.shape) != tuple(shape):
      raise ValueError(
          f"from_array: the given prompt has shape {list(value.shape)} but the model's prompt "
          f"has shape {list(shape)}: set PROMPT_LENGTH={value.shape[0]} (and use a model with "
          f"embedding size {value.shape[-1]}) or pass a prompt of shape {list(shape)}.")
    return jnp.asarray(value, jnp.float32)

  return init


def np_load(path: str | os.PathLike) -> Initializer:
  """The prompt stored in a `.npy` file [P, embed] (read when the initializer runs).

  The file is checked against the prompt's shape by `prompt_files.load_prompt_file`.
  """

  def init(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    del rng
    from prompt_tuning import prompt_files  # Local: keeps this module's imports minimal.
    if len(shape) != 2:
      raise ValueError(f"np_load: a prompt file holds a [P, D] prompt; this parameter has shape "
                       f"{list(shape)}. Use from_array for other shapes.")
    return jnp.asarray(prompt_files.load_prompt_file(path, length=shape[0], width=shape[1]))

  return init


def from_checkpoint_variable(checkpoint_path: str | os.PathLike,
                             variable_path: str = "encoder/prompt/prompt/prompt") -> Initializer:
  """One variable of a checkpoint (T5X, our orbax or Hugging Face; e.g. a trained prompt), read
  when the initializer runs."""
  return from_array(embedding_loader(checkpoint_path, variable_path))


def embedding_loader(path: Optional[str | os.PathLike] = None,
                     variable_path: str = "token_embedder/embedding"
                     ) -> Optional[Callable[[], np.ndarray]]:
  """Zero-argument loader of an embedding table (or any variable) from a `.npy` file or a
  checkpoint (T5X, our orbax or Hugging Face); None for `path` None, which means the restored
  model's own table.

  Decoder-only checkpoints keep it at 'decoder/token_embedder/embedding'.
  """
  if path is None:
    return None

  def load() -> np.ndarray:
    if os.fspath(path).endswith(".npy"):
      return np.load(os.fspath(path))
    from prompt_tuning.scripts import _checkpoints  # Local: checkpoint readers are heavy.
    index = _checkpoints.open_checkpoint(path)
    name = _checkpoints.normalize_variable_path(variable_path)
    return index.read([name], np.float32)[name]

  return load


class Prompt(nn.Module):
  """Learned prompt: parameter `prompt` [length, embed], returned batched [B, length, embed].

  Satisfies the prompt-method protocol of `prompt_tuning.layers.PromptMethod`.
  """

  length: int
  initializer: Initializer = uniform()

  @nn.compact
  def __call__(self, tokens_BT: jax.Array, embedded_BTD: jax.Array) -> jax.Array:
    """Tokens [B, T] and their embeddings [B, T, D] -> prompt [B, P, D] in the activation dtype."""
    init = self.initializer

    def param_init(rng: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
      return jnp.asarray(init(rng, shape), dtype)

    prompt_PD = param_with_axes(self, "prompt", param_init,
                                (self.length, embedded_BTD.shape[-1]), PROMPT_AXES)
    batch = embedded_BTD.shape[0]
    return jnp.broadcast_to(prompt_PD.astype(embedded_BTD.dtype)[None],
                            (batch,) + prompt_PD.shape)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """A prompt method for `load_model` / gin (bound in configs/architectures/prompt_tuning.gin).

  method: "prompt_tuning" (other methods plug in through `prompt_tuning.layers`).
  length: prompt length P. initializer: `(rng, [P, D]) -> array`.
  placement: one of PLACEMENTS (encoder-decoder; a decoder-only prompt always precedes the
    first real token). decoder_attends_to_prompt: False hides the prompt positions of the
    encoder output from the decoder's cross-attention.
  template: a prompt template with [P:n] slots among the text (`prompt_tuning.templates`),
    e.g. "[P:3] {sentence} [P:3] It was": the prompt's segments go to the slots, the length
    is the sum of the slot lengths (it replaces `length`) and `placement` must stay "prefix".
  """

  method: str = "prompt_tuning"
  length: int = 100
  initializer: Initializer = uniform()
  placement: str = "prefix"
  decoder_attends_to_prompt: bool = True
  template: Optional[str] = None

  def __post_init__(self):
    if self.method != "prompt_tuning":
      raise ValueError(f"PromptConfig.method={self.method!r} is not known; use 'prompt_tuning'.")
    if self.placement not in PLACEMENTS:
      raise ValueError(f"PromptConfig.placement={self.placement!r}; use one of {PLACEMENTS}.")
    if self.length < 0:
      raise ValueError(f"PromptConfig.length={self.length} must be >= 0.")
    template_length = templates.config_length(self.template, self.placement, "PromptConfig")
    if template_length is not None:
      object.__setattr__(self, "length", template_length)

  def make_method(self) -> nn.Module:
    """The (unbound) prompt module of this method."""
    return Prompt(length=self.length, initializer=self.initializer)


def prompt_config(config: Optional[PromptConfig] = None) -> Optional[PromptConfig]:
  """The prompt method gin selects (None: a plain model). Gin binds `prompt_config.config`."""
  return config
