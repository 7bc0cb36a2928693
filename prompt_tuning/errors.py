"""Errors a user fixes (a flag, a file, the machine), as opposed to bugs in this library.

Every error class the commands should print as one `error: ...` line, without a traceback,
derives from `UserInputError` (besides a built-in type such as ValueError, so callers that catch
those keep working). Its message names the problem, the value or path involved and the fix.
Anything else reaching a command is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Optional

# Status codes TensorStore (under orbax and T5X checkpoints) puts in front of storage failures.
_STORAGE_CODES = ("RESOURCE_EXHAUSTED", "DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION",
                  "NOT_FOUND", "PERMISSION_DENIED", "UNAVAILABLE", "INVALID_ARGUMENT",
                  "ALREADY_EXISTS", "DEADLINE_EXCEEDED")
_STORAGE_STATUS = re.compile(rf"\b({'|'.join(_STORAGE_CODES)}): ")
_OS_ERROR_CODE = re.compile(r"\[os_error_code='(\d+)'\]")
# Errors of the machine rather than of the program: full disk, quota, permissions, read-only.
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                      errno.EFBIG, errno.EIO)
_MAX_DETAIL = 300


class UserInputError(Exception):
  """Marks an error the user can fix; the commands print its first line, no traceback."""


class ConfigValueError(UserInputError, ValueError):
  """A configuration value (gin macro, flag, argument) outside what it may be."""


def check_int(value: object, name: str, *, minimum: int = 1, allow_none: bool = False,
              example: object = None) -> None:
  """Raises ConfigValueError unless `value` is an int >= `minimum` (or None when allowed).

  `name` is the gin macro users set (e.g. 'BATCH_SIZE'); `example` a good value for the fix.
  """
  if value is None and allow_none:
    return
  if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
    return
  what = "a whole number" if minimum <= 0 else (
      "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}")
  if allow_none:
    what += " or None"
  example = example if example is not None else max(minimum, 1)
  raise ConfigValueError(f"{name}={value!r} must be {what}: pass e.g. --gin.{name}={example}.")


def one_line(text: str, limit: int = _MAX_DETAIL) -> str:
  """`text` on one line, TensorStore's spec / source-location suffixes cut, at most `limit` chars."""
  text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
  text = re.split(r" \[(?:tensorstore_spec|source locations)=", text)[0]
  return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def check_dtype(value: object, name: str, *, allow_none: bool = True) -> None:
  """Raises ConfigValueError unless `value` names a floating-point dtype (e.g. 'bfloat16')."""
  if value is None and allow_none:
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  try:
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    dtype = np.dtype(getattr(ml_dtypes, value) if isinstance(value, str) and
                     hasattr(ml_dtypes, value) else value)
    ok = dtype.kind == "f" or dtype.name == "bfloat16"
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigValueError(f"{name}={value!r} is not a floating-point dtype: pass e.g. "
                           f"--gin.{name}=\"'bfloat16'\" (or 'float32'{', or None' if allow_none else ''}).")


def storage_problem(error: BaseException) -> Optional[str]:
  """A one-line description of `error` if it is a storage failure, else None.

  Storage failures: OSErrors (missing file, full disk, permissions, ...) and the ValueErrors
  TensorStore raises with a status code (e.g. 'RESOURCE_EXHAUSTED: Error writing ...',
  'DATA_LOSS: ...'). Other errors are not classified (they may be bugs).
  """
  if isinstance(error, OSError):
    if not error.strerror:  # e.g. gin's proxy of a re-raised OSError: only its text is left.
      return one_line(str(error).split("\n", 1)[0] or type(error).__name__)
    where = f" ({error.filename})" if error.filename else ""
    return one_line(f"{error.strerror}{where}")
  text = str(error)
  if isinstance(error, ValueError) and _STORAGE_STATUS.search(text.split("\n", 1)[0]):
    code = _OS_ERROR_CODE.search(text)
    if code:  # Say the operating system's reason first: it is what the user acts on.
      return one_line(f"{os.strerror(int(code.group(1)))}: {text}")
    return one_line(text)
  return None


def os_errno(error: BaseException) -> Optional[int]:
  """The errno of an OSError, also when gin re-raised it as a proxy that kept only its text."""
  if not isinstance(error, OSError):
    return None
  if error.errno is not None:
    return error.errno
  match = re.match(r"\[Errno (\d+)\]", str(error))
  return int(match.group(1)) if match else None


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` says the disk (or quota) is full."""
  if os_errno(error) in (errno.ENOSPC, errno.EDQUOT):
    return True
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "No space left on device" in text
