"""Tests for reading T5X checkpoints (prompt_tuning.checkpoints.t5x)."""

from __future__ import annotations

import pathlib
import shutil

from flax import serialization
import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts

from conftest import shared_fixture
from prompt_tuning.checkpoints import t5x
from prompt_tuning.checkpoints import tree

EMBED, JOINED_KV, MLP, VOCAB = 4, 4, 8, 32128


def _tiny_t5_1_1_shapes() -> dict[str, tuple[int, ...]]:
  """Every parameter of the fixture's tiny T5 1.1 model, written out."""
  shapes = {
      "token_embedder/embedding": (VOCAB, EMBED),
      "encoder/relpos_bias/rel_embedding": (2, 4),
      "encoder/encoder_norm/scale": (EMBED,),
      "decoder/relpos_bias/rel_embedding": (2, 4),
      "decoder/decoder_norm/scale": (EMBED,),
      "decoder/logits_dense/kernel": (EMBED, VOCAB),
  }
  mlp = {"mlp/wi_0/kernel": (EMBED, MLP), "mlp/wi_1/kernel": (EMBED, MLP),
         "mlp/wo/kernel": (MLP, EMBED), "pre_mlp_layer_norm/scale": (EMBED,)}
  attention = {"query": (EMBED, JOINED_KV), "key": (EMBED, JOINED_KV),
               "value": (EMBED, JOINED_KV), "out": (JOINED_KV, EMBED)}
  for i in range(2):
    enc, dec = f"encoder/layers_{i}", f"decoder/layers_{i}"
    shapes[f"{enc}/pre_attention_layer_norm/scale"] = (EMBED,)
    shapes[f"{dec}/pre_self_attention_layer_norm/scale"] = (EMBED,)
    shapes[f"{dec}/pre_cross_attention_layer_norm/scale"] = (EMBED,)
    for name, shape in attention.items():
      shapes[f"{enc}/attention/{name}/kernel"] = shape
      shapes[f"{dec}/self_attention/{name}/kernel"] = shape
      shapes[f"{dec}/encoder_decoder_attention/{name}/kernel"] = shape
    for name, shape in mlp.items():
      shapes[f"{enc}/{name}"] = shape
      shapes[f"{dec}/{name}"] = shape
  return shapes


def _write_checkpoint(folder: pathlib.Path, contents: dict) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "checkpoint").write_bytes(serialization.msgpack_serialize(contents))


def _write_zarr(folder: pathlib.Path, name: str, array: np.ndarray,
                zarr_dtype: str) -> dict:
  """Writes `array` as T5X does; returns the relative spec for the msgpack."""
  metadata = {"chunks": list(array.shape), "compressor": {"id": "gzip", "level": 1},
              "dtype": zarr_dtype, "shape": list(array.shape)}
  store = ts.open({"driver": "zarr", "metadata": metadata,
                   "kvstore": {"driver": "file", "path": str(folder / name)}},
                  create=True).result()
  store.write(array).result()
  return {"driver": "zarr", "kvstore": {"driver": "file", "path": name},
          "metadata": metadata}


def test_index_lists_every_parameter_with_its_shape(t5x_tiny_checkpoint):
  index = t5x.t5x_variables(t5x_tiny_checkpoint)
  assert {p: v.shape for p, v in index.items()} == _tiny_t5_1_1_shapes()
  assert len(index) == 52
  assert {v.dtype for v in index.values()} == {np.dtype(np.float32)}
  # Norm scales and relpos tables are inline in the msgpack, kernels are not.
  assert index["encoder/encoder_norm/scale"].is_inline
  assert index["encoder/relpos_bias/rel_embedding"].is_inline
  assert not index["token_embedder/embedding"].is_inline


def test_index_reads_only_the_msgpack(t5x_tiny_checkpoint, tmp_path):
  # A folder with the msgpack but none of the tensorstore sub-folders.
  shutil.copy(t5x_tiny_checkpoint / "checkpoint", tmp_path / "checkpoint")
  index = t5x.t5x_variables(tmp_path)
  assert index["decoder/logits_dense/kernel"].shape == (EMBED, VOCAB)
  np.testing.assert_array_equal(
      index["encoder/encoder_norm/scale"].read(),
      t5x.load_t5x_variable(t5x_tiny_checkpoint, "encoder/encoder_norm/scale"))
  with pytest.raises(OSError) as error:
    index["decoder/logits_dense/kernel"].read()
  message = str(error.value)
  assert "'decoder/logits_dense/kernel'" in message
  assert "[4, 32128]" in message
  assert str(tmp_path / "target.decoder.logits_dense.kernel") in message


def test_full_load_has_every_shape_and_the_known_embedding(t5x_tiny_checkpoint):
  params = t5x.load_t5x_params(t5x_tiny_checkpoint)
  flat = tree.flatten_params(params)
  assert {p: a.shape for p, a in flat.items()} == _tiny_t5_1_1_shapes()
  assert all(isinstance(a, np.ndarray) and a.dtype == np.float32
             for a in flat.values())
  # The fixture's embedding table is published separately as a .npy file.
  embedding = np.load(shared_fixture("tiny_embeddings_32128x4.npy"))
  np.testing.assert_array_equal(params["token_embedder"]["embedding"], embedding)
  np.testing.assert_allclose(
      params["encoder"]["encoder_norm"]["scale"],
      [0.93264055, 1.02932, 0.98174715, 0.98736763], rtol=1e-7)


def test_step(t5x_tiny_checkpoint):
  assert t5x.t5x_checkpoint_step(t5x_tiny_checkpoint) == 3
  assert t5x.t5x_checkpoint_step(t5x_tiny_checkpoint / "checkpoint") == 3


@pytest.mark.parametrize("name", [
    "decoder/logits_dense/kernel",
    "decoder.logits_dense.kernel",
    "target.decoder.logits_dense.kernel",
    "optimizer/target/decoder/logits_dense/kernel",
    "/target/decoder/logits_dense/kernel/",
])
def test_single_variable_equals_full_read(t5x_tiny_checkpoint, name):
  full = t5x.load_t5x_params(t5x_tiny_checkpoint)
  one = t5x.load_t5x_variable(t5x_tiny_checkpoint / "checkpoint", name)
  assert one.shape == (EMBED, VOCAB)
  np.testing.assert_array_equal(one, full["decoder"]["logits_dense"]["kernel"])


def test_restore_dtype_bfloat16(t5x_tiny_checkpoint):
  full = tree.flatten_params(t5x.load_t5x_params(t5x_tiny_checkpoint))
  half = tree.flatten_params(
      t5x.load_t5x_params(t5x_tiny_checkpoint, restore_dtype="bfloat16"))
  assert half.keys() == full.keys()
  for path, array in half.items():
    assert array.dtype == ml_dtypes.bfloat16, path
    np.testing.assert_array_equal(
        array.astype(np.float32),
        full[path].astype(ml_dtypes.bfloat16).astype(np.float32))
  embedding = t5x.load_t5x_variable(
      t5x_tiny_checkpoint, "token_embedder/embedding", restore_dtype=np.float16)
  assert embedding.dtype == np.float16
  # 0.07208829 rounds to 0.0721 in float16 and 0.072265625 in bfloat16.
  assert float(embedding[0, 0]) == pytest.approx(0.0721, abs=2e-5)
  assert float(half["token_embedder/embedding"][0, 0]) == 0.072265625


def test_include_regex_reads_a_subset(t5x_tiny_checkpoint):
  params = t5x.load_t5x_params(t5x_tiny_checkpoint,
                               include="encoder/layers_1/mlp/.*")
  assert sorted(tree.flatten_params(params)) == [
      "encoder/layers_1/mlp/wi_0/kernel", "encoder/layers_1/mlp/wi_1/kernel",
      "encoder/layers_1/mlp/wo/kernel"]
  with pytest.raises(ValueError, match="include='prompt' matches no parameter"):
    t5x.load_t5x_params(t5x_tiny_checkpoint, include="prompt")


def test_unknown_variable_lists_close_matches(t5x_tiny_checkpoint):
  with pytest.raises(t5x.T5XVariableNotFoundError) as error:
    t5x.load_t5x_variable(t5x_tiny_checkpoint,
                          "encoder/layers_0/attention/qury/kernel")
  assert isinstance(error.value, KeyError)
  message = str(error.value)
  assert message.startswith("T5X checkpoint ")
  assert "no parameter 'encoder/layers_0/attention/qury/kernel'" in message
  assert "Closest: encoder/layers_0/attention/query/kernel," in message


def test_newer_layout_with_file_driver(tmp_path):
  folder = tmp_path / "checkpoint_7"
  kernel = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
  prompt = (np.arange(10, dtype=np.float32).reshape(5, 2) - 4.5).astype(
      ml_dtypes.bfloat16)
  scale = np.array([1.0, 2.0, 4.0], np.float32)
  contents = {
      "version": 3,
      "target": {
          "encoder": {
              "layers_0": {"mlp": {"wo": {"kernel": _write_zarr(
                  folder, "target.encoder.layers_0.mlp.wo.kernel", kernel,
                  "<f4")}}},
              "prompt": {"prompt": {"prompt": _write_zarr(
                  folder, "target.encoder.prompt.prompt.prompt", prompt,
                  "bfloat16")}},
              "encoder_norm": {"scale": scale},
          },
      },
      "state": {"step": np.array(7, np.int32),
                "param_states": {"encoder": {"encoder_norm": {"scale": None}}}},
  }
  _write_checkpoint(folder, contents)

  assert t5x.is_t5x_checkpoint(folder)
  assert t5x.t5x_checkpoint_step(folder) == 7
  index = t5x.t5x_variables(folder)
  assert {p: (v.shape, v.dtype) for p, v in index.items()} == {
      "encoder/layers_0/mlp/wo/kernel": ((3, 4), np.dtype(np.float32)),
      "encoder/prompt/prompt/prompt": ((5, 2), np.dtype(ml_dtypes.bfloat16)),
      "encoder/encoder_norm/scale": ((3,), np.dtype(np.float32)),
  }
  params = t5x.load_t5x_params(folder)
  np.testing.assert_array_equal(params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"],
                                kernel)
  np.testing.assert_array_equal(params["encoder"]["encoder_norm"]["scale"], scale)
  loaded_prompt = t5x.load_t5x_variable(folder, "encoder/prompt/prompt/prompt",
                                        restore_dtype=np.float32)
  assert loaded_prompt.dtype == np.float32
  np.testing.assert_array_equal(loaded_prompt[:, 0], [-4.5, -2.5, -0.5, 1.5, 3.5])


def test_version_2_bfloat16_stored_as_uint16(tmp_path):
  values = np.array([[1.5, -2.0], [0.25, 3.0]], ml_dtypes.bfloat16)
  spec = _write_zarr(tmp_path, "target.token_embedder.embedding",
                     values.view(np.uint16), "<u2")
  _write_checkpoint(tmp_path, {"version": 2, "optimizer": {
      "target": {"token_embedder": {"embedding": spec}},
      "state": {"step": np.array(11)}}})
  variable = t5x.t5x_variables(tmp_path)["token_embedder/embedding"]
  assert variable.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(variable.read(np.float32),
                                [[1.5, -2.0], [0.25, 3.0]])
  assert t5x.t5x_checkpoint_step(tmp_path) == 11


def test_not_a_checkpoint(tmp_path):
  assert not t5x.is_t5x_checkpoint(tmp_path)
  (tmp_path / "checkpoint_5").mkdir()
  (tmp_path / "checkpoint_10").mkdir()
  with pytest.raises(FileNotFoundError) as error:
    t5x.t5x_variables(tmp_path)
  assert f"No T5X checkpoint at {tmp_path}" in str(error.value)
  assert "step folders checkpoint_10, checkpoint_5" in str(error.value)
  # A msgpack file that holds no parameters.
  _write_checkpoint(tmp_path / "other", {"params": {"w": np.zeros(2)}})
  assert not t5x.is_t5x_checkpoint(tmp_path / "other")
  with pytest.raises(ValueError, match=r"top-level keys are \['params'\]"):
    t5x.t5x_variables(tmp_path / "other")
  # A TensorFlow checkpoint's text index file.
  (tmp_path / "tf").mkdir()
  (tmp_path / "tf" / "checkpoint").write_text(
      'model_checkpoint_path: "model.ckpt-1000000"\n')
  assert not t5x.is_t5x_checkpoint(tmp_path / "tf")
  with pytest.raises(ValueError, match="is not a T5X checkpoint: it is not msgpack"):
    t5x.t5x_variables(tmp_path / "tf")


def test_absolute_spec_for_each_location():
  spec = {"driver": "zarr",
          "kvstore": {"driver": "gfile", "path": "target.decoder.x.kernel"},
          "metadata": {"chunks": [2], "compressor": {"id": "gzip", "level": 1},
                       "dtype": "bfloat16", "shape": [4]}}
  assert t5x.absolute_tensorstore_spec(spec, "gs://bucket/runs/checkpoint_3") == {
      "driver": "zarr",
      "kvstore": {"driver": "gcs", "bucket": "bucket",
                  "path": "runs/checkpoint_3/target.decoder.x.kernel"},
      "metadata": {"dtype": "bfloat16", "shape": [4]}}
  assert t5x.absolute_tensorstore_spec(spec, "/ckpt/checkpoint_3")["kvstore"] == {
      "driver": "file", "path": "/ckpt/checkpoint_3/target.decoder.x.kernel"}
  # tensorstore < 0.1.14 kept the relative path at the top level.
  old = {"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": "t5x-dummy-bucket"},
         "path": "target.a", "metadata": {"dtype": "<f4", "shape": [2]}}
  assert t5x.absolute_tensorstore_spec(old, "/ckpt") == {
      "driver": "zarr", "kvstore": {"driver": "file", "path": "/ckpt/target.a"},
      "metadata": {"dtype": "<f4", "shape": [2]}}
  assert t5x.absolute_tensorstore_spec(old, "gs://b")["kvstore"] == {
      "driver": "gcs", "bucket": "b", "path": "target.a"}
  with pytest.raises(ValueError, match="kvstore driver 's3'"):
    t5x.absolute_tensorstore_spec(
        {"driver": "zarr", "kvstore": {"driver": "s3", "path": "x"}}, "/ckpt")
  # The caller's spec is not modified.
  assert spec["kvstore"] == {"driver": "gfile", "path": "target.decoder.x.kernel"}
