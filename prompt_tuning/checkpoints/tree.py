"""Flattening nested parameter trees to and from '/'-joined variable paths.

A parameter tree is a nested mapping (dict or flax FrozenDict) whose keys are
strings and whose leaves are anything that is not a mapping (arrays,
`jax.ShapeDtypeStruct`s, shape tuples, ...). Its flat form maps each leaf's
path, e.g. "encoder/layers_0/attention/query/kernel", to the leaf.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEPARATOR = "/"


def flatten_params(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Returns {'/'-joined path: leaf} for every leaf of a nested mapping.

  Empty sub-mappings hold no leaves and so do not appear. Keys are visited in
  insertion order.

  Args:
    tree: nested mapping of string keys; any non-mapping value is a leaf.

  Raises:
    ValueError: a key is not a string, is empty or contains '/'.
  """
  flat: dict[str, Any] = {}

  def visit(node: Mapping[str, Any], prefix: str) -> None:
    for key, value in node.items():
      if not isinstance(key, str) or not key or SEPARATOR in key:
        where = prefix.rstrip(SEPARATOR) or "<root>"
        raise ValueError(
            f"Parameter tree key {key!r} under {where} cannot be part of a "
            f"'{SEPARATOR}'-joined path: keys must be non-empty strings "
            f"without '{SEPARATOR}'.")
      path = prefix + key
      if isinstance(value, Mapping):
        visit(value, path + SEPARATOR)
      else:
        flat[path] = value

  visit(tree, "")
  return flat


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Returns the nested dict whose `flatten_params` is `flat`.

  Args:
    flat: {'/'-joined path: leaf}.

  Raises:
    ValueError: a path is empty or has an empty component, or one path is both
      a leaf and the prefix of another path (e.g. "a/b" and "a/b/c").
  """
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    keys = path.split(SEPARATOR)
    if not all(keys):
      raise ValueError(
          f"Parameter path {path!r} has an empty component; paths look like "
          "'encoder/layers_0/attention/query/kernel'.")
    node = tree
    for depth, key in enumerate(keys[:-1]):
      child = node.setdefault(key, {})
      if not isinstance(child, dict):
        prefix = SEPARATOR.join(keys[:depth + 1])
        raise ValueError(
            f"Parameter path {path!r} goes through {prefix!r}, which is "
            "itself a leaf: a path cannot be both a variable and a scope.")
      node = child
    if keys[-1] in node:
      raise ValueError(
          f"Parameter path {path!r} is both a variable and a scope holding "
          "other variables.")
    node[keys[-1]] = value
  return tree
