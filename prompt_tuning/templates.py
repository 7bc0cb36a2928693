"""Prompt templates: virtual tokens anywhere in the text (P-tuning's "[P:3] {x} [P:3] It was").

A template is text with `{column}` fields (Python `str.format`) and prompt slots `[P:n]`, n >= 1
positions each. The model's one prompt [P, D] (P = the sum of the slot lengths) is cut into
segments, slot k getting rows offset_k .. offset_k + n_k - 1 in template order, and each
segment is placed where its slot is in each example's tokens (`combine.insert_segments`).

Slot positions come from tokenizing the K + 1 text pieces between the slots separately: slot k
sits after pieces 0..k. Whitespace next to a slot only separates it from the text (each piece is
stripped where it touches a slot). Positions are token indices into the model's input row:
  * a slot at the very start of a template goes before everything the model reads (before a
    BOS or decoder start token): "[P:n] {x}" is exactly the "prefix" placement;
  * any other slot goes right before the first token of the piece after it (or after the
    piece before it); a trailing slot on T5 inputs sits before the EOS the task appends, as
    the "suffix_before_eos" placement does.
In task features a leading slot is written BEFORE_ALL (-1) and the others as positions among
the text tokens; the feature converters turn them into model-row positions (`model_slots`).
On a decoder-only model the output that predicts token t + 1 is the one right before it, so a
segment between two tokens is read before the next token is predicted (`combine.
remove_segments_causal`).
"""

from __future__ import annotations

import dataclasses
import re
import string
from typing import Any, Mapping, Sequence

SLOT = re.compile(r"\[P:(\d+)\]")


class TemplateError(ValueError):
  """A prompt template that cannot be used as written."""


@dataclasses.dataclass(frozen=True)
class Template:
  """A parsed template: K slot lengths and the K + 1 text pieces around them."""

  text: str
  pieces: tuple[str, ...]       # K + 1 `str.format` templates (may be empty).
  slot_lengths: tuple[int, ...]  # K >= 1 slot lengths, in template order.

  @property
  def length(self) -> int:
    """P, the total number of prompt positions."""
    return sum(self.slot_lengths)

  @property
  def leading(self) -> tuple[bool, ...]:
    """Per slot: whether only slots come before it in the template (it goes before everything
    the model reads)."""
    return tuple(not any(self.pieces[:k + 1]) for k in range(len(self.slot_lengths)))

  @property
  def is_prefix(self) -> bool:
    """Every slot before all text: the same as the "prefix" placement."""
    return all(self.leading)

  def columns(self) -> list[str]:
    """The `{column}` names the pieces read, in order of first use."""
    names = []
    for piece in self.pieces:
      for _, field, _, _ in string.Formatter().parse(piece):
        if field is None:
          continue
        name = field.split(".")[0].split("[")[0]
        if not name or name.isdigit():
          raise TemplateError(f"template {self.text!r} has a positional field {{{field}}}; "
                              "name a column instead, e.g. {sentence}.")
        if name not in names:
          names.append(name)
    return names

  def render_pieces(self, row: Mapping[str, Any]) -> list[str]:
    """The K + 1 text pieces of one example (fields filled from `row`)."""
    return [piece.format(**row) for piece in self.pieces]

  def render(self, row: Mapping[str, Any]) -> str:
    """The example as readable text, slots shown as `[P:n]` (for logs and JSONL files)."""
    parts = self.render_pieces(row)
    out = parts[0]
    for length, piece in zip(self.slot_lengths, parts[1:]):
      out = " ".join(p for p in (out, f"[P:{length}]", piece) if p)
    return out


def has_slots(text: Any) -> bool:
  """Whether `text` is a string with at least one `[P:n]` slot."""
  return isinstance(text, str) and SLOT.search(text) is not None


def parse_template(text: str) -> Template:
  """`text` -> Template; error when it has no slot or a slot of length 0."""
  if not isinstance(text, str):
    raise TemplateError(f"a prompt template is a string, got {text!r}.")
  matches = list(SLOT.finditer(text))
  if not matches:
    raise TemplateError(f"template {text!r} has no prompt slot: write the virtual tokens as "
                        "[P:n], e.g. '[P:3] {sentence} [P:3] It was'.")
  lengths = tuple(int(m.group(1)) for m in matches)
  if min(lengths) < 1:
    raise TemplateError(f"template {text!r} has a slot [P:0]; each slot needs n >= 1 positions.")
  bounds = [0] + [x for m in matches for x in (m.start(), m.end())] + [len(text)]
  pieces = []
  for index in range(len(matches) + 1):
    piece = text[bounds[2 * index]:bounds[2 * index + 1]]
    if index > 0:
      piece = piece.lstrip()
    if index < len(matches):
      piece = piece.rstrip()
    pieces.append(piece)
  template = Template(text, tuple(pieces), lengths)
  template.columns()  # Checks the fields.
  return template


def config_length(template: Any, placement: str, owner: str) -> int | None:
  """The prompt length P a method config's `template` sets (None: no template); a template
  places the prompt itself, so `placement` must be the default "prefix"."""
  if not template:
    return None
  parsed = parse_template(template)
  if placement != "prefix":
    raise TemplateError(f"{owner}: a prompt template places the prompt's segments itself; "
                        f"leave placement 'prefix' (got {placement!r}) or drop the template.")
  return parsed.length


# A leading slot's text position: before everything the model reads (see the module docstring).
BEFORE_ALL = -1


def text_slots(piece_lengths: Sequence[int], leading: Sequence[bool]) -> list[int]:
  """Token counts of the K + 1 pieces -> slot positions [K] in the concatenated text tokens
  (BEFORE_ALL for leading slots)."""
  positions, total = [], 0
  for count, first in zip(piece_lengths[:-1], leading):
    total += int(count)
    positions.append(BEFORE_ALL if first else total)
  return positions


def model_slots(slots: Sequence[int], num_prepended: int) -> list[int]:
  """Text slot positions -> positions in a model row that starts with `num_prepended` extra
  tokens (a BOS, a decoder start token); BEFORE_ALL -> 0."""
  return [0 if s == BEFORE_ALL else int(s) + num_prepended for s in slots]


__all__ = ["BEFORE_ALL", "SLOT", "Template", "TemplateError", "has_slots", "parse_template",
           "text_slots", "model_slots"]
