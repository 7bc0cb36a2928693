"""Soft prompts to and from Hugging Face PEFT prompt-tuning adapters (no torch needed).

An adapter directory, as PEFT 0.21 writes and reads it (`PeftModel.from_pretrained(base, dir)`):

  adapter_config.json         PromptTuningConfig fields: peft_type "PROMPT_TUNING", task_type
                              ("SEQ_2_SEQ_LM" for T5, "CAUSAL_LM" for decoder-only LMs),
                              num_virtual_tokens P, token_dim D, num_transformer_submodules S, ...
  adapter_model.safetensors   one tensor, "prompt_embeddings" [S * P, D] (float32 here).

PEFT allocates P rows per "transformer submodule": S defaults to 2 for SEQ_2_SEQ_LM and 1
otherwise. For prompt tuning only the first P rows are ever used: PEFT's seq2seq forward and
generate prepend `prompt_embeddings[:P]` to the encoder's input embeddings (with P ones
prepended to the attention mask) and give the decoder nothing; the other P rows are allocated
and saved but unused (only PEFT's multitask prompt tuning / CPT feed them to the decoder). By
default the export follows PEFT's own layout (S = 2 for T5, rows P..2P-1 zero), so the adapter
looks like one PEFT trained itself; `num_transformer_submodules=1` writes exactly [P, D]. Both load
in PEFT and compute the same thing.

Equivalence with our prompt tuning: PEFT's seq2seq prompt tuning is our encoder-decoder prompt
tuning with `placement="prefix"` and `decoder_attends_to_prompt=True` (the defaults): the prompt
precedes the encoder input, every encoder position attends to it, and the decoder cross-attends
to the encoded prompt positions. Our other placements ('prefix_after_bos', 'suffix_before_eos')
and `decoder_attends_to_prompt=False` have no PEFT equivalent and are refused by
`export_peft_adapter` when the prompt config is passed. For decoder-only models a CAUSAL_LM
adapter prepends the prompt to the inputs like our `PromptDecoderOnly`, but needs a Hugging Face
causal LM equal to our decoder-only T5 (Transformers has no such class; see
tools/make_peft_golden.py). tools/check_peft_export.py loads an exported adapter in PEFT and
compares its T5 logits with ours.
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from typing import TYPE_CHECKING, Any, Callable, Optional

import ml_dtypes  # noqa: F401  Registers numpy's 'bfloat16' so safetensors can read it.
import numpy as np
import safetensors
import safetensors.numpy

from prompt_tuning import prompt_files

if TYPE_CHECKING:
  from prompt_tuning.models import T5Config

PathLike = str | os.PathLike

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_TORCH_WEIGHTS_FILE = "adapter_model.bin"
PROMPT_EMBEDDINGS_KEY = "prompt_embeddings"
PROMPT_TUNING = "PROMPT_TUNING"
SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
CAUSAL_LM = "CAUSAL_LM"
TASK_TYPES = (SEQ_2_SEQ_LM, CAUSAL_LM)


def default_num_transformer_submodules(task_type: str) -> int:
  """PEFT's default S: prompt rows are allocated per submodule (encoder + decoder for seq2seq)."""
  return 2 if task_type == SEQ_2_SEQ_LM else 1


def task_type_for(config: "T5Config") -> str:
  """The PEFT task type of a model config: SEQ_2_SEQ_LM (encoder-decoder) or CAUSAL_LM."""
  return CAUSAL_LM if config.architecture == "decoder_only" else SEQ_2_SEQ_LM


def _check_exportable(prompt_config: Any) -> None:
  """Refuses prompt configs whose model PEFT's prompt tuning does not compute."""
  if prompt_config is None:
    return
  placement = getattr(prompt_config, "placement", "prefix")
  if placement != "prefix":
    raise ValueError(
        f"this prompt was trained with PROMPT_PLACEMENT={placement!r}, but PEFT prompt tuning "
        "always puts the prompt before the whole input: only 'prefix' prompts export to an "
        "equivalent PEFT adapter (retrain with PROMPT_PLACEMENT='prefix').")
  if not getattr(prompt_config, "decoder_attends_to_prompt", True):
    raise ValueError(
        "this prompt was trained with DECODER_ATTENDS_TO_PROMPT=False, but in PEFT the T5 decoder "
        "always cross-attends to the encoded prompt positions, so the adapter would compute a "
        "different model: retrain with DECODER_ATTENDS_TO_PROMPT=True to export it.")


def adapter_config_dict(num_virtual_tokens: int,
                        token_dim: int,
                        task_type: str,
                        *,
                        num_transformer_submodules: Optional[int] = None,
                        num_layers: Optional[int] = None,
                        num_attention_heads: Optional[int] = None,
                        base_model_name_or_path: Optional[str] = None) -> dict[str, Any]:
  """The `adapter_config.json` contents of a PEFT 0.21 PromptTuningConfig (RANDOM init)."""
  if task_type not in TASK_TYPES:
    raise ValueError(f"task_type={task_type!r}: use {SEQ_2_SEQ_LM!r} for T5 (encoder-decoder) or "
                     f"{CAUSAL_LM!r} for decoder-only models.")
  if num_transformer_submodules is None:
    num_transformer_submodules = default_num_transformer_submodules(task_type)
  if num_transformer_submodules not in (1, 2):
    raise ValueError(f"num_transformer_submodules={num_transformer_submodules}: PEFT uses 1 or 2.")
  return {
      "auto_mapping": None,
      "base_model_name_or_path": base_model_name_or_path,
      "inference_mode": True,
      "modules_to_save": None,
      "num_attention_heads": num_attention_heads,
      "num_layers": num_layers,
      "num_transformer_submodules": int(num_transformer_submodules),
      "num_virtual_tokens": int(num_virtual_tokens),
      "peft_type": PROMPT_TUNING,
      "prompt_tuning_init": "RANDOM",
      "prompt_tuning_init_text": None,
      "revision": None,
      "task_type": task_type,
      "token_dim": int(token_dim),
      "tokenizer_kwargs": None,
      "tokenizer_name_or_path": None,
  }


def _write_atomically(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
  """Calls write(temporary path) next to `path`, then renames it onto `path`."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def export_peft_adapter(prompt: Any,
                        directory: PathLike,
                        config: Optional["T5Config"] = None,
                        *,
                        task_type: Optional[str] = None,
                        base_model_name_or_path: Optional[str] = None,
                        num_transformer_submodules: Optional[int] = None,
                        prompt_config: Any = None) -> pathlib.Path:
  """Writes a prompt as a PEFT prompt-tuning adapter directory; returns the directory.

  Args:
    prompt: [P, D] array or `.npy` prompt file path.
    directory: output folder (created; the two adapter files in it are replaced atomically).
    config: the model the prompt was trained on; sets the task type, the width check and the
      informational `num_layers` / `num_attention_heads` fields.
    task_type: "SEQ_2_SEQ_LM" or "CAUSAL_LM"; needed when `config` is None.
    base_model_name_or_path: the Hugging Face model the adapter is for (e.g.
      "google/t5-base-lm-adapt" for the paper's T5 1.1 LM-adapted base prompts); PEFT records it
      and `AutoPeftModel*.from_pretrained(directory)` loads it.
    num_transformer_submodules: PEFT's S (rows = S * P); None = PEFT's default for the task
      (2 for seq2seq, whose last P rows are unused and written as zeros).
    prompt_config: the prompt method config (`prompts.PromptConfig`) it was trained with, if
      known; configurations PEFT cannot reproduce are refused.
  """
  _check_exportable(prompt_config)
  if isinstance(prompt, (str, os.PathLike)):
    prompt_PD = prompt_files.load_prompt_file(prompt, config)
  else:
    prompt_PD = prompt_files.validate_prompt(prompt, config, source="the exported prompt")
  if config is not None:
    implied = task_type_for(config)
    if task_type is not None and task_type != implied:
      raise ValueError(f"task_type={task_type!r} contradicts the model config (architecture "
                       f"{config.architecture!r} is {implied!r}); leave task_type unset.")
    task_type = implied
  if task_type is None:
    raise ValueError("export_peft_adapter needs the model config or task_type ('SEQ_2_SEQ_LM' "
                     "for T5, 'CAUSAL_LM' for decoder-only models).")
  length, width = prompt_PD.shape
  num_layers = num_heads = None
  if config is not None:
    num_layers = config.num_decoder_layers if task_type == CAUSAL_LM else config.num_encoder_layers
    num_heads = config.num_heads
  adapter_config = adapter_config_dict(
      length, width, task_type, num_transformer_submodules=num_transformer_submodules,
      num_layers=num_layers, num_attention_heads=num_heads,
      base_model_name_or_path=base_model_name_or_path)
  submodules = adapter_config["num_transformer_submodules"]
  # [S * P, D]: the prompt, then zeros for the rows PEFT allocates but never uses.
  embeddings = np.concatenate(
      [prompt_PD, np.zeros(((submodules - 1) * length, width), np.float32)], axis=0)

  out = pathlib.Path(os.fspath(directory))
  out.mkdir(parents=True, exist_ok=True)
  _write_atomically(out / ADAPTER_WEIGHTS_FILE, lambda p: safetensors.numpy.save_file(
      {PROMPT_EMBEDDINGS_KEY: np.ascontiguousarray(embeddings)}, str(p),
      metadata={"format": "pt"}))
  _write_atomically(out / ADAPTER_CONFIG_FILE, lambda p: p.write_text(
      json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
  return out


def read_adapter_config(directory: PathLike) -> dict[str, Any]:
  """The parsed `adapter_config.json` of an adapter directory (error if it is missing)."""
  path = pathlib.Path(os.fspath(directory)) / ADAPTER_CONFIG_FILE
  if not path.is_file():
    raise ValueError(f"{path} not found: pass a PEFT adapter directory (the folder that "
                     f"`save_pretrained` wrote, holding {ADAPTER_CONFIG_FILE} and "
                     f"{ADAPTER_WEIGHTS_FILE}).")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON ({error}).") from error


_OTHER_METHODS = {
    "P_TUNING": "a P-tuning adapter stores a prompt encoder (MLP/LSTM), not the prompt itself; "
                "compute its output prompt in PEFT and save that",
    "PREFIX_TUNING": "a prefix-tuning adapter stores per-layer keys and values, not an input "
                     "prompt",
    "MULTITASK_PROMPT_TUNING": "a multitask adapter stores shared and per-task factors; export one "
                               "task's prompt from PEFT first",
}


def import_peft_adapter(directory: PathLike,
                        config: Optional["T5Config"] = None,
                        *,
                        length: Optional[int] = None) -> np.ndarray:
  """Reads a PEFT prompt-tuning adapter directory as a float32 prompt [P, D].

  Args:
    directory: folder with adapter_config.json and adapter_model.safetensors.
    config: the model the prompt will be used with; checks the width (and the task type).
    length: expected prompt length (PROMPT_LENGTH); None = any.
  """
  folder = pathlib.Path(os.fspath(directory))
  adapter = read_adapter_config(folder)
  source = f"PEFT adapter {folder}"
  peft_type = adapter.get("peft_type")
  if peft_type != PROMPT_TUNING:
    why = _OTHER_METHODS.get(str(peft_type), "only prompt-tuning adapters hold a [P, D] prompt")
    raise ValueError(f"{source} has peft_type {peft_type!r}, not {PROMPT_TUNING!r}: {why}. "
                     "Import a PromptTuningConfig adapter instead.")
  task_type = adapter.get("task_type")
  if config is not None and task_type in TASK_TYPES and task_type != task_type_for(config):
    raise ValueError(
        f"{source} is for a {task_type} model, but the model config is {config.architecture!r} "
        f"({task_type_for(config)}): use the prompt with a "
        f"{'T5 encoder-decoder' if task_type == SEQ_2_SEQ_LM else 'decoder-only'} model config.")
  weights_path = folder / ADAPTER_WEIGHTS_FILE
  if not weights_path.is_file():
    torch_file = folder / ADAPTER_TORCH_WEIGHTS_FILE
    hint = (f" It has {ADAPTER_TORCH_WEIGHTS_FILE} (a torch pickle, not read here): re-save it "
            "with PEFT's `model.save_pretrained(directory, safe_serialization=True)`."
            if torch_file.is_file() else "")
    raise ValueError(f"{source} has no {ADAPTER_WEIGHTS_FILE}.{hint}")
  with safetensors.safe_open(str(weights_path), framework="numpy") as f:
    keys = list(f.keys())
    if PROMPT_EMBEDDINGS_KEY not in keys:
      raise ValueError(f"{weights_path} has tensors {keys} but no {PROMPT_EMBEDDINGS_KEY!r}: it is "
                       "not a PEFT prompt-tuning adapter's weights file.")
    embeddings = f.get_tensor(PROMPT_EMBEDDINGS_KEY)
  num_virtual_tokens = adapter.get("num_virtual_tokens")
  if not isinstance(num_virtual_tokens, int) or num_virtual_tokens < 0:
    raise ValueError(f"{source}: adapter_config.json has num_virtual_tokens="
                     f"{num_virtual_tokens!r}; it must be the prompt length (an integer >= 0).")
  submodules = adapter.get("num_transformer_submodules")
  if submodules is None:
    submodules = default_num_transformer_submodules(str(task_type))
  token_dim = adapter.get("token_dim")
  expected_rows = num_virtual_tokens * int(submodules)
  if embeddings.ndim != 2 or embeddings.shape[0] != expected_rows or (
      token_dim is not None and embeddings.shape[1] != token_dim):
    raise ValueError(
        f"{source}: {PROMPT_EMBEDDINGS_KEY!r} has shape {list(embeddings.shape)}, but "
        f"adapter_config.json implies [{expected_rows}, {token_dim if token_dim else 'D'}] "
        f"(num_virtual_tokens {num_virtual_tokens} x num_transformer_submodules {submodules}, "
        "token_dim): the two files do not belong together.")
  # PEFT's prompt tuning uses only the first P rows (the encoder's / the LM input's prompt).
  return prompt_files.validate_prompt(embeddings[:num_virtual_tokens], config, length=length,
                                      source=source)
