r"""Reports which variables differ between two checkpoints (T5X, our orbax, Hugging Face).

Typical use: confirm that prompt tuning changed only the prompt.

  python -m prompt_tuning.scripts.diff_checkpoints \
    /tmp/t5_1_1_base/checkpoint_1100000 /tmp/model/checkpoint_1101000 \
    --summary_file=/tmp/diff.json

Every variable falls in one class: only in A, only in B, shape differs, values differ (largest
absolute difference above --tolerance) or equal. Variables are compared by our T5X paths, so a
Hugging Face directory compares with the T5X or orbax checkpoint it was converted from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any, Optional, Sequence

from absl import flags
import numpy as np

from prompt_tuning.scripts import _checkpoints, _cli

PROG = "diff_checkpoints"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} CHECKPOINT_A CHECKPOINT_B \\
    [--variables=REGEX] [--fraction_to_sample=F] [--tolerance=T] [--summary_file=FILE.json]

Each checkpoint is a T5X checkpoint folder, one of our orbax checkpoints or a Hugging Face T5
directory. Exits 0 when the comparison ran, whatever it found.
"""
_LISTED = 10


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("variables", None, "Regex of variable paths to compare, matched against "
                      "whole paths (e.g. '.*/prompt/.*' or 'encoder/.*'); default all.",
                      flag_values=flag_values)
  flags.DEFINE_float("fraction_to_sample", 1.0, "Fraction of each variable's elements to "
                     "compare, sampled at random (with replacement, at least one) - for huge "
                     "checkpoints; 1 compares every element.", lower_bound=0.0, upper_bound=1.0,
                     flag_values=flag_values)
  flags.DEFINE_float("tolerance", 0.0, "Largest absolute difference still counted as equal.",
                     lower_bound=0.0, flag_values=flag_values)
  flags.DEFINE_string("summary_file", None, "Also write the report as JSON to this file.",
                      flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Seed of the element sampling.", flag_values=flag_values)


@dataclasses.dataclass
class DiffReport:
  """The outcome of comparing checkpoint A with checkpoint B, variable by variable."""
  checkpoint_a: str
  checkpoint_b: str
  format_a: str
  format_b: str
  variables_regex: Optional[str]
  fraction_to_sample: float
  tolerance: float
  only_in_a: list[str] = dataclasses.field(default_factory=list)
  only_in_b: list[str] = dataclasses.field(default_factory=list)
  # path -> [shape in A, shape in B].
  shape_differs: dict[str, list[list[int]]] = dataclasses.field(default_factory=dict)
  # path -> largest absolute difference (over the sampled elements).
  values_differ: dict[str, float] = dataclasses.field(default_factory=dict)
  equal: list[str] = dataclasses.field(default_factory=list)
  # path -> [dtype in A, dtype in B] (informational: values are compared in float64).
  dtype_differs: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  @property
  def differing(self) -> list[str]:
    """Every variable that is not equal: only in A, only in B, shape or values differ."""
    return (self.only_in_a + self.only_in_b + list(self.shape_differs)
            + list(self.values_differ))

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["values_differ"] = {p: _json_float(d) for p, d in self.values_differ.items()}
    out["differing"] = self.differing
    out["num_differing"] = len(self.differing)
    out["num_equal"] = len(self.equal)
    return out


def _json_float(value: float) -> Any:
  """JSON has no inf / nan: write them as strings."""
  return value if math.isfinite(value) else str(value)


def max_abs_diff(a: np.ndarray, b: np.ndarray, fraction: float = 1.0,
                 rng: Optional[np.random.Generator] = None) -> float:
  """Largest |a - b| over all elements or a random `fraction` of them (same shapes).

  NaN in both at one element counts as equal there; NaN in one only counts as infinite.
  """
  a_flat = np.asarray(a).reshape(-1)
  b_flat = np.asarray(b).reshape(-1)
  if a_flat.size == 0:
    return 0.0
  if fraction < 1.0:
    rng = rng if rng is not None else np.random.default_rng(0)
    count = max(1, math.ceil(fraction * a_flat.size))
    picks = rng.integers(0, a_flat.size, count)
    a_flat, b_flat = a_flat[picks], b_flat[picks]
  a64, b64 = a_flat.astype(np.float64), b_flat.astype(np.float64)
  with np.errstate(invalid="ignore"):
    diff = np.abs(a64 - b64)
  a_nan, b_nan = np.isnan(a64), np.isnan(b64)
  diff = np.where(a_nan & b_nan, 0.0, diff)
  diff = np.where(a_nan ^ b_nan, np.inf, diff)
  same_inf = np.isinf(a64) & (a64 == b64)  # inf - inf is nan.
  diff = np.where(same_inf, 0.0, diff)
  return float(diff.max())


def diff_checkpoints(path_a: str, path_b: str, variables: Optional[str] = None,
                     fraction_to_sample: float = 1.0, tolerance: float = 0.0,
                     seed: int = 0) -> DiffReport:
  """Compares every variable (matching `variables`, whole paths) of two checkpoints.

  Variables are read one at a time from T5X and orbax checkpoints.

  Raises:
    ValueError: `variables` matches no variable of either checkpoint, or a path is no checkpoint.
  """
  if not 0.0 < fraction_to_sample <= 1.0:
    raise _cli.UsageError(
        f"--fraction_to_sample={fraction_to_sample} must be in (0, 1]: e.g. 0.01 compares 1% "
        "of each variable's elements, 1 all of them.")
  pattern = _cli.compile_regex(variables, "variables") if variables is not None else None
  a = _checkpoints.open_checkpoint(path_a)
  b = _checkpoints.open_checkpoint(path_b)
  names_a = _checkpoints.select(a.variables, pattern)
  names_b = _checkpoints.select(b.variables, pattern)
  if pattern is not None and not names_a and not names_b:
    raise ValueError(
        f"--variables={variables!r} matches no variable of either checkpoint (whole paths are "
        f"matched: use e.g. '.*/prompt/.*'; A holds e.g. {', '.join(list(a.variables)[:3])}).")
  report = DiffReport(a.path, b.path, a.kind, b.kind, variables, fraction_to_sample, tolerance)
  in_b = set(names_b)
  report.only_in_a = [n for n in names_a if n not in in_b]
  in_a = set(names_a)
  report.only_in_b = [n for n in names_b if n not in in_a]
  rng = np.random.default_rng(seed)
  for name in (n for n in names_a if n in in_b):
    info_a, info_b = a.variables[name], b.variables[name]
    if info_a.shape != info_b.shape:
      report.shape_differs[name] = [list(info_a.shape), list(info_b.shape)]
      continue
    if info_a.dtype != info_b.dtype:
      report.dtype_differs[name] = [str(info_a.dtype), str(info_b.dtype)]
    difference = max_abs_diff(a.read([name])[name], b.read([name])[name], fraction_to_sample, rng)
    if difference > tolerance:
      report.values_differ[name] = difference
    else:
      report.equal.append(name)
  return report


def _listed(names: Sequence[str]) -> str:
  shown = ", ".join(names[:_LISTED])
  return shown + (f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def format_report(report: DiffReport) -> str:
  """The human-readable report; its last line is the one-line summary."""
  checked = len(report.differing) + len(report.equal)
  elements = ("every element" if report.fraction_to_sample >= 1.0 else
              f"a random {report.fraction_to_sample:g} of each variable's elements")
  lines = [f"A: {report.checkpoint_a} ({report.format_a})",
           f"B: {report.checkpoint_b} ({report.format_b})",
           f"Compared {checked} variable{'' if checked == 1 else 's'}"
           + (f" matching {report.variables_regex!r}" if report.variables_regex else "")
           + f" ({elements}, tolerance {report.tolerance:g}):"]
  for name in report.only_in_a:
    lines.append(f"  only in A:     {name}")
  for name in report.only_in_b:
    lines.append(f"  only in B:     {name}")
  for name, (shape_a, shape_b) in report.shape_differs.items():
    lines.append(f"  shape differs: {name} {shape_a} vs {shape_b}")
  for name, difference in report.values_differ.items():
    lines.append(f"  values differ: {name} (max |a-b| = {difference:.6g})")
  for name, (dtype_a, dtype_b) in report.dtype_differs.items():
    lines.append(f"  dtype differs: {name} {dtype_a} vs {dtype_b} (values compared in float64)")
  lines.append(f"  equal:         {len(report.equal)} variables")
  differing = report.differing
  if differing:
    noun = "variable differs" if len(differing) == 1 else "variables differ"
    lines.append(f"{len(differing)} {noun}: {_listed(differing)}")
  else:
    lines.append(f"No variables differ ({len(report.equal)} equal).")
  return "\n".join(lines)


def write_summary(report: DiffReport, summary_file: str) -> None:
  """Writes the report as JSON (folders created)."""
  folder = os.path.dirname(os.path.abspath(summary_file))
  os.makedirs(folder, exist_ok=True)
  with open(summary_file, "w", encoding="utf-8") as f:
    json.dump(report.to_json(), f, indent=2)
    f.write("\n")


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Compares the two checkpoints named by `args` and prints (and writes) the report."""
  if len(args) != 2:
    raise _cli.UsageError(
        f"pass exactly two checkpoints, A and B (got {len(args)}: {args}), e.g. `python -m "
        f"prompt_tuning.scripts.{PROG} /tmp/base/checkpoint_0 /tmp/model/checkpoint_100`.")
  report = diff_checkpoints(args[0], args[1], flag_values.variables,
                            flag_values.fraction_to_sample, flag_values.tolerance,
                            flag_values.seed)
  if flag_values.summary_file:
    write_summary(report, flag_values.summary_file)
    print(f"Wrote the report to {flag_values.summary_file}")
  print(format_report(report))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
