"""Tests for the command-line scripts (prompt_tuning/scripts), run in-process through `main`.

Inputs: the shared T5X fixture (skipped when ../shared is absent), the committed Hugging Face
fixture tests/fixtures/hf_t5_1_1_tiny and orbax checkpoints written in tmp_path.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import safetensors.numpy

from prompt_tuning.checkpoints import huggingface, orbax, t5x, tree
from prompt_tuning.scripts import (_cli, convert_checkpoint, diff_checkpoints, extract_variable,
                                   find_module)

HF_TINY = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf_t5_1_1_tiny"
PROMPT_PATH = "encoder/prompt/prompt/prompt"


def _run(module, *args: str) -> int:
  return module.main([module.PROG, *map(str, args)])


def _one_line_error(capsys, prog: str) -> str:
  """The stderr of a failed command: one `prog: error:` line (plus an optional --help hint)."""
  err = capsys.readouterr().err
  assert "Traceback" not in err
  lines = err.strip().splitlines()
  assert lines[0].startswith(f"{prog}: error: ")
  assert len(lines) == 1 or lines[1].startswith("Run `python -m")
  return lines[0]


def _small_params(seed: int = 0) -> dict:
  """A tiny parameter tree with a prompt, a kernel and an integer leaf."""
  rng = np.random.default_rng(seed)
  return {
      "encoder": {"prompt": {"prompt": {"prompt": rng.normal(size=(3, 4)).astype(np.float32)}},
                  "layers_0": {"mlp": {"wo": {"kernel": rng.normal(size=(8, 4)).astype(
                      np.float32)}}}},
      "token_embedder": {"embedding": rng.normal(size=(10, 4)).astype(np.float32)},
      "counter": np.arange(5, dtype=np.int32),
  }


# --- extract_variable ---------------------------------------------------------------------


@pytest.mark.parametrize("variable_path", [
    "encoder/relpos_bias/rel_embedding",
    "target/encoder/relpos_bias/rel_embedding",
    "optimizer/target/encoder/relpos_bias/rel_embedding",
    "target.encoder.relpos_bias.rel_embedding",
])
def test_extract_variable_from_t5x(t5x_tiny_checkpoint, tmp_path, variable_path):
  out = tmp_path / "rel.npy"
  assert _run(extract_variable, f"--checkpoint_dir={t5x_tiny_checkpoint}",
              f"--variable_path={variable_path}", f"--output_path={out}") == 0
  expected = t5x.load_t5x_variable(t5x_tiny_checkpoint, "encoder/relpos_bias/rel_embedding")
  got = np.load(out)
  assert got.dtype == np.float32 and got.shape == (2, 4)
  np.testing.assert_array_equal(got, expected)


def test_extract_variable_tensorstore_array_and_dtype(t5x_tiny_checkpoint, tmp_path):
  out = tmp_path / "sub" / "embedding"  # '.npy' is appended, folders created.
  assert _run(extract_variable, f"--checkpoint_dir={t5x_tiny_checkpoint}",
              "--variable_path=token_embedder/embedding", f"--output_path={out}",
              "--restore_dtype=float16") == 0
  got = np.load(tmp_path / "sub" / "embedding.npy")
  expected = t5x.load_t5x_variable(t5x_tiny_checkpoint, "token_embedder/embedding")
  assert got.dtype == np.float16 and got.shape == (32128, 4)
  np.testing.assert_array_equal(got, expected.astype(np.float16))


def test_extract_variable_from_orbax(tmp_path):
  params = _small_params()
  folder = orbax.save_params(tmp_path / "ckpt", params, step=7)
  for checkpoint_dir in (tmp_path / "ckpt", folder):
    out = tmp_path / "prompt.npy"
    assert _run(extract_variable, f"--checkpoint_dir={checkpoint_dir}",
                f"--variable_path=target/{PROMPT_PATH}", f"--output_path={out}") == 0
    np.testing.assert_array_equal(np.load(out), params["encoder"]["prompt"]["prompt"]["prompt"])
  # Integer variables keep their dtype whatever --restore_dtype says.
  assert _run(extract_variable, f"--checkpoint_dir={folder}", "--variable_path=counter",
              f"--output_path={tmp_path / 'counter.npy'}", "--restore_dtype=float64") == 0
  counter = np.load(tmp_path / "counter.npy")
  assert counter.dtype == np.int32 and counter.tolist() == [0, 1, 2, 3, 4]


def test_extract_variable_from_huggingface(tmp_path):
  out = tmp_path / "scale.npy"
  assert _run(extract_variable, f"--checkpoint_dir={HF_TINY}",
              "--variable_path=encoder/encoder_norm/scale", f"--output_path={out}") == 0
  hf = safetensors.numpy.load_file(str(HF_TINY / "model.safetensors"))
  np.testing.assert_array_equal(np.load(out), hf["encoder.final_layer_norm.weight"])


def test_extract_variable_errors(t5x_tiny_checkpoint, tmp_path, capsys):
  out = tmp_path / "x.npy"
  assert _run(extract_variable, f"--checkpoint_dir={t5x_tiny_checkpoint}",
              "--variable_path=encoder/relpos_bias/rel_embeding", f"--output_path={out}") == 1
  line = _one_line_error(capsys, "extract_variable")
  assert "no variable 'encoder/relpos_bias/rel_embeding'" in line
  assert "closest: encoder/relpos_bias/rel_embedding" in line
  assert _run(extract_variable, f"--checkpoint_dir={tmp_path / 'missing'}",
              "--variable_path=a", f"--output_path={out}") == 1
  assert "does not exist" in _one_line_error(capsys, "extract_variable")
  assert _run(extract_variable, f"--checkpoint_dir={tmp_path}", "--variable_path=a",
              f"--output_path={out}") == 1
  assert "is not a checkpoint this library reads" in _one_line_error(capsys, "extract_variable")
  assert _run(extract_variable, "--variable_path=a", f"--output_path={out}") == 2
  assert "--checkpoint_dir" in _one_line_error(capsys, "extract_variable")
  assert _run(extract_variable, f"--checkpoint_dir={t5x_tiny_checkpoint}", "--variable_path=a",
              f"--output_path={out}", "--restore_dtype=bfloat16") == 2
  _one_line_error(capsys, "extract_variable")
  assert not out.exists()


# --- find_module --------------------------------------------------------------------------


def test_find_module(capsys):
  import prompt_tuning  # pylint: disable=g-import-not-at-top
  assert _run(find_module, "prompt_tuning") == 0
  assert capsys.readouterr().out.strip() == str(pathlib.Path(prompt_tuning.__file__).parent)
  assert _run(find_module, "--module=prompt_tuning.configs") == 0
  configs = pathlib.Path(capsys.readouterr().out.strip())
  assert (configs / "architectures" / "t5_1_1.gin").is_file()
  assert _run(find_module, "json") == 0  # A package of the standard library.
  assert (pathlib.Path(capsys.readouterr().out.strip()) / "decoder.py").is_file()


def test_find_module_errors(capsys):
  assert _run(find_module, "no_such_module.sub") == 1
  assert "No module named 'no_such_module.sub'" in _one_line_error(capsys, "find_module")
  assert _run(find_module) == 2
  assert "exactly one module name" in _one_line_error(capsys, "find_module")
  assert _run(find_module, "sys") == 1  # Built in: no folder.
  assert "built into Python" in _one_line_error(capsys, "find_module")


# --- diff_checkpoints ---------------------------------------------------------------------


def test_max_abs_diff_exact_values():
  a = np.array([1.0, 2.0, np.nan, np.inf, 5.0])
  assert diff_checkpoints.max_abs_diff(a, a.copy()) == 0.0  # NaN == NaN, inf == inf here.
  b = np.array([1.0, 2.5, np.nan, np.inf, 4.0])
  assert diff_checkpoints.max_abs_diff(a, b) == 1.0
  c = np.array([1.0, 2.0, 3.0, np.inf, 5.0])
  assert diff_checkpoints.max_abs_diff(a, c) == np.inf  # NaN in one only.
  ints = np.arange(6, dtype=np.int32).reshape(2, 3)
  assert diff_checkpoints.max_abs_diff(ints, ints + 2) == 2.0
  # Sampling 1/4 of a constant difference still sees it.
  x = np.zeros(1000, np.float32)
  assert diff_checkpoints.max_abs_diff(x, x + 0.5, fraction=0.25) == 0.5


def test_diff_reports_exactly_the_changed_variables(tmp_path, capsys):
  params_a = _small_params()
  orbax.save_params(tmp_path / "a", params_a, step=1)
  flat = tree.flatten_params(params_a)
  flat[PROMPT_PATH] = flat[PROMPT_PATH] + np.float32(0.25)  # Changed values.
  flat["token_embedder/embedding"] = np.zeros((11, 4), np.float32)  # Changed shape.
  del flat["counter"]  # Only in A.
  flat["encoder/extra/scale"] = np.ones(4, np.float32)  # Only in B.
  orbax.save_params(tmp_path / "b", tree.unflatten_params(flat), step=2)
  summary = tmp_path / "diff.json"
  assert _run(diff_checkpoints, tmp_path / "a", tmp_path / "b",
              f"--summary_file={summary}") == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == ("4 variables differ: counter, encoder/extra/scale, token_embedder/embedding, "
                     f"{PROMPT_PATH}")
  report = json.loads(summary.read_text())
  assert report["only_in_a"] == ["counter"]
  assert report["only_in_b"] == ["encoder/extra/scale"]
  assert report["shape_differs"] == {"token_embedder/embedding": [[10, 4], [11, 4]]}
  assert list(report["values_differ"]) == [PROMPT_PATH]
  assert report["values_differ"][PROMPT_PATH] == pytest.approx(0.25, abs=1e-6)
  assert report["equal"] == ["encoder/layers_0/mlp/wo/kernel"]
  assert report["num_differing"] == 4 and report["format_a"] == report["format_b"] == "orbax"

  # A tolerance above the change makes the prompt equal; --variables restricts the check.
  assert _run(diff_checkpoints, tmp_path / "a", tmp_path / "b", "--tolerance=0.3",
              "--variables=encoder/.*", "--fraction_to_sample=0.5",
              f"--summary_file={summary}") == 0
  report = json.loads(summary.read_text())
  assert report["values_differ"] == {} and report["only_in_b"] == ["encoder/extra/scale"]
  assert sorted(report["equal"]) == ["encoder/layers_0/mlp/wo/kernel", PROMPT_PATH]
  assert capsys.readouterr().out.strip().splitlines()[-1] == (
      "1 variable differs: encoder/extra/scale")


def test_diff_t5x_against_its_orbax_copy_with_a_new_prompt(t5x_tiny_checkpoint, tmp_path, capsys):
  params = t5x.load_t5x_params(t5x_tiny_checkpoint)
  flat = tree.flatten_params(params)
  flat[PROMPT_PATH] = np.full((2, 4), 0.5, np.float32)
  orbax.save_params(tmp_path / "tuned", tree.unflatten_params(flat), step=3)
  assert _run(diff_checkpoints, t5x_tiny_checkpoint, tmp_path / "tuned") == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == f"1 variable differs: {PROMPT_PATH}"
  assert "  equal:         52 variables" in out


def test_diff_errors(tmp_path, capsys):
  orbax.save_params(tmp_path / "a", _small_params(), step=1)
  assert _run(diff_checkpoints, tmp_path / "a") == 2
  assert "exactly two checkpoints" in _one_line_error(capsys, "diff_checkpoints")
  assert _run(diff_checkpoints, tmp_path / "a", tmp_path / "a", "--variables=prompt") == 1
  assert "matches no variable" in _one_line_error(capsys, "diff_checkpoints")
  assert _run(diff_checkpoints, tmp_path / "a", tmp_path / "a", "--variables=(") == 2
  assert "not a valid regular expression" in _one_line_error(capsys, "diff_checkpoints")
  assert _run(diff_checkpoints, tmp_path / "a", tmp_path / "a", "--fraction_to_sample=0") == 2
  _one_line_error(capsys, "diff_checkpoints")
  assert _run(diff_checkpoints, tmp_path / "a", tmp_path / "a", "--fraction_to_sample=2") == 2
  _one_line_error(capsys, "diff_checkpoints")


# --- convert_checkpoint -------------------------------------------------------------------


def test_convert_hf_to_orbax_to_hf_round_trip(tmp_path):
  assert _run(convert_checkpoint, f"--input_path={HF_TINY}",
              f"--output_dir={tmp_path / 'orbax'}") == 0
  # The orbax checkpoint holds the Hugging Face weights in our tree and the model config.
  expected_config = huggingface.config_from_hf(HF_TINY)
  meta = orbax.read_meta(tmp_path / "orbax" / "checkpoint_0")
  assert convert_checkpoint.config_from_meta(meta) == expected_config
  assert meta["source_format"] == "huggingface"
  ours = tree.flatten_params(orbax.load_params(tmp_path / "orbax"))
  direct = tree.flatten_params(huggingface.load_hf_t5_params(HF_TINY))
  assert sorted(ours) == sorted(direct)
  for path, value in direct.items():
    np.testing.assert_array_equal(ours[path], value, err_msg=path)

  # Back to Hugging Face with no gin files: identical tensors under identical names.
  assert _run(convert_checkpoint, f"--input_path={tmp_path / 'orbax'}",
              f"--output_dir={tmp_path / 'hf'}") == 0
  original = safetensors.numpy.load_file(str(HF_TINY / "model.safetensors"))
  round_trip = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
  assert sorted(round_trip) == sorted(original)
  for name, value in original.items():
    assert round_trip[name].dtype == value.dtype
    np.testing.assert_array_equal(round_trip[name], value, err_msg=name)
  assert huggingface.config_from_hf(tmp_path / "hf") == expected_config


def test_convert_t5x_to_orbax_to_hf(t5x_tiny_checkpoint, tmp_path, capsys):
  # Without gin files the orbax checkpoint stores no config, so it cannot go to Hugging Face.
  assert _run(convert_checkpoint, f"--input_path={t5x_tiny_checkpoint}",
              f"--output_dir={tmp_path / 'bare'}") == 0
  assert "Stored no model config" in capsys.readouterr().out
  assert _run(convert_checkpoint, f"--input_path={tmp_path / 'bare'}",
              f"--output_dir={tmp_path / 'hf_bare'}") == 2
  assert "--gin_file" in _one_line_error(capsys, "convert_checkpoint")

  assert _run(convert_checkpoint, f"--input_path={t5x_tiny_checkpoint}",
              f"--output_dir={tmp_path / 'orbax'}", "--gin_file=test/t5_1_1_tiny.gin") == 0
  folder = tmp_path / "orbax" / "checkpoint_3"  # The step comes from the T5X folder name.
  config = convert_checkpoint.config_from_meta(orbax.read_meta(folder))
  assert (config.emb_dim, config.num_heads, config.head_dim, config.relpos_max_distance) == (
      4, 2, 2, 8)
  t5x_flat = tree.flatten_params(t5x.load_t5x_params(t5x_tiny_checkpoint))
  orbax_flat = tree.flatten_params(orbax.load_params(folder))
  assert sorted(orbax_flat) == sorted(t5x_flat)
  for path, value in t5x_flat.items():
    np.testing.assert_array_equal(orbax_flat[path], value, err_msg=path)

  # orbax -> Hugging Face -> our tree again gives the T5X values.
  assert _run(convert_checkpoint, f"--input_path={folder}", f"--output_dir={tmp_path / 'hf'}") == 0
  hf_flat = tree.flatten_params(huggingface.load_hf_t5_params(tmp_path / "hf"))
  assert sorted(hf_flat) == sorted(t5x_flat)
  for path, value in t5x_flat.items():
    np.testing.assert_array_equal(hf_flat[path], value, err_msg=path)
  hf_state = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
  np.testing.assert_array_equal(hf_state["lm_head.weight"],
                                t5x_flat["decoder/logits_dense/kernel"].T)


def test_convert_with_a_gin_config_that_does_not_fit(t5x_tiny_checkpoint, tmp_path, capsys):
  assert _run(convert_checkpoint, f"--input_path={t5x_tiny_checkpoint}",
              f"--output_dir={tmp_path / 'o'}", "--gin_file=test/t5_1_1_tiny.gin",
              "--gin.EMBED_DIM=8") == 1
  line = _one_line_error(capsys, "convert_checkpoint")  # Names the first mismatch.
  assert "do not fit the model" in line and "expects [8]" in line
  assert not (tmp_path / "o").exists()


def test_convert_errors(tmp_path, capsys):
  assert _run(convert_checkpoint, f"--input_path={HF_TINY}", f"--output_dir={tmp_path / 'o'}",
              "--gin.EMBED_DIM=8") == 2
  assert "need --gin_file" in _one_line_error(capsys, "convert_checkpoint")
  assert _run(convert_checkpoint, f"--input_path={HF_TINY}", f"--output_dir={tmp_path / 'o'}",
              "--gin.EMBED_DIM") == 2
  assert "--gin.NAME=VALUE" in _one_line_error(capsys, "convert_checkpoint")
  # Existing output is kept unless --overwrite.
  assert _run(convert_checkpoint, f"--input_path={HF_TINY}", f"--output_dir={tmp_path / 'o'}") == 0
  capsys.readouterr()
  assert _run(convert_checkpoint, f"--input_path={HF_TINY}", f"--output_dir={tmp_path / 'o'}") == 1
  assert "--overwrite" in _one_line_error(capsys, "convert_checkpoint")
  assert _run(convert_checkpoint, f"--input_path={HF_TINY}", f"--output_dir={tmp_path / 'o'}",
              "--overwrite") == 0


def test_rewrite_gin_args():
  assert _cli.rewrite_gin_args(["p", "--gin.PROMPT_LENGTH=5", "--gin_file=a.gin", "x"]) == [
      "p", "--gin_bindings=PROMPT_LENGTH=5", "--gin_file=a.gin", "x"]
  with pytest.raises(_cli.UsageError, match="--gin.NAME=VALUE"):
    _cli.rewrite_gin_args(["p", "--gin.PROMPT_LENGTH"])


def test_help_exits_zero(capsys):
  for module in (extract_variable, find_module, diff_checkpoints, convert_checkpoint):
    assert _run(module, "--help") == 0
    assert capsys.readouterr().out.startswith("Usage: python -m prompt_tuning.scripts.")
