"""Regenerates the tokenizer fixtures under tests/fixtures/tokenizers/ (reference ids from transformers).

Writes:
  sp_bpe/tokenizer.model   a tiny SentencePiece BPE model (byte fallback, Llama-style settings:
                           identity normalization, spaces kept, dummy prefix) trained here on
                           generated text.
  sp_bpe_ids.json          {"transformers": {text: ids}, "sentencepiece": {text: ids}}: ids of
                           TEXTS (and of SPECIAL_TEXTS["sp_bpe"]) from transformers' Llama
                           tokenizer converted from that model, and from sentencepiece itself
                           (which reads special-token text such as "</s>" as plain text).
  byte_bpe/                a tiny byte-level BPE tokenizer.json trained here with `tokenizers`
                           (post-processor prepends <|bos|>), with tokenizer_config.json.
  byte_bpe_ids.json        {"transformers": {text: ids}}: ids from transformers'
                           PreTrainedTokenizerFast (add_special_tokens=False); and
                           "transformers_gguf_<pre>": the same vocabulary written as a GGUF `gpt2`
                           tokenizer with `tokenizer.ggml.pre = <pre>`, loaded by transformers.
  gpt2_bpe/                a tiny GPT-2-style byte-level BPE tokenizer.json (GPT-2's pre-tokenizer and
                           post-processor, `<|endoftext|>` as the last id, BOS = EOS = UNK = it) with
                           GPT-2's tokenizer_config.json, trained here.
  bloom_bpe/               a tiny BLOOM-style byte-level BPE tokenizer.json: BLOOM's pre-tokenizer
                           (Split on " ?[^(\s|[.,!?…。，、।۔،])]+", then ByteLevel without GPT-2's
                           regex), `<unk>`, `<s>`, `</s>`, `<pad>` as ids 0-3, BLOOM's
                           tokenizer_config.json, trained here.
  {gpt2,bloom}_bpe_ids.json  {"transformers": {text: ids}}: ids from transformers'
                           `AutoTokenizer.from_pretrained(folder)` (add_special_tokens=False).
  smollm2_gguf_ids.json    {"transformers": {text: ids}, "transformers_gguf_loader": {...}}: ids
                           of SmolLM2-135M-Instruct's GGUF tokenizer as transformers loads it
                           (`AutoTokenizer.from_pretrained(folder, gguf_file=...)`), with the
                           pre-tokenizer the model's own tokenizer.json uses (digits split one by
                           one, then GPT-2's byte-level split: what the file's
                           `tokenizer.ggml.pre = "smollm"` names and llama.cpp applies), and,
                           under "transformers_gguf_loader", the ids of the texts where
                           transformers' GGUF loader differs because it ignores `tokenizer.ggml.pre`.
                           Skipped when the GGUF is absent (set PROMPT_TUNING_SMOLLM2_GGUF).
  gemma3_gguf_ids.json     {"transformers": {text: ids}}: ids of Gemma-3-270m's GGUF tokenizer
                           (a 262,144-piece SentencePiece BPE vocabulary with scores, no merges)
                           as transformers' GGUF loader builds it (GemmaTokenizer: BPE with
                           merges recovered from the pieces, best first, byte fallback, `▁` for
                           spaces; runs of spaces stored as real spaces respelled `▁▁`...),
                           add_special_tokens=False. Skipped when the GGUF is absent (set
                           PROMPT_TUNING_GEMMA3_GGUF; `python -m prompt_tuning.scripts.fetch_assets
                           gemma3-270m`).

Needs the `tools` extra (transformers) and sentencepiece / tokenizers:

  pip install -e '.[tools]'
  python tools/make_tokenizer_golden.py
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import random
import shutil
import tempfile

import gguf
import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tokenizers"
SMOLLM2_GGUF = pathlib.Path(os.environ.get(
    "PROMPT_TUNING_SMOLLM2_GGUF",
    pathlib.Path.home() / ".cache/prompt_tuning/assets/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"))
GEMMA3_GGUF = pathlib.Path(os.environ.get(
    "PROMPT_TUNING_GEMMA3_GGUF",
    pathlib.Path.home() / ".cache/prompt_tuning/assets/gemma3-270m/gemma-3-270m-q4_k_m.gguf"))

# A mixed text set: ASCII, accents, CJK, emoji, runs of spaces, tabs / newlines, digits, numerals
# other than 0-9, punctuation, code, and characters outside the small vocabularies (byte fallback).
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and   runs   of spaces  ",
    " ",
    "a",
    "",
    "tabs\tand\nnewlines\n\nhere\r\nthere",
    "mixed   \t \n  whitespace",
    "digits 12345 and 3.14 and 1,000,000 and 007",
    "x²+y³=z⁴ ½ ⅓ Ⅻ ٣",
    "punctuation!? (yes) [no] {maybe}; a:b, c-d_e/f\\g \"quoted\" 'single' ... --- ***",
    "it's we're they'll I'd she's CAN'T WON'T",
    "café naïve façade résumé über Ærøskøbing",
    "e\u0301 decomposed accent",
    "中文字符和日本語のテキスト한국어",
    "emoji 🙂👍🏽 and symbols ∑∫√ ©®™ 🇫🇷",
    "Ünïcödé mixed with ASCII, ελληνικά and русский текст",
    "\u00a0no-break\u200bzero-width\u2028line-separator",
    "def f(x):\n    return x * 2  # code\n",
    "https://example.com/path?query=1&b=2#frag",
    "ALL CAPS AND lowercase and MiXeD CaSe",
]
# `tokenizer.ggml.pre` values whose split transformers' GGUF loader applies (Llama 3, Qwen2,
# Mistral Nemo's tekken); "smollm" is checked against SmolLM2 itself (see smollm2_gguf_ids.json).
GGUF_PRE_TOKENIZERS = ("llama-bpe", "qwen2", "tekken")
# Texts with special-token text, per tokenizer.
SPECIAL_TEXTS = {
    "sp_bpe": ["<s> and </s> <unk>", "x</s>  y"],
    "byte_bpe": ["<|bos|>start<|eos|>  end<|pad|>"],
    "smollm2": ["<|im_start|>user\nHi there<|im_end|>\n", "<|endoftext|>x"],
    "gpt2_bpe": ["<|endoftext|>first<|endoftext|>  second"],
    "bloom_bpe": ["<s>start</s>  end<pad>", "a,b.c!d?e…f。g，h、i"],
    "gemma3": ["<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
               "<bos>x<eos> <pad>", "a\n\n\nb\t\tc      d"],
}
# English words a SentencePiece-BPE vocabulary of this size keeps whole (each must be one
# token after a space): built as a Unigram model instead, words break into fragments.
GEMMA3_WORDS = ("the", "quick", "brown", "because", "government", "information", "beautiful",
                "understand", "something", "important", "capital", "temperature", "window")

_WORDS = ("the of and to in is was that for it with as on be by this at from or an are not have "
          "but had they his her which you were one all we can there their what so up out if "
          "about who get which go me when make can like time no just him know take people into "
          "year your good some could them see other than then now look only come its over think "
          "also back after use two how our work first well way even new want because any these "
          "give day most us quick brown fox jumps lazy dog hello world code return def").split()
_EXTRA = ("café", "naïve", "über", "résumé", "façade", "中文", "日本語", "ελληνικά", "русский",
          "It's", "we're", "CAN'T", "x + y", "(a, b)", "[1, 2]", "\t", "\n", "  ")


def training_lines(count: int = 4000, seed: int = 0) -> list[str]:
  """Deterministic generated text the tiny tokenizers are trained on."""
  rng = random.Random(seed)
  lines = []
  for _ in range(count):
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 16))]
    if rng.random() < 0.4:
      words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 99999)))
    if rng.random() < 0.3:
      words.insert(rng.randrange(len(words) + 1), rng.choice(_EXTRA))
    if rng.random() < 0.3:
      words[0] = words[0].capitalize()
    lines.append(" ".join(words) + rng.choice([".", "!", "?", ",", ":", ""]))
  return lines


def _write_json(path: pathlib.Path, value) -> None:
  path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def make_sentencepiece(folder: pathlib.Path) -> None:
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(training_lines()), model_writer=model, model_type="bpe",
      vocab_size=600, byte_fallback=True, normalization_rule_name="identity",
      remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
      allow_whitespace_only_pieces=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
      pad_id=-1, num_threads=1, minloglevel=2)
  shutil.rmtree(folder / "sp_bpe", ignore_errors=True)
  (folder / "sp_bpe").mkdir(parents=True)
  model_file = folder / "sp_bpe" / "tokenizer.model"
  model_file.write_bytes(model.getvalue())

  processor = spm.SentencePieceProcessor(model_file=str(model_file))
  # transformers' default conversion of a Llama SentencePiece model (its `legacy` behaviour: a
  # `▁` always prepended, as SentencePiece and llama.cpp do).
  reference = transformers.AutoTokenizer.from_pretrained(
      str(folder / "sp_bpe"), tokenizer_class="LlamaTokenizer")
  texts = TEXTS + SPECIAL_TEXTS["sp_bpe"]
  golden = {
      "transformers": {t: reference.encode(t, add_special_tokens=False) for t in texts},
      "sentencepiece": {t: processor.encode(t) for t in texts},
  }
  differ = [t for t in TEXTS if golden["transformers"][t] != golden["sentencepiece"][t]]
  if differ:
    raise SystemExit(f"transformers and sentencepiece disagree on {differ}; fix the reference.")
  _write_json(folder / "sp_bpe_ids.json", golden)


def make_byte_level_bpe(folder: pathlib.Path) -> None:
  specials = ["<|pad|>", "<|bos|>", "<|eos|>"]
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(training_lines(seed=1), trainer=trainer)
  bos = tokenizer.token_to_id("<|bos|>")
  tokenizer.post_processor = processors.TemplateProcessing(
      single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)])
  out = folder / "byte_bpe"
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  tokenizer.save(str(out / "tokenizer.json"))
  _write_json(out / "tokenizer_config.json", {
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>",
      "eos_token": "<|eos|>", "pad_token": "<|pad|>", "model_max_length": 512})

  reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
  texts = TEXTS + SPECIAL_TEXTS["byte_bpe"]
  golden = {"transformers": {t: reference.encode(t, add_special_tokens=False) for t in texts}}
  # The same vocabulary as a GGUF `gpt2` tokenizer under other families' pre-tokenizer splits,
  # loaded by transformers' GGUF loader (which applies these `tokenizer.ggml.pre` splits).
  with tempfile.TemporaryDirectory() as scratch:
    for pre in GGUF_PRE_TOKENIZERS:
      name = f"{pre}.gguf"
      _write_byte_level_gguf(pathlib.Path(scratch) / name, tokenizer, pre)
      loaded = transformers.AutoTokenizer.from_pretrained(scratch, gguf_file=name)
      golden[f"transformers_gguf_{pre}"] = {t: loaded.encode(t, add_special_tokens=False)
                                            for t in TEXTS}
  _write_json(folder / "byte_bpe_ids.json", golden)


def _train_byte_level(pre_tokenizer: pre_tokenizers.PreTokenizer, specials: list[str],
                      seed: int) -> tokenizers.Tokenizer:
  """A 600-token byte-level BPE over `training_lines(seed)` with `specials` first."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizer
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(training_lines(seed=seed), trainer=trainer)
  return tokenizer


def _save_with_reference(folder: pathlib.Path, name: str, tokenizer: tokenizers.Tokenizer,
                         tokenizer_config: dict) -> None:
  """Writes folder/name/{tokenizer.json, tokenizer_config.json} and folder/name_ids.json with
  transformers' ids (`AutoTokenizer` on that folder, as users load the model's tokenizer)."""
  out = folder / name
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  tokenizer.save(str(out / "tokenizer.json"))
  _write_json(out / "tokenizer_config.json", tokenizer_config)
  reference = transformers.AutoTokenizer.from_pretrained(str(out))
  texts = TEXTS + SPECIAL_TEXTS[name]
  _write_json(folder / f"{name}_ids.json", {
      "transformers": {t: reference.encode(t, add_special_tokens=False) for t in texts}})


def make_gpt2_bpe(folder: pathlib.Path) -> None:
  tokenizer = _train_byte_level(
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True), [],
      seed=2)
  tokenizer.add_special_tokens(["<|endoftext|>"])  # GPT-2's only special token, the last id.
  tokenizer.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                                  use_regex=True)
  _save_with_reference(folder, "gpt2_bpe", tokenizer, {
      "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
      "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "add_prefix_space": False,
      "model_max_length": 1024})


# BLOOM's tokenizer.json split: runs of anything but whitespace and (CJK / Indic / Arabic)
# punctuation, with one leading space.
BLOOM_SPLIT = " ?[^(\\s|[.,!?…。，、।۔،])]+"


def make_bloom_bpe(folder: pathlib.Path) -> None:
  tokenizer = _train_byte_level(pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(BLOOM_SPLIT), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
      ["<unk>", "<s>", "</s>", "<pad>"], seed=3)
  tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
  _save_with_reference(folder, "bloom_bpe", tokenizer, {
      "tokenizer_class": "BloomTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
      "unk_token": "<unk>", "pad_token": "<pad>", "add_prefix_space": False,
      "padding_side": "left"})


def _write_byte_level_gguf(path: pathlib.Path, tokenizer: tokenizers.Tokenizer, pre: str) -> None:
  """A GGUF holding only `tokenizer` as a llama.cpp `gpt2` vocabulary (tokens, merges, types)."""
  spec = json.loads(tokenizer.to_str())
  vocab = spec["model"]["vocab"]
  tokens = sorted(vocab, key=vocab.get)
  special = {t["content"] for t in spec["added_tokens"] if t["special"]}
  writer = gguf.GGUFWriter(path, "llama")
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                          for t in tokens])
  writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
  writer.add_eos_token_id(vocab["<|eos|>"])
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def make_smollm2(folder: pathlib.Path) -> None:
  if not SMOLLM2_GGUF.exists():
    print(f"skipping smollm2_gguf_ids.json: {SMOLLM2_GGUF} is absent")
    return
  loaded = transformers.AutoTokenizer.from_pretrained(
      str(SMOLLM2_GGUF.parent), gguf_file=SMOLLM2_GGUF.name)
  texts = TEXTS + SPECIAL_TEXTS["smollm2"]
  as_loaded = {t: loaded.encode(t, add_special_tokens=False) for t in texts}
  # SmolLM2's tokenizer.json pre-tokenizer (GGUF `tokenizer.ggml.pre = "smollm"`).
  loaded.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  reference = {t: loaded.encode(t, add_special_tokens=False) for t in texts}
  _write_json(folder / "smollm2_gguf_ids.json", {
      "transformers": reference,
      "transformers_gguf_loader": {t: ids for t, ids in as_loaded.items() if ids != reference[t]},
  })


def make_gemma3(folder: pathlib.Path) -> None:
  if not GEMMA3_GGUF.exists():
    print(f"skipping gemma3_gguf_ids.json: {GEMMA3_GGUF} is absent")
    return
  loaded = transformers.AutoTokenizer.from_pretrained(
      str(GEMMA3_GGUF.parent), gguf_file=GEMMA3_GGUF.name)
  texts = TEXTS + SPECIAL_TEXTS["gemma3"] + [" " + " ".join(GEMMA3_WORDS)]
  golden = {t: loaded.encode(t, add_special_tokens=False) for t in texts}
  if len(golden[texts[-1]]) != len(GEMMA3_WORDS):
    raise SystemExit(f"transformers splits common words: {golden[texts[-1]]}")
  _write_json(folder / "gemma3_gguf_ids.json", {"transformers": golden})


def main() -> None:
  FIXTURES.mkdir(parents=True, exist_ok=True)
  make_sentencepiece(FIXTURES)
  make_byte_level_bpe(FIXTURES)
  make_gpt2_bpe(FIXTURES)
  make_bloom_bpe(FIXTURES)
  make_smollm2(FIXTURES)
  make_gemma3(FIXTURES)
  for path in sorted(FIXTURES.rglob("*")):
    if path.is_file():
      print(f"{path.relative_to(FIXTURES.parent.parent.parent)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
  main()
