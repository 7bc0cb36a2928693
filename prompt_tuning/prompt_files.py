"""Prompt files: a prompt saved as a `.npy` array [P, D], read back and checked against a model.

A prompt file holds one floating-point array of shape [prompt length P, model width D] (the
original paper's released prompts are float32 [100, 768] for T5 1.1 base). `load_prompt_file`
reads it as float32 and checks it against the model it is meant for: its width against the
model config's `emb_dim`, its length against the model's PROMPT_LENGTH. Errors name the file,
both shapes, and the gin setting that fixes the mismatch.
"""

from __future__ import annotations

import io
import os
import pathlib
import uuid
import zipfile
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
  from prompt_tuning.models import T5Config

PathLike = str | os.PathLike

# Model width (EMBED_DIM) -> size name of the shipped gin files (configs/models/sizes/).
_T5_1_1_SIZES = {512: "small", 768: "base", 1024: "large", 2048: "xl", 4096: "xxl"}
_T5_1_0_SIZES = {512: "small", 768: "base", 1024: "large"}  # T5 1.0 3B and 11B are 1024 too.
_DECODER_ONLY_SIZES = {512: "small", 768: "base", 1024: "large"}
_MT5_VOCAB_SIZE = 250112



class PromptFileError(ValueError):
  """A prompt file or array that does not fit the model (shape, dtype, values, format)."""


def _family(config: Optional["T5Config"]) -> str:
  """'t5_1_1', 'mt5', 't5_1_0' or 'decoder_only': the model family of `config` (T5 1.1 if None)."""
  if config is None:
    return "t5_1_1"
  if config.architecture == "decoder_only":
    return "decoder_only"
  if config.vocab_size == _MT5_VOCAB_SIZE:
    return "mt5"
  if tuple(config.mlp_activations) == ("relu",):
    return "t5_1_0"
  return "t5_1_1"


def model_gin_for_width(width: int, config: Optional["T5Config"] = None) -> Optional[str]:
  """The shipped gin file(s) for a prompt-tuning model of width `width` in `config`'s family.

  Returns e.g. "models/t5_1_1_large_prompt.gin", or None when no shipped size has that width.
  """
  family = _family(config)
  if family in ("t5_1_1", "mt5"):
    size = _T5_1_1_SIZES.get(int(width))
    return None if size is None else f"models/{family}_{size}_prompt.gin"
  if family == "t5_1_0":
    size = _T5_1_0_SIZES.get(int(width))
    if size is None:
      return None
    return f"models/t5_1_0_{size}.gin + architectures/prompt_tuning.gin"
  size = _DECODER_ONLY_SIZES.get(int(width))
  if size is None:
    return None
  return f"models/decoder_only_{size}.gin + architectures/prompt_tuning.gin"


def _is_float_dtype(dtype: np.dtype) -> bool:
  # ml_dtypes' bfloat16 is not a subtype of np.floating, but is a floating-point format.
  return bool(np.issubdtype(dtype, np.floating)) or dtype.name == "bfloat16"


def _shape_str(length: Optional[int], width: Optional[int]) -> str:
  return f"[{'P' if length is None else length}, {'D' if width is None else width}]"


def validate_prompt(prompt: Any,
                    config: Optional["T5Config"] = None,
                    *,
                    length: Optional[int] = None,
                    width: Optional[int] = None,
                    source: str = "the prompt",
                    target: str = "the model's prompt",
                    check_finite: bool = True) -> np.ndarray:
  """`prompt` as float32 [P, D], checked against a model; raises ValueError naming the fix.

  Args:
    prompt: array-like [P, D] of any floating-point dtype (float16/bfloat16/float64 are cast).
    config: the model the prompt is for; its `emb_dim` is the expected width D.
    length: the expected prompt length P (the model's PROMPT_LENGTH); None = any.
    width: the expected width D; overrides `config.emb_dim` (used when only a shape is known).
    source: what the prompt is, for error messages (e.g. "prompt file /x/sst2.npy").
    target: what it is checked against, for error messages.
    check_finite: reject NaN / infinite values.
  """
  if width is None and config is not None:
    width = int(config.emb_dim)
  array = np.asarray(prompt)
  if not _is_float_dtype(array.dtype):
    raise PromptFileError(
        f"{source} has dtype {array.dtype}; a prompt must hold floating-point embeddings "
        "(float32, bfloat16, float16 or float64). Save the trained prompt array itself, not "
        "token ids.")
  if array.ndim != 2:
    hint = ""
    if array.ndim == 3 and array.shape[0] == 1:
      hint = f" It looks batched: save prompt[0] (shape {list(array.shape[1:])}) instead."
    raise PromptFileError(
        f"{source} has shape {list(array.shape)}; a prompt must be 2-D "
        f"{_shape_str(length, width)} (prompt length, model width).{hint}")
  array = array.astype(np.float32)
  got_length, got_width = array.shape
  fixes = []
  if width is not None and got_width != width:
    suggestion = model_gin_for_width(got_width, config)
    use = f"use {suggestion}" if suggestion else "use the model it was trained with"
    fixes.append(f"this prompt is for a model with d_model {got_width}, not {width}: {use}")
  if length is not None and got_length != length:
    fixes.append(f"set PROMPT_LENGTH={got_length} (e.g. --gin.PROMPT_LENGTH={got_length})")
  if fixes:
    raise PromptFileError(
        f"{source} has shape {list(array.shape)} but {target} has shape "
        f"{_shape_str(length, width)}: " + "; and ".join(fixes) + ".")
  bad = int(np.size(array) - np.isfinite(array).sum()) if check_finite else 0
  if bad:
    raise PromptFileError(
        f"{source} holds {bad} NaN or infinite values, so it cannot be used (training likely "
        "diverged): use a prompt from an earlier checkpoint or retrain with a lower learning rate.")
  return array


def _read_bytes(path: str) -> bytes:
  """The bytes of a local file, or of a remote one (gs://... via tf.io.gfile); error if absent."""
  if "://" in path:
    import tensorflow as tf  # Local: only remote prompt files need TensorFlow's file systems.
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()
  elif os.path.isfile(path):
    with open(path, "rb") as f:
      return f.read()
  raise PromptFileError(f"prompt file {path} does not exist: pass the path of a `.npy` prompt "
                   "[P, D] (PROMPT_FILE / prompt=).")


def load_prompt_file(path: PathLike,
                     config: Optional["T5Config"] = None,
                     *,
                     length: Optional[int] = None,
                     width: Optional[int] = None,
                     target: str = "the model's prompt") -> np.ndarray:
  """Reads a `.npy` prompt file as float32 [P, D] and validates it (see `validate_prompt`).

  Args:
    path: a `.npy` file holding one [P, D] floating-point array (local, or gs://...), or a
      Hugging Face PEFT prompt-tuning adapter folder (adapter_config.json +
      adapter_model.safetensors, as PEFT's `save_pretrained` writes it).
    config: the model the prompt is for (`T5Config`; its `emb_dim` is D).
    length: the model's PROMPT_LENGTH (expected P); None = any.
    width: expected D when no config is at hand.
    target: what the prompt is checked against, for error messages.
  """
  path = os.fspath(path)
  if "://" not in path and os.path.isdir(path):
    return _load_adapter_folder(path, config, length=length, width=width, target=target)
  source = f"prompt file {path}"
  data = io.BytesIO(_read_bytes(path))
  if zipfile.is_zipfile(data):
    with np.load(data) as archive:
      names = list(archive.files)
    example = names[0] if names else "NAME"
    raise PromptFileError(
        f"{source} is a .npz archive (arrays {names}), not a .npy prompt: extract the [P, D] "
        f"prompt, e.g. numpy.save('prompt.npy', numpy.load({path!r})[{example!r}]).")
  data.seek(0)
  try:
    array = np.load(data, allow_pickle=False)
  except (ValueError, OSError) as error:
    raise PromptFileError(
        f"{source} is not a readable NumPy .npy array ({error}); write prompts with numpy.save "
        "or prompt_tuning.prompt_files.save_prompt_file.") from error
  return validate_prompt(array, config, length=length, width=width, source=source, target=target)


def _load_adapter_folder(path: str, config: Optional["T5Config"], *, length: Optional[int],
                         width: Optional[int], target: str) -> np.ndarray:
  """The [P, D] prompt of a PEFT prompt-tuning adapter folder, checked like a `.npy` file."""
  from prompt_tuning import peft_interchange  # Local: it imports this module.
  if not os.path.isfile(os.path.join(path, peft_interchange.ADAPTER_CONFIG_FILE)):
    raise PromptFileError(
        f"prompt file {path} is a folder without {peft_interchange.ADAPTER_CONFIG_FILE}: pass a "
        "`.npy` prompt [P, D] or a PEFT prompt-tuning adapter folder.")
  try:
    prompt = peft_interchange.import_peft_adapter(path)
  except ValueError as error:
    raise PromptFileError(str(error)) from error
  return validate_prompt(prompt, config, length=length, width=width,
                         source=f"PEFT adapter {path}", target=target)


def expand_prompt_files(spec: Any) -> list[str]:
  """The prompt files a PROMPT_FILES value names, in order: a list of paths (each may be a glob),
  a glob ("runs/*/prompt.npy"), or a folder (its `.npy` files, sorted by name).

  A PEFT adapter folder in a list counts as one prompt. Errors name what matched nothing.
  """
  import glob  # Local: only ensembles expand file lists.
  if isinstance(spec, (str, os.PathLike)):
    path = os.fspath(spec)
    if os.path.isdir(path):
      found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".npy"))
      if not found:
        raise PromptFileError(f"PROMPT_FILES={path!r} is a folder without .npy prompt files: "
                              "put the [P, D] prompts there, or list the files.")
      return found
    specs = [path]
  elif isinstance(spec, (list, tuple)) and spec:
    specs = [os.fspath(s) for s in spec]
  else:
    raise PromptFileError(f"PROMPT_FILES={spec!r}: give a list of .npy paths, a glob or a "
                          "folder of .npy files, e.g. PROMPT_FILES=\"['a.npy', 'b.npy']\".")
  paths = []
  for item in specs:
    if glob.has_magic(item):
      matched = sorted(glob.glob(item))
      if not matched:
        raise PromptFileError(f"PROMPT_FILES: the pattern {item!r} matches no file.")
      paths.extend(matched)
    else:
      paths.append(item)
  return paths


def save_prompt_file(path: PathLike, prompt: Any) -> pathlib.Path:
  """Writes `prompt` [P, D] as a float32 `.npy` file atomically (temporary file, then rename).

  Readers never see a partly written file; an existing file at `path` is replaced.
  Returns the path written (with a `.npy` suffix added if missing, as numpy.save would).
  """
  target = pathlib.Path(os.fspath(path))
  if target.suffix != ".npy":
    target = target.with_name(target.name + ".npy")
  array = validate_prompt(prompt, source=f"prompt to save to {target}", check_finite=False)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp_name = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp_name, "xb") as f:  # Created with the usual umask permissions.
      np.save(f, array)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_name, target)
  except BaseException:
    if os.path.exists(tmp_name):
      os.unlink(tmp_name)
    raise
  return target
