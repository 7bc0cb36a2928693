"""Regenerates the Hugging Face PEFT 0.21 parity fixtures under tests/fixtures/peft_*/.

The frozen base model is the tiny T5 1.1 of tests/fixtures/hf_t5_1_1_tiny (made by
tools/make_hf_t5_golden.py; 2 encoder layers, 3 decoder layers, d_model 16, 2 heads of 8,
vocab 64), so no base weights are duplicated here. Every PEFT module is built with a fixed
torch seed, and its weights, the inputs and PEFT's outputs are saved as float32 / int32 .npz:

  peft_prompt_tuning/golden.npz   PromptTuningConfig(SEQ_2_SEQ_LM, RANDOM init, P=4) on T5,
      and the causal-LM recipe (PeftModelForCausalLM) on T5's decoder used as a decoder-only LM:
      prompt [P, D], logits, loss, d loss / d prompt.
  peft_p_tuning/golden.npz        PromptEncoder (P-tuning) MLP and LSTM: every weight (torch
      names, torch layouts) and the encoder output [P, D].
  peft_prefix_tuning/golden.npz   PrefixTuningConfig on T5 (SEQ_2_SEQ_LM) and on the T5 decoder
      as a causal LM, with and without `prefix_projection`: the reparameterization weights, the
      encoder's per-layer keys/values in PEFT's view order (`*_view_*` [L, P, N, H]), the
      keys/values each decoder layer actually receives (`*_key_LPNH`, `*_value_LPNH`), logits.

Decoder-only model: Hugging Face has no class for a T5 decoder stack without cross-attention
(our `DecoderOnly`). `T5DecoderAsCausalLM` below is HF's own T5ForConditionalGeneration with
every cross-attention output kernel (`EncDecAttention.o`) set to zero, so its decoder computes
exactly a cross-attention-free T5 decoder, given a one-position dummy encoder output. It is
wrapped by PEFT's unmodified `PeftModelForCausalLM`; the loss is the usual causal-LM loss
(logits at t predict labels at t + 1, -100 ignored).

Needs the `tools` extra (torch, transformers, peft==0.21.*):

  python tools/make_peft_golden.py
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import peft
import torch
import transformers
from transformers.modeling_outputs import CausalLMOutput

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
BASE_MODEL = FIXTURES / "hf_t5_1_1_tiny"
PROMPT_LENGTH = 4
P_TUNING_HIDDEN = 12
PREFIX_HIDDEN = 12
NUM_DECODER_LAYERS = 3


def _batch_inputs(seed: int = 7) -> dict[str, np.ndarray]:
  """Right-padded ragged token batches for the encoder-decoder and the decoder-only model.

  enc_* keys: encoder_input_tokens [2, 6] (real lengths 6, 3), decoder_target_tokens [2, 5]
  (real 5, 2), decoder_input_tokens (targets shifted right, 0 first), and HF's masks.
  lm_* keys: decoder-only tokens [2, 6] (real 6, 4), their mask, and labels (= tokens, -100 on
  padding).
  """
  rng = np.random.default_rng(seed)

  def tokens(length: int, real: tuple[int, ...]) -> np.ndarray:
    out = rng.integers(2, 64, size=(len(real), length)).astype(np.int32)
    for row, n in enumerate(real):
      out[row, n:] = 0
    return out

  encoder = tokens(6, (6, 3))
  targets = tokens(5, (5, 2))
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]
  decoder_mask = (decoder_inputs != 0).astype(np.int32)
  decoder_mask[:, 0] = 1
  lm_tokens = tokens(6, (6, 4))
  return dict(
      enc_encoder_input_tokens=encoder, enc_attention_mask=(encoder != 0).astype(np.int32),
      enc_decoder_target_tokens=targets, enc_decoder_input_tokens=decoder_inputs,
      enc_decoder_attention_mask=decoder_mask,
      enc_labels=np.where(targets > 0, targets, -100).astype(np.int32),
      lm_tokens=lm_tokens, lm_attention_mask=(lm_tokens != 0).astype(np.int32),
      lm_labels=np.where(lm_tokens > 0, lm_tokens, -100).astype(np.int32))


def _t(array: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(array.astype(np.int64))


def _np(tensor: torch.Tensor) -> np.ndarray:
  return tensor.detach().cpu().numpy().astype(np.float32)


def load_t5() -> transformers.T5ForConditionalGeneration:
  """The frozen tiny T5 1.1 (eval mode, eager attention)."""
  return transformers.T5ForConditionalGeneration.from_pretrained(
      BASE_MODEL, attn_implementation="eager").eval()


class T5DecoderAsCausalLM(transformers.T5ForConditionalGeneration):
  """HF T5 whose decoder serves as a decoder-only LM (cross-attention outputs are zero)."""

  def zero_cross_attention(self) -> None:
    with torch.no_grad():
      for block in self.decoder.block:
        block.layer[1].EncDecAttention.o.weight.zero_()

  def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
              past_key_values=None, **unused):
    if inputs_embeds is None:
      inputs_embeds = self.shared(input_ids)
    batch = inputs_embeds.shape[0]
    if past_key_values is not None and not isinstance(past_key_values,
                                                      transformers.EncoderDecoderCache):
      past_key_values = transformers.EncoderDecoderCache(past_key_values,
                                                         transformers.DynamicCache())
    dummy_encoded = torch.zeros(batch, 1, self.config.d_model, dtype=inputs_embeds.dtype)
    out = super().forward(encoder_outputs=(dummy_encoded,),
                          attention_mask=torch.ones(batch, 1, dtype=torch.long),
                          decoder_inputs_embeds=inputs_embeds,
                          decoder_attention_mask=attention_mask,
                          past_key_values=past_key_values, use_cache=False)
    loss = None
    if labels is not None:
      loss = torch.nn.functional.cross_entropy(
          out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1),
          ignore_index=-100)
    return CausalLMOutput(loss=loss, logits=out.logits)


def load_decoder_lm() -> T5DecoderAsCausalLM:
  model = T5DecoderAsCausalLM.from_pretrained(BASE_MODEL, attn_implementation="eager").eval()
  model.zero_cross_attention()
  return model


def _prompt_tuning_golden(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Prompt tuning on T5 (encoder input) and on the decoder-only LM: logits, loss, gradient."""
  out = {}
  for name, task, base in (("enc", peft.TaskType.SEQ_2_SEQ_LM, load_t5()),
                           ("lm", peft.TaskType.CAUSAL_LM, load_decoder_lm())):
    torch.manual_seed(11 if name == "enc" else 12)
    config = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=PROMPT_LENGTH,
                                     prompt_tuning_init=peft.PromptTuningInit.RANDOM)
    model = peft.get_peft_model(base, config).eval()
    embedding = model.prompt_encoder["default"].embedding.weight
    # Seq2seq PEFT allocates P rows per transformer submodule; only the first P reach the encoder.
    out[f"{name}_prompt"] = _np(embedding[:PROMPT_LENGTH])
    if name == "enc":
      result = model(input_ids=_t(inputs["enc_encoder_input_tokens"]),
                     attention_mask=_t(inputs["enc_attention_mask"]),
                     decoder_input_ids=_t(inputs["enc_decoder_input_tokens"]),
                     decoder_attention_mask=_t(inputs["enc_decoder_attention_mask"]),
                     labels=_t(inputs["enc_labels"]))
    else:
      result = model(input_ids=_t(inputs["lm_tokens"]),
                     attention_mask=_t(inputs["lm_attention_mask"]),
                     labels=_t(inputs["lm_labels"]))
    result.loss.backward()
    out[f"{name}_logits"] = _np(result.logits)
    out[f"{name}_loss"] = _np(result.loss)
    out[f"{name}_prompt_grad"] = _np(embedding.grad[:PROMPT_LENGTH])
    # PEFT's own prompt-learning bookkeeping, recorded so the test can state it.
    out[f"{name}_num_transformer_submodules"] = np.int32(config.num_transformer_submodules)
  return out


def _p_tuning_golden() -> dict[str, np.ndarray]:
  """P-tuning encoders: weights (torch names and layouts) and output [P, D] for P indices."""
  out = {}
  for kind, seed in (("mlp", 21), ("lstm", 22)):
    torch.manual_seed(seed)
    config = peft.PromptEncoderConfig(
        task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=PROMPT_LENGTH, token_dim=16,
        num_transformer_submodules=1, num_attention_heads=2, num_layers=NUM_DECODER_LAYERS,
        encoder_reparameterization_type=kind.upper(), encoder_hidden_size=P_TUNING_HIDDEN)
    encoder = peft.tuners.p_tuning.PromptEncoder(config).eval()
    with torch.no_grad():
      output = encoder(torch.arange(PROMPT_LENGTH)[None])[0]
    for name, value in encoder.state_dict().items():
      out[f"{kind}/{name}"] = _np(value)
    out[f"{kind}_output"] = _np(output)
  return out


def _prefix_tuning_golden(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Prefix tuning on T5 and on the decoder-only LM, with and without the MLP projection."""
  out = {}
  for projection in (False, True):
    for name, task in (("enc", peft.TaskType.SEQ_2_SEQ_LM), ("lm", peft.TaskType.CAUSAL_LM)):
      key = f"{name}_{'proj' if projection else 'plain'}"
      base = load_t5() if name == "enc" else load_decoder_lm()
      torch.manual_seed(31 + 2 * projection + (name == "lm"))
      config = peft.PrefixTuningConfig(
          task_type=task, num_virtual_tokens=PROMPT_LENGTH, num_layers=NUM_DECODER_LAYERS,
          token_dim=16, num_attention_heads=2, prefix_projection=projection,
          encoder_hidden_size=PREFIX_HIDDEN)
      model = peft.get_peft_model(base, config).eval()
      prefix_encoder = model.prompt_encoder["default"]
      if not projection:
        # PEFT initialises the plain prefix ~N(0, 1); shrink it so the prefix does not swamp
        # the tiny model's attention (any values test the same mapping).
        with torch.no_grad():
          prefix_encoder.embedding.weight.mul_(0.3)
      for param_name, value in prefix_encoder.state_dict().items():
        out[f"{key}/{param_name}"] = _np(value)
      with torch.no_grad():
        flat = prefix_encoder(torch.arange(PROMPT_LENGTH)[None])[0]  # [P, L * 2 * D]
        # PEFT's view: [P, L * 2, N, H]; entry 2 l is layer l's key, 2 l + 1 its value.
        per_layer = flat.view(PROMPT_LENGTH, NUM_DECODER_LAYERS * 2, 2, 8)
        out[f"{key}_view_key_LPNH"] = _np(per_layer[:, 0::2].permute(1, 0, 2, 3))
        out[f"{key}_view_value_LPNH"] = _np(per_layer[:, 1::2].permute(1, 0, 2, 3))
        # What each decoder layer's self-attention actually receives (for seq2seq, PEFT's
        # split of the duplicated view hands layer l the view's layer (2 l) mod L).
        cache = model.get_prompt(batch_size=1)
        cache = getattr(cache, "self_attention_cache", cache)
        out[f"{key}_key_LPNH"] = np.stack(
            [_np(cache.layers[l].keys[0].permute(1, 0, 2)) for l in range(NUM_DECODER_LAYERS)])
        out[f"{key}_value_LPNH"] = np.stack(
            [_np(cache.layers[l].values[0].permute(1, 0, 2)) for l in range(NUM_DECODER_LAYERS)])
        if name == "enc":
          result = model(input_ids=_t(inputs["enc_encoder_input_tokens"]),
                         attention_mask=_t(inputs["enc_attention_mask"]),
                         decoder_input_ids=_t(inputs["enc_decoder_input_tokens"]),
                         decoder_attention_mask=_t(inputs["enc_decoder_attention_mask"]))
        else:
          result = model(input_ids=_t(inputs["lm_tokens"]),
                         attention_mask=_t(inputs["lm_attention_mask"]))
      out[f"{key}_logits"] = _np(result.logits)
  return out


def main() -> None:
  transformers.logging.set_verbosity_error()
  inputs = _batch_inputs()
  goldens = {
      "peft_prompt_tuning": {**inputs, **_prompt_tuning_golden(inputs)},
      "peft_p_tuning": _p_tuning_golden(),
      "peft_prefix_tuning": {**inputs, **_prefix_tuning_golden(inputs)},
  }
  for name, arrays in goldens.items():
    out_dir = FIXTURES / name
    if out_dir.exists():
      shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    arrays["peft_version"] = np.array(peft.__version__)
    np.savez_compressed(out_dir / "golden.npz", **arrays)
    print(f"{out_dir}: {(out_dir / 'golden.npz').stat().st_size} bytes, {len(arrays)} arrays")


if __name__ == "__main__":
  main()
