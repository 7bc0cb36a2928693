"""The embedded demo's synthetic string tasks: the project's own data, made in memory.

Every example is a random string of 3 to 10 distinct lowercase letters. The
pretraining mixture `demo_pretrain` teaches a tiny T5 several transformations,
each named by an instruction word in the input:

  "copy: kqtb"    -> "kqtb"        "reverse: kqtb" -> "btqk"
  "sort: kqtb"    -> "bkqt"        "upper: kqtb"   -> "KQTB"
  "shift: kqtb"   -> "lruc"        (each letter -> the next, z -> a)
  "kqtb"          -> "kqtb"        (no instruction: copy; task `demo_pretrain_bare`)

The demo task `demo_reverse` asks for the reverse with no instruction word
("kqtb" -> "btqk"): the frozen model copies such inputs, and a learned prompt
can stand in for the missing "reverse: ".

Data is generated deterministically (seeded per task and split) the first time
a split is read. A string is a validation string iff a CRC32 hash of it says
so, for every task alike, so no validation string of any task occurs in any
training split. The vocabulary is `seqio.ByteVocabulary` (ids: 0 pad, 1 EOS,
2 UNK, byte b at b + 3; 259 ids), which needs no file. Metric: exact match.

Importing this module registers the tasks (as `glue.py` does); call
`register_demo_tasks` again to re-register them.
"""

from __future__ import annotations

import functools
import pathlib
import string
import zlib
from typing import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.data import metrics as metrics_lib
from prompt_tuning.data import postprocessors
from prompt_tuning.data import registry

ALPHABET = string.ascii_lowercase
MIN_LENGTH = 3
MAX_LENGTH = 10
# Lengths that hold every demo input ("reverse: " + 10 letters + EOS) and target.
TASK_FEATURE_LENGTHS = {"inputs": 24, "targets": 12}
# Examples per split of each task (training examples repeat across epochs).
SPLIT_SIZES = {"train": 20_000, "validation": 200}
# One string in VALIDATION_MODULUS (by CRC32) belongs to the validation splits.
VALIDATION_MODULUS = 10
DEFAULT_SEED = 0

# The shipped frozen demo model (orbax; made by tools/make_demo_assets.py) and its gin files.
ASSETS_DIR = pathlib.Path(__file__).resolve().parent.parent / "assets" / "demo"
MODEL_GIN_FILE = "models/demo_tiny.gin"
PROMPT_MODEL_GIN_FILE = "models/demo_tiny_prompt.gin"

PRETRAIN_MIXTURE = "demo_pretrain"
PRETRAIN_PREFIX = "demo_pretrain_"
BARE_TASK = PRETRAIN_PREFIX + "bare"
DEMO_TASK = "demo_reverse"


def _shift(text: str) -> str:
  """Each letter replaced by the next one in the alphabet (z -> a)."""
  return "".join(ALPHABET[(ALPHABET.index(c) + 1) % len(ALPHABET)] for c in text)


# Instruction word -> transformation of the letters.
TRANSFORMS: Mapping[str, Callable[[str], str]] = {
    "copy": lambda text: text,
    "reverse": lambda text: text[::-1],
    "sort": lambda text: "".join(sorted(text)),
    "upper": str.upper,
    "shift": _shift,
}


def model_checkpoint_dir() -> pathlib.Path:
  """The folder of the shipped frozen demo model (pass it as `checkpoint=` / INITIAL_CHECKPOINT_PATH).

  Raises:
    FileNotFoundError: the package was installed without its assets.
  """
  path = ASSETS_DIR / "model"
  if not path.is_dir():
    raise FileNotFoundError(
        f"the demo model is missing from {path}; reinstall prompt-tuning with its package data "
        "or regenerate it with `python tools/make_demo_assets.py`.")
  return path


def vocabulary() -> seqio.ByteVocabulary:
  """The demo's file-free byte vocabulary (259 ids; models may pad their embedding table)."""
  return seqio.ByteVocabulary()


def output_features() -> dict[str, seqio.Feature]:
  """`inputs` and `targets` over the byte vocabulary, EOS appended to both."""
  vocab = vocabulary()
  return {"inputs": seqio.Feature(vocabulary=vocab, add_eos=True, required=False),
          "targets": seqio.Feature(vocabulary=vocab, add_eos=True)}


def encode_texts(texts: Sequence[str], length: int) -> np.ndarray:
  """Token ids int32 [len(texts), length] of `texts`, EOS appended, 0-padded.

  Raises:
    ValueError: a text does not fit in `length` tokens with its EOS.
  """
  vocab = vocabulary()
  tokens_NL = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    ids = list(vocab.encode(text)) + [vocab.eos_id]
    if len(ids) > length:
      raise ValueError(f"{text!r} needs {len(ids)} tokens with EOS but length={length}; pass a "
                       "larger length.")
    tokens_NL[row, :len(ids)] = ids
  return tokens_NL


def decode_tokens(tokens_NL: np.ndarray) -> list[str]:
  """Texts of token rows [N, L], each cut at its first EOS or padding id."""
  vocab = vocabulary()
  texts = []
  for row in np.asarray(tokens_NL).tolist():
    stop = [i for i, t in enumerate(row) if t in (vocab.eos_id, vocab.pad_id)]
    texts.append(vocab.decode(row[:stop[0]] if stop else row))
  return texts


def is_validation_string(text: str) -> bool:
  """Whether `text` belongs to the validation splits (a fixed hash, the same for all tasks)."""
  return zlib.crc32(text.encode("utf-8")) % VALIDATION_MODULUS == 0


def _stable_seed(*parts: object) -> int:
  """A seed that depends only on `parts` (not on Python's per-process string hashing)."""
  return zlib.crc32("/".join(str(p) for p in parts).encode("utf-8"))


def random_strings(count: int, split: str, seed: int) -> list[str]:
  """`count` random strings of MIN_LENGTH..MAX_LENGTH distinct letters in `split`'s half."""
  if split not in SPLIT_SIZES:
    raise ValueError(f"unknown split {split!r}; the demo tasks have {sorted(SPLIT_SIZES)}.")
  rng = np.random.default_rng(seed)
  want_validation = split == "validation"
  letters = np.array(list(ALPHABET))
  out: list[str] = []
  while len(out) < count:
    length = int(rng.integers(MIN_LENGTH, MAX_LENGTH + 1))
    text = "".join(rng.choice(letters, size=length, replace=False))
    if is_validation_string(text) == want_validation:
      out.append(text)
  return out


def make_examples(instruction: str | None, transform: str, split: str,
                  seed: int = DEFAULT_SEED, count: int | None = None
                  ) -> dict[str, list[str]]:
  """Columns `inputs` / `targets` of one task's split.

  Args:
    instruction: the word put before the letters ("reverse" -> "reverse: abc"), or None for
      bare letters.
    transform: key of TRANSFORMS giving the target.
    split: "train" or "validation".
    seed: base seed; each (instruction, transform, split) draws its own strings from it.
    count: number of examples (SPLIT_SIZES[split] when None).
  """
  if transform not in TRANSFORMS:
    raise ValueError(f"unknown transform {transform!r}; use one of {sorted(TRANSFORMS)}.")
  count = SPLIT_SIZES[split] if count is None else count
  texts = random_strings(count, split, _stable_seed(seed, instruction, transform, split))
  fn = TRANSFORMS[transform]
  prefix = "" if instruction is None else f"{instruction}: "
  return {"inputs": [prefix + t for t in texts], "targets": [fn(t) for t in texts]}


@functools.lru_cache(maxsize=None)
def _cached_examples(instruction: str | None, transform: str, split: str,
                     seed: int) -> dict[str, tuple[str, ...]]:
  examples = make_examples(instruction, transform, split, seed)
  return {k: tuple(v) for k, v in examples.items()}


def _dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None, *,
                instruction: str | None, transform: str, data_seed: int) -> tf.data.Dataset:
  """A seqio FunctionDataSource function over one task's in-memory examples."""
  del shuffle_files, seed  # One in-memory "file"; seqio shuffles examples.
  examples = _cached_examples(instruction, transform, split, data_seed)
  return tf.data.Dataset.from_tensor_slices(
      {k: tf.constant(list(v), tf.string) for k, v in examples.items()})


def _text(output: object, example: object = None, is_target: bool = False) -> str:
  """Decoded text as it is (the postprocessor of exact match)."""
  del example, is_target
  return postprocessors.as_text(output)


def _add_string_task(name: str, instruction: str | None, transform: str,
                     seed: int) -> seqio.Task:
  source = seqio.FunctionDataSource(
      functools.partial(_dataset_fn, instruction=instruction, transform=transform,
                        data_seed=seed),
      splits=list(SPLIT_SIZES))
  return registry.add_task(
      name, source=source,
      preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(), postprocess_fn=_text,
      metric_fns=[metrics_lib.exact_match])


def pretrain_task_names() -> list[str]:
  """The tasks of the pretraining mixture: one per instruction word, then the bare copy."""
  return [PRETRAIN_PREFIX + word for word in TRANSFORMS] + [BARE_TASK]


def register_demo_tasks(seed: int = DEFAULT_SEED) -> list[str]:
  """Registers (or replaces) the pretraining tasks, their mixture and `demo_reverse`.

  Returns:
    The registered names: the pretraining tasks, `demo_pretrain` (equal rates) and
    `demo_reverse`.
  """
  names = []
  for word in TRANSFORMS:
    names.append(_add_string_task(PRETRAIN_PREFIX + word, word, word, seed).name)
  names.append(_add_string_task(BARE_TASK, None, "copy", seed).name)
  registry.add_mixture(PRETRAIN_MIXTURE, list(names), default_rate=1.0)
  names.append(PRETRAIN_MIXTURE)
  names.append(_add_string_task(DEMO_TASK, None, "reverse", seed).name)
  return names


register_demo_tasks()
