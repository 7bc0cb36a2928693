"""Decoder-only LLM families (Llama, Llama 3 rope scaling, Mistral, Qwen2, Gemma 3, GPT-2, BLOOM)
against transformers.

Golden files: tests/fixtures/hf_{llama,llama3,mistral,qwen2,gemma3,gpt2,bloom}_tiny/golden.npz,
made by tools/make_llm_golden.py from tiny seeded random Hugging Face models (saved next to them).
Token id 0 is a real token in these inputs: padding comes from the attention masks.
"""

from __future__ import annotations

import functools
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

import prompt_tuning
import tiny_llms
from prompt_tuning import api
from prompt_tuning.checkpoints import huggingface
from prompt_tuning.models import families

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
FAMILIES = ("hf_llama_tiny", "hf_llama3_tiny", "hf_mistral_tiny", "hf_qwen2_tiny",
            "hf_gemma3_tiny", "hf_gpt2_tiny", "hf_bloom_tiny")


def _golden(name: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / name / "golden.npz") as data:
    return dict(data)


# Generation runs by default on one family per position scheme / attention variant (RoPE,
# ALiBi, local + global layers); the others' generation cases are slow (each compiles its own
# decoding loop). Their logits run by default.
GENERATION_CASES = [name if name in ("hf_llama_tiny", "hf_bloom_tiny", "hf_gemma3_tiny")
                    else pytest.param(name, marks=pytest.mark.slow) for name in FAMILIES]


@functools.lru_cache(maxsize=None)
def _load(name: str):
  return name, prompt_tuning.load_model(checkpoint=FIXTURES / name), _golden(name)


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request):
  return _load(request.param)


@pytest.fixture(params=GENERATION_CASES)
def generating(request):
  return _load(request.param)


def test_configs_come_from_config_json():
  llama = huggingface.config_from_hf(FIXTURES / "hf_llama_tiny")
  assert (llama.family, llama.architecture, llama.position_embedding) == (
      "llama", "decoder_only", "rope")
  assert (llama.num_heads, llama.kv_heads, llama.head_dim) == (4, 2, 8)
  assert not llama.logits_via_embedding and not llama.zero_is_padding
  llama3 = huggingface.config_from_hf(FIXTURES / "hf_llama3_tiny")
  assert llama3.logits_via_embedding and llama3.rope_scaling_dict["rope_type"] == "llama3"
  assert huggingface.config_from_hf(FIXTURES / "hf_mistral_tiny").sliding_window == 4
  qwen2 = huggingface.config_from_hf(FIXTURES / "hf_qwen2_tiny")
  assert qwen2.attention_bias and not qwen2.attention_out_bias
  gpt2 = huggingface.config_from_hf(FIXTURES / "hf_gpt2_tiny")
  assert (gpt2.position_embedding, gpt2.norm_kind, gpt2.mlp_activations, gpt2.mlp_dim) == (
      "learned", "layer", ("gelu",), 48)
  assert gpt2.logits_via_embedding and gpt2.max_position_embeddings == 64
  bloom = huggingface.config_from_hf(FIXTURES / "hf_bloom_tiny")
  assert (bloom.position_embedding, bloom.norm_kind, bloom.embedding_norm) == ("alibi", "layer", True)
  assert (bloom.num_heads, bloom.head_dim, bloom.mlp_dim) == (6, 8, 192)


def test_gemma3_config_from_hub_layout():
  """config.json in the Hub's layout: sliding_window_pattern, rope_local_base_freq, rope_scaling."""
  gemma = huggingface.config_from_hf(FIXTURES / "hf_gemma3_tiny")
  assert gemma.layer_types == ("sliding_attention", "sliding_attention", "full_attention",
                               "sliding_attention")
  assert (gemma.sliding_window, gemma.rope_theta, gemma.rope_local_theta) == (4, 1e4, 100.0)
  assert gemma.rope_scaling_dict == {"rope_type": "linear", "factor": 2.0}
  assert (gemma.query_pre_attn_scalar, gemma.final_logit_softcapping) == (16.0, 5.0)
  assert gemma.embedding_scale == 48 ** 0.5 and gemma.norm_scale_offset == 1.0
  assert gemma.qk_norm and gemma.sandwich_norms and gemma.logits_via_embedding
  assert gemma.mlp_activations == ("gelu", "linear")
  with pytest.raises(ValueError, match="attn_logit_softcapping=50.0"):
    families.config_from_hf(dict(json.loads((FIXTURES / "hf_gemma3_tiny" / "config.json")
                                            .read_text()), attn_logit_softcapping=50.0))


def test_rope_frequencies_equal_transformers(loaded):
  """Per layer kind: the inverse frequencies the attention layers rotate with."""
  from prompt_tuning.models import rope
  name, model, golden = loaded
  config = model.config
  kinds = {"rope_inv_freq": False, "rope_local_inv_freq": True}
  for key, sliding in kinds.items():
    if key not in golden:
      continue
    theta, scaling = config.rope_theta, config.rope_scaling_dict
    if sliding and config.rope_local_theta is not None:
      theta, scaling = config.rope_local_theta, {}
    np.testing.assert_allclose(rope.inverse_frequencies(config.head_dim, theta, scaling),
                               golden[key], rtol=1e-6, err_msg=f"{name} {key}")


@pytest.mark.parametrize("prefix", ["", "long_"])
def test_logits_equal_transformers(loaded, prefix):
  name, model, golden = loaded
  mask = golden[prefix + "attention_mask"]
  logits = np.asarray(model.logits(golden[prefix + "input_ids"], attention_mask=mask))
  real = mask.astype(bool)
  np.testing.assert_allclose(logits[real], golden[prefix + "logits"][real], atol=1e-4, rtol=1e-4,
                             err_msg=name)


def test_padding_changes_nothing(loaded):
  """A row alone equals the same row in a padded batch (id 0 is a real token here)."""
  _, model, golden = loaded
  tokens, mask = golden["input_ids"], golden["attention_mask"]
  length = int(mask[1].sum())
  alone = np.asarray(model.logits(tokens[1:2, :length]))
  batched = np.asarray(model.logits(tokens, attention_mask=mask))
  np.testing.assert_allclose(batched[1, :length], alone[0], atol=1e-5)


def test_greedy_generation_equals_transformers(generating):
  name, model, golden = generating
  eos = int(golden["gen_eos_token_id"])
  tokens = model.generate(golden["gen_input_ids"], int(golden["gen_max_new_tokens"]),
                          attention_mask=golden["gen_attention_mask"], eos_id=eos)
  expected = api.fill_after_eos(golden["gen_tokens"], eos, model.config.output_pad_id)
  np.testing.assert_array_equal(tokens, expected, err_msg=name)


def test_cached_decoding_equals_uncached_forward(generating):
  """Each greedy step's logits equal a full forward pass over the sequence so far."""
  _, model, golden = generating
  tokens, mask = golden["gen_input_ids"][:1], golden["gen_attention_mask"][:1]
  steps = 4
  generated = model.generate(tokens, steps, attention_mask=mask, eos_id=-1)
  sequence = np.concatenate([tokens[:, mask[0] > 0], generated], axis=1)
  logits = np.asarray(model.logits(sequence))
  start = int(mask[0].sum()) - 1
  np.testing.assert_array_equal(logits[0, start:start + steps].argmax(-1), generated[0])


def test_strings_need_a_vocabulary():
  model = prompt_tuning.load_model(checkpoint=FIXTURES / "hf_llama_tiny")
  with pytest.raises(Exception, match="tokenizer|vocabulary|tokenizer.json"):
    model.generate(["hello"], 2)


def test_tied_head_copy_and_unused_tensors(tmp_path):
  """A written-out copy of a tied head is accepted; a distinct one or an extra tensor is not."""
  source = FIXTURES / "hf_llama3_tiny"
  shutil.copy(source / "config.json", tmp_path / "config.json")
  raw = safetensors.numpy.load_file(str(source / "model.safetensors"))
  raw["lm_head.weight"] = raw["model.embed_tokens.weight"].copy()
  safetensors.numpy.save_file(raw, str(tmp_path / "model.safetensors"))
  prompt_tuning.load_model(checkpoint=tmp_path)
  raw["lm_head.weight"] = raw["lm_head.weight"] + 1
  safetensors.numpy.save_file(raw, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="lm_head.weight distinct"):
    prompt_tuning.load_model(checkpoint=tmp_path)
  del raw["lm_head.weight"]
  raw["model.layers.9.mlp.up_proj.weight"] = raw["model.norm.weight"]
  safetensors.numpy.save_file(raw, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="does not use.*model.layers.9"):
    prompt_tuning.load_model(checkpoint=tmp_path)


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
  config = json.loads((FIXTURES / "hf_llama_tiny" / "config.json").read_text())
  config["model_type"] = "falcon"
  (tmp_path / "config.json").write_text(json.dumps(config))
  shutil.copy(FIXTURES / "hf_llama_tiny" / "model.safetensors", tmp_path)
  with pytest.raises(api.ModelConfigError, match="model_type='falcon'.*bart.*llama.*mistral"):
    prompt_tuning.load_model(checkpoint=tmp_path)
  assert "qwen2" in families.supported_model_types()


def test_parameters_have_logical_axes_and_frozen_dtype():
  model = prompt_tuning.load_model(checkpoint=FIXTURES / "hf_qwen2_tiny", frozen_dtype="bfloat16")
  axes = api.param_axes(model.module, model.config)
  layer = axes["decoder"]["layers_0"]["self_attention"]
  assert layer["query"]["kernel"] == ("embed", "joined_kv")
  assert layer["key"]["bias"] == ("joined_kv",)
  dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(model.params)}
  assert dtypes == {np.dtype("bfloat16")}


@pytest.mark.parametrize("name", ["hf_gpt2_tiny", "hf_bloom_tiny"])
def test_llama_cpp_gguf_equals_transformers(tmp_path, name):
  """GPT-2 / BLOOM converted as llama.cpp does (Conv1D weights transposed, BLOOM's QKV as
  [q; k; v]) load back to the same logits; export writes the Hugging Face tensors back."""
  path = tiny_llms.write_llama_cpp_gguf(FIXTURES / name, tmp_path / f"{name}.gguf")
  model = prompt_tuning.load_model(checkpoint=path)
  golden = _golden(name)
  mask = golden["attention_mask"]
  logits = np.asarray(model.logits(golden["input_ids"], attention_mask=mask))
  real = mask.astype(bool)
  np.testing.assert_allclose(logits[real], golden["logits"][real], atol=1e-4, rtol=1e-4)
  huggingface.save_hf_checkpoint(model.params, model.config, tmp_path / "export")
  exported = safetensors.numpy.load_file(str(tmp_path / "export" / "model.safetensors"))
  original = safetensors.numpy.load_file(str(FIXTURES / name / "model.safetensors"))
  assert set(exported) == set(original)
  for key, value in original.items():
    np.testing.assert_allclose(exported[key], value, atol=1e-6, err_msg=key)


def test_learned_position_table_overrun_is_named():
  model = prompt_tuning.load_model(checkpoint=FIXTURES / "hf_gpt2_tiny")  # 64 positions.
  with pytest.raises(ValueError, match="65 positions .* learned position table of 64 rows"):
    model.logits(np.zeros((1, 65), np.int32))


def test_beam_search_equals_transformers_with_its_length_penalty_and_stopping():
  """generate(num_beams=3, length_penalty=1.0, early_stopping=True) as transformers runs it."""
  model = prompt_tuning.load_model(checkpoint=FIXTURES / "hf_llama_tiny")
  golden = _golden("hf_llama_tiny")
  eos = int(golden["gen_eos_token_id"])
  tokens = model.generate(golden["gen_input_ids"], int(golden["gen_max_new_tokens"]),
                          attention_mask=golden["gen_attention_mask"], eos_id=eos, method="beam",
                          num_beams=int(golden["beam_num_beams"]),
                          length_penalty=float(golden["beam_length_penalty"]),
                          early_stopping=bool(golden["beam_early_stopping"]))
  expected = api.fill_after_eos(golden["beam_tokens"], eos, model.config.output_pad_id)
  np.testing.assert_array_equal(tokens, expected)


@pytest.mark.parametrize("prefix", ["language_model.model.", "model.language_model."])
def test_gemma3_text_of_a_multimodal_checkpoint(tmp_path, prefix):
  """A "gemma3" (image-text) checkpoint: its text_config and language-model tensors read as the
  text model (transformers 4 / 5 tensor prefixes); the vision tower and projector are skipped."""
  source = FIXTURES / "hf_gemma3_tiny"
  text = json.loads((source / "config.json").read_text())
  config = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": text, "vision_config": {"model_type": "siglip_vision_model"}}
  (tmp_path / "config.json").write_text(json.dumps(config))
  raw = safetensors.numpy.load_file(str(source / "model.safetensors"))
  renamed = {prefix + name[len("model."):]: value for name, value in raw.items()}
  vision = "model.vision_tower." if prefix.startswith("model.") else "vision_tower."
  renamed[vision + "vision_model.post_layernorm.weight"] = np.ones(4, np.float32)
  renamed["multi_modal_projector.mm_input_projection_weight"] = np.ones((4, 48), np.float32)
  safetensors.numpy.save_file(renamed, str(tmp_path / "model.safetensors"))
  model = prompt_tuning.load_model(checkpoint=tmp_path)
  golden = _golden("hf_gemma3_tiny")
  mask = golden["attention_mask"]
  logits = np.asarray(model.logits(golden["input_ids"], attention_mask=mask))
  np.testing.assert_allclose(logits[mask > 0], golden["logits"][mask > 0], atol=1e-4)
