"""T5 relative position bias: log-spaced distance buckets and a learned [heads, buckets] table."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.models.layers import param_with_axes


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> np.ndarray:
  """Maps relative positions (key - query) to bucket ids, as Mesh TensorFlow T5 did.

  Half the buckets (per direction) hold exact small distances, the rest are log-spaced up to
  `max_distance`; farther positions share the last bucket. Computed in numpy float32 so the
  buckets equal those of the released T5 checkpoints (and Hugging Face's port).
  """
  distance = -np.asarray(relative_position, dtype=np.int64)  # query - key
  bucket = np.zeros_like(distance)
  if bidirectional:
    num_buckets //= 2
    bucket += (distance < 0).astype(np.int64) * num_buckets
    distance = np.abs(distance)
  else:
    distance = np.maximum(distance, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  with np.errstate(divide="ignore"):
    log_ratio = (np.log(distance.astype(np.float32) / np.float32(max_exact)) /
                 np.float32(np.log(max_distance / max_exact)) *
                 np.float32(num_buckets - max_exact))
  large = max_exact + np.where(is_small, 0, log_ratio).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return bucket + np.where(is_small, distance, large)


@functools.lru_cache(maxsize=64)
def _bucket_table(max_length: int, bidirectional: bool, num_buckets: int,
                  max_distance: int) -> np.ndarray:
  """Bucket of every relative position in [-max_length, max_length], indexed by r + max_length."""
  relative = np.arange(-max_length, max_length + 1)
  return relative_position_bucket(relative, bidirectional, num_buckets, max_distance).astype(
      np.int32)


class RelativePositionBias(nn.Module):
  """Per-head additive attention bias from query/key distance, shared by all layers of a stack.

  Parameter `rel_embedding` [heads, buckets], logical axes ("heads", "relpos_buckets").
  """

  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query_length: int, key_length: int,
               query_offset: jax.Array | int = 0) -> jax.Array:
    """Bias [1, heads, query_length, key_length] for queries at `query_offset + arange(T)`.

    `query_offset` may be traced (cached decoding); lengths are static.
    """
    table = param_with_axes(self, "rel_embedding",
                            nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                            (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
    span = query_length + key_length
    buckets = jnp.asarray(
        _bucket_table(span, self.bidirectional, self.num_buckets, self.max_distance))
    query_positions = query_offset + jnp.arange(query_length)
    relative_TS = jnp.arange(key_length)[None, :] - query_positions[:, None]
    bucket_TS = buckets[jnp.clip(relative_TS + span, 0, 2 * span)]
    bias_NTS = jnp.take(table, bucket_TS, axis=1)
    return bias_NTS[None].astype(self.dtype)
