"""Checkpoint tokenizers as seqio vocabularies: ids equal the reference tokenizers' (goldens from
tools/make_tokenizer_golden.py), for tokenizer.json, SentencePiece and GGUF-embedded vocabularies."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil

import gguf
import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf

from prompt_tuning.data import tokenizer_vocab
from prompt_tuning.data.tokenizer_vocab import TokenizerVocabulary, model_vocabulary

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "tokenizers"
SMOLLM2_GGUF = pathlib.Path(os.environ.get(
    "PROMPT_TUNING_SMOLLM2_GGUF",
    pathlib.Path.home() / ".cache/prompt_tuning/assets/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"))
SP_MODEL = FIXTURES / "sp_bpe" / "tokenizer.model"
BYTE_BPE = FIXTURES / "byte_bpe"


def _golden(name: str, reference: str = "transformers") -> dict[str, list[int]]:
  with open(FIXTURES / f"{name}_ids.json", encoding="utf-8") as f:
    return json.load(f)[reference]


def _has_special_text(text: str) -> bool:
  return "<|" in text or "<s>" in text or "</s>" in text


def _write_tokenizer_gguf(path: pathlib.Path, model: str, tokens: list[str], types: list[int], *,
                          scores: list[float] | None = None, merges: list[str] | None = None,
                          pre: str | None = None, ids: dict[str, int] | None = None,
                          add_bos: bool | None = None) -> pathlib.Path:
  """A GGUF holding only a tokenizer, written the way llama.cpp's converter writes one."""
  writer = gguf.GGUFWriter(path, "llama")
  writer.add_tokenizer_model(model)
  if pre is not None:
    writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  if scores is not None:
    writer.add_token_scores(scores)
  if merges is not None:
    writer.add_token_merges(merges)
  for name, value in (ids or {}).items():
    getattr(writer, f"add_{name}_token_id")(value)
  if add_bos is not None:
    writer.add_add_bos_token(add_bos)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def _sentencepiece_gguf(path: pathlib.Path) -> pathlib.Path:
  """The fixture SentencePiece model as a GGUF `llama` vocabulary: pieces, scores, types."""
  sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
  n = sp.get_piece_size()

  def kind(i: int) -> int:
    if sp.is_unknown(i):
      return gguf.TokenType.UNKNOWN
    if sp.is_control(i):
      return gguf.TokenType.CONTROL
    if sp.is_byte(i):
      return gguf.TokenType.BYTE
    return gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.NORMAL

  return _write_tokenizer_gguf(
      path, "llama", [sp.id_to_piece(i) for i in range(n)], [kind(i) for i in range(n)],
      scores=[sp.get_score(i) for i in range(n)],
      ids={"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id()})


def _byte_level_gguf(path: pathlib.Path, pre: str = "gpt-2", folder: pathlib.Path = BYTE_BPE,
                     bos: str = "<|bos|>", eos: str = "<|eos|>") -> pathlib.Path:
  """A fixture byte-level tokenizer.json as a GGUF `gpt2` vocabulary: tokens (added tokens after
  the model's, by id), merges, types."""
  with open(folder / "tokenizer.json", encoding="utf-8") as f:
    spec = json.load(f)
  vocab = dict(spec["model"]["vocab"])
  vocab.update({t["content"]: t["id"] for t in spec["added_tokens"]})
  tokens = sorted(vocab, key=vocab.get)
  special = {t["content"] for t in spec["added_tokens"] if t["special"]}
  merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
  types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
  return _write_tokenizer_gguf(path, "gpt2", tokens, types, merges=merges, pre=pre,
                               ids={"bos": vocab[bos], "eos": vocab[eos]})


def _assert_ids(vocab: seqio.Vocabulary, golden: dict[str, list[int]]) -> None:
  mismatches = {t: (vocab.encode(t), ids) for t, ids in golden.items() if vocab.encode(t) != ids}
  assert not mismatches


def test_sentencepiece_gguf_matches_transformers(tmp_path):
  vocab = TokenizerVocabulary.from_gguf(_sentencepiece_gguf(tmp_path / "sp.gguf"))
  _assert_ids(vocab, _golden("sp_bpe"))
  # SentencePiece itself agrees wherever the text holds no special-token text.
  sentencepiece = _golden("sp_bpe", "sentencepiece")
  _assert_ids(vocab, {t: ids for t, ids in sentencepiece.items() if not _has_special_text(t)})
  assert (vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id) == (1, 2, 0, None)
  assert vocab.add_bos and not vocab.add_eos  # llama.cpp's default for SentencePiece vocabularies.
  assert vocab.vocab_size == 600


def test_sentencepiece_hf_directory(tmp_path):
  shutil.copy(SP_MODEL, tmp_path / "tokenizer.model")
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
  vocab = model_vocabulary(tmp_path)
  assert isinstance(vocab, tokenizer_vocab.SentencePieceModelVocabulary)
  _assert_ids(vocab, _golden("sp_bpe", "sentencepiece"))
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.add_bos) == (1, 2, None, True)
  # decode_tf with no pad id: what follows EOS is dropped.
  ids = vocab.encode("Hello world")
  decoded = vocab.decode_tf(tf.constant([ids + [2] + ids, ids + [2, 2, 2] + [5] * (len(ids) - 2)]))
  assert [s.decode() for s in decoded.numpy()] == ["Hello world"] * 2
  assert pickle.loads(pickle.dumps(vocab)) == vocab and hash(vocab) == hash(model_vocabulary(tmp_path))


def test_t5_directory_keeps_extra_ids(tmp_path):
  shutil.copy(SP_MODEL, tmp_path / "spiece.model")
  shutil.copy(BYTE_BPE / "tokenizer.json", tmp_path / "tokenizer.json")  # Not used for T5.
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
  vocab = model_vocabulary(tmp_path)
  assert type(vocab) is seqio.SentencePieceVocabulary
  assert vocab.extra_ids == 100 and vocab.vocab_size == 700


def test_tokenizer_json_directory(tmp_path):
  vocab = model_vocabulary(BYTE_BPE)
  assert isinstance(vocab, TokenizerVocabulary)
  _assert_ids(vocab, _golden("byte_bpe"))
  ids = {t: vocab.token_to_id(t) for t in ("<|pad|>", "<|bos|>", "<|eos|>")}
  assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (ids["<|pad|>"], ids["<|bos|>"], ids["<|eos|>"])
  assert vocab.add_bos  # From the post-processor: tokenizer_config.json does not say.
  assert not vocab.add_eos and vocab.unk_id is None and vocab.vocab_size == 600

  # Without tokenizer_config.json: ids from generation_config.json (first EOS of a list).
  shutil.copy(BYTE_BPE / "tokenizer.json", tmp_path / "tokenizer.json")
  (tmp_path / "generation_config.json").write_text(json.dumps(
      {"bos_token_id": ids["<|bos|>"], "eos_token_id": [ids["<|eos|>"], ids["<|pad|>"]]}))
  from_file = TokenizerVocabulary.from_tokenizer_json(tmp_path / "tokenizer.json")
  assert (from_file.bos_id, from_file.eos_id, from_file.pad_id) == (ids["<|bos|>"], ids["<|eos|>"], None)
  # An explicit null in tokenizer_config.json (Qwen2's BOS) wins over generation_config.json.
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": None}))
  no_bos = TokenizerVocabulary.from_tokenizer_json(tmp_path)
  assert (no_bos.bos_id, no_bos.eos_id) == (None, ids["<|eos|>"])


def test_byte_level_gguf_matches_transformers(tmp_path):
  vocab = TokenizerVocabulary.from_gguf(_byte_level_gguf(tmp_path / "bpe.gguf"))
  _assert_ids(vocab, _golden("byte_bpe"))
  assert vocab.eos_id == vocab.token_to_id("<|eos|>") and vocab.pad_id is None
  assert not vocab.add_bos  # The file says nothing; llama.cpp's default for "gpt-2".


@pytest.mark.parametrize("name, pre, bos, eos", [("gpt2_bpe", "gpt-2", "<|endoftext|>",
                                                   "<|endoftext|>"),
                                                  ("bloom_bpe", "bloom", "<s>", "</s>")])
def test_gpt2_and_bloom_tokenizers_match_transformers(tmp_path, name, pre, bos, eos):
  """GPT-2's and BLOOM's tokenizers, from tokenizer.json and from GGUF (llama.cpp's
  `tokenizer.ggml.pre` "gpt-2" / "bloom"), give transformers' ids."""
  from_json = model_vocabulary(FIXTURES / name)
  _assert_ids(from_json, _golden(name))
  from_gguf = TokenizerVocabulary.from_gguf(_byte_level_gguf(tmp_path / f"{name}.gguf", pre,
                                                             FIXTURES / name, bos, eos))
  _assert_ids(from_gguf, _golden(name))
  for vocab in (from_json, from_gguf):
    assert (vocab.bos_id, vocab.eos_id) == (vocab.token_to_id(bos), vocab.token_to_id(eos))
    assert not vocab.add_bos and not vocab.add_eos
    text = "Hello, world! 12345 café"
    assert vocab.decode(vocab.encode(text)) == text


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "tekken"])
def test_byte_level_gguf_pre_tokenizers_match_transformers(tmp_path, pre):
  vocab = TokenizerVocabulary.from_gguf(_byte_level_gguf(tmp_path / "bpe.gguf", pre))
  _assert_ids(vocab, _golden("byte_bpe", f"transformers_gguf_{pre}"))


def test_gguf_pre_tokenizers(tmp_path):
  """Each family's split applies: "smollm" splits digits one by one, "llama-bpe" in threes."""
  text = "year 2024: 12345 apples"
  byte = {}
  for pre in ("gpt-2", "smollm", "llama-bpe", "qwen2"):
    vocab = TokenizerVocabulary.from_gguf(_byte_level_gguf(tmp_path / f"{pre}.gguf", pre))
    byte[pre] = [vocab.id_to_token(i) for i in vocab.encode(text)]
    assert vocab.decode(vocab.encode(text)) == text
  digits = lambda pieces: [p.replace("Ġ", "") for p in pieces if p.strip("Ġ").isdigit()]
  assert digits(byte["smollm"]) == list("2024") + list("12345")
  assert digits(byte["qwen2"]) == list("2024") + list("12345")
  assert all(len(p) <= 3 for p in digits(byte["llama-bpe"]))
  assert "".join(byte["gpt-2"]).replace("Ġ", " ") == text

  with pytest.raises(ValueError, match="pre-tokenizer 'mystery'"):
    TokenizerVocabulary.from_gguf(_byte_level_gguf(tmp_path / "m.gguf", "mystery")).encode(text)
  unigram = _write_tokenizer_gguf(tmp_path / "t5.gguf", "t5", ["<pad>", "a"], [3, 1], scores=[0, -1])
  with pytest.raises(ValueError, match="tokenizer model 't5'"):
    TokenizerVocabulary.from_gguf(unigram).encode(text)


@pytest.mark.parametrize("source", ["sp_gguf", "byte_json", "byte_gguf"])
def test_round_trip_and_seqio_decode(tmp_path, source):
  vocab = {"sp_gguf": lambda: TokenizerVocabulary.from_gguf(_sentencepiece_gguf(tmp_path / "a.gguf")),
           "byte_json": lambda: model_vocabulary(BYTE_BPE),
           "byte_gguf": lambda: TokenizerVocabulary.from_gguf(_byte_level_gguf(tmp_path / "b.gguf")),
           }[source]()
  name = "sp_bpe" if source == "sp_gguf" else "byte_bpe"
  for text in _golden(name):
    if not _has_special_text(text):
      assert vocab.decode(vocab.encode(text)) == text, text
  ids = vocab.encode("Hello world")
  # seqio semantics: stop at the first EOS; special tokens are left out; unknown ids ignored.
  assert vocab.decode(ids + [vocab.eos_id] + ids) == "Hello world"
  assert vocab.decode([vocab.bos_id] + ids + [vocab.vocab_size + 5]) == "Hello world"


def test_construction_is_lazy_pickle_and_equality(tmp_path):
  missing = TokenizerVocabulary.from_gguf(tmp_path / "absent.gguf")  # No I/O yet.
  with pytest.raises(ValueError, match="is not a GGUF file"):
    missing.encode("x")
  vocab = TokenizerVocabulary.from_tokenizer_json(BYTE_BPE)
  before = vocab.encode("Hello world")
  copy = pickle.loads(pickle.dumps(vocab))
  assert copy._loaded is None and copy == vocab and hash(copy) == hash(vocab)
  assert copy.encode("Hello world") == before
  assert vocab != TokenizerVocabulary.from_gguf(BYTE_BPE) and len({vocab, copy}) == 1


def test_model_vocabulary_errors(tmp_path):
  with pytest.raises(ValueError, match="holds no tokenizer"):
    model_vocabulary(tmp_path)
  with pytest.raises(ValueError, match="neither a .gguf file nor a Hugging Face directory"):
    model_vocabulary(tmp_path / "nothing.bin")


def test_seqio_task_pipeline(tmp_path):
  vocab = TokenizerVocabulary.from_gguf(_sentencepiece_gguf(tmp_path / "sp.gguf"))
  texts = ["Hello world", "digits 12345 and 3.14", "café 中文 🙂"]
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices({"targets": texts}),
      splits=["train"])
  task = seqio.Task(
      "tokenizer_vocab_smoke", source=source,
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={"targets": seqio.Feature(vocab, add_eos=True)})
  rows = list(task.get_dataset(sequence_length=None, split="train", shuffle=False).as_numpy_iterator())
  assert [row["targets"].tolist() for row in rows] == [vocab.encode(t) + [vocab.eos_id] for t in texts]
  assert all(row["targets"].dtype == np.int32 for row in rows)
  assert [r["targets_pretokenized"].decode() for r in rows] == texts

  # Batched encode (ragged) and decode in TF: [B, T] padded with anything after EOS.
  ragged = vocab.encode_tf(tf.constant(texts))
  assert ragged.to_list() == [vocab.encode(t) for t in texts]
  padded = ragged.to_tensor(default_value=vocab.eos_id)
  assert [s.decode() for s in vocab.decode_tf(padded).numpy()] == texts
  assert vocab.decode_tf(tf.constant(vocab.encode(texts[0]))).numpy().decode() == texts[0]


@pytest.mark.slow
def test_smollm2_gguf_tokenizer():
  if not SMOLLM2_GGUF.exists():
    pytest.skip(f"{SMOLLM2_GGUF} is not available (see issue 12 for how to get it)")
  vocab = model_vocabulary(SMOLLM2_GGUF)
  _assert_ids(vocab, _golden("smollm2_gguf"))
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id) == (1, 2, 2, 0)
  assert not vocab.add_bos and vocab.vocab_size == 49152
  assert vocab.token_to_id("<|endoftext|>") == 0
  assert vocab.decode(vocab.encode("<|im_start|>user\nHi<|im_end|>\nmore")) == "user\nHi"


@pytest.mark.slow
def test_gemma3_gguf_tokenizer_is_sentencepiece_bpe():
  """Gemma-3-270m's 262,144-piece SentencePiece-BPE vocabulary: ids equal transformers' GGUF
  loader on the mixed set (whitespace runs, byte fallback, control tokens), common words whole
  (a Unigram build would split them), BOS added by default, built in seconds."""
  import time
  from conftest import real_asset
  path = real_asset("gemma3-270m")
  vocab = model_vocabulary(path)
  start = time.perf_counter()
  assert vocab.vocab_size == 262144
  build_seconds = time.perf_counter() - start
  assert build_seconds < 30, build_seconds
  _assert_ids(vocab, _golden("gemma3_gguf"))
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id) == (2, 1, 0, 3)
  assert vocab.add_bos and not vocab.add_eos
  words = "the quick brown because government information beautiful".split()
  assert [vocab.id_to_token(i) for i in vocab.encode(" " + " ".join(words))] == [
      "\u2581" + w for w in words]
  text = "Héllo  wörld\t\U0001f642 \u2028 12"
  assert vocab.decode(vocab.encode(text)) == text
