"""GGUF checkpoints (llama.cpp's single-file format) as Hugging Face configs and tensors.

A `.gguf` file holds the model's hyperparameters as metadata (`<arch>.embedding_length`, ...),
its tokenizer (`tokenizer.ggml.*`) and every weight, most of them quantized in blocks. This module
turns a file into what a Hugging Face directory holds -- a `config.json`-style dict and float
tensors under Hugging Face names in Hugging Face's layout -- so the one Hugging Face -> our-tree
weight mapping of a family serves both formats:

  config = gguf_config(path)        # {"model_type": "llama", "hidden_size": 576, ...}
  tensors = gguf_tensors(path)      # {"model.embed_tokens.weight": [V, D] float32, ...}

Layout: numpy's view of a GGUF tensor reverses ggml's dimension order, so a projection comes out
[out, in] like a torch `Linear` weight and the embedding [vocab, embed]; nothing is transposed.
llama.cpp's converter reorders the rows of the Q and K projections of Llama-family models (it
interleaves each head's two rotary halves); `gguf_tensors` undoes that for the architectures whose
converter does it (`permute_qk` below). Qwen2 and Gemma 3 files are not reordered; Gemma 3's
converter stores every RMS norm weight as w + 1 (the multiplier), which is undone here, so the
tensors equal Hugging Face's.

Families are rows of `_ARCHITECTURES`: adding one (Gemma 3, GPT-2, BLOOM, ...) means adding its
metadata keys, its tensor names and any per-tensor transform there.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import mmap
import os
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import ml_dtypes  # noqa: F401  Registers numpy's 'bfloat16' for `restore_dtype`.
import numpy as np

PathLike = str | os.PathLike
GGUF_MAGIC = b"GGUF"
_LAYER = re.compile(r"blk\.(\d+)\.(.+)")

# Hugging Face config key -> GGUF metadata key (without the `<arch>.` prefix), for the keys every
# decoder-only family shares. `head_dim` and `vocab_size` are derived separately.
_DECODER_KEYS = {
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "max_position_embeddings": "context_length",
}
_RMS_NORM_KEYS = {"rms_norm_eps": "attention.layer_norm_rms_epsilon"}
_ROPE_KEYS = {"rope_theta": "rope.freq_base"}
# Tokenizer metadata -> the special token ids of config.json.
_TOKEN_ID_KEYS = {
    "bos_token_id": "tokenizer.ggml.bos_token_id",
    "eos_token_id": "tokenizer.ggml.eos_token_id",
    "pad_token_id": "tokenizer.ggml.padding_token_id",
}


def _permute_rows_back(weight: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's convert-time reordering of Q / K rows ([heads * head_dim, ...] or bias).

  Per head, llama.cpp stores rows in the order (pair, half) where Hugging Face has (half, pair):
  reading the rows as [heads, pair, 2] and swapping the last two axes gives Hugging Face's order.
  """
  rows = weight.shape[0]
  if rows % (2 * heads):
    raise ValueError(
        f"cannot undo llama.cpp's Q/K row order: {rows} rows are not a multiple of 2 x {heads} heads; "
        "the file's head counts do not match its tensors.")
  split = weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
  return split.swapaxes(1, 2).reshape(weight.shape)


def _permute_q(weight: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
  return _permute_rows_back(weight, config["num_attention_heads"])


def _permute_k(weight: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
  return _permute_rows_back(weight, config["num_key_value_heads"])


Transform = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Architecture:
  """What one GGUF `general.architecture` needs to read as a Hugging Face checkpoint.

  Attributes:
    model_type: Hugging Face `model_type` of config.json.
    hf_class: Hugging Face model class name (config.json `architectures`).
    config_keys: Hugging Face config key -> GGUF metadata key without the `<arch>.` prefix.
    config_constants: config entries the file does not state (activation, biases, ...).
    global_tensors: GGUF tensor name -> Hugging Face name, outside the layers.
    layer_tensors: GGUF name inside `blk.{i}.` -> Hugging Face name inside `model.layers.{i}.`,
      both without the `.weight` / `.bias` suffix, which is kept.
    transforms: GGUF name inside `blk.{i}.` (with suffix), or a global tensor's full name ->
      function(array, config) run after dequantizing (e.g. undoing llama.cpp's Q/K row order).
    ignored_tensors: GGUF tensors that carry nothing beyond the config (`rope_freqs.weight`).
    finish_config: function(config, metadata, arch) that fills the config entries the file
      does not state but implies (run last; optional).
  """
  model_type: str
  hf_class: str
  config_keys: Mapping[str, str]
  config_constants: Mapping[str, Any]
  global_tensors: Mapping[str, str]
  layer_tensors: Mapping[str, str]
  transforms: Mapping[str, Transform] = dataclasses.field(default_factory=dict)
  ignored_tensors: tuple[str, ...] = ()
  finish_config: Callable[[dict[str, Any], Mapping[str, Any], str], None] | None = None


_LLAMA_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LLAMA_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_KEYS = {**_DECODER_KEYS, **_RMS_NORM_KEYS, **_ROPE_KEYS,
               "sliding_window": "attention.sliding_window"}
# llama.cpp's LlamaModel converter reorders Q and K (weights and, where present, biases).
_LLAMA_PERMUTE = {"attn_q.weight": _permute_q, "attn_q.bias": _permute_q,
                  "attn_k.weight": _permute_k, "attn_k.bias": _permute_k}



def _minus_one(weight: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
  """Gemma's RMS norm weight w from the multiplier w + 1 llama.cpp's converter stores."""
  del config
  return weight - np.float32(1.0)


_GEMMA3_LAYER_TENSORS = {
    **{k: v for k, v in _LLAMA_LAYER_TENSORS.items() if k != "ffn_norm"},
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Gemma 3's sliding-window layer pattern when the file states none (llama.cpp's default).
_GEMMA3_SLIDING_WINDOW_PATTERN = 6


def _finish_gemma3_config(config: dict[str, Any], metadata: Mapping[str, Any], arch: str) -> None:
  """Gemma 3 entries llama.cpp does not write but assumes (its `llm_load_hparams` rules): the
  local rotary base (`rope.freq_base_swa`, else 10000), the layer pattern
  (`attention.sliding_window_pattern`: a period or one bool per layer, True = sliding; else
  every 6th layer full), and query_pre_attn_scalar (head_dim; the 62-layer 27B model uses
  hidden_size / heads)."""
  layers = config["num_hidden_layers"]
  if config.get("rope_local_base_freq") is None:
    config["rope_local_base_freq"] = 10000.0
  pattern = metadata.get(f"{arch}.attention.sliding_window_pattern",
                         _GEMMA3_SLIDING_WINDOW_PATTERN)
  if isinstance(pattern, list):
    config["layer_types"] = ["sliding_attention" if sliding else "full_attention"
                             for sliding in pattern]
  else:
    config["sliding_window_pattern"] = int(pattern)
  config["query_pre_attn_scalar"] = (config["hidden_size"] // config["num_attention_heads"]
                                     if layers == 62 else config["head_dim"])


_ARCHITECTURES: dict[str, _Architecture] = {
    "llama": _Architecture(
        model_type="llama", hf_class="LlamaForCausalLM", config_keys=_LLAMA_KEYS,
        config_constants={"hidden_act": "silu", "mlp_bias": False},
        global_tensors=_LLAMA_GLOBAL_TENSORS, layer_tensors=_LLAMA_LAYER_TENSORS,
        transforms=_LLAMA_PERMUTE, ignored_tensors=("rope_freqs.weight",)),
    # llama.cpp writes Mistral models as `llama`; `gguf_config` renames them from `general.name`.
    "mistral": _Architecture(
        model_type="mistral", hf_class="MistralForCausalLM", config_keys=_LLAMA_KEYS,
        config_constants={"hidden_act": "silu"},
        global_tensors=_LLAMA_GLOBAL_TENSORS, layer_tensors=_LLAMA_LAYER_TENSORS,
        transforms=_LLAMA_PERMUTE, ignored_tensors=("rope_freqs.weight",)),
    # llama.cpp's Qwen2 converter keeps Hugging Face's row order.
    "qwen2": _Architecture(
        model_type="qwen2", hf_class="Qwen2ForCausalLM",
        config_keys={**_DECODER_KEYS, **_RMS_NORM_KEYS, **_ROPE_KEYS,
                     "sliding_window": "attention.sliding_window"},
        config_constants={"hidden_act": "silu"},
        global_tensors=_LLAMA_GLOBAL_TENSORS, layer_tensors=_LLAMA_LAYER_TENSORS),
    # llama.cpp's Gemma 3 converter keeps Hugging Face's Q/K row order and adds 1 to every
    # RMS norm weight (Gemma multiplies by 1 + w).
    "gemma3": _Architecture(
        model_type="gemma3_text", hf_class="Gemma3ForCausalLM",
        config_keys={**_DECODER_KEYS, **_RMS_NORM_KEYS, **_ROPE_KEYS,
                     "sliding_window": "attention.sliding_window",
                     "rope_local_base_freq": "rope.freq_base_swa",
                     "final_logit_softcapping": "final_logit_softcapping",
                     "attn_logit_softcapping": "attn_logit_softcapping"},
        config_constants={"hidden_activation": "gelu_pytorch_tanh", "attention_bias": False},
        global_tensors=_LLAMA_GLOBAL_TENSORS, layer_tensors=_GEMMA3_LAYER_TENSORS,
        transforms={**{f"{name}.weight": _minus_one for name in _GEMMA3_LAYER_TENSORS
                       if name.endswith("norm")}, "output_norm.weight": _minus_one},
        finish_config=_finish_gemma3_config),
}


def is_gguf_checkpoint(path: PathLike) -> bool:
  """Whether `path` is a file named `*.gguf` that starts with the GGUF magic bytes."""
  path = os.fspath(path)
  if not (path.lower().endswith(".gguf") and os.path.isfile(path)):
    return False
  with open(path, "rb") as f:
    return f.read(4) == GGUF_MAGIC


# GGUF metadata value types (gguf.GGUFValueType) -> struct format of a scalar of that type.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml types numpy holds as plain arrays; every other type is blocks of bytes, one row per
# leading index (the layout `gguf.quants.dequantize` takes).
_PLAIN_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
                 "I16": np.int16, "I32": np.int32, "I64": np.int64}


class _Tensor(NamedTuple):
  """One tensor of a GGUF file: `shape` in ggml's order ([in, out] for a projection), `data`
  a view of the mapped file in numpy's order (bytes per row last for block-quantized types)."""
  name: str
  tensor_type: Any  # gguf.GGMLQuantizationType
  shape: tuple[int, ...]
  data: np.ndarray


class _GGUFFile:
  """A parsed, memory-mapped `.gguf` file: `metadata` {key: Python value} and `tensors`.

  Parses the container (GGUF v2 / v3, little-endian) directly: `gguf.GGUFReader` builds a
  numpy view per metadata item, which takes seconds and hundreds of MB for a 100k-token
  vocabulary; this takes a fraction of a second. The `gguf` package still names the tensor
  types, sizes their blocks and dequantizes them.
  """

  def __init__(self, path: str):
    import gguf  # pylint: disable=g-import-not-at-top  Imported on use: it is slow to import.
    self.path = path
    with open(path, "rb") as f:
      self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    self._offset = 0
    magic, version = self._read("<4s"), self._read("<I")
    if magic != GGUF_MAGIC or version not in (2, 3):
      raise ValueError(f"{path}: GGUF version {version} is not readable here (expected a "
                       "little-endian version 2 or 3 file).")
    tensor_count, kv_count = self._read("<Q"), self._read("<Q")
    self.metadata: dict[str, Any] = {}
    for _ in range(kv_count):
      key = self._string()
      self.metadata[key] = self._value(self._read("<I"))
    infos = []
    for _ in range(tensor_count):
      name = self._string()
      dims = [self._read("<Q") for _ in range(self._read("<I"))]
      kind = self._read("<I")
      if kind not in gguf.GGML_QUANT_SIZES:
        raise ValueError(f"{path}: tensor {name!r} has ggml type {kind}, unknown to the installed "
                         "`gguf` package; upgrade `gguf`.")
      infos.append((name, gguf.GGMLQuantizationType(kind), dims, self._read("<Q")))
    alignment = int(self.metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    start = -(-self._offset // alignment) * alignment
    self.tensors = [self._tensor(gguf, name, kind, dims, start + offset)
                    for name, kind, dims, offset in infos]

  def _read(self, fmt: str) -> Any:
    value = struct.unpack_from(fmt, self._map, self._offset)
    self._offset += struct.calcsize(fmt)
    return value[0]

  def _string(self) -> str:
    size = self._read("<Q")
    text = self._map[self._offset:self._offset + size].decode("utf-8", errors="replace")
    self._offset += size
    return text

  def _value(self, kind: int) -> Any:
    if kind == _STRING:
      return self._string()
    if kind == _ARRAY:
      item_kind, count = self._read("<I"), self._read("<Q")
      if item_kind in _SCALAR_FORMATS:  # Numbers in one read.
        dtype = np.dtype(_SCALAR_FORMATS[item_kind])
        values = np.frombuffer(self._map[self._offset:self._offset + count * dtype.itemsize], dtype)
        self._offset += values.nbytes
        return values.tolist()
      return [self._value(item_kind) for _ in range(count)]
    if kind not in _SCALAR_FORMATS:
      raise ValueError(f"{self.path}: unknown GGUF metadata value type {kind}; the file is corrupt.")
    return self._read(_SCALAR_FORMATS[kind])

  def _tensor(self, gguf: Any, name: str, kind: Any, dims: list[int], offset: int) -> _Tensor:
    shape = tuple(reversed(dims))  # numpy order: [..., rows, columns].
    if kind.name in _PLAIN_DTYPES:
      dtype, numpy_shape = np.dtype(_PLAIN_DTYPES[kind.name]), shape
    else:
      block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
      dtype, numpy_shape = np.dtype(np.uint8), shape[:-1] + (shape[-1] // block * block_bytes,)
    count = math.prod(numpy_shape)
    if offset + count * dtype.itemsize > len(self._map):
      raise ValueError(f"{self.path}: tensor {name!r} runs past the end of the file; the file "
                       "is truncated.")
    data = (np.frombuffer(self._map, dtype, count, offset) if count else np.zeros(0, dtype))
    data = data.reshape(numpy_shape)
    return _Tensor(name, kind, tuple(dims), data)


@functools.lru_cache(maxsize=4)
def _cached_file(path: str, mtime_ns: int, size: int) -> _GGUFFile:
  del mtime_ns, size  # Part of the cache key only: a rewritten file is read again.
  return _GGUFFile(path)


def _open(path: PathLike) -> _GGUFFile:
  """The parsed file, shared by the readers below (config, tensors and tokenizer read it once)."""
  path = os.fspath(path)
  if not is_gguf_checkpoint(path):
    raise ValueError(f"{path} is not a GGUF file: expected a `.gguf` file starting with b'GGUF'.")
  stat = os.stat(path)
  file = _cached_file(os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
  if file.metadata.get("split.count", 1) > 1:
    raise ValueError(
        f"{path} is one shard of a split GGUF; merge the shards into one file first "
        "(llama.cpp: `llama-gguf-split --merge FIRST_SHARD OUT.gguf`).")
  return file


def gguf_metadata(path: PathLike, keys: Sequence[str] | None = None) -> dict[str, Any]:
  """The file's metadata as Python values (str, int, float, bool, or lists of them).

  Args:
    path: a `.gguf` file.
    keys: the keys wanted (absent ones are left out); all of them when None.
  """
  metadata = _open(path).metadata
  return dict(metadata) if keys is None else {k: metadata[k] for k in keys if k in metadata}


def _architecture(metadata: Mapping[str, Any], path: PathLike) -> tuple[str, str]:
  """(metadata key prefix, `_ARCHITECTURES` key) for the file's `general.architecture`.

  llama.cpp writes Mistral models as `llama`; like transformers' GGUF loader, a `llama` file
  whose `general.name` mentions Mistral reads as `mistral`.
  """
  arch = metadata.get("general.architecture")
  if arch not in _ARCHITECTURES:
    raise ValueError(
        f"{os.fspath(path)}: GGUF architecture {arch!r} is not supported; supported: "
        f"{sorted(_ARCHITECTURES)}.")
  if arch == "llama" and "mistral" in str(metadata.get("general.name", "")).lower():
    return arch, "mistral"
  return arch, arch


def _tensor_infos(path: PathLike) -> dict[str, _Tensor]:
  return {t.name: t for t in _open(path).tensors}


def _llama3_rope_factors(inv_freq: np.ndarray, low: float, high: float, context: float,
                         factor: float) -> np.ndarray:
  """Per-frequency divisors of Llama 3's rope scaling (Hugging Face's `rope_type: llama3`)."""
  wavelength = 2 * math.pi / inv_freq
  smooth = (context / wavelength - low) / (high - low)
  mid = 1.0 / ((1 - smooth) / factor + smooth)
  return np.where(wavelength < context / high, 1.0,
                  np.where(wavelength > context / low, factor, mid))


def _rope_scaling_from_freqs(factors: np.ndarray, rope_theta: float, rotary_dim: int,
                             path: PathLike) -> dict[str, Any] | None:
  """Llama 3 rope scaling parameters that reproduce a file's `rope_freqs.weight` divisors.

  llama.cpp stores Llama 3's scaling only as these per-frequency divisors. They are 1 for high
  frequencies, `factor` for low ones and interpolate in between, affinely in 1 / wavelength;
  the fit assumes Meta's `low_freq_factor` = 1 (every Llama 3 release) and is checked.
  """
  factors = np.asarray(factors, np.float64).reshape(-1)
  inv_freq = rope_theta ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
  if factors.shape != inv_freq.shape:
    raise ValueError(
        f"{os.fspath(path)}: rope_freqs.weight has {factors.size} entries, expected "
        f"{inv_freq.size} (rotary dimension {rotary_dim} / 2).")
  if np.allclose(factors, 1.0):
    return None
  factor = float(factors.max())
  candidates = [(1.0, 4.0, 8192.0)]  # Meta's values, for files with too few transition points.
  mid = (factors > 1 + 1e-6) & (factors < factor - 1e-6)
  if mid.sum() >= 2:
    smooth = (1 / factors[mid] - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(inv_freq[mid] / (2 * math.pi), smooth, 1)
    if intercept < 0:
      high = 1 - 1 / intercept
      candidates.insert(0, (1.0, round(high, 6), float(round(slope * (high - 1)))))
  for low, high, context in candidates:
    if np.allclose(_llama3_rope_factors(inv_freq, low, high, context, factor), factors,
                   rtol=1e-4, atol=1e-5):
      return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
              "high_freq_factor": high, "original_max_position_embeddings": int(context)}
  raise ValueError(
      f"{os.fspath(path)}: rope_freqs.weight holds per-frequency RoPE divisors that match no "
      "Llama 3 rope scaling; this file's RoPE cannot be expressed as a Hugging Face config.")


def _rope_scaling(metadata: Mapping[str, Any], arch: str, path: PathLike) -> dict[str, Any] | None:
  """Hugging Face `rope_scaling` from the `<arch>.rope.scaling.*` metadata, if any."""
  kind = metadata.get(f"{arch}.rope.scaling.type")
  factor = metadata.get(f"{arch}.rope.scaling.factor")
  if kind is None and f"{arch}.rope.scale_linear" in metadata:  # Older files.
    kind, factor = "linear", metadata[f"{arch}.rope.scale_linear"]
  if kind in (None, "none") or factor in (None, 1.0):
    return None
  scaling: dict[str, Any] = {"rope_type": kind, "factor": float(factor)}
  original = metadata.get(f"{arch}.rope.scaling.original_context_length")
  if original is not None:
    scaling["original_max_position_embeddings"] = int(original)
  if kind not in ("linear", "yarn"):
    raise ValueError(f"{os.fspath(path)}: GGUF rope scaling type {kind!r} is not supported; "
                     "supported: linear, yarn.")
  return scaling


def gguf_config(path: PathLike) -> dict[str, Any]:
  """A Hugging Face `config.json`-style dict for the model in a `.gguf` file.

  Keys: `model_type`, `architectures`, `hidden_size`, `intermediate_size`, `num_hidden_layers`,
  `num_attention_heads`, `num_key_value_heads`, `head_dim`, `rms_norm_eps`, `rope_theta`,
  `rope_scaling` (None, linear / yarn from the metadata, or llama3 from `rope_freqs.weight`),
  `max_position_embeddings`, `vocab_size` (rows of the embedding), `tie_word_embeddings` (no
  `output.weight` in the file), `sliding_window` (None unless stated), `bos_token_id`,
  `eos_token_id`, `pad_token_id` (None when the file has none), plus the family's constants
  (`hidden_act`, ...). Raises ValueError for an architecture this module has no table for.
  """
  metadata = _open(path).metadata
  arch, family = _architecture(metadata, path)
  table = _ARCHITECTURES[family]
  config: dict[str, Any] = {"model_type": table.model_type, "architectures": [table.hf_class]}
  for hf_key, gguf_key in table.config_keys.items():
    config[hf_key] = metadata.get(f"{arch}.{gguf_key}")
  required = ("hidden_size", "num_hidden_layers", "num_attention_heads")
  missing = [f"{arch}.{table.config_keys[k]}" for k in required if config[k] is None]
  if missing:
    raise ValueError(f"{os.fspath(path)}: GGUF metadata lacks {missing}; the file is incomplete.")
  if config.get("num_key_value_heads") is None:
    config["num_key_value_heads"] = config["num_attention_heads"]
  if "rope_theta" in config and config["rope_theta"] is None:
    config["rope_theta"] = 10000.0
  key_length = metadata.get(f"{arch}.attention.key_length")
  config["head_dim"] = (int(key_length) if key_length
                        else config["hidden_size"] // config["num_attention_heads"])

  tensors = _tensor_infos(path)
  if "token_embd.weight" not in tensors:
    raise ValueError(f"{os.fspath(path)}: no token_embd.weight tensor; the file is incomplete.")
  config["vocab_size"] = int(tensors["token_embd.weight"].shape[-1])  # ggml order: [embed, vocab].
  config["tie_word_embeddings"] = "output.weight" not in tensors
  config["rope_scaling"] = _rope_scaling(metadata, arch, path)
  if "rope_freqs.weight" in tensors and config["rope_scaling"] is None:
    rotary_dim = int(metadata.get(f"{arch}.rope.dimension_count") or config["head_dim"])
    factors = _dequantized(tensors["rope_freqs.weight"])
    config["rope_scaling"] = _rope_scaling_from_freqs(factors, config["rope_theta"], rotary_dim, path)
  if table.model_type == "llama":
    config["attention_bias"] = "blk.0.attn_q.bias" in tensors
  for hf_key, gguf_key in _TOKEN_ID_KEYS.items():
    config[hf_key] = metadata.get(gguf_key)
  for key, value in table.config_constants.items():
    config.setdefault(key, value)
  if table.finish_config is not None:
    table.finish_config(config, metadata, arch)
  return config


def _dequantized(tensor: _Tensor) -> np.ndarray:
  """One tensor as a fresh float32 array in numpy order (ggml's dims reversed)."""
  from gguf import quants  # pylint: disable=g-import-not-at-top
  data = tensor.data
  try:
    array = quants.dequantize(data, tensor.tensor_type)
  except NotImplementedError as e:
    raise ValueError(
        f"tensor {tensor.name!r} has type {tensor.tensor_type.name}, which the installed `gguf` "
        "package cannot dequantize; upgrade `gguf` or re-quantize the file.") from e
  array = np.asarray(array, np.float32).reshape(tuple(reversed(tensor.shape)))
  if np.shares_memory(array, data):  # F32 comes back as a view of the mapped file.
    array = array.copy()
  return array


def hf_tensor_name(gguf_name: str, family: str, path: PathLike = "<gguf>") -> str | None:
  """The Hugging Face name of a GGUF tensor of `family` (a `supported_architectures()` entry);
  None for tensors that only feed the config (`rope_freqs.weight`).

  Raises ValueError naming the tensor when the architecture's table does not know it.
  """
  table = _ARCHITECTURES[family]
  if gguf_name in table.ignored_tensors:
    return None
  if gguf_name in table.global_tensors:
    return table.global_tensors[gguf_name]
  match = _LAYER.fullmatch(gguf_name)
  if match:
    layer, rest = match.groups()
    base, _, suffix = rest.rpartition(".")
    if base in table.layer_tensors and suffix in ("weight", "bias"):
      return f"model.layers.{layer}.{table.layer_tensors[base]}.{suffix}"
  raise ValueError(
      f"{os.fspath(path)}: GGUF tensor {gguf_name!r} has no Hugging Face name for architecture "
      f"{table.model_type!r}; known: {sorted(table.global_tensors)} and "
      f"blk.N.{{{', '.join(sorted(table.layer_tensors))}}}.{{weight,bias}}.")


def gguf_tensors(path: PathLike, restore_dtype: Any = None) -> dict[str, np.ndarray]:
  """Every tensor of a `.gguf` file, dequantized, under its Hugging Face name and layout.

  Tensors are dequantized one at a time (any type `gguf.quants` reads: F32, F16, BF16, Q4_0, Q4_1,
  Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ*, ...) and cast to `restore_dtype` before the next, so peak
  memory is the returned tree plus one float32 tensor. Q/K rows come back in Hugging Face's order.

  Args:
    path: a `.gguf` file.
    restore_dtype: dtype of the returned arrays; float32 when None (e.g. "bfloat16" or
      `jnp.bfloat16` halves the memory of a large model).

  Returns:
    {Hugging Face name: array}, e.g. `model.layers.0.self_attn.q_proj.weight` [out, in],
    `model.embed_tokens.weight` [vocab, embed]; `lm_head.weight` only when the file has
    `output.weight` (see `gguf_config(path)["tie_word_embeddings"]`).
  """
  dtype = np.dtype(np.float32 if restore_dtype is None else restore_dtype)
  config = gguf_config(path)
  _, family = _architecture(gguf_metadata(path, ("general.architecture", "general.name")), path)
  table = _ARCHITECTURES[family]
  out: dict[str, np.ndarray] = {}
  for tensor in _open(path).tensors:
    name = hf_tensor_name(tensor.name, family, path)
    if name is None:
      continue
    array = _dequantized(tensor)
    match = _LAYER.fullmatch(tensor.name)
    transform = table.transforms.get(match.group(2) if match else tensor.name)
    if transform is not None:
      array = transform(array, config)
    out[name] = array if array.dtype == dtype else array.astype(dtype)
  return out


def supported_architectures() -> tuple[str, ...]:
  """The `general.architecture` values `gguf_config` / `gguf_tensors` read."""
  return tuple(_ARCHITECTURES)
