"""Keeps the commands' console to what a user should act on.

Dropped by default (the flags `--verbosity=N` / `--alsologtostderr` keep everything):
- TensorFlow's native start-up lines (CUDA stubs and a failed `cuInit` on CPU machines, CPU
  feature notes, oneDNN notes, absl's "before InitializeLog" banner), caught while TensorFlow
  is imported; any other line printed then is passed through.
- two seqio warnings that ask for nothing a user can do here: "uncached FunctionDataset for
  training" (in-memory and file tasks are not cached by design) and "sequence lengths longer
  than necessary" (printed at every evaluation; TASK_FEATURE_LENGTHS is chosen for training).
TensorFlow is also kept off the accelerators, as in T5X: JAX owns them and TensorFlow only feeds
data (otherwise it could reserve GPU memory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

NATIVE_NOISE = re.compile(
    r"cudart_stub\.cc|All log messages before absl::InitializeLog|cpu_feature_guard\.cc|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler|"
    r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) "
    r"factory|computation placer already registered|oneDNN custom operations are on|"
    r"TF-TRT Warning|pjrt_client\.cc:\d+\] (PjRt-IFRT device count|Addressable PjRt)")

SEQIO_NOISE = ("Using an uncached FunctionDataset for training",
               "Given sequence lengths are longer than necessary")


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
  """Captures file descriptor 2 (native libraries' logs) and re-prints it without NATIVE_NOISE."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", errors="replace")
      kept = [line for line in text.splitlines() if line.strip() and not NATIVE_NOISE.search(line)]
      if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (and seqio) with NATIVE_NOISE dropped; keeps TensorFlow off GPUs."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO lines (also XLA's, later) off.
  with native_stderr_filtered():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # Devices were initialised already (e.g. in a notebook): leave them.
      pass
    import seqio  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


class _DropSeqioNoise(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return not any(message.startswith(noise) for noise in SEQIO_NOISE)


_SEQIO_FILTER = _DropSeqioNoise()


def drop_seqio_noise() -> None:
  """Drops SEQIO_NOISE from absl's Python logger (idempotent)."""
  absl_logger = logging.getLogger("absl")
  if _SEQIO_FILTER not in absl_logger.filters:
    absl_logger.addFilter(_SEQIO_FILTER)
