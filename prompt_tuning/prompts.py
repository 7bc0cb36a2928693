"""The learned prompt (Lester et al. 2021): the `Prompt` module, its initializers, `PromptConfig`.

An initializer is a closure `(rng, shape) -> float32 array of that shape`. Closures that need
data (an embedding table, a file) take either the data or a zero-argument loader, so a gin file
can bind a lazy read: nothing is read until the initializer runs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


def from_sample_of_embeddings(embeddings: Embeddings,
                              population_size: Optional[int] = None) -> Initializer:
  """Rows sampled from the first `population_size` rows of `embeddings` (all when None).

  Sampled without replacement; with replacement when the prompt is longer than the population.
  """

  def init(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    table = _materialize(embeddings)
    _check_width("from_sample_of_embeddings", table, shape)
    population = table.shape[0] if population_size is None else int(population_size)
    if not 0 < population <= table.shape[0]:
      raise ValueError(f"from_sample_of_embeddings: population_size={population_size} must be in "
                       f"[1, {table.shape[0]}] (the embedding table has {table.shape[0]} rows).")
    replace = shape[0] > population
    rows = jax.random.choice(rng, population, (shape[0],), replace=replace)
    return jnp.asarray(table)[rows]

  return init


def _embed_text(table: np.ndarray, vocab: Any, text: str) -> np.ndarray:
  """Embeddings [sub-tokens, embed] of `text` tokenized by `vocab`."""
  ids = list(vocab.encode(text))
  if not ids:
    raise ValueError(f"text {text!r} tokenizes to no tokens; it cannot initialize a prompt row.")
  return table[np.asarray(ids)]


def _fill_first_rows(rng: jax.Array, shape: Sequence[int], rows: np.ndarray,
                     initializer: Initializer, name: str) -> jax.Array:
  """`rows` [n, embed] as the prompt's first n rows; the rest from `initializer`."""
  if rows.shape[0] > shape[0]:
    raise ValueError(f"{name}: {rows.shape[0]} initial rows do not fit a prompt of shape "
                     f"{list(shape)}: raise the prompt length to at least {rows.shape[0]}.")
  prompt = jnp.asarray(initializer(rng, tuple(shape)), jnp.float32)
  return prompt.at[:rows.shape[0]].set(jnp.asarray(rows))


def from_embedded_list(embeddings: Embeddings, vocab: Any, texts: Sequence[str],
                       initializer: Initializer = uniform()) -> Initializer:
  """Class-label init: row i = mean sub-token embedding of `texts[i]`; rest from `initializer`."""
  texts = tuple(texts)

  def init(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    table = _materialize(embeddings)
    _check_width("from_embedded_list", table, shape)
    rows = np.stack([_embed_text(table, vocab, t).mean(axis=0) for t in texts]) if texts else (
        np.zeros((0, table.shape[1]), np.float32))
    return _fill_first_rows(rng, shape, rows, initializer, "from_embedded_list")

  return init


def from_embedded_string(embeddings: Embeddings, vocab: Any, text: str,
                         initializer: Initializer = uniform()) -> Initializer:
  """One row per sub-token of `text` (its embeddings, in order); rest from `initializer`."""

  def init(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
    table = _materialize(embeddings)
    _check_width("from_embedded_string", table, shape)
    rows = _embed_text(table, vocab, text)
    return _fill_first_rows(rng, shape, rows, initializer, "from_embedded_string")

  return init


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
  """One variable of a T5X checkpoint (e.g. a trained prompt), read when the initializer runs."""

  def load() -> np.ndarray:
    from prompt_tuning.checkpoints import t5x  # Local: checkpoint readers pull in tensorstore.
    return t5x.load_t5x_variable(checkpoint_path, variable_path)

  return from_array(load)


def embedding_loader(path: str | os.PathLike,
                     variable_path: str = "token_embedder/embedding") -> Callable[[], np.ndarray]:
  """Zero-argument loader of an embedding table from a `.npy` file or a T5X checkpoint.

  Decoder-only checkpoints keep it at 'decoder/token_embedder/embedding'.
  """

  def load() -> np.ndarray:
    if os.fspath(path).endswith(".npy"):
      return np.load(os.fspath(path))
    from prompt_tuning.checkpoints import t5x  # Local: checkpoint readers pull in tensorstore.
    return t5x.load_t5x_variable(path, variable_path)

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
  """

  method: str = "prompt_tuning"
  length: int = 100
  initializer: Initializer = uniform()
  placement: str = "prefix"
  decoder_attends_to_prompt: bool = True

  def __post_init__(self):
    if self.method != "prompt_tuning":
      raise ValueError(f"PromptConfig.method={self.method!r} is not known; use 'prompt_tuning'.")
    if self.placement not in PLACEMENTS:
      raise ValueError(f"PromptConfig.placement={self.placement!r}; use one of {PLACEMENTS}.")
    if self.length < 0:
      raise ValueError(f"PromptConfig.length={self.length} must be >= 0.")

  def make_method(self) -> nn.Module:
    """The (unbound) prompt module of this method."""
    return Prompt(length=self.length, initializer=self.initializer)


def prompt_config(config: Optional[PromptConfig] = None) -> Optional[PromptConfig]:
  """The prompt method gin selects (None: a plain model). Gin binds `prompt_config.config`."""
  return config
