"""Every shipped model gin file parses and builds; gin errors name the problem and the fix."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest

from prompt_tuning import api, gin_utils
from prompt_tuning.models import build_model

CONFIG_DIR = gin_utils.default_config_dir()
MODEL_FILES = sorted(
    str(p.relative_to(CONFIG_DIR)) for folder in ("models", "test")
    for p in (CONFIG_DIR / folder).glob("*.gin"))

# Published T5 1.1 / mT5 parameter counts (with untied embedding and head), in billions.
T5_1_1_PARAMS = {"small": 0.077, "base": 0.248, "large": 0.783, "xl": 2.85, "xxl": 11.14}


_SIZES = ("tiny", "small", "base", "large", "xl", "xxl", "3b", "11b")


def _parameter_count(gin_file: str) -> int:
  files = [gin_file]
  if not any(size in pathlib.Path(gin_file).stem.split("_") for size in _SIZES):
    files.append("models/sizes/tiny.gin")  # Size-less recipes (e.g. t5_1_1_prompt.gin).
  config = api._config_from_gin(files, (), ())  # pylint: disable=protected-access
  shapes = api.param_shapes(build_model(config), config)
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))


def test_config_dir_is_the_shipped_one():
  assert (CONFIG_DIR / "architectures" / "t5_1_1.gin").is_file()
  assert len(MODEL_FILES) >= 20


@pytest.mark.parametrize("gin_file", MODEL_FILES)
def test_model_gin_file_builds_under_eval_shape(gin_file):
  count = _parameter_count(gin_file)
  assert count > 0
  size = gin_file.removeprefix("models/t5_1_1_").removesuffix(".gin")
  if gin_file.startswith("models/t5_1_1_") and size in T5_1_1_PARAMS:
    # e.g. T5 1.1 XXL: 11.14B parameters.
    assert count / 1e9 == pytest.approx(T5_1_1_PARAMS[size], rel=0.02)


def test_every_t5_1_1_size_is_shipped():
  assert {f"models/t5_1_1_{size}.gin" for size in T5_1_1_PARAMS} <= set(MODEL_FILES)


def test_mt5_uses_the_multilingual_vocabulary():
  config = api._config_from_gin(["models/mt5_small.gin"], (), ())  # pylint: disable=protected-access
  assert config.vocab_size == 250112
  assert config.mlp_activations == ("gelu", "linear")


def test_t5_1_0_recipe():
  config = api._config_from_gin(["models/t5_1_0_base.gin"], (), ())  # pylint: disable=protected-access
  assert config.mlp_activations == ("relu",) and config.logits_via_embedding
  assert (config.emb_dim, config.num_heads, config.mlp_dim) == (768, 12, 3072)


def test_bindings_override_files_and_later_files_win(tmp_path: pathlib.Path):
  override = tmp_path / "override.gin"
  override.write_text("NUM_HEADS = 3\n")
  config = api._config_from_gin(  # pylint: disable=protected-access
      ["models/t5_1_1_small.gin", str(override)], ["EMBED_DIM=96", "ACTIVATION_DTYPE='bfloat16'"],
      ())
  assert (config.num_heads, config.emb_dim, config.dtype) == (3, 96, "bfloat16")


def test_missing_macro_error_names_it():
  with pytest.raises(gin_utils.GinConfigError, match=r"gin macro EMBED_DIM .*--gin\.EMBED_DIM="):
    api._config_from_gin(["architectures/t5_1_1.gin"], (), ())  # pylint: disable=protected-access


def test_unknown_gin_file_lists_search_paths(tmp_path: pathlib.Path):
  with pytest.raises(gin_utils.GinConfigError, match=r"models/nope\.gin.*not found.*Searched: .*"
                     + str(tmp_path)):
    gin_utils.parse_gin_config(["models/nope.gin"], gin_search_paths=[str(tmp_path)])


def test_search_paths_resolve_user_files(tmp_path: pathlib.Path):
  (tmp_path / "mine.gin").write_text("include 'models/t5_1_1_small.gin'\nNUM_DECODER_LAYERS = 2\n")
  config = api._config_from_gin(["mine.gin"], (), [str(tmp_path)])  # pylint: disable=protected-access
  assert (config.num_encoder_layers, config.num_decoder_layers) == (8, 2)
