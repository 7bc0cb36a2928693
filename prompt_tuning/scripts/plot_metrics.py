r"""Draws training runs' metrics.jsonl as one PNG: train loss and each eval metric over steps.

  python -m prompt_tuning.scripts.plot_metrics /tmp/run_a [/tmp/run_b ...] [--output=FILE.png]

One panel per figure (the train loss per target token first, then every `task/metric` of the
evaluations), the runs overlaid in different colours with a legend. The image is `--width`
pixels wide and `--panel_height` pixels per panel; it goes to FIRST_MODEL_DIR/metrics.png unless
`--output` says otherwise. Drawn with Pillow (installed with TensorBoard, a dependency of this
library); no plotting library is needed.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from typing import Any, Optional, Sequence

from absl import flags

from prompt_tuning.scripts import _cli

PROG = "plot_metrics"
USAGE = f"""Usage: python -m prompt_tuning.scripts.{PROG} MODEL_DIR [MODEL_DIR ...] \\
    [--output=FILE.png] [--width=1000] [--panel_height=320]

Reads each MODEL_DIR/metrics.jsonl (written by prompt_tuning.train) and draws the train loss per
target token and every evaluation metric over steps, the runs overlaid.
"""
TRAIN_FIGURE = "train loss per target token"
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 78, 24, 34, 46

Curves = dict[str, dict[str, list[tuple[int, float]]]]  # figure -> run -> [(step, value)].


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags."""
  flags.DEFINE_string("output", None, "PNG file to write (default: FIRST_MODEL_DIR/metrics.png).",
                      flag_values=flag_values)
  flags.DEFINE_integer("width", 1000, "Image width in pixels.", flag_values=flag_values)
  flags.DEFINE_integer("panel_height", 320, "Height of each panel in pixels.",
                       flag_values=flag_values)


def read_curves(model_dirs: Sequence[str]) -> Curves:
  """{figure: {run: [(step, value)]}} of the runs' metrics.jsonl (a re-logged step: last wins)."""
  names = _run_names(model_dirs)
  curves: Curves = collections.defaultdict(dict)
  for model_dir, name in zip(model_dirs, names):
    path = os.path.join(model_dir, "metrics.jsonl")
    if not os.path.isfile(path):
      raise ValueError(f"{path} does not exist: pass MODEL_DIRs of prompt_tuning.train runs.")
    points: dict[str, dict[int, float]] = collections.defaultdict(dict)
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as error:
          raise ValueError(f"{path} line {number} is not JSON ({error.msg}).") from error
        step = int(record.get("step", 0))
        if record.get("split") == "train" and "loss_per_nonpadding_target_token" in record:
          points[TRAIN_FIGURE][step] = float(record["loss_per_nonpadding_target_token"])
        elif record.get("split") == "eval":
          task = record.get("task", "eval")
          for key, value in record.items():
            if key not in ("step", "split", "task") and isinstance(value, (int, float)):
              points[f"{task}/{key}"][step] = float(value)
    for figure, by_step in points.items():
      curves[figure][name] = sorted(by_step.items())
  if not curves:
    raise ValueError(f"no train or eval figures in {', '.join(model_dirs)}/metrics.jsonl.")
  ordered = {TRAIN_FIGURE: curves[TRAIN_FIGURE]} if TRAIN_FIGURE in curves else {}
  ordered.update({k: curves[k] for k in sorted(curves) if k != TRAIN_FIGURE})
  return ordered


def _run_names(model_dirs: Sequence[str]) -> list[str]:
  """Short distinct names: each folder's name, with its parent's when two names clash."""
  names = [os.path.basename(os.path.normpath(d)) or d for d in model_dirs]
  if len(set(names)) < len(names):
    names = [os.path.join(*os.path.normpath(d).split(os.sep)[-2:]) for d in model_dirs]
  return names


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
  """About `count` round tick values covering [low, high]."""
  if not math.isfinite(low) or not math.isfinite(high):
    return []
  if high <= low:
    high = low + (abs(low) or 1.0)
  raw = (high - low) / max(count, 1)
  magnitude = 10 ** math.floor(math.log10(raw))
  step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
  first = math.ceil(low / step) * step
  return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
  if value == 0:
    return "0"
  if abs(value) >= 1e4 or abs(value) < 1e-3:
    return f"{value:.2g}"
  return f"{value:.4g}"


def _font(size: int) -> Any:
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1: one bitmap size.
    return ImageFont.load_default()


def _draw_panel(draw: Any, box: tuple[int, int, int, int], title: str,
                runs: dict[str, list[tuple[int, float]]], colours: dict[str, tuple[int, int, int]],
                font: Any, small: Any) -> None:
  left, top, right, bottom = box
  x0, y0 = left + _MARGIN_LEFT, top + _MARGIN_TOP
  x1, y1 = right - _MARGIN_RIGHT, bottom - _MARGIN_BOTTOM
  draw.text((x0, top + 8), title, fill=(0, 0, 0), font=font)
  points = [p for series in runs.values() for p in series if math.isfinite(p[1])]
  draw.rectangle((x0, y0, x1, y1), outline=(90, 90, 90))
  if not points:
    return
  steps = [s for s, _ in points]
  values = [v for _, v in points]
  s_lo, s_hi = min(steps), max(steps)
  v_lo, v_hi = min(values), max(values)
  if s_hi == s_lo:
    s_lo, s_hi = s_lo - 1, s_hi + 1
  pad = (v_hi - v_lo) * 0.05 or abs(v_hi) * 0.05 or 1.0
  v_lo, v_hi = v_lo - pad, v_hi + pad

  def to_xy(step: float, value: float) -> tuple[float, float]:
    return (x0 + (step - s_lo) / (s_hi - s_lo) * (x1 - x0),
            y1 - (value - v_lo) / (v_hi - v_lo) * (y1 - y0))

  for tick in nice_ticks(v_lo, v_hi):
    _, y = to_xy(s_lo, tick)
    draw.line((x0, y, x1, y), fill=(228, 228, 228))
    draw.text((x0 - 6, y), _label(tick), fill=(60, 60, 60), font=small, anchor="rm")
  for tick in nice_ticks(s_lo, s_hi):
    x, _ = to_xy(tick, v_lo)
    draw.line((x, y1, x, y1 + 4), fill=(90, 90, 90))
    draw.text((x, y1 + 7), _label(tick), fill=(60, 60, 60), font=small, anchor="ma")
  draw.text(((x0 + x1) / 2, bottom - 16), "step", fill=(60, 60, 60), font=small, anchor="mm")
  for name, series in runs.items():
    xy = [to_xy(s, v) for s, v in series if math.isfinite(v)]
    if len(xy) > 1:
      draw.line(xy, fill=colours[name], width=2)
    for x, y in xy if len(xy) <= 40 else xy[-1:]:
      draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colours[name])


def draw_png(curves: Curves, output: str, width: int = 1000, panel_height: int = 320) -> str:
  """Writes the panels of `curves` to `output` (PNG, `width` x panels * `panel_height`)."""
  try:
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("plot_metrics draws with Pillow, which is not installed: pip install "
                      "pillow (TensorBoard normally brings it).") from error
  if width < 200 or panel_height < 120:
    raise ValueError(f"--width={width} / --panel_height={panel_height} are too small to draw "
                     "(at least 200 / 120 pixels).")
  runs = list(dict.fromkeys(name for series in curves.values() for name in series))
  colours = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(runs)}
  image = Image.new("RGB", (width, panel_height * len(curves)), (255, 255, 255))
  draw = ImageDraw.Draw(image)
  font, small = _font(15), _font(12)
  for index, (figure, series) in enumerate(curves.items()):
    top = index * panel_height
    _draw_panel(draw, (0, top, width, top + panel_height), figure, series, colours, font, small)
  x = width - _MARGIN_RIGHT - 8
  for name in reversed(runs):  # Legend, right-aligned in the first panel's title row.
    text_width = draw.textlength(name, font=small)
    x -= text_width
    draw.text((x, 12), name, fill=(0, 0, 0), font=small)
    draw.rectangle((x - 16, 15, x - 6, 23), fill=colours[name])
    x -= 28
  folder = os.path.dirname(os.path.abspath(output))
  os.makedirs(folder, exist_ok=True)
  temporary = f"{output}.tmp-{os.getpid()}.png"
  image.save(temporary, format="PNG")
  os.replace(temporary, output)
  return output


def run(flag_values: flags.FlagValues, args: list[str]) -> None:
  """Reads the runs and writes the PNG."""
  if not args:
    raise _cli.UsageError("pass at least one MODEL_DIR (a folder with metrics.jsonl).")
  output = flag_values.output or os.path.join(args[0], "metrics.png")
  curves = read_curves(args)
  written = draw_png(curves, output, flag_values.width, flag_values.panel_height)
  print(f"Wrote {written}: {len(curves)} panels ({', '.join(curves)}) for "
        f"{len(args)} run{'s' if len(args) > 1 else ''}.")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (argv[0] is the program name); returns the exit code."""
  return _cli.main_from(PROG, USAGE, define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
