"""Parameter trees of models: initialisation, shapes, logical axes, the prompt-method subtree,
frozen-dtype casts and prompt replacement (`.npy` files or arrays, shape-checked)."""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import prompt_files
from prompt_tuning.checkpoints import tree
from prompt_tuning.models import ModelConfig

# Parameters of a prompt method (trainable; absent from frozen checkpoints).
PROMPT_PARAMS_REGEX = ".*/prompt/.*"
# Parameters of any prompt-learning method: input prompts, P-tuning encoders, prefixes.
METHOD_PARAMS_REGEX = ".*/(prompt|prefix)/.*"


def init_params(module: nn.Module, config: ModelConfig, rng: jax.Array) -> dict:
  """Random parameters (float32, unboxed) for `module`."""
  return nn.unbox(module.init(rng, *_dummy_inputs(config), **_dummy_options(module))["params"])


def param_shapes(module: nn.Module, config: ModelConfig) -> dict:
  """Parameter tree of `jax.ShapeDtypeStruct`s, with no allocation."""
  return jax.eval_shape(lambda: init_params(module, config, jax.random.PRNGKey(0)))


def param_axes(module: nn.Module, config: ModelConfig) -> dict:
  """Tree of logical axis-name tuples, one per parameter."""
  boxed = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *_dummy_inputs(config),
                                             **_dummy_options(module)))
  return jax.tree_util.tree_map(lambda box: tuple(box.names), boxed["params"],
                                is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _dummy_options(module: nn.Module) -> dict[str, jax.Array]:
  """Keyword inputs a module needs to build its parameters: a template model's slots."""
  template = getattr(module, "template", None)
  if not template:
    return {}
  from prompt_tuning import templates  # Local: only templates need it.
  return {"prompt_slots": jnp.zeros((1, len(templates.parse_template(template).slot_lengths)),
                                    jnp.int32)}


def _dummy_inputs(config: ModelConfig) -> tuple[jax.Array, ...]:
  tokens = jnp.ones((1, 1), jnp.int32)
  if config.architecture == "decoder_only":
    return (tokens,)
  return (tokens, tokens)


def _is_prompt_path(path: str) -> bool:
  return re.fullmatch(PROMPT_PARAMS_REGEX, path) is not None


def subtree_matching(params: dict, regex: str) -> dict:
  """The parameters whose '/'-joined path fully matches `regex`, as a nested dict."""
  flat = tree.flatten_params(params)
  return tree.unflatten_params({p: v for p, v in flat.items() if re.fullmatch(regex, p)})


def with_frozen_dtype(params: dict, dtype: Any,
                      trainable_regex: str = METHOD_PARAMS_REGEX) -> dict:
  """`params` (arrays or `jax.ShapeDtypeStruct`s) with the frozen floating-point leaves in `dtype`.

  Frozen = not fully matching `trainable_regex`. bfloat16 frozen weights take half the memory of
  float32 ones; layers cast every weight to the activation dtype where they use it, so the
  computation's dtype is unchanged. `dtype` None returns `params` as it is.
  """
  if dtype is None:
    return params
  dtype = jnp.dtype(dtype)

  def cast(path: str, leaf: Any) -> Any:
    if re.fullmatch(trainable_regex, path) or not jnp.issubdtype(leaf.dtype, jnp.floating):
      return leaf
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(leaf.shape, dtype, sharding=leaf.sharding)
    return leaf.astype(dtype)

  return tree.unflatten_params(
      {path: cast(path, leaf) for path, leaf in tree.flatten_params(params).items()})


def method_subtree(params: dict) -> dict:
  """The parameters prompt learning trains (METHOD_PARAMS_REGEX), nested."""
  return subtree_matching(params, METHOD_PARAMS_REGEX)


def prompt_subtree(params: dict) -> dict:
  """The parameters under a `.../prompt/...` path (the prompt method's), nested."""
  return subtree_matching(params, PROMPT_PARAMS_REGEX)


def prompt_param_path(params: dict) -> str:
  """Path of the single [P, D] `prompt` parameter (prompt tuning's); error otherwise."""
  flat = tree.flatten_params(params)
  paths = [p for p, v in flat.items()
           if _is_prompt_path(p) and p.endswith("/prompt") and len(np.shape(v)) == 2]
  if len(paths) != 1:
    found = ", ".join(paths) or "none"
    raise ValueError(
        f"prompt= needs a model with exactly one [P, D] prompt parameter under '.../prompt/'; "
        f"found {found}. Load the model with a prompt-tuning gin file (e.g. "
        "'models/t5_1_1_base_prompt.gin'); other methods export their [P, D] prompt for that.")
  return paths[0]


def read_prompt(prompt: Any, config: Optional[ModelConfig] = None, *,
                length: Optional[int] = None, width: Optional[int] = None,
                target: str = "the model's prompt") -> np.ndarray:
  """A prompt as float32 [P, D] from an array or a `.npy` path (any float dtype), checked by
  `prompt_files` against `config` / `width` (D) and `length` (P) when given."""
  if isinstance(prompt, (str, os.PathLike)):
    return prompt_files.load_prompt_file(prompt, config, length=length, width=width,
                                         target=target)
  return prompt_files.validate_prompt(prompt, config, length=length, width=width,
                                      source="prompt=", target=target)


def replace_prompt(params: dict, prompt: Any, config: Optional[ModelConfig] = None) -> dict:
  """`params` with the prompt parameter set to `prompt` (array or `.npy` path), shape-checked
  (`config`, when given, names the right gin file in a width-mismatch error)."""
  path = prompt_param_path(params)
  flat = tree.flatten_params(params)
  length, width = np.shape(flat[path])  # prompt_param_path guarantees [P, D].
  flat[path] = jnp.asarray(read_prompt(prompt, config, length=length, width=width,
                                       target=f"the model's prompt parameter '{path}'"))
  return tree.unflatten_params(flat)
