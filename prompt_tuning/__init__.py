"""prompt_tuning: parameter-efficient prompt learning on frozen T5-family models in JAX/Flax."""

__version__ = "0.1.0"
