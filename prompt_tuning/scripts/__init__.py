"""Command-line scripts, each run as `python -m prompt_tuning.scripts.NAME` (`--help` for flags).

- `extract_variable`: one variable of a T5X / orbax / Hugging Face checkpoint -> `.npy`.
- `find_module`: the folder a Python module is installed in (for --gin_search_paths).
- `diff_checkpoints`: which variables differ between two checkpoints.
- `convert_checkpoint`: Hugging Face T5 <-> our orbax checkpoint; T5X -> orbax.
"""
