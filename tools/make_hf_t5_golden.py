"""Regenerates the Hugging Face T5 parity fixtures under tests/fixtures/.

Builds two tiny seeded random `transformers.T5ForConditionalGeneration` models, a T5 1.1
(gated GELU, untied `lm_head`) and a T5 1.0 (ReLU, head tied to the scaled embedding),
saves each with `save_pretrained(safe_serialization=True)` to
`tests/fixtures/hf_t5_1_1_tiny/` and `tests/fixtures/hf_t5_1_0_tiny/`, and writes their
eval-mode float32 logits for fixed token batches to `golden.npz` next to the weights.

Needs the `tools` extra (torch, transformers):

  pip install -e '.[tools]'
  python tools/make_hf_t5_golden.py

golden.npz holds two batches; keys without a prefix are the short batch, keys with
`long_` a batch long enough that relative distances exceed relative_attention_max_distance:
  encoder_input_tokens   int32 [B, T]  0 = padding (right-padded), no 0 inside the text.
  decoder_target_tokens  int32 [B, S]  0 = padding; the T5X decoder mask comes from these.
  decoder_input_tokens   int32 [B, S]  decoder_target_tokens shifted right, 0 first (start).
  attention_mask         int32 [B, T]  encoder_input_tokens != 0 (what HF is given).
  decoder_attention_mask int32 [B, S]  1 at position 0 and at non-pad decoder inputs.
  logits                 float32 [B, S, vocab] from HF.
Only positions with decoder_target_tokens > 0 are comparable: at those, causal
attention sees only unpadded decoder inputs under both conventions.
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import torch
import transformers

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
_SIZES = dict(
    vocab_size=64, d_model=16, num_heads=2, d_kv=8, d_ff=32, num_layers=2,
    num_decoder_layers=3, relative_attention_num_buckets=8,
    relative_attention_max_distance=16, layer_norm_epsilon=1e-6, dropout_rate=0.0,
    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
MODELS = {
    "hf_t5_1_1_tiny": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "hf_t5_1_0_tiny": dict(feed_forward_proj="relu", tie_word_embeddings=True),
}
# (encoder length, decoder length, real lengths of the encoder rows, of the target rows).
BATCHES = {"": (7, 5, (7, 4), (5, 3)), "long_": (21, 19, (21, 15), (19, 12))}


def _batch(rng: np.random.Generator, vocab: int, length: int,
           real_lengths: tuple[int, ...]) -> np.ndarray:
  """int32 [B, length] right-padded tokens in [2, vocab) (never pad 0 or EOS 1 inside)."""
  tokens = rng.integers(2, vocab, size=(len(real_lengths), length)).astype(np.int32)
  for row, real in enumerate(real_lengths):
    tokens[row, real:] = 0
  return tokens


def make_inputs(seed: int, vocab: int, prefix: str, encoder_length: int, decoder_length: int,
                encoder_real: tuple[int, ...],
                target_real: tuple[int, ...]) -> dict[str, np.ndarray]:
  """Token batch and the masks Hugging Face needs for it, under `prefix`ed keys."""
  rng = np.random.default_rng(seed)
  encoder = _batch(rng, vocab, encoder_length, encoder_real)
  targets = _batch(rng, vocab, decoder_length, target_real)
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]
  decoder_mask = (decoder_inputs != 0).astype(np.int32)
  decoder_mask[:, 0] = 1
  arrays = dict(encoder_input_tokens=encoder, decoder_target_tokens=targets,
                decoder_input_tokens=decoder_inputs,
                attention_mask=(encoder != 0).astype(np.int32), decoder_attention_mask=decoder_mask)
  return {prefix + k: v for k, v in arrays.items()}


def build_model(seed: int, overrides: dict) -> transformers.T5ForConditionalGeneration:
  """A seeded random T5; untied configs get an `lm_head` distinct from the embedding."""
  torch.manual_seed(seed)
  config = transformers.T5Config(**_SIZES, **overrides)
  model = transformers.T5ForConditionalGeneration(config)
  if not overrides["tie_word_embeddings"]:
    # transformers 5 ties lm_head to shared even for T5 1.1 until the weights differ.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
  # Non-trivial layer-norm scales, so a missing or misplaced norm is visible in the logits.
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        param.uniform_(0.5, 1.5)
  return model


def golden_logits(model_dir: pathlib.Path, inputs: dict[str, np.ndarray],
                  prefix: str) -> np.ndarray:
  """float32 [B, S, vocab] logits of the model saved in `model_dir` (eval mode, eager)."""
  model = transformers.T5ForConditionalGeneration.from_pretrained(
      model_dir, attn_implementation="eager").eval()
  as_torch = lambda key: torch.from_numpy(inputs[prefix + key].astype(np.int64))
  with torch.no_grad():
    out = model(input_ids=as_torch("encoder_input_tokens"),
                attention_mask=as_torch("attention_mask"),
                decoder_input_ids=as_torch("decoder_input_tokens"),
                decoder_attention_mask=as_torch("decoder_attention_mask"))
  return out.logits.numpy().astype(np.float32)


def main() -> None:
  transformers.logging.set_verbosity_error()  # The untied head is deliberate; keep output short.
  for index, (name, overrides) in enumerate(MODELS.items()):
    out_dir = FIXTURES / name
    if out_dir.exists():
      shutil.rmtree(out_dir)
    build_model(seed=index, overrides=overrides).save_pretrained(out_dir, safe_serialization=True)
    for path in out_dir.iterdir():
      if path.name not in ("config.json", "model.safetensors"):
        path.unlink()
    golden = {}
    for prefix, (enc_len, dec_len, enc_real, tgt_real) in BATCHES.items():
      inputs = make_inputs(100 + index, _SIZES["vocab_size"], prefix, enc_len, dec_len,
                           enc_real, tgt_real)
      golden.update(inputs)
      golden[prefix + "logits"] = golden_logits(out_dir, inputs, prefix)
    np.savez_compressed(out_dir / "golden.npz", **golden)
    sizes = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    print(f"{out_dir}: {sizes}")


if __name__ == "__main__":
  main()
