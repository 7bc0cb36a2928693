"""Tests for prompt_tuning.checkpoints.huggingface against tiny transformers-made fixtures.

The fixtures (tests/fixtures/hf_t5_1_{1,0}_tiny) come from tools/make_hf_t5_golden.py; this
file needs no torch. Parity is checked at decoder positions with decoder_target_tokens > 0:
there the T5X decoder mask (from targets) and Hugging Face's (from decoder inputs) coincide.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from prompt_tuning.checkpoints import huggingface as hf
from prompt_tuning.models.config import T5Config

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
T5_1_1 = FIXTURES / "hf_t5_1_1_tiny"
T5_1_0 = FIXTURES / "hf_t5_1_0_tiny"
_SIZES = dict(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
              num_encoder_layers=2, num_decoder_layers=3, relpos_num_buckets=8,
              relpos_max_distance=16, dropout_rate=0.0, layer_norm_epsilon=1e-6)
CONFIG_1_1 = T5Config(**_SIZES, mlp_activations=("gelu", "linear"), logits_via_embedding=False)
CONFIG_1_0 = T5Config(**_SIZES, mlp_activations=("relu",), logits_via_embedding=True)


def _flat(params, prefix=""):
  out = {}
  for key, value in params.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}/"))
    else:
      out[prefix + key] = value
  return out


def _expected_shapes(gated: bool, tied: bool) -> dict[str, tuple[int, ...]]:
  """Hand-listed tree of the tiny fixtures: D=16, heads*kv=16, F=32, V=64, 8 buckets."""
  mlp = {"mlp/wi_0/kernel": (16, 32), "mlp/wi_1/kernel": (16, 32)} if gated else {
      "mlp/wi/kernel": (16, 32)}
  mlp["mlp/wo/kernel"] = (32, 16)
  attention = {"query/kernel": (16, 16), "key/kernel": (16, 16), "value/kernel": (16, 16),
               "out/kernel": (16, 16)}
  shapes = {"token_embedder/embedding": (64, 16),
            "encoder/relpos_bias/rel_embedding": (2, 8), "encoder/encoder_norm/scale": (16,),
            "decoder/relpos_bias/rel_embedding": (2, 8), "decoder/decoder_norm/scale": (16,)}
  for i in range(2):
    layer = f"encoder/layers_{i}/"
    shapes.update({layer + "attention/" + k: v for k, v in attention.items()})
    shapes.update({layer + k: v for k, v in mlp.items()})
    shapes[layer + "pre_attention_layer_norm/scale"] = (16,)
    shapes[layer + "pre_mlp_layer_norm/scale"] = (16,)
  for i in range(3):
    layer = f"decoder/layers_{i}/"
    shapes.update({layer + "self_attention/" + k: v for k, v in attention.items()})
    shapes.update({layer + "encoder_decoder_attention/" + k: v for k, v in attention.items()})
    shapes.update({layer + k: v for k, v in mlp.items()})
    for norm in ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm",
                 "pre_mlp_layer_norm"):
      shapes[f"{layer}{norm}/scale"] = (16,)
  if not tied:
    shapes["decoder/logits_dense/kernel"] = (16, 64)
  return shapes


def _copy_config_only(src: pathlib.Path, dst: pathlib.Path, **config_changes) -> dict:
  dst.mkdir(parents=True, exist_ok=True)
  config = json.loads((src / "config.json").read_text())
  config.update(config_changes)
  (dst / "config.json").write_text(json.dumps(config))
  return config


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path,expected", [(T5_1_1, CONFIG_1_1), (T5_1_0, CONFIG_1_0)])
def test_config_from_hf_fixture(path, expected):
  assert hf.config_from_hf(path) == expected
  assert hf.config_from_hf(path / "config.json") == expected
  assert hf.config_from_hf(json.loads((path / "config.json").read_text())) == expected


def test_config_from_hf_head_conventions():
  # transformers < 5: tie_word_embeddings alone decides; absent means tied (t5-small).
  assert not hf.config_from_hf({"feed_forward_proj": "gated-gelu",
                                "tie_word_embeddings": False}).logits_via_embedding
  assert hf.config_from_hf({"feed_forward_proj": "relu"}).logits_via_embedding
  # transformers >= 5 always writes tie_word_embeddings=true; scale_decoder_outputs decides.
  assert not hf.config_from_hf({"tie_word_embeddings": True,
                                "scale_decoder_outputs": False}).logits_via_embedding


def test_config_from_hf_defaults_and_mt5():
  config = hf.config_from_hf({"model_type": "mt5", "feed_forward_proj": "gated-gelu",
                              "vocab_size": 250112, "d_model": 512, "d_kv": 64, "d_ff": 1024,
                              "num_heads": 6, "num_layers": 8, "num_decoder_layers": None,
                              "tie_word_embeddings": False})
  assert config == T5Config(vocab_size=250112, emb_dim=512, num_heads=6, head_dim=64,
                            mlp_dim=1024, num_encoder_layers=8, num_decoder_layers=8,
                            mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                            relpos_num_buckets=32, relpos_max_distance=128, dropout_rate=0.1)


@pytest.mark.parametrize("changes,message", [
    ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj='gated-silu'"),
    ({"model_type": "umt5"}, "model_type='umt5'"),
    ({"is_encoder_decoder": False}, "is_encoder_decoder=False"),
])
def test_config_from_hf_rejects_unsupported(changes, message):
  with pytest.raises(ValueError, match=message):
    hf.config_from_hf({"model_type": "t5", **changes})


def test_config_from_hf_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.config_from_hf(tmp_path)


@pytest.mark.parametrize("config", [CONFIG_1_1, CONFIG_1_0])
def test_hf_config_round_trip(config):
  hf_config = hf.hf_config_from_config(config)
  assert hf_config["feed_forward_proj"] == ("relu" if config.logits_via_embedding else
                                            "gated-gelu")
  assert hf_config["tie_word_embeddings"] == config.logits_via_embedding
  assert hf.config_from_hf(hf_config) == config


def test_hf_config_from_config_rejects_decoder_only():
  with pytest.raises(ValueError, match="architecture='decoder_only'"):
    hf.hf_config_from_config(CONFIG_1_1.replace(architecture="decoder_only"))


# --- weights ---------------------------------------------------------------------------------


def test_is_hf_checkpoint(tmp_path):
  assert hf.is_hf_checkpoint(T5_1_1)
  assert not hf.is_hf_checkpoint(tmp_path)
  (tmp_path / "config.json").write_text("{}")
  assert not hf.is_hf_checkpoint(tmp_path)
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  assert hf.is_hf_checkpoint(tmp_path)
  with pytest.raises(ValueError, match="safetensors"):
    hf.load_hf_t5_params(tmp_path, config=CONFIG_1_1)


@pytest.mark.parametrize("path,gated,tied", [(T5_1_1, True, False), (T5_1_0, False, True)])
def test_load_tree_paths_and_shapes(path, gated, tied):
  flat = _flat(hf.load_hf_t5_params(path))
  assert {k: v.shape for k, v in flat.items()} == _expected_shapes(gated, tied)
  assert all(v.dtype == np.float32 for v in flat.values())


def test_load_transposes_and_places_tensors():
  raw = safetensors.numpy.load_file(str(T5_1_1 / "model.safetensors"))
  flat = _flat(hf.load_hf_t5_params(T5_1_1))
  enc, dec = "encoder.block.{}.layer.", "decoder.block.{}.layer."
  pairs = {
      "token_embedder/embedding": raw["shared.weight"],
      "encoder/layers_1/attention/query/kernel": raw[enc.format(1) + "0.SelfAttention.q.weight"].T,
      "encoder/layers_0/attention/out/kernel": raw[enc.format(0) + "0.SelfAttention.o.weight"].T,
      "decoder/layers_2/encoder_decoder_attention/value/kernel":
          raw[dec.format(2) + "1.EncDecAttention.v.weight"].T,
      "decoder/layers_2/mlp/wi_1/kernel": raw[dec.format(2) + "2.DenseReluDense.wi_1.weight"].T,
      "decoder/layers_1/pre_cross_attention_layer_norm/scale":
          raw[dec.format(1) + "1.layer_norm.weight"],
      "decoder/relpos_bias/rel_embedding":
          raw[dec.format(0) + "0.SelfAttention.relative_attention_bias.weight"].T,
      "decoder/decoder_norm/scale": raw["decoder.final_layer_norm.weight"],
      "decoder/logits_dense/kernel": raw["lm_head.weight"].T,
  }
  for path, expected in pairs.items():
    np.testing.assert_array_equal(flat[path], expected, err_msg=path)
  assert not np.array_equal(raw["lm_head.weight"], raw["shared.weight"])


@pytest.mark.parametrize("path", [T5_1_1, T5_1_0])
def test_state_dict_round_trip_is_bit_exact(path):
  raw = safetensors.numpy.load_file(str(path / "model.safetensors"))
  config = hf.config_from_hf(path)
  state = hf.hf_state_dict_from_params(hf.load_hf_t5_params(path), config)
  assert sorted(state) == sorted(raw)
  for name, value in raw.items():
    assert state[name].dtype == value.dtype and state[name].shape == value.shape, name
    np.testing.assert_array_equal(state[name], value, err_msg=name)


def test_save_then_load_round_trip(tmp_path):
  params = hf.load_hf_t5_params(T5_1_0)
  params["encoder"]["prompt"] = {"prompt": np.ones((3, 16), np.float32)}  # Not exported.
  hf.save_hf_t5_checkpoint(params, CONFIG_1_0, tmp_path)
  assert hf.config_from_hf(tmp_path) == CONFIG_1_0
  again = _flat(hf.load_hf_t5_params(tmp_path))
  original = _flat(hf.load_hf_t5_params(T5_1_0))
  assert sorted(again) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
  _copy_config_only(T5_1_1, tmp_path)
  raw = safetensors.numpy.load_file(str(T5_1_1 / "model.safetensors"))
  names = sorted(raw)
  shards = {"model-00001-of-00002.safetensors": names[:30],
            "model-00002-of-00002.safetensors": names[30:]}
  for file, shard_names in shards.items():
    safetensors.numpy.save_file({n: raw[n] for n in shard_names}, str(tmp_path / file))
  weight_map = {n: file for file, shard_names in shards.items() for n in shard_names}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  sharded = _flat(hf.load_hf_t5_params(tmp_path))
  single = _flat(hf.load_hf_t5_params(T5_1_1))
  assert sorted(sharded) == sorted(single)
  for key, value in single.items():
    np.testing.assert_array_equal(sharded[key], value, err_msg=key)


def test_bfloat16_weights_are_cast(tmp_path):
  _copy_config_only(T5_1_0, tmp_path)
  raw = safetensors.numpy.load_file(str(T5_1_0 / "model.safetensors"))
  safetensors.numpy.save_file({n: v.astype(ml_dtypes.bfloat16) for n, v in raw.items()},
                              str(tmp_path / "model.safetensors"))
  flat = _flat(hf.load_hf_t5_params(tmp_path))
  embedding = flat["token_embedder/embedding"]
  assert embedding.dtype == np.float32
  np.testing.assert_array_equal(
      embedding, raw["shared.weight"].astype(ml_dtypes.bfloat16).astype(np.float32))
  as_bf16 = _flat(hf.load_hf_t5_params(tmp_path, restore_dtype="bfloat16"))
  assert as_bf16["encoder/layers_0/mlp/wi/kernel"].dtype == ml_dtypes.bfloat16


def test_tied_head_without_lm_head_tensor(tmp_path):
  # transformers >= 5 writes an unscaled tied head as tie_word_embeddings=true, no lm_head.
  _copy_config_only(T5_1_1, tmp_path, tie_word_embeddings=True, scale_decoder_outputs=False)
  raw = safetensors.numpy.load_file(str(T5_1_1 / "model.safetensors"))
  del raw["lm_head.weight"]
  safetensors.numpy.save_file(raw, str(tmp_path / "model.safetensors"))
  flat = _flat(hf.load_hf_t5_params(tmp_path))
  np.testing.assert_array_equal(flat["decoder/logits_dense/kernel"], raw["shared.weight"].T)
  # Before transformers 5, tie_word_embeddings=false meant a separate lm_head is required.
  _copy_config_only(T5_1_1, tmp_path / "v4", tie_word_embeddings=False)
  shutil.copy(tmp_path / "model.safetensors", tmp_path / "v4")
  with pytest.raises(ValueError, match=r"no tensor 'lm_head.weight' \(expected shape \[64, 16\]\)"):
    hf.load_hf_t5_params(tmp_path / "v4")


def test_load_errors_name_the_tensor(tmp_path):
  with pytest.raises(ValueError,
                     match=r"'shared.weight' has shape \[64, 16\], expected \[80, 16\]"):
    hf.load_hf_t5_params(T5_1_1, config=CONFIG_1_1.replace(vocab_size=80))
  with pytest.raises(ValueError, match=r"tensors the config does not use.*decoder.block.2"):
    hf.load_hf_t5_params(T5_1_1, config=CONFIG_1_1.replace(num_decoder_layers=2))
  _copy_config_only(T5_1_1, tmp_path)
  raw = safetensors.numpy.load_file(str(T5_1_1 / "model.safetensors"))
  del raw["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
  safetensors.numpy.save_file(raw, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"'encoder.block.1.layer.1.DenseReluDense.wo.weight' "
                     r"\(expected shape \[16, 32\]\)"):
    hf.load_hf_t5_params(tmp_path)


def test_state_dict_errors_name_the_variable():
  params = hf.load_hf_t5_params(T5_1_0)
  del params["decoder"]["layers_2"]["mlp"]["wo"]
  with pytest.raises(ValueError,
                     match=r"'decoder/layers_2/mlp/wo/kernel' \(expected shape \[32, 16\]\)"):
    hf.hf_state_dict_from_params(params, CONFIG_1_0)


# --- parity with transformers' logits ---------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "long_"])
@pytest.mark.parametrize("path", [T5_1_1, T5_1_0])
def test_logits_match_transformers(path, prefix):
  from prompt_tuning.models import build_model  # pylint: disable=g-import-not-at-top
  golden = np.load(path / "golden.npz")
  get = lambda key: golden[prefix + key]
  config = hf.config_from_hf(path)
  params = jax.tree_util.tree_map(np.asarray, hf.load_hf_t5_params(path))
  logits = build_model(config).apply(
      {"params": params}, get("encoder_input_tokens"), get("decoder_input_tokens"),
      decoder_target_tokens=get("decoder_target_tokens"), enable_dropout=False)
  assert logits.shape == get("logits").shape and logits.dtype == np.float32
  valid = get("decoder_target_tokens") > 0
  assert 0 < valid.sum() < valid.size  # Both padded and real positions are present.
  assert np.abs(get("logits")[valid]).max() > 1.0  # Not a degenerate reference.
  np.testing.assert_allclose(np.asarray(logits)[valid], get("logits")[valid], rtol=0, atol=1e-4)
