"""Hugging Face checkpoints (config.json + safetensors) of every supported family.

A Hugging Face checkpoint is a directory with `config.json` and the weights in
`model.safetensors`, or sharded as `model.safetensors.index.json` + shards. Its `model_type`
selects the family (`prompt_tuning.models.families`) whose table maps the tensor names onto our
tree (T5X / Flaxformer names) and transposes torch `Linear` weights [out, in] to our kernels
[in, out]. The same table reads GGUF files (`checkpoints.gguf` turns them into Hugging Face
names first): `params_from_named_tensors` is the one place names, shapes and ties are checked.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any, Callable, Iterable

import ml_dtypes  # noqa: F401  Registers numpy's 'bfloat16' so safetensors can read it.
import numpy as np
import safetensors
import safetensors.numpy

from prompt_tuning.checkpoints import tree
from prompt_tuning.models import families
from prompt_tuning.models.config import ModelConfig
from prompt_tuning.models.families import t5 as t5_family

PathLike = str | os.PathLike
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
EMBEDDING_NAME = t5_family.EMBEDDING_NAME
LM_HEAD_NAME = t5_family.LM_HEAD_NAME
T5Config = ModelConfig  # Older name, kept for code written against it.


def is_hf_checkpoint(path: PathLike) -> bool:
  """Whether `path` is a Hugging Face model directory (config.json + weights)."""
  path = pathlib.Path(path)
  if not (path / CONFIG_FILE).is_file():
    return False
  weights = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE) + TORCH_FILES
  return any((path / name).is_file() for name in weights)


def read_hf_config(hf_config: Mapping[str, Any] | PathLike | Any) -> dict[str, Any]:
  """A Hugging Face config as a dict, from a dict, a `PretrainedConfig`, a directory or a file;
  a generation_config.json next to the file is added under "generation_config"."""
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
    config = json.load(f)
  generation = path.parent / GENERATION_CONFIG_FILE
  if generation.is_file() and "generation_config" not in config:
    with open(generation, encoding="utf-8") as f:  # Decoding defaults (BART's beam settings).
      config["generation_config"] = json.load(f)
  return config


def config_from_hf(hf_config: Mapping[str, Any] | PathLike | Any) -> ModelConfig:
  """Our `ModelConfig` for a Hugging Face config (dict, `PretrainedConfig`, directory or file).

  Raises:
    ValueError: an unsupported `model_type` (the message lists the supported ones) or a config
      the family cannot represent.
  """
  hf = read_hf_config(hf_config)
  hf.setdefault("model_type", "t5")
  return families.config_from_hf(hf)


def hf_config_from_config(config: ModelConfig) -> dict[str, Any]:
  """The `config.json` contents of the Hugging Face model equal to `config`."""
  family = families.for_config(config)
  if family.hf_config_from_config is None:
    raise ValueError(f"exporting a {family.name} config to Hugging Face is not supported.")
  return family.hf_config_from_config(config)


class SafetensorsReader:
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


def params_from_named_tensors(names: Iterable[str], get: Callable[[str], np.ndarray],
                              config: ModelConfig, source: str, *,
                              restore_dtype: Any = None,
                              head_tied: bool = False) -> dict[str, Any]:
  """Our nested parameter tree from tensors in Hugging Face names, checked against `config`.

  Args:
    names: every tensor name the checkpoint holds.
    get: reads one tensor by name (numpy, Hugging Face layout).
    config: the model's config; its family's table says which tensors are needed.
    source: the checkpoint's path, for error messages.
    restore_dtype: dtype of the returned arrays (float32 by default).
    head_tied: the checkpoint's own config ties the head to the embedding, so a missing head
      tensor is read from the embedding (our config may still keep a separate head).

  Raises:
    ValueError: a tensor is missing, has the wrong shape, or is not used by `config`.
  """
  family = families.for_config(config)
  dtype = np.dtype(np.float32 if restore_dtype is None else restore_dtype)
  names = set(names)
  unused = set(names)
  flat: dict[str, Any] = {}
  embedding_name = None
  last_read: tuple[str, np.ndarray] | None = None  # The parts of a fused tensor read it once.
  for t in family.tensor_names(config):
    name = next((n for n in (t.hf_name,) + t.aliases if n in names), None)
    if name is None and head_tied and t.hf_name == family.tied_head_name:
      name = embedding_name
    if name is None:
      raise ValueError(
          f"checkpoint {source} has no tensor {t.hf_name!r} (expected shape {list(t.hf_shape)}) "
          f"for our '{t.path}'; check that the config (layers, heads, sizes, "
          "tie_word_embeddings) matches the weights.")
    if last_read is not None and last_read[0] == name:
      value = last_read[1]
    else:
      # Straight into the frozen dtype (no copy when it already is; a fused tensor once).
      value = get(name).astype(dtype, copy=False)
      last_read = (name, value)
    if tuple(value.shape) != t.hf_shape:
      raise ValueError(
          f"checkpoint tensor {name!r} has shape {list(value.shape)}, expected "
          f"{list(t.hf_shape)} for our '{t.path}' {list(t.shape)} (in {source}); check the "
          "config sizes (vocab_size, hidden size, heads, head_dim, intermediate size).")
    flat[t.path] = np.ascontiguousarray(t.from_hf(value))
    unused.discard(name)
    if t.path.endswith("token_embedder/embedding"):
      embedding_name = name
  unused = {name for name in unused if not family.is_ignored(name)}
  head = family.tied_head_name
  if head in unused and config.logits_via_embedding and embedding_name is not None:
    if np.array_equal(get(head), get(embedding_name)):
      unused.discard(head)  # A written-out copy of the tied head.
    else:
      raise ValueError(
          f"checkpoint {source} has a {head} distinct from {embedding_name} but its config ties "
          "the head to the embedding (tie_word_embeddings / scale_decoder_outputs); fix the "
          "config.")
  if unused:
    listed = sorted(unused)
    raise ValueError(
        f"checkpoint {source} has {len(listed)} tensors the config does not use, e.g. "
        f"{listed[:4]}; check the number of layers and the architecture in its config.")
  return tree.unflatten_params(flat)


def load_hf_params(path: PathLike, config: ModelConfig | None = None,
                   restore_dtype: Any = None) -> dict[str, Any]:
  """Reads a Hugging Face directory of any supported family into our nested parameter tree.

  Args:
    path: directory with config.json and model.safetensors (or a sharded index).
    config: the model's config; by default `config_from_hf(path)`.
    restore_dtype: dtype of the returned arrays; float32 by default (bfloat16 and float16
      weights are cast).

  Returns:
    Nested dict of numpy arrays in our tree (kernels [in, out]).
  """
  path = pathlib.Path(path)
  hf = read_hf_config(path)
  config = config_from_hf(hf) if config is None else config
  reader = SafetensorsReader(path)
  return params_from_named_tensors(reader.names, reader.get, config, str(path),
                                   restore_dtype=restore_dtype,
                                   head_tied=bool(hf.get("tie_word_embeddings", True)))


def load_hf_t5_params(path: PathLike, config: ModelConfig | None = None,
                      restore_dtype: Any = None) -> dict[str, Any]:
  """`load_hf_params` for a T5 / mT5 directory (the name older code calls)."""
  return load_hf_params(path, config, restore_dtype)


def hf_state_dict_from_params(params: Mapping[str, Any],
                              config: ModelConfig) -> dict[str, np.ndarray]:
  """The Hugging Face tensors (names as `save_pretrained` writes them) of our `params`.

  Only the frozen model's variables are exported; other leaves (e.g. `encoder/prompt/...`) are
  ignored.

  Raises:
    ValueError: a variable of `config`'s model is missing from `params` or has the wrong shape.
  """
  flat = tree.flatten_params(params)
  state = {}
  fused: dict[str, np.ndarray] = {}  # hf_name -> fused tensor as its view, filled part by part.
  for t in families.for_config(config).tensor_names(config):
    if t.path not in flat:
      raise ValueError(f"params have no '{t.path}' (expected shape {list(t.shape)}) for "
                       f"Hugging Face {t.hf_name!r}.")
    value = np.asarray(flat[t.path])
    if tuple(value.shape) != t.shape:
      raise ValueError(f"params '{t.path}' has shape {list(value.shape)}, expected "
                       f"{list(t.shape)} by the config.")
    value = value.T if t.transpose else value
    if t.fused is None:
      state[t.hf_name] = np.ascontiguousarray(value.reshape(t.hf_shape))
      continue
    if t.hf_name not in fused:
      fused[t.hf_name] = np.zeros(t.fused.view, value.dtype)
    t.fused.put(fused[t.hf_name], value)
    state[t.hf_name] = fused[t.hf_name].reshape(t.fused.hf_shape)
  return state


def save_hf_checkpoint(params: Mapping[str, Any], config: ModelConfig,
                       directory: PathLike) -> None:
  """Writes config.json and model.safetensors that transformers loads (e.g.
  `T5ForConditionalGeneration`, `LlamaForCausalLM`)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / CONFIG_FILE, "w", encoding="utf-8") as f:
    json.dump(hf_config_from_config(config), f, indent=2, sort_keys=True)
  safetensors.numpy.save_file(
      hf_state_dict_from_params(params, config), str(directory / SAFETENSORS_FILE),
      metadata={"format": "pt"})


save_hf_t5_checkpoint = save_hf_checkpoint  # The name older code calls.
