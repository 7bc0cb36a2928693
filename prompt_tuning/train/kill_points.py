"""Test-only crash points: a training run SIGKILLs itself at a named moment of a checkpoint write.

Crash-safety tests set `PROMPT_TUNING_TEST_KILL_AT=<point>@<step>` (e.g. `orbax_tmp_written@14`)
in a training subprocess, let it die there, rerun the same command and compare what MODEL_DIR
holds with an uninterrupted run. Without the variable (any normal run) nothing happens.

Points, in the order a checkpoint of step N is written (`TrainCheckpointer.save`):
  checkpoint_start      nothing of step N written yet
  npy_tmp_written       the first prompt file's temporary copy written, not yet renamed
  exports_written       every `.npy` of step N written, orbax not started
  orbax_tmp_written     orbax wrote `checkpoint_N.orbax-checkpoint-tmp*`, not yet renamed (committed)
  checkpoint_committed  `checkpoint_N` committed and old checkpoints deleted
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any, Optional

ENV = "PROMPT_TUNING_TEST_KILL_AT"
POINTS = ("checkpoint_start", "npy_tmp_written", "exports_written", "orbax_tmp_written",
          "checkpoint_committed")
_STEP_FOLDER = re.compile(r"_(\d+)$")


def requested() -> Optional[tuple[str, int]]:
  """(point, step) named by $PROMPT_TUNING_TEST_KILL_AT, or None."""
  value = os.environ.get(ENV, "")
  if not value:
    return None
  point, _, step = value.partition("@")
  if point not in POINTS or not step.isdigit():
    raise ValueError(f"{ENV}={value!r}: expected <point>@<step> with a point of {POINTS}.")
  return point, int(step)


def reached(point: str, step: Optional[int]) -> None:
  """Kills this process (SIGKILL, no cleanup) if the test asked for `point` at `step`."""
  if step is not None and requested() == (point, int(step)):
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def temporary_path_class() -> Optional[type]:
  """An orbax temporary-path class that stops at `orbax_tmp_written`, when a test asks for it.

  None (orbax's default) unless $PROMPT_TUNING_TEST_KILL_AT names that point: orbax's atomic
  rename is the commit, so the kill must come from inside its finalize step.
  """
  asked = requested()
  if asked is None or asked[0] != "orbax_tmp_written":
    return None
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top

  class _KillBeforeRename(atomicity.AtomicRenameTemporaryPath):

    async def finalize(self, *args: Any, **kwargs: Any) -> Any:
      match = _STEP_FOLDER.search(self.get_final().name)
      reached("orbax_tmp_written", int(match.group(1)) if match else None)
      return await super().finalize(*args, **kwargs)

  return _KillBeforeRename
