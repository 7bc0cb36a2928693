"""`load_model`: the Python entry point that builds a model from gin files and restores weights."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import checkpoints, prompt_files, prompts
from prompt_tuning.checkpoints import tree
from prompt_tuning.models import T5Config, build_model
from prompt_tuning.train import decoding

DECODER_START_TOKEN = 0
EOS_ID = 1
# Parameters of a prompt method (trainable; absent from frozen checkpoints).
PROMPT_PARAMS_REGEX = ".*/prompt/.*"
# Parameters of any prompt-learning method: input prompts, P-tuning encoders, prefixes.
METHOD_PARAMS_REGEX = ".*/(prompt|prefix)/.*"


def init_params(module: nn.Module, config: T5Config, rng: jax.Array) -> dict:
  """Random parameters (float32, unboxed) for `module`."""
  return nn.unbox(module.init(rng, *_dummy_inputs(config))["params"])


def param_shapes(module: nn.Module, config: T5Config) -> dict:
  """Parameter tree of `jax.ShapeDtypeStruct`s, with no allocation."""
  return jax.eval_shape(lambda: init_params(module, config, jax.random.PRNGKey(0)))


def param_axes(module: nn.Module, config: T5Config) -> dict:
  """Tree of logical axis-name tuples, one per parameter."""
  boxed = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *_dummy_inputs(config)))
  return jax.tree_util.tree_map(lambda box: tuple(box.names), boxed["params"],
                                is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _dummy_inputs(config: T5Config) -> tuple[jax.Array, ...]:
  tokens = jnp.ones((1, 1), jnp.int32)
  if config.architecture == "decoder_only":
    return (tokens,)
  return (tokens, tokens)


@dataclasses.dataclass
class LoadedModel:
  """A built model with restored parameters, ready for logits and generation."""

  config: T5Config
  module: nn.Module
  params: dict
  # The prompt-learning method's config (prompts.PromptConfig, p_tuning.PTuningConfig,
  # prefix_tuning.PrefixConfig), or None for a plain model.
  prompt_config: Any = None

  @property
  def is_decoder_only(self) -> bool:
    return self.config.architecture == "decoder_only"

  @property
  def prompt_params(self) -> dict:
    """The prompt method's parameters (nested, T5X paths); empty for a plain model."""
    return prompt_subtree(self.params)

  @property
  def method_params(self) -> dict:
    """Every prompt-learning parameter (prompts, prompt encoders, prefixes), nested."""
    return method_subtree(self.params)

  def with_prompt(self, prompt: Any) -> dict:
    """`params` with the prompt parameter replaced by `prompt` ([P, D] array or `.npy` path)."""
    return replace_prompt(self.params, prompt, self.config)

  def _params(self, prompt: Any) -> dict:
    return self.params if prompt is None else self.with_prompt(prompt)

  def logits(self, *tokens: Any, prompt: Any = None, **kwargs: Any) -> jax.Array:
    """Encoder-decoder: `logits(encoder_input_tokens [B, T], decoder_input_tokens [B, S])`;
    decoder-only: `logits(input_tokens [B, S])` -> float32 [B, S, vocab]. Token 0 is padding.

    `prompt` ([P, D] array or `.npy` path) replaces a prompt model's prompt for this call.
    Extra keyword arguments (e.g. `decoder_target_tokens`) go to the module's `__call__`.
    """
    arrays = tuple(jnp.asarray(t, jnp.int32) for t in tokens)
    return _apply_call(self.module, self._params(prompt), arrays, **kwargs)

  def generate(self,
               inputs: Any,
               max_decode_length: int = 32,
               *,
               method: str = "greedy",
               num_beams: int = 4,
               alpha: float = 0.6,
               temperature: float = 1.0,
               top_k: int = 0,
               top_p: float = 1.0,
               rng: Optional[jax.Array] = None,
               eos_id: int = EOS_ID,
               prompt: Any = None) -> np.ndarray:
    """Generates up to `max_decode_length` tokens after `inputs` [B, T] (0 = padding).

    method: "greedy", "beam" (best of `num_beams`, T5X brevity penalty `alpha`) or "sample"
    (temperature / top-k / top-p). `prompt` ([P, D] array or `.npy` path) replaces a prompt
    model's prompt. Returns int32 [B, max_decode_length], 0 after EOS.
    """
    if method not in ("greedy", "beam", "sample"):
      raise ValueError(f"generate(method={method!r}): use 'greedy', 'beam' or 'sample'.")
    if rng is None:
      rng = jax.random.PRNGKey(0)
    inputs = jnp.asarray(inputs, jnp.int32)
    options = dict(method=method, max_decode_length=int(max_decode_length), num_beams=num_beams,
                   alpha=float(alpha), temperature=float(temperature), top_k=int(top_k),
                   top_p=float(top_p), eos_id=int(eos_id))
    generate_fn = generate_decoder_only if self.is_decoder_only else generate_encoder_decoder
    return np.asarray(generate_fn(self.module, self._params(prompt), inputs, rng, **options))


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


def read_prompt(prompt: Any, config: Optional[T5Config] = None, *,
                length: Optional[int] = None, width: Optional[int] = None,
                target: str = "the model's prompt") -> np.ndarray:
  """A prompt as float32 [P, D] from an array or a `.npy` path (any float dtype), checked by
  `prompt_files` against `config` / `width` (D) and `length` (P) when given."""
  if isinstance(prompt, (str, os.PathLike)):
    return prompt_files.load_prompt_file(prompt, config, length=length, width=width,
                                         target=target)
  return prompt_files.validate_prompt(prompt, config, length=length, width=width,
                                      source="prompt=", target=target)


def replace_prompt(params: dict, prompt: Any, config: Optional[T5Config] = None) -> dict:
  """`params` with the prompt parameter set to `prompt` (array or `.npy` path), shape-checked
  (`config`, when given, names the right gin file in a width-mismatch error)."""
  path = prompt_param_path(params)
  flat = tree.flatten_params(params)
  length, width = np.shape(flat[path])  # prompt_param_path guarantees [P, D].
  flat[path] = jnp.asarray(read_prompt(prompt, config, length=length, width=width,
                                       target=f"the model's prompt parameter '{path}'"))
  return tree.unflatten_params(flat)


@functools.partial(jax.jit, static_argnums=(0,))
def _apply_call(module: nn.Module, params: dict, tokens: tuple, **kwargs) -> jax.Array:
  return module.apply({"params": params}, *tokens, **kwargs)


def _search(tokens_to_logits, cache, start_tokens_B, start_step, rng, *, method: str,
            max_decode_length: int, num_beams: int, alpha: float, temperature: float,
            top_k: int, top_p: float, eos_id: int) -> jax.Array:
  """Runs the chosen search from `start_tokens_B` at `start_step` -> tokens [B, L]."""
  common = dict(max_decode_len=max_decode_length, eos_id=eos_id, start_step=start_step)
  if method == "beam":
    output = decoding.beam_search(tokens_to_logits, cache, start_tokens_B, num_beams=num_beams,
                                  alpha=alpha, **common)
    return output.tokens_BKL[:, 0]
  if method == "sample":
    return decoding.sample_decode(tokens_to_logits, cache, start_tokens_B, rng=rng,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  **common).tokens_BL
  return decoding.greedy_decode(tokens_to_logits, cache, start_tokens_B, **common).tokens_BL


def _tokens_to_logits(module: nn.Module, variables: dict) -> decoding.TokensToLogits:
  """The one-step function the decoding algorithms call: cached step -> logits [B, V]."""

  def tokens_to_logits(tokens_B1, cache, step):
    logits_B1V, cache = module.apply(variables, tokens_B1, cache, step, method=module.decode_step)
    return logits_B1V[:, 0], cache

  return tokens_to_logits


_STATIC = ("module", "method", "max_decode_length", "num_beams", "alpha", "temperature", "top_k",
           "top_p", "eos_id")


@functools.partial(jax.jit, static_argnames=_STATIC)
def generate_encoder_decoder(module: nn.Module, params: dict, encoder_input_tokens: jax.Array,
                              rng: jax.Array, **options) -> jax.Array:
  """Encodes once, fills the cross-attention cache, then decodes from the start token."""
  variables = {"params": params}
  encoded_BSD, encoder_mask_BS = module.apply(variables, encoder_input_tokens,
                                              method=module.encode_with_mask)
  cache = module.apply(variables, encoded_BSD, encoder_mask_BS, options["max_decode_length"],
                       method=module.init_decode_cache)

  start_B = jnp.full((encoder_input_tokens.shape[0],), DECODER_START_TOKEN, jnp.int32)
  return _search(_tokens_to_logits(module, variables), cache, start_B, 0, rng, **options)


def left_align_padding(tokens_BT: jax.Array) -> jax.Array:
  """Moves each row's padding (0s) to the left, keeping token order: [a b 0 0] -> [0 0 a b]."""
  order_BT = jnp.argsort(tokens_BT > 0, axis=1, stable=True)  # pads first, then real tokens.
  return jnp.take_along_axis(tokens_BT, order_BT, axis=1)


@functools.partial(jax.jit, static_argnames=_STATIC)
def generate_decoder_only(module: nn.Module, params: dict, input_tokens: jax.Array,
                           rng: jax.Array, **options) -> jax.Array:
  """Prefills the cache with the (left-aligned) inputs, then continues after the last one.

  A prompt model's cache has P more positions; its prefill writes the prompt (always).
  """
  variables = {"params": params}
  tokens_BT = left_align_padding(input_tokens)
  batch, length = tokens_BT.shape
  num_prompt = getattr(module, "prompt_length", 0)
  cache = module.apply(variables, batch, length + options["max_decode_length"],
                       method=module.init_decode_cache)
  if length > 1 or num_prompt:
    cache = module.apply(variables, tokens_BT[:, :-1], cache, method=module.prefill)

  return _search(_tokens_to_logits(module, variables), cache, tokens_BT[:, -1],
                 length - 1 + num_prompt, rng, **options)


def load_model(gin_files: Sequence[str] | str = (),
               bindings: Sequence[str] = (),
               checkpoint: Optional[str | os.PathLike] = None,
               *,
               gin_search_paths: Sequence[str] = (),
               restore_dtype: Any = None,
               frozen_dtype: Any = None,
               seed: int = 0,
               vocabulary: Any = None) -> LoadedModel:
  """Builds the model described by gin files (+ `NAME=VALUE` bindings) and restores weights.

  Args:
    gin_files: gin files (names relative to the search paths, e.g. "models/t5_1_1_base.gin").
      May be empty when `checkpoint` is a Hugging Face directory: its config.json is used.
    bindings: extra gin bindings, e.g. ("ACTIVATION_DTYPE='bfloat16'",).
    checkpoint: T5X checkpoint directory or Hugging Face directory; None = random weights
      (seeded by `seed`).
    gin_search_paths: extra folders to resolve gin files from.
    restore_dtype: dtype to read checkpoint arrays as (parameters are then cast to float32).
    frozen_dtype: dtype to keep the frozen (non prompt-method) parameters in, e.g. "bfloat16"
      to halve their memory; None keeps float32. Computation runs in the activation dtype.
    vocabulary: a `seqio.Vocabulary` for prompt initializers that tokenize text (class labels)
      and were given none; their embedding table is the loaded model's own.
  """
  if isinstance(gin_files, (str, os.PathLike)):
    gin_files = [os.fspath(gin_files)]
  prompt_config = None
  if gin_files:
    config = _config_from_gin(gin_files, bindings, gin_search_paths)
    prompt_config = _prompt_config_from_gin()
  elif checkpoint is not None and checkpoints.checkpoint_format(checkpoint) == "huggingface":
    config = checkpoints.huggingface.config_from_hf(checkpoint)
  else:
    raise ValueError("load_model needs gin files describing the model (e.g. "
                     "'models/t5_1_1_base.gin') or a Hugging Face checkpoint directory.")
  module = build_any_model(config, prompt_config)
  if checkpoint is None:
    params = with_frozen_dtype(init_params(module, config, jax.random.PRNGKey(seed)),
                               frozen_dtype)
    if prompts.needs_model_context(prompt_config):
      params = _with_fresh_method_params(module, config, params, jax.random.PRNGKey(seed),
                                         prompt_config, vocabulary)
  else:
    expected = with_frozen_dtype(param_shapes(module, config), frozen_dtype)
    allow_missing = None if prompt_config is None else METHOD_PARAMS_REGEX
    params = checkpoints.load_params(checkpoint, expected, config, restore_dtype=restore_dtype,
                                     allow_missing=allow_missing)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    if prompt_config is not None:
      params = _with_fresh_method_params(module, config, params, jax.random.PRNGKey(seed),
                                         prompt_config, vocabulary)
  return LoadedModel(config=config, module=module, params=params, prompt_config=prompt_config)


def build_any_model(config: T5Config, prompt_config: Any = None) -> nn.Module:
  """The plain model of `config`, or its prompt-learning model when `prompt_config` is given."""
  if prompt_config is None:
    return build_model(config)
  if hasattr(prompt_config, "build_model"):  # Methods inside the layers (prefix tuning).
    return prompt_config.build_model(config)
  from prompt_tuning import layers  # Local: plain models do not need the prompt layers.
  return layers.build_prompt_model(config, prompt_config)


def _with_fresh_method_params(module: nn.Module, config: T5Config, params: dict,
                              rng: jax.Array, prompt_config: Any = None,
                              vocabulary: Any = None) -> dict:
  """Restored frozen `params` plus freshly initialised prompt-method parameters (initializers
  waiting for the model get `params`' own embedding table and `vocabulary`)."""
  if prompts.needs_model_context(prompt_config):
    context = prompts.ModelContext.from_params(params, vocabulary)
    module = build_any_model(config, prompts.bind_model_context(prompt_config, context))

  def init_prompt(rng):  # Under jit, XLA drops the (unused) frozen-weight initialisation.
    return method_subtree(init_params(module, config, rng))

  flat = tree.flatten_params(params)
  flat.update(tree.flatten_params(jax.jit(init_prompt)(rng)))
  return tree.unflatten_params(flat)


def _config_from_gin(gin_files: Sequence[str], bindings: Sequence[str],
                     gin_search_paths: Sequence[str]) -> T5Config:
  from prompt_tuning import gin_utils  # Local: gin is parsed only by entry points.
  from prompt_tuning.models import config as model_config

  gin_utils.parse_gin_config(gin_files, bindings, gin_search_paths)
  return gin_utils.configured(model_config.T5Config)()


def _prompt_config_from_gin() -> Any:
  """The prompt-learning method config the parsed gin files select, or None (a plain model)."""
  from prompt_tuning import gin_utils, prompts  # Local: gin is parsed only by entry points.
  from prompt_tuning.methods import prefix_tuning

  input_prompt = gin_utils.configured(prompts.prompt_config)()
  prefix = gin_utils.configured(prefix_tuning.prefix_config)()
  if input_prompt is not None and prefix is not None:
    raise gin_utils.GinConfigError(
        "the gin files select both an input prompt method and prefix tuning: include only one "
        "of configs/architectures/{prompt_tuning,p_tuning,prefix_tuning}.gin.")
  return input_prompt if input_prompt is not None else prefix
