"""Hugging Face T5 checkpoints: config and weights to and from our parameter tree.

A Hugging Face checkpoint is a directory with `config.json` and the weights of a
`T5ForConditionalGeneration` (or mT5) in `model.safetensors`, or sharded as
`model.safetensors.index.json` + shards. Our tree uses T5X / Flaxformer names
(`encoder/layers_0/attention/query/kernel`, ...), kernels stored [in, out]; Hugging
Face stores torch `Linear` weights [out, in] and the relative position embedding
[buckets, heads], so those are transposed. T5 does not scale attention logits in
either implementation, so no other rescaling is needed.

Tied heads: Hugging Face ties `lm_head.weight` to `shared.weight`. Whether the
decoder output is multiplied by d_model**-0.5 first (T5 1.0) is `tie_word_embeddings`
in configs written before transformers 5 and `scale_decoder_outputs` after; a
distinct `lm_head.weight` in the file always wins over the tie.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any, Iterator

import ml_dtypes  # noqa: F401  Registers numpy's 'bfloat16' so safetensors can read it.
import numpy as np
import safetensors
import safetensors.numpy

from prompt_tuning.checkpoints import tree
from prompt_tuning.models.config import T5Config

PathLike = str | os.PathLike
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
EMBEDDING_NAME = "shared.weight"
LM_HEAD_NAME = "lm_head.weight"
# Copies of `shared.weight` some writers keep (or keep instead of it).
_EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# Tensors that may be present and are not ours: embedding copies, and one Hugging Face ignores.
_IGNORED_NAMES = _EMBEDDING_COPIES + (
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
# Hugging Face `feed_forward_proj` <-> our `mlp_activations`.
_FEED_FORWARD = {"gated-gelu": ("gelu", "linear"), "relu": ("relu",)}
_MODEL_TYPES = ("t5", "mt5")


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One variable: our path, its Hugging Face name, our shape, transposed or not."""
  path: str
  hf_name: str
  shape: tuple[int, ...]
  transpose: bool

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return self.shape[::-1] if self.transpose else self.shape


def _tensor_map(config: T5Config) -> list[_Tensor]:
  """Every variable of an encoder-decoder T5 with `config`, with its Hugging Face name."""
  if config.architecture != "encoder_decoder":
    raise ValueError(
        f"Hugging Face T5 weights are encoder-decoder weights, but T5Config.architecture="
        f"{config.architecture!r}; use architecture='encoder_decoder'.")
  if config.mlp_activations not in _FEED_FORWARD.values():
    raise ValueError(
        f"T5Config.mlp_activations={config.mlp_activations!r} has no Hugging Face T5 "
        f"equivalent; use one of {sorted(_FEED_FORWARD.values())}.")
  d, j, f, v = config.emb_dim, config.joined_kv, config.mlp_dim, config.vocab_size
  gated = len(config.mlp_activations) == 2
  out = [_Tensor("token_embedder/embedding", EMBEDDING_NAME, (v, d), False)]

  def attention(ours: str, theirs: str) -> Iterator[_Tensor]:
    for our_name, hf_name in (("query", "q"), ("key", "k"), ("value", "v")):
      yield _Tensor(f"{ours}/{our_name}/kernel", f"{theirs}.{hf_name}.weight", (d, j), True)
    yield _Tensor(f"{ours}/out/kernel", f"{theirs}.o.weight", (j, d), True)

  def mlp(ours: str, theirs: str) -> Iterator[_Tensor]:
    for name in ("wi_0", "wi_1") if gated else ("wi",):
      yield _Tensor(f"{ours}/mlp/{name}/kernel", f"{theirs}.DenseReluDense.{name}.weight", (d, f),
                    True)
    yield _Tensor(f"{ours}/mlp/wo/kernel", f"{theirs}.DenseReluDense.wo.weight", (f, d), True)

  def norm(ours: str, theirs: str) -> _Tensor:
    return _Tensor(f"{ours}/scale", f"{theirs}.weight", (d,), False)

  for stack, num_layers in (("encoder", config.num_encoder_layers),
                            ("decoder", config.num_decoder_layers)):
    out.append(
        _Tensor(f"{stack}/relpos_bias/rel_embedding",
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                (config.num_heads, config.relpos_num_buckets), True))
    for i in range(num_layers):
      ours, theirs = f"{stack}/layers_{i}", f"{stack}.block.{i}.layer"
      if stack == "encoder":
        out.extend(attention(f"{ours}/attention", f"{theirs}.0.SelfAttention"))
        out.append(norm(f"{ours}/pre_attention_layer_norm", f"{theirs}.0.layer_norm"))
        mlp_index = 1
      else:
        out.extend(attention(f"{ours}/self_attention", f"{theirs}.0.SelfAttention"))
        out.append(norm(f"{ours}/pre_self_attention_layer_norm", f"{theirs}.0.layer_norm"))
        out.extend(attention(f"{ours}/encoder_decoder_attention", f"{theirs}.1.EncDecAttention"))
        out.append(norm(f"{ours}/pre_cross_attention_layer_norm", f"{theirs}.1.layer_norm"))
        mlp_index = 2
      out.extend(mlp(ours, f"{theirs}.{mlp_index}"))
      out.append(norm(f"{ours}/pre_mlp_layer_norm", f"{theirs}.{mlp_index}.layer_norm"))
    out.append(norm(f"{stack}/{stack}_norm", f"{stack}.final_layer_norm"))
  if not config.logits_via_embedding:
    out.append(_Tensor("decoder/logits_dense/kernel", LM_HEAD_NAME, (d, v), True))
  return out


def is_hf_checkpoint(path: PathLike) -> bool:
  """Whether `path` is a Hugging Face model directory (config.json + weights)."""
  path = pathlib.Path(path)
  if not (path / CONFIG_FILE).is_file():
    return False
  weights = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE) + TORCH_FILES
  return any((path / name).is_file() for name in weights)


def _read_hf_config(hf_config: Mapping[str, Any] | PathLike | Any) -> dict[str, Any]:
  """A Hugging Face config as a dict, from a dict, a `PretrainedConfig`, a directory or a file."""
  if isinstance(hf_config, Mapping):
    return dict(hf_config)
  if hasattr(hf_config, "to_dict"):
    return hf_config.to_dict()
  path = pathlib.Path(hf_config)
  if path.is_dir():
    path = path / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f"No Hugging Face config at {path}; pass a model directory holding {CONFIG_FILE}, "
        "the file itself, or its contents as a dict.")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _scales_decoder_outputs(hf: Mapping[str, Any]) -> bool:
  """Whether Hugging Face multiplies the decoder output by d_model**-0.5 before the head."""
  return bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))


def config_from_hf(hf_config: Mapping[str, Any] | PathLike | Any) -> T5Config:
  """Our `T5Config` for a Hugging Face T5 / mT5 config (dict, `PretrainedConfig` or path).

  Raises:
    ValueError: not an encoder-decoder T5 / mT5 config, or a `feed_forward_proj` other than
      'relu' (T5 1.0) or 'gated-gelu' (T5 1.1, mT5).
  """
  hf = _read_hf_config(hf_config)
  model_type = hf.get("model_type", "t5")
  if model_type not in _MODEL_TYPES or not hf.get("is_encoder_decoder", True):
    raise ValueError(
        f"Hugging Face config has model_type={model_type!r}, is_encoder_decoder="
        f"{hf.get('is_encoder_decoder', True)}; only encoder-decoder {_MODEL_TYPES} models "
        "(T5ForConditionalGeneration, MT5ForConditionalGeneration) can be imported.")
  feed_forward = hf.get("feed_forward_proj", "relu")
  if feed_forward not in _FEED_FORWARD:
    raise ValueError(
        f"Hugging Face config has feed_forward_proj={feed_forward!r}; supported are "
        f"{sorted(_FEED_FORWARD)} (T5 1.0 and T5 1.1 / mT5).")
  num_layers = hf.get("num_layers", 6)
  num_decoder_layers = hf.get("num_decoder_layers")
  return T5Config(
      vocab_size=hf.get("vocab_size", 32128),
      emb_dim=hf.get("d_model", 512),
      num_heads=hf.get("num_heads", 8),
      head_dim=hf.get("d_kv", 64),
      mlp_dim=hf.get("d_ff", 2048),
      num_encoder_layers=num_layers,
      num_decoder_layers=num_layers if num_decoder_layers is None else num_decoder_layers,
      mlp_activations=_FEED_FORWARD[feed_forward],
      logits_via_embedding=_scales_decoder_outputs(hf),
      relpos_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relpos_max_distance=hf.get("relative_attention_max_distance", 128),
      dropout_rate=float(hf.get("dropout_rate", 0.1)),
      layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
      architecture="encoder_decoder")


def hf_config_from_config(config: T5Config) -> dict[str, Any]:
  """The `config.json` contents of a `T5ForConditionalGeneration` equal to `config`."""
  _tensor_map(config)  # Validates architecture and activations.
  feed_forward = next(k for k, v in _FEED_FORWARD.items() if v == config.mlp_activations)
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "is_encoder_decoder": True,
      "vocab_size": config.vocab_size,
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "num_heads": config.num_heads,
      "d_ff": config.mlp_dim,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "feed_forward_proj": feed_forward,
      "tie_word_embeddings": config.logits_via_embedding,
      "relative_attention_num_buckets": config.relpos_num_buckets,
      "relative_attention_max_distance": config.relpos_max_distance,
      "dropout_rate": config.dropout_rate,
      "layer_norm_epsilon": config.layer_norm_epsilon,
      "initializer_factor": 1.0,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "decoder_start_token_id": 0,
  }


class _SafetensorsReader:
  """Lazy access to the tensors of a single-file or sharded safetensors checkpoint."""

  def __init__(self, directory: pathlib.Path):
    single_path = directory / SAFETENSORS_FILE
    index_path = directory / SAFETENSORS_INDEX_FILE
    if single_path.is_file():
      with safetensors.safe_open(str(single_path), framework="numpy") as f:
        self._files = {name: single_path for name in f.keys()}
    elif index_path.is_file():
      with open(index_path, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
      self._files = {name: directory / shard for name, shard in weight_map.items()}
    elif any((directory / name).is_file() for name in TORCH_FILES):
      raise ValueError(
          f"{directory} holds PyTorch pickles ({' / '.join(TORCH_FILES)}), which need torch to "
          "read; convert them to safetensors once, e.g. `transformers.T5ForConditionalGeneration."
          "from_pretrained(path).save_pretrained(out_dir, safe_serialization=True)`.")
    else:
      raise FileNotFoundError(
          f"No Hugging Face weights in {directory}: expected {SAFETENSORS_FILE} or "
          f"{SAFETENSORS_INDEX_FILE}.")

  @property
  def names(self) -> set[str]:
    return set(self._files)

  def __contains__(self, name: str) -> bool:
    return name in self._files

  def get(self, name: str) -> np.ndarray:
    with safetensors.safe_open(str(self._files[name]), framework="numpy") as f:
      return f.get_tensor(name)


def _embedding_name(reader: _SafetensorsReader) -> str:
  """The name the token embedding is stored under: `shared.weight` or one of its copies."""
  candidates = (EMBEDDING_NAME,) + _EMBEDDING_COPIES
  for name in candidates:
    if name in reader:
      return name
  raise ValueError(
      f"Hugging Face checkpoint has no token embedding: none of {list(candidates)} is present "
      "(expected shape [vocab_size, d_model]).")


def load_hf_t5_params(path: PathLike,
                      config: T5Config | None = None,
                      restore_dtype: Any = None) -> dict[str, Any]:
  """Reads a Hugging Face T5 / mT5 directory into our nested parameter tree.

  Args:
    path: directory with config.json and model.safetensors (or a sharded index).
    config: the model's config; by default `config_from_hf(path)`.
    restore_dtype: dtype of the returned arrays; float32 by default (bfloat16 and float16
      weights are cast).

  Returns:
    Nested dict of numpy arrays in our tree (kernels [in, out]).

  Raises:
    ValueError: a tensor is missing, has the wrong shape, or is not used by `config`.
  """
  path = pathlib.Path(path)
  hf = _read_hf_config(path)
  config = config_from_hf(hf) if config is None else config
  dtype = np.dtype(np.float32 if restore_dtype is None else restore_dtype)
  reader = _SafetensorsReader(path)
  embedding_name = _embedding_name(reader)
  unused = reader.names
  flat = {}
  for t in _tensor_map(config):
    name = embedding_name if t.hf_name == EMBEDDING_NAME else t.hf_name
    if name not in reader and name == LM_HEAD_NAME and hf.get("tie_word_embeddings", True):
      name = embedding_name  # Hugging Face ties the head to the embedding.
    if name not in reader:
      raise ValueError(
          f"Hugging Face checkpoint {path} has no tensor {name!r} (expected shape "
          f"{list(t.hf_shape)}) for our '{t.path}'; check that the config "
          "(num_layers, num_decoder_layers, feed_forward_proj, tie_word_embeddings) matches "
          "the weights.")
    value = reader.get(name)
    if tuple(value.shape) != t.hf_shape:
      raise ValueError(
          f"Hugging Face tensor {name!r} has shape {list(value.shape)}, expected "
          f"{list(t.hf_shape)} for our '{t.path}' {list(t.shape)}; check the config sizes "
          "(vocab_size, d_model, num_heads, d_kv, d_ff, relative_attention_num_buckets).")
    value = value.T if t.transpose else value
    flat[t.path] = np.ascontiguousarray(value.astype(dtype))
    unused.discard(name)
  unused.difference_update(_IGNORED_NAMES)
  if LM_HEAD_NAME in unused:
    head = reader.get(LM_HEAD_NAME)
    if np.array_equal(head, reader.get(embedding_name)):
      unused.discard(LM_HEAD_NAME)  # A written-out copy of the tied head.
    else:
      raise ValueError(
          f"Hugging Face checkpoint {path} has an lm_head.weight distinct from {embedding_name} "
          "but the config scales the decoder output for a tied head (tie_word_embeddings / "
          "scale_decoder_outputs); our model cannot combine both: fix the config.")
  if unused:
    names = sorted(unused)
    raise ValueError(
        f"Hugging Face checkpoint {path} has {len(names)} tensors the config does not use, "
        f"e.g. {names[:4]}; check num_layers / num_decoder_layers / feed_forward_proj.")
  return tree.unflatten_params(flat)


def hf_state_dict_from_params(params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
  """The Hugging Face tensors (names as `save_pretrained` writes them) of our `params`.

  Only the frozen T5 variables are exported; other leaves (e.g. `encoder/prompt/...`) are
  ignored.

  Raises:
    ValueError: a variable of `config`'s model is missing from `params` or has the wrong shape.
  """
  flat = tree.flatten_params(params)
  state = {}
  for t in _tensor_map(config):
    if t.path not in flat:
      raise ValueError(f"params have no '{t.path}' (expected shape {list(t.shape)}) for "
                       f"Hugging Face {t.hf_name!r}.")
    value = np.asarray(flat[t.path])
    if tuple(value.shape) != t.shape:
      raise ValueError(f"params '{t.path}' has shape {list(value.shape)}, expected "
                       f"{list(t.shape)} by the config.")
    state[t.hf_name] = np.ascontiguousarray(value.T if t.transpose else value)
  return state


def save_hf_t5_checkpoint(params: Mapping[str, Any], config: T5Config, directory: PathLike) -> None:
  """Writes config.json and model.safetensors that `T5ForConditionalGeneration` loads."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / CONFIG_FILE, "w", encoding="utf-8") as f:
    json.dump(hf_config_from_config(config), f, indent=2, sort_keys=True)
  safetensors.numpy.save_file(
      hf_state_dict_from_params(params, config), str(directory / SAFETENSORS_FILE),
      metadata={"format": "pt"})
