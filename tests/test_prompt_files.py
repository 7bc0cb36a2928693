"""Prompt files (`prompt_files`) and PEFT prompt-tuning adapters (`peft_interchange`)."""

from __future__ import annotations

import json
import os
import pathlib

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from prompt_tuning import gin_utils, peft_interchange, prompt_files, prompts
from prompt_tuning.models import T5Config

# T5 1.1 base / large shapes (only emb_dim and the architecture matter here).
T5_1_1_BASE = T5Config(emb_dim=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12)
DECODER_ONLY_BASE = T5_1_1_BASE.replace(architecture="decoder_only", num_encoder_layers=0)
T5_1_0_BASE = T5_1_1_BASE.replace(mlp_activations=("relu",), logits_via_embedding=True)
MT5_BASE = T5_1_1_BASE.replace(vocab_size=250112)
RELEASED = "released_prompts/t5_1_1_lm100k_base"
# The original paper's released prompts (float32 [100, 768]; shared/fixtures/README.md).
RELEASED_TASKS = ("sst2", "mrpc", "rte")


def _prompt(length: int = 5, width: int = 16, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(length, width)).astype(np.float32)


# --- prompt files ----------------------------------------------------------------------------


def test_save_then_load_is_exact_and_atomic(tmp_path):
  prompt = _prompt()
  written = prompt_files.save_prompt_file(tmp_path / "sub" / "prompt", prompt)
  assert written == tmp_path / "sub" / "prompt.npy"
  assert sorted(os.listdir(written.parent)) == ["prompt.npy"]  # No temporary file left.
  loaded = prompt_files.load_prompt_file(written, length=5, width=16)
  assert loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded, prompt)
  # Overwrites in place; the file is a plain .npy any numpy reads.
  prompt_files.save_prompt_file(written, 2 * prompt)
  np.testing.assert_array_equal(np.load(written), 2 * prompt)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, ml_dtypes.bfloat16])
def test_float_dtypes_are_read_as_float32(dtype):
  prompt = np.array([[0.5, -1.25], [2.0, 3.0]], dtype)
  got = prompt_files.validate_prompt(prompt, length=2, width=2)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, [[0.5, -1.25], [2.0, 3.0]])


def test_float64_file_is_cast(tmp_path):
  path = tmp_path / "p.npy"
  np.save(path, np.full((3, 4), 1 / 3))  # float64 on disk.
  got = prompt_files.load_prompt_file(path, length=3, width=4)
  assert got.dtype == np.float32 and got[0, 0] == np.float32(1 / 3)


def test_integer_prompt_is_refused(tmp_path):
  path = tmp_path / "ids.npy"
  np.save(path, np.arange(8, dtype=np.int32).reshape(2, 4))
  with pytest.raises(ValueError, match=r"prompt file .*ids\.npy has dtype int32.*floating-point"):
    prompt_files.load_prompt_file(path)


def test_wrong_length_names_file_shapes_and_prompt_length(tmp_path):
  path = tmp_path / "p.npy"
  np.save(path, _prompt(5, 768))
  with pytest.raises(ValueError) as error:
    prompt_files.load_prompt_file(path, T5_1_1_BASE, length=100)
  message = str(error.value)
  assert str(path) in message
  assert "[5, 768]" in message and "[100, 768]" in message
  assert "set PROMPT_LENGTH=5" in message and "d_model" not in message


@pytest.mark.parametrize("config, width, gin", [
    (T5_1_1_BASE, 1024, "models/t5_1_1_large_prompt.gin"),
    (T5_1_1_BASE, 4096, "models/t5_1_1_xxl_prompt.gin"),
    (MT5_BASE, 512, "models/mt5_small_prompt.gin"),
    (T5_1_0_BASE, 1024, "models/t5_1_0_large.gin + architectures/prompt_tuning.gin"),
    (DECODER_ONLY_BASE, 512, "models/decoder_only_small.gin + architectures/prompt_tuning.gin"),
])
def test_wrong_width_names_the_model_gin_file(tmp_path, config, width, gin):
  path = tmp_path / "p.npy"
  np.save(path, _prompt(100, width))
  with pytest.raises(ValueError) as error:
    prompt_files.load_prompt_file(path, config, length=100)
  message = str(error.value)
  assert f"has shape [100, {width}] but the model's prompt has shape [100, 768]" in message
  assert f"this prompt is for a model with d_model {width}" in message
  assert f"use {gin}" in message and "PROMPT_LENGTH" not in message


def test_suggested_gin_files_exist():
  config_dir = gin_utils.default_config_dir()
  for config in (T5_1_1_BASE, MT5_BASE, T5_1_0_BASE, DECODER_ONLY_BASE):
    for width in (512, 768, 1024, 2048, 4096):
      suggestion = prompt_files.model_gin_for_width(width, config)
      if suggestion is None:
        continue
      for name in suggestion.split(" + "):
        assert (config_dir / name).is_file(), name
  assert prompt_files.model_gin_for_width(640) is None


def test_both_mismatches_give_both_fixes():
  with pytest.raises(ValueError, match=r"d_model 1024.*t5_1_1_large_prompt\.gin; and set "
                                       r"PROMPT_LENGTH=20"):
    prompt_files.validate_prompt(_prompt(20, 1024), T5_1_1_BASE, length=100)


@pytest.mark.parametrize("shape, match", [
    ((1, 5, 16), r"shape \[1, 5, 16\].*2-D \[5, 16\].*save prompt\[0\]"),
    ((80,), r"shape \[80\].*2-D \[5, 16\]"),
])
def test_wrong_rank_is_refused(shape, match):
  with pytest.raises(ValueError, match=match):
    prompt_files.validate_prompt(np.zeros(shape, np.float32), length=5, width=16)


def test_non_finite_values_are_refused_on_load_but_saved(tmp_path):
  prompt = _prompt()
  prompt[1, 2] = np.nan
  prompt[3, 0] = np.inf
  path = prompt_files.save_prompt_file(tmp_path / "diverged.npy", prompt)  # Saving keeps it.
  with pytest.raises(ValueError, match=r"diverged\.npy holds 2 NaN or infinite values"):
    prompt_files.load_prompt_file(path)


def test_missing_npz_and_pickled_files_are_explained(tmp_path):
  with pytest.raises(ValueError, match=r"missing\.npy does not exist"):
    prompt_files.load_prompt_file(tmp_path / "missing.npy")
  npz = tmp_path / "prompts.npz"
  np.savez(npz, sst2=_prompt())
  with pytest.raises(ValueError, match=r"\.npz archive \(arrays \['sst2'\]\).*\['sst2'\]"):
    prompt_files.load_prompt_file(npz)
  pickled = tmp_path / "object.npy"
  np.save(pickled, np.array([{"prompt": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match=r"object\.npy is not a readable NumPy \.npy array"):
    prompt_files.load_prompt_file(pickled)


def test_np_load_initializer_uses_the_file_validator(tmp_path):
  path = tmp_path / "p.npy"
  np.save(path, _prompt(4, 8).astype(np.float64))
  got = prompts.np_load(path)(None, (4, 8))
  np.testing.assert_array_equal(got, _prompt(4, 8))
  with pytest.raises(ValueError, match=r"p\.npy has shape \[4, 8\].*\[4, 16\].*d_model 8"):
    prompts.np_load(path)(None, (4, 16))


# --- released prompts ------------------------------------------------------------------------


@pytest.mark.parametrize("task", RELEASED_TASKS)
def test_released_prompts_validate_against_t5_1_1_base(task):
  from conftest import shared_fixture
  path = shared_fixture(f"{RELEASED}/{task}.npy")
  prompt = prompt_files.load_prompt_file(path, T5_1_1_BASE, length=100)
  assert prompt.shape == (100, 768) and prompt.dtype == np.float32
  np.testing.assert_array_equal(prompt, np.load(path))
  with pytest.raises(ValueError, match=r"set PROMPT_LENGTH=100"):
    prompt_files.load_prompt_file(path, T5_1_1_BASE, length=20)
  large = T5_1_1_BASE.replace(emb_dim=1024)
  with pytest.raises(ValueError, match=r"d_model 768.*use models/t5_1_1_base_prompt\.gin"):
    prompt_files.load_prompt_file(path, large, length=100)


# --- PEFT adapters ---------------------------------------------------------------------------


def _read_adapter(directory: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  config = json.loads((directory / "adapter_config.json").read_text())
  return config, safetensors.numpy.load_file(str(directory / "adapter_model.safetensors"))


def test_export_t5_adapter_has_peft_layout_and_round_trips(tmp_path):
  prompt = _prompt(5, 768)
  out = peft_interchange.export_peft_adapter(prompt, tmp_path / "adapter", T5_1_1_BASE,
                                             base_model_name_or_path="google/t5-base-lm-adapt")
  assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
  config, tensors = _read_adapter(out)
  assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "SEQ_2_SEQ_LM"
  assert config["num_virtual_tokens"] == 5 and config["token_dim"] == 768
  assert config["num_transformer_submodules"] == 2
  assert config["num_layers"] == 12 and config["num_attention_heads"] == 12
  assert config["prompt_tuning_init"] == "RANDOM" and config["inference_mode"] is True
  assert config["base_model_name_or_path"] == "google/t5-base-lm-adapt"
  assert list(tensors) == ["prompt_embeddings"]
  embeddings = tensors["prompt_embeddings"]
  assert embeddings.shape == (10, 768) and embeddings.dtype == np.float32  # [S * P, D]
  np.testing.assert_array_equal(embeddings[:5], prompt)
  np.testing.assert_array_equal(embeddings[5:], 0.0)  # Rows PEFT allocates but never uses.
  back = peft_interchange.import_peft_adapter(out, T5_1_1_BASE, length=5)
  assert back.dtype == np.float32
  np.testing.assert_array_equal(back, prompt)


def test_export_from_file_one_submodule_and_decoder_only(tmp_path):
  prompt = _prompt(3, 768, seed=1)
  path = prompt_files.save_prompt_file(tmp_path / "p.npy", prompt)
  out = peft_interchange.export_peft_adapter(path, tmp_path / "a1", T5_1_1_BASE,
                                             num_transformer_submodules=1)
  config, tensors = _read_adapter(out)
  assert config["num_transformer_submodules"] == 1
  assert tensors["prompt_embeddings"].shape == (3, 768)
  np.testing.assert_array_equal(peft_interchange.import_peft_adapter(out), prompt)
  out = peft_interchange.export_peft_adapter(prompt, tmp_path / "lm", DECODER_ONLY_BASE)
  config, tensors = _read_adapter(out)
  assert config["task_type"] == "CAUSAL_LM" and config["num_transformer_submodules"] == 1
  np.testing.assert_array_equal(tensors["prompt_embeddings"], prompt)
  np.testing.assert_array_equal(peft_interchange.import_peft_adapter(out, DECODER_ONLY_BASE),
                                prompt)
  # Without a config the task type must be given.
  out = peft_interchange.export_peft_adapter(prompt, tmp_path / "bare", task_type="CAUSAL_LM")
  assert _read_adapter(out)[0]["num_layers"] is None
  with pytest.raises(ValueError, match="needs the model config or task_type"):
    peft_interchange.export_peft_adapter(prompt, tmp_path / "x")


def test_import_bfloat16_adapter(tmp_path):
  """PEFT saves the dtype the prompt was trained in; bfloat16 is read and cast to float32."""
  out = peft_interchange.export_peft_adapter(_prompt(2, 8), tmp_path, task_type="SEQ_2_SEQ_LM")
  bf16 = _prompt(4, 8, seed=3).astype(ml_dtypes.bfloat16)
  safetensors.numpy.save_file({"prompt_embeddings": bf16}, str(out / "adapter_model.safetensors"))
  got = peft_interchange.import_peft_adapter(out)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, bf16[:2].astype(np.float32))


def test_export_refuses_wrong_width_and_non_peft_prompt_configs(tmp_path):
  with pytest.raises(ValueError, match=r"d_model 1024.*t5_1_1_large_prompt\.gin"):
    peft_interchange.export_peft_adapter(_prompt(5, 1024), tmp_path, T5_1_1_BASE)
  with pytest.raises(ValueError, match="PROMPT_PLACEMENT='prefix_after_bos'.*only 'prefix'"):
    peft_interchange.export_peft_adapter(
        _prompt(5, 768), tmp_path, T5_1_1_BASE,
        prompt_config=prompts.PromptConfig(length=5, placement="prefix_after_bos"))
  with pytest.raises(ValueError, match="DECODER_ATTENDS_TO_PROMPT=False"):
    peft_interchange.export_peft_adapter(
        _prompt(5, 768), tmp_path, T5_1_1_BASE,
        prompt_config=prompts.PromptConfig(length=5, decoder_attends_to_prompt=False))
  with pytest.raises(ValueError, match="contradicts the model config"):
    peft_interchange.export_peft_adapter(_prompt(5, 768), tmp_path, T5_1_1_BASE,
                                         task_type="CAUSAL_LM")
  assert not (tmp_path / "adapter_config.json").exists()


def _write_adapter(directory: pathlib.Path, config: dict, embeddings: np.ndarray) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "adapter_config.json").write_text(json.dumps(config))
  safetensors.numpy.save_file({"prompt_embeddings": embeddings},
                              str(directory / "adapter_model.safetensors"))


def test_import_refuses_other_methods_and_inconsistent_adapters(tmp_path):
  base = peft_interchange.adapter_config_dict(4, 768, "SEQ_2_SEQ_LM")
  _write_adapter(tmp_path / "lora", {**base, "peft_type": "LORA"}, _prompt(8, 768))
  with pytest.raises(ValueError, match=r"peft_type 'LORA', not 'PROMPT_TUNING'"):
    peft_interchange.import_peft_adapter(tmp_path / "lora")
  _write_adapter(tmp_path / "pt", {**base, "peft_type": "P_TUNING"}, _prompt(8, 768))
  with pytest.raises(ValueError, match="P-tuning adapter stores a prompt encoder"):
    peft_interchange.import_peft_adapter(tmp_path / "pt")
  _write_adapter(tmp_path / "rows", base, _prompt(4, 768))  # S = 2 needs 8 rows.
  with pytest.raises(ValueError, match=r"shape \[4, 768\].*implies \[8, 768\]"):
    peft_interchange.import_peft_adapter(tmp_path / "rows")
  _write_adapter(tmp_path / "wide", peft_interchange.adapter_config_dict(4, 1024, "SEQ_2_SEQ_LM"),
                 _prompt(8, 1024))
  with pytest.raises(ValueError, match=r"wide has shape \[4, 1024\].*\[P, 768\].*d_model 1024"):
    peft_interchange.import_peft_adapter(tmp_path / "wide", T5_1_1_BASE)
  with pytest.raises(ValueError, match="set PROMPT_LENGTH=4"):
    peft_interchange.import_peft_adapter(tmp_path / "wide", length=100)
  with pytest.raises(ValueError, match="is for a SEQ_2_SEQ_LM model"):
    peft_interchange.import_peft_adapter(tmp_path / "wide", DECODER_ONLY_BASE)


def test_import_explains_missing_files(tmp_path):
  with pytest.raises(ValueError, match="adapter_config.json not found"):
    peft_interchange.import_peft_adapter(tmp_path)
  (tmp_path / "adapter_config.json").write_text(
      json.dumps(peft_interchange.adapter_config_dict(4, 8, "CAUSAL_LM")))
  (tmp_path / "adapter_model.bin").write_bytes(b"not read")
  with pytest.raises(ValueError, match=r"adapter_model\.bin.*safe_serialization=True"):
    peft_interchange.import_peft_adapter(tmp_path)


def test_released_prompt_round_trips_through_an_adapter(tmp_path):
  from conftest import shared_fixture
  path = shared_fixture(f"{RELEASED}/sst2.npy")
  out = peft_interchange.export_peft_adapter(path, tmp_path, T5_1_1_BASE,
                                             base_model_name_or_path="google/t5-base-lm-adapt")
  back = peft_interchange.import_peft_adapter(out, T5_1_1_BASE, length=100)
  np.testing.assert_array_equal(back, np.load(path))


def test_released_prompt_file_builds_t5_1_1_base_through_from_file_gin():
  """The gin route of PROMPT_FILE (configs/prompts/from_file.gin): the prompt initializer reads
  and validates the file while the base model's shapes are traced (no frozen weights allocated)."""
  from prompt_tuning import api
  from conftest import shared_fixture
  path = shared_fixture(f"{RELEASED}/rte.npy")
  gin_files = ["models/t5_1_1_base_prompt.gin", "prompts/from_file.gin"]

  def prompt_shapes(bindings):
    config = api._config_from_gin(gin_files, [f"PROMPT_FILE='{path}'", *bindings], ())
    module = api.build_any_model(config, api._prompt_config_from_gin())
    return api.prompt_subtree(api.param_shapes(module, config))

  shapes = prompt_shapes([])
  leaf = shapes["encoder"]["prompt"]["prompt"]["prompt"]
  assert leaf.shape == (100, 768) and leaf.dtype == np.float32
  with pytest.raises(ValueError, match=r"rte\.npy has shape \[100, 768\].*\[20, 768\].*"
                                       r"PROMPT_LENGTH=100"):
    prompt_shapes(["PROMPT_LENGTH=20"])


def test_remote_prompt_file_is_read_through_tf_gfile():
  """Prompt files on remote file systems (gs://...) are read with tf.io.gfile (ram:// here)."""
  import io
  tf = pytest.importorskip("tensorflow")
  prompt = _prompt(3, 4, seed=5)
  buffer = io.BytesIO()
  np.save(buffer, prompt)
  with tf.io.gfile.GFile("ram://prompts/p.npy", "wb") as f:
    f.write(buffer.getvalue())
  np.testing.assert_array_equal(
      prompt_files.load_prompt_file("ram://prompts/p.npy", length=3, width=4), prompt)
  with pytest.raises(ValueError, match=r"ram://prompts/q\.npy does not exist"):
    prompt_files.load_prompt_file("ram://prompts/q.npy")
