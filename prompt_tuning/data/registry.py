"""Idempotent seqio registration: adding a name again replaces the old entry."""

from __future__ import annotations

from typing import Any, Sequence

import seqio


def add_task(name: str, **kwargs: Any) -> seqio.Task:
  """`seqio.TaskRegistry.add`, replacing a task already registered as `name`."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, **kwargs)


def add_mixture(name: str, tasks: Sequence[Any], **kwargs: Any
                ) -> seqio.Mixture:
  """`seqio.MixtureRegistry.add`, replacing a mixture already named `name`.

  Mixtures hold the task objects they were built from, so register a mixture
  after (re-)registering its tasks.
  """
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks, **kwargs)
