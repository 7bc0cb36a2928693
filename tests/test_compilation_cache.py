"""The commands' persistent compilation cache: a second process reuses the first one's programs."""

from __future__ import annotations

import os
import subprocess
import sys

# Runs in a fresh process (the cache must be set before anything compiles): parses the commands'
# flags, enables the cache as the commands do, compiles one program and prints the cache events.
_CHILD = """
import sys
import jax, jax.numpy as jnp
from prompt_tuning import cli
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
cli.define_flags()
cli.FLAGS(["prog"] + sys.argv[1:])
cli.enable_compilation_cache(cli.FLAGS.compilation_cache_dir)
jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print("hits", sum("cache_hits" in e for e in events))
"""


def _run(*flags: str, env_cache: str | None = None) -> int:
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("PROMPT_TUNING_COMPILATION_CACHE_DIR", None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if env_cache is not None:
    env["PROMPT_TUNING_COMPILATION_CACHE_DIR"] = env_cache
  out = subprocess.run([sys.executable, "-c", _CHILD, *flags], env=env, check=True,
                       capture_output=True, text=True).stdout
  return int(out.split("hits")[-1])


def test_second_run_reads_the_first_runs_programs(tmp_path):
  cache = tmp_path / "xla"
  assert _run(f"--compilation_cache_dir={cache}") == 0
  assert any(cache.iterdir())  # The compiled program was written.
  assert _run(f"--compilation_cache_dir={cache}") >= 1


def test_default_folder_comes_from_the_environment_and_empty_disables(tmp_path):
  cache = tmp_path / "from_env"
  assert _run(env_cache=str(cache)) == 0
  assert any(cache.iterdir())
  assert _run(env_cache=str(cache)) >= 1
  disabled = tmp_path / "unused"
  assert _run("--compilation_cache_dir=", env_cache=str(disabled)) == 0
  assert not disabled.exists()
