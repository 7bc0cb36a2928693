"""Building a run's model and its starting parameters: frozen weights restored, prompt fresh.

Shared by the train, eval and infer commands. Step semantics follow T5X: the step recorded in
INITIAL_CHECKPOINT_PATH (e.g. 1_100_000 for the LM-adapted T5 1.1) is where training starts, and
TRAIN_STEPS is the absolute step to stop at.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import api, checkpoints, errors, prompts
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.checkpoints import tree
from prompt_tuning.models import T5Config


@dataclasses.dataclass
class RunModel:
  """A built model of a run: config, Flax module, parameter shapes and logical axes."""

  config: T5Config
  prompt_config: Any
  module: nn.Module
  shapes: dict
  axes: dict

  @property
  def prompt_length(self) -> int:
    return int(getattr(self.module, "prompt_length", 0) or 0)


# T5Config fields that must be positive whole numbers: (gin macro that sets it, an example).
_POSITIVE_FIELDS = {"vocab_size": ("NUM_EMBEDDINGS", 32128), "emb_dim": ("EMBED_DIM", 768),
                    "num_heads": ("NUM_HEADS", 12), "head_dim": ("HEAD_DIM", 64),
                    "mlp_dim": ("MLP_DIM", 2048), "relpos_num_buckets": ("RELPOS_NUM_BUCKETS", 32),
                    "relpos_max_distance": ("RELPOS_MAX_DISTANCE", 128)}
_LAYER_FIELDS = {"num_encoder_layers": "NUM_ENCODER_LAYERS",
                 "num_decoder_layers": "NUM_DECODER_LAYERS"}


def check_model_config(config: T5Config) -> None:
  """Raises ConfigValueError naming the size macro of a model that cannot be built."""
  for field, (macro, example) in _POSITIVE_FIELDS.items():
    errors.check_int(getattr(config, field), macro, example=example)
  for field, macro in _LAYER_FIELDS.items():
    errors.check_int(getattr(config, field), macro, minimum=0, example=12)
  rate = config.dropout_rate
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
    raise errors.ConfigValueError(
        f"DROPOUT_RATE={rate!r} must be a number in [0, 1): pass e.g. --gin.DROPOUT_RATE=0.1.")


def build_run_model(config: T5Config, prompt_config: Any = None) -> RunModel:
  """The (prompt-method) model of `config` with its shapes and axes; no weights allocated."""
  check_model_config(config)
  module = api.build_any_model(config, prompt_config)
  return RunModel(config=config, prompt_config=prompt_config, module=module,
                  shapes=api.param_shapes(module, config), axes=api.param_axes(module, config))


def check_trainable_shapes(run: RunModel, trainable_regex: str) -> None:
  """Raises ConfigValueError when a parameter to train has no values (e.g. PROMPT_LENGTH=0)."""
  pattern = re.compile(trainable_regex)
  for path, shape in tree.flatten_params(run.shapes).items():
    if pattern.fullmatch(path) and 0 in tuple(shape.shape):
      raise errors.ConfigValueError(
          f"the parameter to train {path} has shape {list(shape.shape)}, i.e. no values: set "
          "PROMPT_LENGTH (or the prompt method's size) to at least 1, e.g. "
          "--gin.PROMPT_LENGTH=100.")


def checkpoint_step(path: Optional[str]) -> int:
  """The training step a frozen checkpoint records (0 for Hugging Face or none)."""
  if not path:
    return 0
  kind = checkpoints.checkpoint_format(path)
  if kind == "t5x":
    try:
      return checkpoints.t5x.t5x_checkpoint_step(path)
    except ValueError:
      return 0
  if kind == "orbax":
    return orbax_format.checkpoint_step(path)
  return 0


def initial_params(run: RunModel, checkpoint: Optional[str], *, restore_dtype: Any = None,
                   frozen_dtype: Any = None, trainable_regex: str = api.METHOD_PARAMS_REGEX,
                   seed: int = 0, vocabulary: Any = None) -> dict:
  """Frozen weights from `checkpoint` (T5X, orbax or Hugging Face) + fresh method parameters.

  Parameters not matching `trainable_regex` are kept in `frozen_dtype` (None: float32), read
  from the checkpoint straight into it. With no checkpoint every parameter is random (seeded):
  useful for tests and benchmarks only. Initializers built on the model's own embedding table
  (class labels, sampled vocabulary) get the restored table and `vocabulary` (see
  `init_method_params`).
  """
  errors.check_dtype(restore_dtype, "RESTORE_DTYPE")
  errors.check_dtype(frozen_dtype, "FROZEN_DTYPE")
  rng = jax.random.PRNGKey(seed)
  if not checkpoint:
    params = jax.jit(lambda r: api.with_frozen_dtype(
        api.init_params(run.module, run.config, r), frozen_dtype, trainable_regex))(rng)
    if not prompts.needs_model_context(run.prompt_config):
      return params
  else:
    allow_missing = api.METHOD_PARAMS_REGEX if run.prompt_config is not None else None
    expected = api.with_frozen_dtype(run.shapes, frozen_dtype, trainable_regex)
    params = checkpoints.load_params(checkpoint, expected, run.config,
                                     restore_dtype=restore_dtype, allow_missing=allow_missing)
  if run.prompt_config is None:
    return params
  return init_method_params(run, params, rng, vocabulary)


# --- Method parameters from the restored model (class-label / sampled-vocabulary init) --------


def init_method_params(run: RunModel, params: dict, rng: jax.Array,
                       vocabulary: Any = None) -> dict:
  """`params` (restored frozen weights) with freshly initialised prompt-method parameters.

  Initializers that wait for the model (`prompts.EmbeddingInitializer` with no table or
  vocabulary) are bound first to `params`' own `token_embedder/embedding` and to `vocabulary`
  (a `seqio.Vocabulary`: the task's output vocabulary, else the model's).
  """
  module = run.module
  if prompts.needs_model_context(run.prompt_config):
    context = prompts.ModelContext.from_params(params, vocabulary,
                                               run.config.embedding_scale)
    module = api.build_any_model(run.config, prompts.bind_model_context(run.prompt_config,
                                                                         context))
  fresh = jax.jit(lambda r: api.method_subtree(api.init_params(module, run.config, r)))(rng)
  flat = tree.flatten_params(params)
  flat.update(tree.flatten_params(fresh))
  return tree.unflatten_params(flat)


def task_vocabulary(dataset_cfg: Any) -> Any:
  """The `targets` (else `inputs`) vocabulary of a dataset config's task (a mixture: its first
  task's): what class labels are tokenized with."""
  import seqio  # Local: only runs whose prompt init reads text need the task here.
  from prompt_tuning.train import data
  task = data.get_mixture_or_task(dataset_cfg.mixture_or_task_name, dataset_cfg.module)
  first = task.tasks[0] if isinstance(task, seqio.Mixture) else task
  features = first.output_features
  feature = features.get("targets") or features.get("inputs")
  return None if feature is None else feature.vocabulary


def vocabulary_for_init(prompt_config: Any, dataset_cfg: Any) -> Any:
  """`task_vocabulary(dataset_cfg)` when the prompt init tokenizes text, else None."""
  if dataset_cfg is None or not prompts.needs_model_context(prompt_config):
    return None
  return task_vocabulary(dataset_cfg)


def _numpy_params(folder: str) -> dict:
  """The trained parameters of a numpy checkpoint folder (`numpy_checkpoints/checkpoint_<N>/`,
  `best/checkpoint_<N>/`): one `<path with dots>.npy` per parameter."""
  names = sorted(n for n in os.listdir(folder) if n.endswith(".npy"))
  return tree.unflatten_params({name[:-len(".npy")].replace(".", tree.SEPARATOR):
                                np.load(os.path.join(folder, name)) for name in names})


def overlay_trained(params: dict, trained_checkpoint: str) -> dict:
  """`params` with the parameters a training checkpoint holds put in their place: our orbax
  checkpoint (MODEL_DIR or checkpoint_<N>), or a numpy checkpoint folder of `.npy` files (e.g.
  MODEL_DIR/best/checkpoint_<N>, the best evaluation's parameters)."""
  if os.path.isdir(trained_checkpoint) and any(
      name.endswith(".npy") for name in os.listdir(trained_checkpoint)):
    trained = tree.flatten_params(_numpy_params(trained_checkpoint))
  else:
    trained = tree.flatten_params(orbax_format.load_params(trained_checkpoint))
  flat = tree.flatten_params(params)
  for path, value in trained.items():
    if path not in flat:
      raise checkpoints.CheckpointMismatchError(
          f"{trained_checkpoint} holds {path}, which the model does not have: use the gin files "
          "the checkpoint was trained with.")
    if np.shape(value) != np.shape(flat[path]):
      raise checkpoints.CheckpointMismatchError(
          f"{trained_checkpoint}: {path} has shape {np.shape(value)}, the model expects "
          f"{np.shape(flat[path])}.")
    flat[path] = jnp.asarray(value, jnp.float32)
  return tree.unflatten_params(flat)


def with_prompt_file(params: dict, prompt_file: Optional[str]) -> dict:
  """`params` with the prompt replaced by the `.npy` at `prompt_file` (shape checked)."""
  if not prompt_file:
    return params
  return api.replace_prompt(params, prompt_file)
