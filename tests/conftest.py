"""Shared pytest fixtures: paths to ../shared/fixtures (skipped cleanly where absent)."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_FIXTURES = REPO_ROOT / "tests" / "fixtures"
SHARED_FIXTURES = pathlib.Path(
    os.environ.get("PROMPT_TUNING_SHARED_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))

# Commands run in-process by the tests leave JAX's persistent compilation cache off (it would be
# turned on mid-process and write to the user's cache folder); tests/test_cli_errors.py covers it.
os.environ.setdefault("PROMPT_TUNING_COMPILATION_CACHE_DIR", "")


def shared_fixture(relative: str) -> pathlib.Path:
  """Path of a file under ../shared/fixtures; skips the calling test if it is absent."""
  path = SHARED_FIXTURES / relative
  if not path.exists():
    pytest.skip(f"shared fixture {path} is not available")
  return path


def real_asset(name: str) -> pathlib.Path:
  """A real model / data file from the assets cache; skips the test when it is not fetched
  (`python -m prompt_tuning.scripts.fetch_assets NAME`)."""
  from prompt_tuning import assets
  path = assets.path(name)
  if not path.is_file():
    pytest.skip(f"asset {name} is not fetched ({path}); run "
                f"`python -m prompt_tuning.scripts.fetch_assets {name}`")
  return path


@pytest.fixture
def t5x_tiny_checkpoint() -> pathlib.Path:
  return shared_fixture("t5x_tiny_checkpoint_3")


@pytest.fixture
def t5_vocab_path() -> pathlib.Path:
  return shared_fixture("t5_sentencepiece.model")


def write_sentiment_tsvs(folder: pathlib.Path) -> tuple[str, str]:
  """A small two-class TSV task in `folder`: (train.tsv with 48 rows, dev.tsv with its first 10)."""
  rows = ["text\tlabel"] + [
      f"{'good' if i % 2 else 'bad'} film number {i}\t{'positive' if i % 2 else 'negative'}"
      for i in range(48)]
  train, dev = folder / "train.tsv", folder / "dev.tsv"
  train.write_text("\n".join(rows) + "\n")
  dev.write_text("\n".join(rows[:11]) + "\n")
  return str(train), str(dev)
