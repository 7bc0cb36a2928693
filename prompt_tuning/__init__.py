"""prompt_tuning: parameter-efficient prompt learning on frozen T5-family models in JAX/Flax."""

__version__ = "0.1.0"


def load_model(*args, **kwargs):
  """Builds a model from gin files and restores weights; see `prompt_tuning.api.load_model`."""
  from prompt_tuning.api import load_model as _load_model  # Lazy: keeps `import` light.
  return _load_model(*args, **kwargs)


load_model.__doc__ = "Builds a model from gin files and restores weights (see prompt_tuning.api)."
