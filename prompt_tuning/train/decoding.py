"""Moved to `prompt_tuning.inference.decoding` (decoding serves inference, not only training);
this name is kept for code that imports it from here."""

from prompt_tuning.inference.decoding import *  # noqa: F401,F403
