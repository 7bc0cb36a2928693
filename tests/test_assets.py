"""The assets registry and `fetch_assets` script (no network: a cached file is used as is)."""

from __future__ import annotations

import pytest

from prompt_tuning import assets
from prompt_tuning.scripts import fetch_assets


def test_paths_live_in_the_configured_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path))
  assert assets.path("smollm2-135m") == (
      tmp_path / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf")
  assert not assets.available("rotten_tomatoes")
  with pytest.raises(assets.AssetError, match="unknown asset 'gpt5'; known: rotten_tomatoes"):
    assets.path("gpt5")


def test_a_present_asset_is_not_fetched_again(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path))
  target = assets.path("rotten_tomatoes")
  target.parent.mkdir(parents=True)
  target.write_bytes(b"cached")
  assert fetch_assets.main(["rotten_tomatoes"]) == 0
  assert capsys.readouterr().out.strip() == str(target)
  assert target.read_bytes() == b"cached"
  assert fetch_assets.main(["--list"]) == 0
  assert "rotten_tomatoes  present" in capsys.readouterr().out


def test_unknown_asset_is_one_error_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path))
  assert fetch_assets.main(["nope"]) == 1
  assert capsys.readouterr().err.startswith("error: unknown asset 'nope'")
