"""SentencePiece vocabularies (T5, mT5, user-given) and seqio output features.

Constructing a vocabulary does no I/O: seqio loads the SentencePiece model the
first time it is used. The default T5 / mT5 paths are the public `gs://t5-data`
ones; the environment variables `PROMPT_TUNING_T5_VOCAB` and
`PROMPT_TUNING_MT5_VOCAB` replace them (e.g. on a machine with no access to
Google Cloud Storage).
"""

from __future__ import annotations

import os
from typing import Mapping

import seqio

DEFAULT_T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
DEFAULT_MT5_VOCAB_PATH = (
    "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model")
T5_VOCAB_ENV = "PROMPT_TUNING_T5_VOCAB"
MT5_VOCAB_ENV = "PROMPT_TUNING_MT5_VOCAB"
DEFAULT_EXTRA_IDS = 100

OutputFeatures = Mapping[str, seqio.Feature]


def sentencepiece_vocabulary(
    path: str | os.PathLike[str],
    extra_ids: int = 0) -> seqio.SentencePieceVocabulary:
  """A vocabulary from a SentencePiece model file with `extra_ids` sentinels."""
  if extra_ids < 0:
    raise ValueError(f"extra_ids must be >= 0, got {extra_ids}.")
  return seqio.SentencePieceVocabulary(os.fspath(path), extra_ids=extra_ids)


def t5_vocabulary(
    path: str | os.PathLike[str] | None = None
) -> seqio.SentencePieceVocabulary:
  """The T5 vocabulary: 32000 SentencePiece pieces + 100 `<extra_id_*>`."""
  if path is None:
    path = os.environ.get(T5_VOCAB_ENV) or DEFAULT_T5_VOCAB_PATH
  return sentencepiece_vocabulary(path, extra_ids=DEFAULT_EXTRA_IDS)


def mt5_vocabulary(
    path: str | os.PathLike[str] | None = None
) -> seqio.SentencePieceVocabulary:
  """The mT5 vocabulary: 250000 SentencePiece pieces + 100 `<extra_id_*>`."""
  if path is None:
    path = os.environ.get(MT5_VOCAB_ENV) or DEFAULT_MT5_VOCAB_PATH
  return sentencepiece_vocabulary(path, extra_ids=DEFAULT_EXTRA_IDS)


def t5_output_features(
    vocabulary: seqio.Vocabulary | None = None,
    add_inputs_eos: bool = True,
    add_targets_eos: bool = True) -> dict[str, seqio.Feature]:
  """`inputs` (optional) and `targets` features over `vocabulary`, as in T5.

  Args:
    vocabulary: the vocabulary of both features; the T5 one when None.
    add_inputs_eos: whether EOS is appended to the tokenized inputs.
    add_targets_eos: whether EOS is appended to the tokenized targets.

  Returns:
    A mapping usable as a seqio Task's `output_features`.
  """
  if vocabulary is None:
    vocabulary = t5_vocabulary()
  return {
      "inputs": seqio.Feature(
          vocabulary=vocabulary, add_eos=add_inputs_eos, required=False),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=add_targets_eos),
  }


def vocabulary_from_file(
    path: str | os.PathLike[str] | None = None,
    extra_ids: int = DEFAULT_EXTRA_IDS) -> seqio.SentencePieceVocabulary | None:
  """A T5-style SentencePiece vocabulary from `path`; None (the run's vocabulary) for None."""
  if path is None:
    return None
  return sentencepiece_vocabulary(path, extra_ids=extra_ids)
