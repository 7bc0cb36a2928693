"""A checkpoint's own tokenizer as a `seqio.Vocabulary`: tokenizer.json, GGUF-embedded, SentencePiece.

  vocab = model_vocabulary("/models/SmolLM2-135M-Instruct.Q4_1.gguf")   # or an HF directory
  vocab.encode("Hello world")   # ids of the text alone: no BOS / EOS, as seqio vocabularies do
  vocab.decode(ids)             # text up to the first EOS, special tokens left out
  vocab.add_bos, vocab.bos_id   # whether (and with which id) the model's tokenizer prepends BOS

`TokenizerVocabulary` wraps a `tokenizers.Tokenizer`, read from a Hugging Face `tokenizer.json` or
rebuilt from the vocabulary a `.gguf` file embeds (`tokenizer.ggml.*`):
  - `tokenizer.ggml.model == "gpt2"`: byte-level BPE from the file's tokens and merges, with the
    pre-tokenizer split that `tokenizer.ggml.pre` names (llama.cpp's names: "smollm",
    "llama-bpe", "qwen2", "gpt-2", "bloom", ...);
  - `tokenizer.ggml.model == "llama"`: SentencePiece BPE, rebuilt as a `tokenizers` BPE whose
    merges are ordered by the pieces' scores, with byte fallback (`<0xNN>`) and `▁` for spaces.
Tokens the file marks as control are special (matched whole in text, left out of decoded text);
user-defined ones are matched whole and kept.

Padding: for these models padding is a mask, and token 0 is often a real token (SmolLM2's
`<|endoftext|>`), so `pad_id` is the tokenizer's own pad id or None -- never a default 0.

Constructing a vocabulary reads nothing; the tokenizer is built on first use and dropped when
pickled (seqio / gin copy vocabularies), so a vocabulary is cheap to make and to pass around.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from prompt_tuning.checkpoints import gguf as gguf_checkpoint
from prompt_tuning.data import vocab as sentencepiece_vocab

PathLike = str | os.PathLike
TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model")
T5_MODEL_TYPES = ("t5", "mt5", "umt5")
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "config.json")
_SPACE = "\u2581"  # SentencePiece's `▁`.

# GGUF token types (llama.cpp's `llama_token_type`).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer splits of byte-level BPE vocabularies, by `tokenizer.ggml.pre`. Each is the split
# of the model's own tokenizer.json (llama.cpp's C++ regexes are hand-translations of these).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# BLOOM's: runs of anything but whitespace and (Latin / CJK / Indic / Arabic) punctuation, each
# with one leading space (llama.cpp's "bloom" regex says the same without the nested class).
_BLOOM_SPLIT = r" ?[^(\s|[.,!?…。，、।۔،])]+"
_GPT2_PRE = ("gpt-2", "default", "phi-2", "mpt", "olmo", "jais", "roberta-bpe")
_DIGITS_THEN_GPT2_PRE = ("smollm", "starcoder", "refact", "codeshell", "exaone", "minerva-7b",
                         "command-r")
_SPLIT_PRE = {
    **dict.fromkeys(("llama-bpe", "llama3", "llama-v3", "falcon3", "dbrx", "smaug-bpe"),
                    _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"), _QWEN2_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    "bloom": _BLOOM_SPLIT,
}
# Pre-tokenizers whose tokenizer.json BPE looks a whole word up before merging (llama.cpp's
# `ignore_merges`), and those whose tokenizer prepends BOS by default (llama.cpp's defaults).
_IGNORE_MERGES_PRE = ("llama-bpe", "llama3", "llama-v3", "falcon3", "tekken")
_ADD_BOS_PRE = ("llama-bpe", "llama3", "llama-v3", "falcon3", "tekken")


def _byte_level_pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
  """The pre-tokenizer of a byte-level BPE vocabulary whose `tokenizer.ggml.pre` is `pre`."""
  if pre is None or pre in _GPT2_PRE:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _DIGITS_THEN_GPT2_PRE:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  if pre in _SPLIT_PRE:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(_SPLIT_PRE[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  known = sorted(set(_GPT2_PRE) | set(_DIGITS_THEN_GPT2_PRE) | set(_SPLIT_PRE))
  raise ValueError(f"GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; known: {known}.")


def _unique_vocab(tokens: Sequence[str]) -> dict[str, int]:
  """{token: id}; a token listed twice keeps its first id (later copies are unreachable)."""
  vocab: dict[str, int] = {}
  for i, token in enumerate(tokens):
    vocab.setdefault(token, i)
  return vocab


def _add_typed_tokens(tokenizer: tokenizers.Tokenizer, tokens: Sequence[str],
                      types: Sequence[int]) -> None:
  """Control (and unknown) tokens become special tokens, user-defined ones added tokens."""
  special = [tokenizers.AddedToken(t, special=True, normalized=False)
             for t, kind in zip(tokens, types) if kind in (_CONTROL, _UNKNOWN)]
  added = [tokenizers.AddedToken(t, special=False, normalized=False)
           for t, kind in zip(tokens, types) if kind == _USER_DEFINED]
  if special:
    tokenizer.add_special_tokens(special)
  if added:
    tokenizer.add_tokens(added)


def byte_level_bpe_tokenizer(tokens: Sequence[str], merges: Sequence[str], types: Sequence[int],
                             pre: str | None) -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer from a GGUF `gpt2` vocabulary (tokens in the byte alphabet,
  merges as "left right" strings, token types) and its `tokenizer.ggml.pre`."""
  pairs = [tuple(merge.split(" ", 1)) for merge in merges]
  model = models.BPE(vocab=_unique_vocab(tokens), merges=pairs,
                     ignore_merges=pre in _IGNORE_MERGES_PRE)
  tokenizer = tokenizers.Tokenizer(model)
  tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(pre)
  tokenizer.decoder = decoders.ByteLevel()
  _add_typed_tokens(tokenizer, tokens, types)
  return tokenizer


def _merges_by_score(tokens: Sequence[str], scores: Sequence[float],
                     types: Sequence[int]) -> list[tuple[str, str]]:
  """BPE merges that rebuild SentencePiece BPE's choices: every split of a normal piece into two
  pieces, best-scored resulting piece first (SentencePiece merges the best-scored pair)."""
  vocab = _unique_vocab(tokens)
  ranked = []
  for piece_id, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
    if kind != _NORMAL or len(piece) < 2 or vocab[piece] != piece_id:
      continue
    for cut in range(1, len(piece)):
      left, right = piece[:cut], piece[cut:]
      if left in vocab and right in vocab:
        ranked.append((-score, piece_id, cut, left, right))
  ranked.sort()
  return [(left, right) for *_, left, right in ranked]


def sentencepiece_bpe_tokenizer(tokens: Sequence[str], scores: Sequence[float], types: Sequence[int],
                                unk_id: int | None, add_space_prefix: bool) -> tokenizers.Tokenizer:
  """A `tokenizers` BPE equivalent of a SentencePiece BPE model given as pieces, scores and
  types (a GGUF `llama` vocabulary): byte fallback to `<0xNN>`, spaces as `▁`, and, when
  `add_space_prefix` (SentencePiece's add_dummy_prefix), a `▁` before the text -- always, even
  before a leading space, and after each special token, as SentencePiece and llama.cpp do."""
  unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
  model = models.BPE(vocab=_unique_vocab(tokens), merges=_merges_by_score(tokens, scores, types),
                     unk_token=unk, fuse_unk=True, byte_fallback=True)
  tokenizer = tokenizers.Tokenizer(model)
  spaces = [normalizers.Replace(" ", _SPACE)]
  tokenizer.normalizer = normalizers.Sequence(
      [normalizers.Prepend(_SPACE)] + spaces if add_space_prefix else spaces)
  steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
  if add_space_prefix:
    steps.append(decoders.Strip(content=" ", left=1, right=0))
  tokenizer.decoder = decoders.Sequence(steps)
  _add_typed_tokens(tokenizer, tokens, types)
  return tokenizer


class _Loaded:
  """A built tokenizer and the special-token facts about it."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, *, bos_id: int | None, eos_id: int | None,
               unk_id: int | None, pad_id: int | None, add_bos: bool, add_eos: bool):
    self.tokenizer = tokenizer
    self.size = tokenizer.get_vocab_size(with_added_tokens=True)
    self.bos_id, self.eos_id, self.unk_id, self.pad_id = bos_id, eos_id, unk_id, pad_id
    self.add_bos, self.add_eos = add_bos, add_eos


_GGUF_TOKENIZER_KEYS = tuple(f"tokenizer.ggml.{k}" for k in (
    "model", "pre", "tokens", "token_type", "merges", "scores", "bos_token_id", "eos_token_id",
    "unknown_token_id", "padding_token_id", "add_bos_token", "add_eos_token", "add_space_prefix"))


def _load_gguf(path: str) -> _Loaded:
  meta = {k.removeprefix("tokenizer.ggml."): v
          for k, v in gguf_checkpoint.gguf_metadata(path, _GGUF_TOKENIZER_KEYS).items()}
  kind, tokens = meta.get("model"), meta.get("tokens")
  if tokens is None:
    raise ValueError(f"{path} embeds no tokenizer (no tokenizer.ggml.tokens); pass a vocabulary "
                     "explicitly (e.g. from the model's tokenizer.json).")
  types = meta.get("token_type") or [_NORMAL] * len(tokens)
  pre = meta.get("pre")
  if kind == "gpt2":
    if "merges" not in meta:
      raise ValueError(f"{path}: byte-level BPE vocabulary without tokenizer.ggml.merges.")
    tokenizer = byte_level_bpe_tokenizer(tokens, meta["merges"], types, pre)
    defaults = {"add_bos_token": pre in _ADD_BOS_PRE}
  elif kind == "llama":
    if "scores" not in meta:
      raise ValueError(f"{path}: SentencePiece vocabulary without tokenizer.ggml.scores.")
    defaults = {"bos_token_id": 1, "eos_token_id": 2, "unknown_token_id": 0, "add_bos_token": True}
    unk_id = meta.get("unknown_token_id", defaults["unknown_token_id"])
    tokenizer = sentencepiece_bpe_tokenizer(tokens, meta["scores"], types, unk_id,
                                            bool(meta.get("add_space_prefix", True)))
  else:
    raise ValueError(f"{path}: GGUF tokenizer model {kind!r} (tokenizer.ggml.model) is not "
                     "supported; supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece BPE).")

  def get(key: str) -> Any:
    return meta.get(key, defaults.get(key))

  return _Loaded(tokenizer, bos_id=get("bos_token_id"), eos_id=get("eos_token_id"),
                 unk_id=get("unknown_token_id"), pad_id=get("padding_token_id"),
                 add_bos=bool(get("add_bos_token")), add_eos=bool(get("add_eos_token")))


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  with open(path, encoding="utf-8") as f:
    value = json.load(f)
  return value if isinstance(value, dict) else {}


def _special_id(tokenizer: tokenizers.Tokenizer, configs: Mapping[str, Mapping[str, Any]],
                name: str) -> int | None:
  """The id of special token `name` ("bos", "eos", "pad", "unk") from the files next to
  tokenizer.json: the token text in tokenizer_config.json / special_tokens_map.json (an explicit
  null means none, as Qwen2's BOS), else the id in generation_config.json / config.json (the
  first, where a list)."""
  for file in ("tokenizer_config.json", "special_tokens_map.json"):
    if f"{name}_token" not in configs[file]:
      continue
    token = configs[file][f"{name}_token"]
    if isinstance(token, dict):
      token = token.get("content")
    if token is None:
      return None
    if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
      return tokenizer.token_to_id(token)
  for file in ("generation_config.json", "config.json"):
    value = configs[file].get(f"{name}_token_id")
    if isinstance(value, list):
      value = value[0] if value else None
    if isinstance(value, int):
      return value
  return None


def _adds(tokenizer: tokenizers.Tokenizer, token_id: int | None, first: bool) -> bool:
  """Whether the tokenizer's post-processor puts `token_id` first (or last) in an encoding."""
  if token_id is None:
    return False
  with_special = tokenizer.encode("a", add_special_tokens=True).ids
  plain = tokenizer.encode("a", add_special_tokens=False).ids
  if len(with_special) <= len(plain):
    return False
  return (with_special[0] if first else with_special[-1]) == token_id


def _load_tokenizer_json(path: str) -> _Loaded:
  file = pathlib.Path(path)
  if file.is_dir():
    file = file / TOKENIZER_JSON
  if not file.is_file():
    raise ValueError(f"{path}: no {TOKENIZER_JSON}; expected a Hugging Face tokenizer file or a "
                     "directory holding one.")
  tokenizer = tokenizers.Tokenizer.from_file(str(file))
  configs = {name: _read_json(file.parent / name) for name in _CONFIG_FILES}
  ids = {name: _special_id(tokenizer, configs, name) for name in ("bos", "eos", "pad", "unk")}
  if ids["unk"] is None:
    unk = getattr(tokenizer.model, "unk_token", None)
    ids["unk"] = tokenizer.token_to_id(unk) if unk else None
  flags = configs["tokenizer_config.json"]
  add_bos = flags.get("add_bos_token")
  add_eos = flags.get("add_eos_token")
  return _Loaded(
      tokenizer, bos_id=ids["bos"], eos_id=ids["eos"], unk_id=ids["unk"], pad_id=ids["pad"],
      add_bos=_adds(tokenizer, ids["bos"], True) if add_bos is None else bool(add_bos),
      add_eos=_adds(tokenizer, ids["eos"], False) if add_eos is None else bool(add_eos))


_LOADERS = {"gguf": _load_gguf, "tokenizer_json": _load_tokenizer_json}
_BUILD_LOCK = threading.Lock()


class TokenizerVocabulary(seqio.Vocabulary):
  """A `tokenizers.Tokenizer` (from tokenizer.json or a GGUF file) as a `seqio.Vocabulary`.

  Equal (and hashing equal) when built from the same kind of source at the same path. Use the
  constructors `from_tokenizer_json` / `from_gguf`, or `model_vocabulary(checkpoint)`.
  """

  def __init__(self, source: PathLike, kind: str):
    if kind not in _LOADERS:
      raise ValueError(f"TokenizerVocabulary kind must be one of {sorted(_LOADERS)}, got {kind!r}.")
    super().__init__(extra_ids=0)
    self._source = os.path.abspath(os.fspath(source))
    self._kind = kind
    self._loaded: _Loaded | None = None

  @classmethod
  def from_tokenizer_json(cls, path: PathLike) -> TokenizerVocabulary:
    """The tokenizer of a `tokenizer.json` file or of a Hugging Face directory holding one.

    Special tokens come from tokenizer_config.json / special_tokens_map.json /
    generation_config.json / config.json next to it; `add_bos` from tokenizer_config.json's
    `add_bos_token`, else from whether the file's post-processor prepends BOS.
    """
    return cls(path, "tokenizer_json")

  @classmethod
  def from_gguf(cls, path: PathLike) -> TokenizerVocabulary:
    """The tokenizer embedded in a `.gguf` file (`tokenizer.ggml.*` metadata)."""
    return cls(path, "gguf")

  @property
  def source(self) -> str:
    """The file or directory the tokenizer is read from."""
    return self._source

  @property
  def _state(self) -> _Loaded:
    if self._loaded is None:
      with _BUILD_LOCK:  # tf.data may call the first encode from several threads at once.
        if self._loaded is None:
          self._loaded = _LOADERS[self._kind](self._source)
    return self._loaded

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The underlying `tokenizers.Tokenizer` (built on first use)."""
    return self._state.tokenizer

  @property
  def bos_id(self) -> int | None:
    return self._state.bos_id

  @property
  def eos_id(self) -> int | None:
    return self._state.eos_id

  @property
  def unk_id(self) -> int | None:
    return self._state.unk_id

  @property
  def pad_id(self) -> int | None:  # type: ignore[override]
    """The tokenizer's pad id, or None: padding is a mask for these models, not id 0."""
    return self._state.pad_id

  @property
  def add_bos(self) -> bool:
    """Whether the model's tokenizer prepends BOS to a text by default (`encode` never does)."""
    return self._state.add_bos

  @property
  def add_eos(self) -> bool:
    """Whether the model's tokenizer appends EOS to a text by default (`encode` never does)."""
    return self._state.add_eos

  @property
  def _base_vocab_size(self) -> int:
    return self._state.size

  def token_to_id(self, token: str) -> int | None:
    """The id of one token as the vocabulary spells it (e.g. "<|im_end|>"), or None."""
    return self.tokenizer.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    """The vocabulary's spelling of one id (byte-level BPE spells a space "Ġ"), or None."""
    return self.tokenizer.id_to_token(int(token_id))

  def _encode(self, s: str) -> list[int]:
    if isinstance(s, bytes):
      s = s.decode("utf-8")
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Iterable[int]) -> str:
    size = self._state.size
    return self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < size],
                                 skip_special_tokens=True)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
    """int32 ids of a scalar string tensor ([T]), or of a [B] batch (ragged [B, None])."""
    s = tf.convert_to_tensor(s, tf.string)

    def encode_batch(texts: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
      # A scalar string arrives as `bytes`, a batch as an object array of `bytes`.
      encoded = [self._encode(t.decode("utf-8")) for t in np.asarray(texts, object).reshape(-1)]
      flat = np.fromiter((i for ids in encoded for i in ids), np.int32)
      return flat, np.asarray([len(ids) for ids in encoded], np.int64)

    flat, lengths = tf.numpy_function(encode_batch, [s], (tf.int32, tf.int64), stateful=False)
    flat.set_shape([None])
    if s.shape.rank == 0:
      return flat
    lengths.set_shape([None])
    return tf.RaggedTensor.from_row_lengths(flat, lengths)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """Strings of int ids [T] (-> scalar) or [B, T] (-> [B]), each cut at its first EOS."""
    ids = tf.convert_to_tensor(ids)

    def decode_rows(array: np.ndarray) -> np.ndarray:
      rows = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 0)
      texts = [self.decode(row.tolist()).encode("utf-8") for row in rows]
      return np.asarray(texts, dtype=object).reshape(array.shape[:-1])

    out = tf.numpy_function(decode_rows, [ids], tf.string, stateful=False)
    out.set_shape(ids.shape[:-1])
    return out

  def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """As seqio's, but the EOS cut happens in `decode` (there may be no pad id to fill with)."""
    return self._decode_tf(ids)

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_loaded"] = None  # Rebuilt on first use after unpickling / deep copies.
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, TokenizerVocabulary) and self._kind == other._kind
            and self._source == other._source)

  def __hash__(self) -> int:
    return hash((TokenizerVocabulary, self._kind, self._source))

  def __repr__(self) -> str:
    constructor = "from_gguf" if self._kind == "gguf" else "from_tokenizer_json"
    return f"TokenizerVocabulary.{constructor}({self._source!r})"

  __str__ = __repr__


class SentencePieceModelVocabulary(seqio.SentencePieceVocabulary):
  """A decoder-only model's SentencePiece `tokenizer.model` (Llama 2 / Mistral style).

  seqio's SentencePiece vocabulary, plus `add_bos` / `add_eos` from tokenizer_config.json
  (Llama's defaults: BOS yes, EOS no) and `pad_id` = the model's pad piece or None (never 0).
  """

  def __init__(self, sentencepiece_model_file: PathLike, add_bos: bool = True,
               add_eos: bool = False):
    super().__init__(os.path.abspath(os.fspath(sentencepiece_model_file)), extra_ids=0)
    self._add_bos = add_bos
    self._add_eos = add_eos

  @property
  def add_bos(self) -> bool:
    return self._add_bos

  @property
  def add_eos(self) -> bool:
    return self._add_eos

  @property
  def pad_id(self) -> int | None:  # type: ignore[override]
    pad = self.tokenizer.pad_id()
    return pad if pad >= 0 else None

  def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """As seqio's, but what follows EOS is overwritten with EOS, which decodes to nothing."""
    ids = tf.convert_to_tensor(ids)
    if self.eos_id is None or self.pad_id is not None:
      return super().decode_tf(ids)
    after_eos = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), exclusive=True, axis=-1)
    return self._decode_tf(tf.where(after_eos > 0, tf.cast(self.eos_id, ids.dtype), ids))

  def __hash__(self) -> int:
    return hash((SentencePieceModelVocabulary, self.sentencepiece_model_file, self._add_bos))


def model_vocabulary(checkpoint_path: PathLike) -> seqio.Vocabulary:
  """The vocabulary of a checkpoint: a `.gguf` file or a Hugging Face directory.

  A `.gguf` file -> its embedded tokenizer. A directory -> for T5 / mT5 (config.json
  `model_type`) with spiece.model, seqio's SentencePiece vocabulary with T5's 100 extra ids;
  else tokenizer.json; else tokenizer.model / spiece.model as a SentencePiece vocabulary.
  """
  path = os.fspath(checkpoint_path)
  if gguf_checkpoint.is_gguf_checkpoint(path):
    return TokenizerVocabulary.from_gguf(path)
  folder = pathlib.Path(path)
  if not folder.is_dir():
    raise ValueError(f"{path} is neither a .gguf file nor a Hugging Face directory; cannot find "
                     "its tokenizer.")
  config = _read_json(folder / "config.json")
  sentencepiece = next((folder / f for f in SENTENCEPIECE_FILES if (folder / f).is_file()), None)
  if config.get("model_type") in T5_MODEL_TYPES and sentencepiece is not None:
    return sentencepiece_vocab.sentencepiece_vocabulary(
        sentencepiece, extra_ids=sentencepiece_vocab.DEFAULT_EXTRA_IDS)
  if (folder / TOKENIZER_JSON).is_file():
    return TokenizerVocabulary.from_tokenizer_json(folder)
  if sentencepiece is not None:
    flags = _read_json(folder / "tokenizer_config.json")
    return SentencePieceModelVocabulary(sentencepiece, add_bos=bool(flags.get("add_bos_token", True)),
                                        add_eos=bool(flags.get("add_eos_token", False)))
  raise ValueError(f"{path} holds no tokenizer: expected {TOKENIZER_JSON} or one of "
                   f"{list(SENTENCEPIECE_FILES)} (or pass a .gguf file).")
