"""The vocabulary a model's checkpoint comes with, and encoding text the way the model expects.

Hugging Face directories and GGUF files carry their own tokenizer (`tokenizer_vocab`); T5X and
orbax checkpoints of the T5 family use the public T5 / mT5 SentencePiece vocabularies
(`data.vocab`, overridable by environment variables for offline machines).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import seqio

from prompt_tuning.data import vocab as vocab_lib

MT5_VOCAB_SIZE = 250112


def vocabulary_for(checkpoint: Optional[str | os.PathLike], config: Any) -> seqio.Vocabulary:
  """The tokenizer of `checkpoint` (a `seqio.Vocabulary`), or the T5 family's default."""
  if checkpoint is not None:
    from prompt_tuning import checkpoints  # Local: avoids a cycle at import time.
    if checkpoints.checkpoint_format(checkpoint) in ("huggingface", "gguf"):
      from prompt_tuning.data import tokenizer_vocab  # Local: pulls in `tokenizers`.
      return tokenizer_vocab.model_vocabulary(checkpoint)
  if getattr(config, "family", "t5") != "t5":
    raise ValueError(
        f"a {config.family} model has no default vocabulary: load it from a Hugging Face "
        "directory or a .gguf file (which carry their tokenizer), or set `model.vocabulary`.")
  if getattr(config, "vocab_size", 0) == MT5_VOCAB_SIZE:
    return vocab_lib.mt5_vocabulary()
  return vocab_lib.t5_vocabulary()


def adds_bos(vocabulary: seqio.Vocabulary) -> bool:
  """Whether the model's tokenizer starts every text with BOS (Llama does; T5, Qwen2 do not)."""
  return bool(getattr(vocabulary, "add_bos", False)) and getattr(vocabulary, "bos_id",
                                                                  None) is not None


def encode_for_model(vocabulary: seqio.Vocabulary, text: str,
                     add_bos: Optional[bool] = None) -> list[int]:
  """Token ids of `text` as the model reads it: BOS first when the tokenizer adds one."""
  ids = [int(i) for i in vocabulary.encode(text)]
  if adds_bos(vocabulary) if add_bos is None else add_bos:
    ids = [int(vocabulary.bos_id)] + ids
  return ids
