"""Inference: decoding algorithms (`decoding`) and cached generation (`generate`)."""
