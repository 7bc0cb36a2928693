"""GGUF reader: tiny files written here with `gguf.GGUFWriter` read back as their float source.

Each file is written from a seeded random float tree in Hugging Face names the way llama.cpp's
converter writes one (Q/K rows reordered for Llama, not for Qwen2), with tensors stored in many
types; `gguf_tensors` must return the source within each type's quantization error.
"""

from __future__ import annotations

import math
import os
import pathlib
import time

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from prompt_tuning.checkpoints import gguf as gguf_ckpt

SMOLLM2_GGUF = pathlib.Path(os.environ.get(
    "PROMPT_TUNING_SMOLLM2_GGUF",
    pathlib.Path.home() / ".cache/prompt_tuning/assets/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"))

D, F, V, LAYERS, HEADS, KV_HEADS = 64, 256, 96, 2, 4, 2
HEAD_DIM = D // HEADS

# Largest |error| / max|row| each storage type may add (block scales are per 32 or 256 values of
# a row, so the row's largest magnitude bounds every block's).
ROW_TOLERANCE = {Q.F32: 0.0, Q.F16: 1e-3, Q.BF16: 8e-3, Q.Q8_0: 0.01, Q.Q5_1: 1 / 31 + 0.01,
                 Q.Q5_0: 1 / 16 + 0.01, Q.Q4_1: 1 / 15 + 0.01, Q.Q4_0: 1 / 8 + 0.01, Q.Q4_K: 0.0}


def _llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
  """Hugging Face Q/K rows -> llama.cpp's order: per head, the two rotary halves interleaved."""
  rows = weight.shape[0]
  halves = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
  return np.ascontiguousarray(halves.swapaxes(1, 2)).reshape(weight.shape)


def _q4_k_tensor(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
  """(float values, Q4_K bytes) of a tensor whose values Q4_K represents exactly.

  `gguf` has no K-quant quantizer, so this encodes one by hand: per 256-value block an f16 scale
  `d` and min `dmin`, per 32-value sub-block 4-bit `sc` and `m`, and 4-bit codes `q`; the value is
  d * sc * q - dmin * m.
  """
  blocks = rows * cols // 256
  d = rng.integers(1, 8, blocks) / 64.0
  dmin = rng.integers(0, 8, blocks) / 128.0
  sc = rng.integers(1, 16, (blocks, 8))
  m = rng.integers(0, 16, (blocks, 8))
  q = rng.integers(0, 16, (blocks, 8, 32))
  values = d[:, None, None] * sc[:, :, None] * q - (dmin[:, None] * m)[:, :, None]
  scales = np.zeros((blocks, 12), np.uint8)
  scales[:, 0:4] = sc[:, :4]             # 6-bit scales of sub-blocks 0-3 (top bits zero).
  scales[:, 4:8] = m[:, :4]              # 6-bit mins of sub-blocks 0-3.
  scales[:, 8:12] = sc[:, 4:] | (m[:, 4:] << 4)  # Low 4 bits of sub-blocks 4-7.
  # Codes: 4 groups of 32 bytes; low nibbles hold sub-block 2g, high nibbles sub-block 2g + 1.
  codes = q.reshape(blocks, 4, 2, 32)
  packed = (codes[:, :, 0] | (codes[:, :, 1] << 4)).astype(np.uint8).reshape(blocks, 128)
  raw = np.concatenate([d.astype(np.float16)[:, None].view(np.uint8),
                        dmin.astype(np.float16)[:, None].view(np.uint8), scales, packed], axis=1)
  return values.astype(np.float32).reshape(rows, cols), raw.reshape(rows, -1)


def _source_tree(rng: np.random.Generator, qwen2: bool, tied: bool) -> dict[str, np.ndarray]:
  """A random float tree in Hugging Face names for the tiny shape above."""
  tree = {"model.embed_tokens.weight": rng.normal(size=(V, D)),
          "model.norm.weight": 1 + 0.1 * rng.normal(size=(D,))}
  if not tied:
    tree["lm_head.weight"] = rng.normal(size=(V, D))
  for i in range(LAYERS):
    p = f"model.layers.{i}."
    tree.update({
        p + "input_layernorm.weight": 1 + 0.1 * rng.normal(size=(D,)),
        p + "post_attention_layernorm.weight": 1 + 0.1 * rng.normal(size=(D,)),
        p + "self_attn.q_proj.weight": rng.normal(size=(HEADS * HEAD_DIM, D)),
        p + "self_attn.k_proj.weight": rng.normal(size=(KV_HEADS * HEAD_DIM, D)),
        p + "self_attn.v_proj.weight": rng.normal(size=(KV_HEADS * HEAD_DIM, D)),
        p + "self_attn.o_proj.weight": rng.normal(size=(D, HEADS * HEAD_DIM)),
        p + "mlp.gate_proj.weight": rng.normal(size=(F, D)),
        p + "mlp.up_proj.weight": rng.normal(size=(F, D)),
        p + "mlp.down_proj.weight": rng.normal(size=(D, F)),
    })
    if qwen2:
      for name, rows in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
        tree[p + f"self_attn.{name}_proj.bias"] = rng.normal(size=(rows * HEAD_DIM,))
  return {k: v.astype(np.float32) for k, v in tree.items()}


_GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _gguf_name(hf_name: str) -> str:
  globals_ = {"model.embed_tokens.weight": "token_embd.weight",
              "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
  if hf_name in globals_:
    return globals_[hf_name]
  _, _, layer, rest = hf_name.split(".", 3)
  module, suffix = rest.rsplit(".", 1)
  return f"blk.{layer}.{_GGUF_NAMES[module]}.{suffix}"


# Storage type per tensor: F32 norms / biases, every quantized type `gguf` writes, and Q4_K.
_TYPES = {
    "token_embd.weight": Q.Q8_0, "output.weight": Q.Q5_1,
    "blk.0.attn_q.weight": Q.F16, "blk.0.attn_k.weight": Q.BF16, "blk.0.attn_v.weight": Q.Q4_0,
    "blk.0.attn_output.weight": Q.Q4_1, "blk.0.ffn_gate.weight": Q.Q5_0,
    "blk.0.ffn_up.weight": Q.Q8_0, "blk.0.ffn_down.weight": Q.Q4_K,
    "blk.1.attn_q.weight": Q.Q8_0, "blk.1.attn_k.weight": Q.Q4_0, "blk.1.attn_v.weight": Q.F32,
    "blk.1.attn_output.weight": Q.F16, "blk.1.ffn_gate.weight": Q.Q4_1,
    "blk.1.ffn_up.weight": Q.Q5_1, "blk.1.ffn_down.weight": Q.Q5_0,
}


def _write_gguf(path: pathlib.Path, arch: str, tree: dict[str, np.ndarray], *, name: str = "tiny",
                permute_qk: bool, extra_tensors: dict[str, np.ndarray] | None = None,
                rope_theta: float = 50000.0, rotary_dim: int = HEAD_DIM,
                rng: np.random.Generator) -> dict[str, tuple[np.ndarray, Q]]:
  """Writes `tree` as llama.cpp would; returns {HF name: (value stored, storage type)}."""
  writer = gguf.GGUFWriter(path, arch)
  writer.add_name(name)
  writer.add_block_count(LAYERS)
  writer.add_context_length(2048)
  writer.add_embedding_length(D)
  writer.add_feed_forward_length(F)
  writer.add_head_count(HEADS)
  writer.add_head_count_kv(KV_HEADS)
  writer.add_layer_norm_rms_eps(1e-6)
  writer.add_rope_freq_base(rope_theta)
  writer.add_rope_dimension_count(rotary_dim)
  writer.add_tokenizer_model("gpt2")
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  stored: dict[str, tuple[np.ndarray, Q]] = {}
  for hf_name, value in tree.items():
    gguf_name = _gguf_name(hf_name)
    qtype = _TYPES.get(gguf_name, Q.F32)
    if qtype == Q.Q4_K:
      value, raw = _q4_k_tensor(rng, *value.shape)
    written = value
    if permute_qk and ".attn_q." in gguf_name:
      written = _llama_cpp_rows(value, HEADS)
    elif permute_qk and ".attn_k." in gguf_name:
      written = _llama_cpp_rows(value, KV_HEADS)
    if qtype == Q.Q4_K:
      writer.add_tensor(gguf_name, raw, raw_dtype=Q.Q4_K)
    elif qtype == Q.F32:
      writer.add_tensor(gguf_name, written)
    elif qtype == Q.F16:
      writer.add_tensor(gguf_name, written.astype(np.float16))
    else:
      writer.add_tensor(gguf_name, gguf.quants.quantize(written, qtype), raw_dtype=qtype)
    stored[hf_name] = (value, qtype)
  for gguf_name, value in (extra_tensors or {}).items():
    writer.add_tensor(gguf_name, value)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return stored


_GEMMA3_TINY = pathlib.Path(__file__).resolve().parent / "fixtures" / "hf_gemma3_tiny"
# Gemma 3 GGUF tensor names <- Hugging Face's, inside a layer (llama.cpp's converter).
_GEMMA3_GGUF_NAMES = {**_GGUF_NAMES, "post_attention_layernorm": "post_attention_norm",
                      "pre_feedforward_layernorm": "ffn_norm",
                      "post_feedforward_layernorm": "post_ffw_norm",
                      "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}


def _write_gemma3_gguf(path: pathlib.Path) -> dict[str, np.ndarray]:
  """tests/fixtures/hf_gemma3_tiny as llama.cpp's converter writes it (F32 tensors, Q/K rows
  as they are, every RMS norm weight stored as w + 1); returns the Hugging Face tensors."""
  import json
  import safetensors.numpy
  hf = json.loads((_GEMMA3_TINY / "config.json").read_text())
  tensors = safetensors.numpy.load_file(str(_GEMMA3_TINY / "model.safetensors"))
  writer = gguf.GGUFWriter(path, "gemma3")
  writer.add_block_count(hf["num_hidden_layers"])
  writer.add_context_length(hf["max_position_embeddings"])
  writer.add_embedding_length(hf["hidden_size"])
  writer.add_feed_forward_length(hf["intermediate_size"])
  writer.add_head_count(hf["num_attention_heads"])
  writer.add_head_count_kv(hf["num_key_value_heads"])
  writer.add_key_length(hf["head_dim"])
  writer.add_value_length(hf["head_dim"])
  writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
  writer.add_rope_freq_base(hf["rope_theta"])
  writer.add_rope_freq_base_swa(hf["rope_local_base_freq"])
  writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
  writer.add_rope_scaling_factor(hf["rope_scaling"]["factor"])
  writer.add_sliding_window(hf["sliding_window"])
  writer.add_sliding_window_pattern([(i + 1) % hf["sliding_window_pattern"] != 0
                                     for i in range(hf["num_hidden_layers"])])
  writer.add_final_logit_softcapping(hf["final_logit_softcapping"])
  writer.add_tokenizer_model("gpt2")
  writer.add_bos_token_id(hf["bos_token_id"])
  writer.add_eos_token_id(hf["eos_token_id"])
  for hf_name, value in tensors.items():
    if hf_name == "model.embed_tokens.weight":
      name = "token_embd.weight"
    elif hf_name == "model.norm.weight":
      name = "output_norm.weight"
    else:
      _, _, layer, rest = hf_name.split(".", 3)
      module, suffix = rest.rsplit(".", 1)
      name = f"blk.{layer}.{_GEMMA3_GGUF_NAMES[module]}.{suffix}"
    writer.add_tensor(name, value + np.float32(1) if name.endswith("norm.weight") else value)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return tensors


def test_gemma3_file_reads_back_as_hugging_face(tmp_path):
  """A Gemma 3 GGUF: Hugging Face's tensors (norms minus the stored 1, Q/K not reordered) and
  config (local / global layers, two rotary bases, softcapping); its logits equal transformers'
  golden once the one value the file cannot state (query_pre_attn_scalar 16, not head_dim)
  is set."""
  import jax
  from prompt_tuning import api, checkpoints
  from prompt_tuning.models import families
  path = tmp_path / "tiny-gemma3.gguf"
  source = _write_gemma3_gguf(path)
  loaded = gguf_ckpt.gguf_tensors(path)
  assert sorted(loaded) == sorted(source)
  for name, value in source.items():
    np.testing.assert_allclose(loaded[name], value, rtol=0, atol=1e-7, err_msg=name)
  config = families.config_from_hf(gguf_ckpt.gguf_config(path))
  assert config.family == "gemma3" and config.head_dim == 12 and config.logits_via_embedding
  assert config.layer_types == ("sliding_attention", "sliding_attention", "full_attention",
                                "sliding_attention")
  assert (config.rope_theta, config.rope_local_theta, config.sliding_window) == (1e4, 100.0, 4)
  assert config.rope_scaling_dict == {"rope_type": "linear", "factor": 2.0}
  assert config.final_logit_softcapping == 5.0 and config.query_pre_attn_scalar == 12
  config = config.replace(query_pre_attn_scalar=16.0)
  module = api.build_any_model(config)
  params = checkpoints.load_params(path, api.param_shapes(module, config), config)
  golden = np.load(_GEMMA3_TINY / "golden.npz")
  mask = golden["long_attention_mask"]
  logits = np.asarray(jax.jit(module.apply)({"params": params}, golden["long_input_ids"],
                                            decoder_attention_mask=mask))
  np.testing.assert_allclose(logits[mask > 0], golden["long_logits"][mask > 0], atol=1e-4)


def _assert_within_quantization_error(loaded: dict[str, np.ndarray],
                                      stored: dict[str, tuple[np.ndarray, Q]]) -> None:
  assert sorted(loaded) == sorted(stored)
  for name, (value, qtype) in stored.items():
    got = loaded[name]
    assert got.shape == value.shape and got.dtype == np.float32, name
    row_max = np.abs(value).max(axis=-1, keepdims=True)
    error = np.abs(got - value)
    if qtype == Q.F16:  # Relative to each value: F16 keeps 11 significant bits.
      assert np.all(error <= 1e-3 * np.abs(value) + 1e-7), name
    else:
      assert np.all(error <= ROW_TOLERANCE[qtype] * row_max), (name, qtype.name, error.max())


@pytest.mark.parametrize("arch,tied", [("llama", False), ("qwen2", True)])
def test_tiny_file_reads_back_as_its_float_source(tmp_path, arch, tied):
  rng = np.random.default_rng(0)
  tree = _source_tree(rng, qwen2=arch == "qwen2", tied=tied)
  path = tmp_path / f"tiny-{arch}.gguf"
  stored = _write_gguf(path, arch, tree, permute_qk=arch == "llama", rng=rng)
  used = {qtype for _, qtype in stored.values()}
  assert {Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K} <= used

  loaded = gguf_ckpt.gguf_tensors(path)

  _assert_within_quantization_error(loaded, stored)
  # F32 and Q4_K values are stored exactly; the reordered Q/K rows are back in place.
  np.testing.assert_array_equal(loaded["model.layers.1.self_attn.v_proj.weight"],
                                tree["model.layers.1.self_attn.v_proj.weight"])
  np.testing.assert_array_equal(loaded["model.layers.0.mlp.down_proj.weight"],
                                stored["model.layers.0.mlp.down_proj.weight"][0])
  np.testing.assert_allclose(loaded["model.layers.0.self_attn.q_proj.weight"],
                             tree["model.layers.0.self_attn.q_proj.weight"], rtol=1e-3, atol=1e-6)
  if arch == "qwen2":
    np.testing.assert_array_equal(loaded["model.layers.1.self_attn.k_proj.bias"],
                                  tree["model.layers.1.self_attn.k_proj.bias"])


def test_restore_dtype_bfloat16(tmp_path):
  rng = np.random.default_rng(1)
  tree = _source_tree(rng, qwen2=False, tied=True)
  path = tmp_path / "tiny.gguf"
  _write_gguf(path, "llama", tree, permute_qk=True, rng=rng)
  as_f32 = gguf_ckpt.gguf_tensors(path)
  as_bf16 = gguf_ckpt.gguf_tensors(path, restore_dtype="bfloat16")
  assert {a.dtype.name for a in as_bf16.values()} == {"bfloat16"}
  for name, value in as_f32.items():
    np.testing.assert_array_equal(as_bf16[name], value.astype("bfloat16"))


@pytest.mark.parametrize("arch,name,model_type", [
    ("llama", "Tiny Llama", "llama"), ("llama", "Mistral 7B Instruct v0.3", "mistral"),
    ("qwen2", "Qwen2.5 0.5B", "qwen2")])
def test_config(tmp_path, arch, name, model_type):
  rng = np.random.default_rng(2)
  tree = _source_tree(rng, qwen2=arch == "qwen2", tied=arch == "qwen2")
  path = tmp_path / "tiny.gguf"
  _write_gguf(path, arch, tree, name=name, permute_qk=arch == "llama", rng=rng)
  config = gguf_ckpt.gguf_config(path)
  expected = {
      "model_type": model_type,
      "architectures": [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                         "qwen2": "Qwen2ForCausalLM"}[model_type]],
      "hidden_size": D, "intermediate_size": F, "num_hidden_layers": LAYERS,
      "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
      "rope_theta": 50000.0, "rope_scaling": None, "max_position_embeddings": 2048,
      "vocab_size": V, "tie_word_embeddings": arch == "qwen2", "sliding_window": None,
      "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "hidden_act": "silu",
  }
  assert {k: config[k] for k in expected} == expected
  assert config["rms_norm_eps"] == pytest.approx(1e-6)
  if model_type == "llama":
    assert config["attention_bias"] is False
  # The Mistral rename also reaches the tensors: its Q/K rows are reordered back like Llama's.
  if model_type == "mistral":
    loaded = gguf_ckpt.gguf_tensors(path)
    np.testing.assert_allclose(loaded["model.layers.0.self_attn.q_proj.weight"],
                               tree["model.layers.0.self_attn.q_proj.weight"], rtol=1e-3, atol=1e-6)


def _llama3_factors(dim: int, theta: float, factor: float, low: float, high: float,
                    context: int) -> np.ndarray:
  """Llama 3's per-frequency RoPE divisors, as llama.cpp's converter stores in rope_freqs."""
  out = []
  for i in range(0, dim, 2):
    wavelength = 2 * math.pi * theta ** (i / dim)
    if wavelength < context / high:
      out.append(1.0)
    elif wavelength > context / low:
      out.append(factor)
    else:
      smooth = (context / wavelength - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


@pytest.mark.parametrize("rotary_dim,factor,high,context", [
    (HEAD_DIM, 8.0, 4.0, 8192),  # Too few transition frequencies to fit: Meta's defaults.
    (128, 32.0, 4.0, 8192),      # Llama 3.2's values, fitted.
    (128, 16.0, 2.0, 4096)])     # Other values, fitted.
def test_config_llama3_rope_scaling_from_rope_freqs(tmp_path, rotary_dim, factor, high, context):
  rng = np.random.default_rng(3)
  tree = _source_tree(rng, qwen2=False, tied=True)
  factors = _llama3_factors(rotary_dim, 500000.0, factor, 1.0, high, context)
  path = tmp_path / "tiny.gguf"
  _write_gguf(path, "llama", tree, permute_qk=True, rng=rng, rope_theta=500000.0,
              rotary_dim=rotary_dim, extra_tensors={"rope_freqs.weight": factors})
  config = gguf_ckpt.gguf_config(path)
  assert config["rope_scaling"] == {
      "rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": high,
      "original_max_position_embeddings": context}
  assert not any("rope" in name for name in gguf_ckpt.gguf_tensors(path))


def test_unknown_architecture_and_tensor_are_named(tmp_path):
  rng = np.random.default_rng(4)
  tree = _source_tree(rng, qwen2=False, tied=True)
  path = tmp_path / "falcon.gguf"
  _write_gguf(path, "falcon", tree, permute_qk=False, rng=rng)
  with pytest.raises(ValueError, match="architecture 'falcon' is not supported"):
    gguf_ckpt.gguf_config(path)
  with pytest.raises(ValueError, match="architecture 'falcon' is not supported"):
    gguf_ckpt.gguf_tensors(path)

  path = tmp_path / "extra.gguf"
  _write_gguf(path, "llama", tree, permute_qk=True, rng=rng,
              extra_tensors={"blk.0.attn_q_norm.weight": np.ones(HEAD_DIM, np.float32)})
  with pytest.raises(ValueError, match=r"tensor 'blk.0.attn_q_norm.weight' has no Hugging Face name"):
    gguf_ckpt.gguf_tensors(path)


def _assert_parse_matches_gguf_reader(path: pathlib.Path) -> None:
  """Our container parse gives what `gguf.GGUFReader` gives: metadata, tensor types, shapes, bytes."""
  reader = gguf.GGUFReader(path)
  expected = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
  assert gguf_ckpt.gguf_metadata(path) == expected
  ours = gguf_ckpt._open(path).tensors
  assert [(t.name, t.tensor_type, t.shape) for t in ours] == [
      (t.name, t.tensor_type, tuple(t.shape.tolist())) for t in reader.tensors]
  for mine, theirs in zip(ours, reader.tensors):
    assert mine.data.dtype == theirs.data.dtype and mine.data.shape == theirs.data.shape
    np.testing.assert_array_equal(mine.data, theirs.data)


def test_container_parse_matches_gguf_reader(tmp_path):
  rng = np.random.default_rng(6)
  tree = _source_tree(rng, qwen2=True, tied=False)
  path = tmp_path / "tiny.gguf"
  _write_gguf(path, "qwen2", tree, permute_qk=False, rng=rng,
              extra_tensors={"empty.weight": np.zeros((0,), np.float32)})
  _assert_parse_matches_gguf_reader(path)


def test_is_gguf_checkpoint(tmp_path):
  rng = np.random.default_rng(5)
  path = tmp_path / "tiny.gguf"
  _write_gguf(path, "llama", _source_tree(rng, qwen2=False, tied=True), permute_qk=True, rng=rng)
  assert gguf_ckpt.is_gguf_checkpoint(path)
  assert gguf_ckpt.is_gguf_checkpoint(str(path))
  fake = tmp_path / "fake.gguf"
  fake.write_bytes(b"GGML" + bytes(60))
  assert not gguf_ckpt.is_gguf_checkpoint(fake)
  assert not gguf_ckpt.is_gguf_checkpoint(tmp_path)
  with pytest.raises(ValueError, match="is not a GGUF file"):
    gguf_ckpt.gguf_config(fake)


@pytest.mark.slow
def test_smollm2_file():
  if not SMOLLM2_GGUF.exists():
    pytest.skip(f"{SMOLLM2_GGUF} is not available (see issue 12 for how to get it)")
  start = time.perf_counter()
  config = gguf_ckpt.gguf_config(SMOLLM2_GGUF)
  tensors = gguf_ckpt.gguf_tensors(SMOLLM2_GGUF)
  elapsed = time.perf_counter() - start
  assert {k: config[k] for k in (
      "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta", "vocab_size",
      "tie_word_embeddings", "max_position_embeddings", "bos_token_id", "eos_token_id",
      "pad_token_id", "rope_scaling")} == {
          "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
          "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
          "head_dim": 64, "rope_theta": 100000.0, "vocab_size": 49152,
          "tie_word_embeddings": True, "max_position_embeddings": 8192, "bos_token_id": 1,
          "eos_token_id": 2, "pad_token_id": 2, "rope_scaling": None}
  assert config["rms_norm_eps"] == pytest.approx(1e-5)
  assert len(tensors) == 2 + 9 * 30 and "lm_head.weight" not in tensors
  assert tensors["model.embed_tokens.weight"].shape == (49152, 576)
  assert tensors["model.norm.weight"].shape == (576,)
  layer = "model.layers.29."
  for name, shape in (("self_attn.q_proj.weight", (576, 576)), ("self_attn.k_proj.weight", (192, 576)),
                      ("self_attn.v_proj.weight", (192, 576)), ("self_attn.o_proj.weight", (576, 576)),
                      ("mlp.gate_proj.weight", (1536, 576)), ("mlp.up_proj.weight", (1536, 576)),
                      ("mlp.down_proj.weight", (576, 1536)), ("input_layernorm.weight", (576,)),
                      ("post_attention_layernorm.weight", (576,))):
    assert tensors[layer + name].shape == shape, name
  assert all(np.isfinite(a).all() for a in tensors.values())
  _assert_parse_matches_gguf_reader(SMOLLM2_GGUF)
  print(f"SmolLM2 GGUF config + tensors read in {elapsed:.1f} s")
