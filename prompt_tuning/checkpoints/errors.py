"""Errors of checkpoints that are missing, of no known format, or damaged (user errors)."""

from __future__ import annotations

from prompt_tuning.errors import UserInputError


class CheckpointNotFoundError(UserInputError, FileNotFoundError):
  """A checkpoint path that does not exist."""


class CheckpointFormatError(UserInputError, ValueError):
  """A path that exists but is no checkpoint of a format this library reads."""


class CheckpointReadError(UserInputError, OSError):
  """A checkpoint that exists but cannot be read: truncated, corrupt, partly copied."""
