"""Regenerates the BART / mBART parity fixtures under tests/fixtures/.

Needs the `tools` extra (torch, transformers 5.x, peft 0.21.x):

  python tools/make_bart_golden.py                 # all parts
  python tools/make_bart_golden.py --parts base    # the tiny models only

Every reference runs in float32, eval mode, `attn_implementation="eager"`. Arrays are saved with
`np.savez_compressed`; strings as numpy unicode arrays (no pickle needed).

## Tokenizer (in hf_bart_tiny/)

A byte-level BPE tokenizer.json built like BART's (GPT-2 byte alphabet, no prefix space,
RoBERTa post-processor `<s> text </s>`), trained here with `tokenizers` on generated English:
ids 0-3 are `<s>`, `<pad>`, `</s>`, `<unk>`, the last id is `<mask>` (lstrip), 400 ids in all.
tokenizer_config.json names the special tokens (tokenizer_class BartTokenizer).
golden.npz holds `mixed_texts` str [K] and transformers' ids of each, concatenated:
`mixed_ids_plain` (add_special_tokens=False) / `mixed_ids_special` (True: `<s>` ... `</s>`) with
`mixed_offsets_plain` / `mixed_offsets_special` int32 [K + 1].

## Part `base`: tiny seeded random models, one directory each

`tests/fixtures/<name>/`: config.json, generation_config.json, model.safetensors (as
`save_pretrained(safe_serialization=True)` writes them; the tied `lm_head` is not stored,
`final_logits_bias` [1, V] is) and golden.npz. Weights are re-drawn with a fixed generator so
the logits have O(1) spread: token embeddings N(0, 0.3^2), position embeddings N(0, 0.3^2),
linear kernels N(0, 1/fan_in), linear biases N(0, 0.2^2), LayerNorm weights U(0.5, 1.5) and
biases N(0, 0.1^2), final_logits_bias N(0, 0.5^2).

  hf_bart_tiny   BartForConditionalGeneration: vocab 400 (the tokenizer's), d_model 32, 2 + 2
                 layers, 4 heads, FFN 64, GELU (exact), post-LayerNorm, layernorm_embedding,
                 learned positions (offset 2, max_position_embeddings 64), scale_embedding
                 False, tied head + final_logits_bias, pad 1, bos 0, eos 2,
                 decoder_start_token_id 2, forced_bos_token_id 0, forced_eos_token_id 2.
                 generation_config.json: num_beams 3, length_penalty 2.0, early_stopping True,
                 no_repeat_ngram_size 3, min_length 3 (what bart-large-cnn sets, scaled down).
  hf_mbart_tiny  MBartForConditionalGeneration: vocab 96, d_model 48, 2 encoder + 3 decoder
                 layers, 6 heads, FFN 80, GELU, pre-LayerNorm with final encoder / decoder
                 layer_norm, layernorm_embedding, scale_embedding True (sqrt(48)), tied head +
                 final_logits_bias, pad 1, bos 0, eos 2, decoder_start_token_id 2,
                 forced_eos_token_id 2 (no forced BOS). generation_config.json: num_beams 3,
                 length_penalty 1.0, early_stopping False, no_repeat_ngram_size 2.

golden.npz of each base model (B = 3 rows):
  input_ids          int32 [3, 10]  encoder inputs `<s> ... </s>`, right-padded with the pad id
                                    (real lengths 10, 7, 4), random ids >= 4 inside.
  attention_mask     int32 [3, 10]
  decoder_input_ids  int32 [3, 7]   decoder start (2), `<s>` (0), 5 random ids.
  logits             float32 [3, 7, V]  model(input_ids, attention_mask, decoder_input_ids).
  gen_tokens         int32 [3, 8]   greedy generate(max_new_tokens=8, num_beams=1,
                                    do_sample=False) with everything else from
                                    generation_config (forced BOS / EOS, no-repeat n-grams, min
                                    length): the sequences without the decoder start token; pad
                                    id (1) after EOS.
  gen_min_margin     float32 []     smallest top-1 minus top-2 *processed* score over unfinished
                                    greedy steps (forced steps excluded).
  beam_tokens        int32 [3, 8]   the same with generation_config's beam settings (num_beams,
                                    length_penalty, early_stopping, no_repeat_ngram_size,
                                    min_length), best beam.
  beam_sequence_scores float32 [3]  transformers' scores of those beams: sum of processed
                                    log-probs / (generated tokens, EOS included) ** length_penalty.
  gen_max_new_tokens int32 [];  transformers_version str []
Checked here: every greedy token is the argmax of an uncached forward's processed scores, and the
beam scores equal the uncached forward's processed log-probs summed and length-normalized.

## Part `peft`: PEFT 0.21 prefix tuning of hf_bart_tiny (SEQ_2_SEQ_LM, P = 5)

`tests/fixtures/peft_bart_tiny/prefix_tuning{,_projection}.npz` (prefix_projection False / True,
encoder_hidden_size 24). What PEFT 0.21.2 does on an encoder-decoder with transformers 5: its
PrefixEncoder makes [P, L * 2 * N * H] (L = config.num_hidden_layers = encoder layers), viewed
[P, 2L, N, H] and *duplicated* to [P, 4L, N, H]; chunk l of 4 consecutive entries is layer l's
(self key, self value, cross key, cross value), so decoder layer l's self-attention gets entries
(4l mod 2L, 4l + 1 mod 2L) of the view. The cross-attention half is then dropped
(`cross_attention_cache = DynamicCache()`), so cross-attention reads the encoder's keys as usual;
the encoder gets no prefix. The P-long self-attention cache makes BART number the decoder
tokens' learned positions P..P+S-1. Files hold:
  input_ids, attention_mask, decoder_input_ids  (the base golden's), labels int64 [3, 7]: the
                          decoder targets (decoder_input_ids shifted left, then EOS), -100 after
                          each row's length (7, 5, 3).
  encoder_weights/<name>  float32  the PrefixEncoder's tensors (`embedding.weight`;
                          projected: `transform.0.{weight, bias}`, tanh, `transform.2.{weight,
                          bias}`), torch layout.
  received_keys, received_values  float32 [L_dec, 3, N, P, H]  the self-attention cache entries
                          every decoder layer receives.
  logits   float32 [3, 7, V];  loss float32 [] (mean cross-entropy over labels != -100);
  num_virtual_tokens, decoder_positions_start int32 [] (P);  peft_version, transformers_version.
Checked here: the same logits come from the base model given a hand-built EncoderDecoderCache
holding only those self-attention entries.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import random
import shutil

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
TOKENIZER_VOCAB = 400
PAD, BOS, EOS, START = 1, 0, 2, 2
BATCH_REAL = (10, 7, 4)
DECODER_LENGTH = 7
LABEL_LENGTHS = (7, 5, 3)
GEN_NEW = 8
GEN_MIN_MARGIN = 1e-3
PREFIX_LENGTH = 5
ENCODER_HIDDEN = 24

MODELS = {
    "hf_bart_tiny": ("BartConfig", "BartForConditionalGeneration", dict(
        vocab_size=TOKENIZER_VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, activation_function="gelu", max_position_embeddings=64,
        scale_embedding=False, forced_bos_token_id=BOS, forced_eos_token_id=EOS),
        dict(num_beams=3, length_penalty=2.0, early_stopping=True, no_repeat_ngram_size=3,
             min_length=3)),
    "hf_mbart_tiny": ("MBartConfig", "MBartForConditionalGeneration", dict(
        vocab_size=96, d_model=48, encoder_layers=2, decoder_layers=3,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=80,
        decoder_ffn_dim=80, activation_function="gelu", max_position_embeddings=64,
        scale_embedding=True, forced_eos_token_id=EOS),
        dict(num_beams=3, length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=2)),
}
_COMMON = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=START,
               dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, tie_word_embeddings=True)

MIXED_TEXTS = (
    "Hello, world!", "the quick brown fox", "  two leading spaces and   three inside",
    "tabs\tand\nnew lines\n", "digits 1234567890 and 3.14159", "café naïve résumé — “quotes”",
    "日本語のテキスト", "emoji 🙂👍🏽 mixed", "don't won't it's I'm", "a <mask> token", "",
)
_WORDS = ("the a of to and in that it was he for on are as with his they at be this from have "
          "or by one had not but what all were when we there can an your which their said if do "
          "will each about how up out them then she many some so these would other into has more "
          "her two like him see time could no make than first been its who now people my made "
          "over did down only way find use may water long little very after words called just "
          "where most know summary article news report city year growth market").split()


def _np(tensor: torch.Tensor) -> np.ndarray:
  return tensor.detach().cpu().numpy().astype(np.float32)


def _t(array: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.asarray(array).astype(np.int64))


# ----------------------------------------------------------------------------- tokenizer


def training_lines(count: int = 3000, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  tails = (".", "!", "?", ",", " 2024", " 3.5", " café", " naïve", "'s")
  return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) + rng.choice(tails)
          for _ in range(count)]


def build_tokenizer() -> tokenizers.Tokenizer:
  """A BART-style byte-level BPE tokenizer with TOKENIZER_VOCAB ids."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB - 1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tokenizer.train_from_iterator(training_lines(), trainer)
  tokenizer.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
  tokenizer.post_processor = processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS),
                                                          trim_offsets=True,
                                                          add_prefix_space=False)
  if tokenizer.get_vocab_size() != TOKENIZER_VOCAB:
    raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} ids, not {TOKENIZER_VOCAB}")
  return tokenizer


def save_tokenizer(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """Writes tokenizer.json + tokenizer_config.json; returns transformers' ids of MIXED_TEXTS."""
  wrapped = transformers.BartTokenizer(tokenizer_object=build_tokenizer())
  wrapped.save_pretrained(folder)
  config_path = folder / "tokenizer_config.json"
  config = transformers.utils.hub.json.loads(config_path.read_text())
  config["tokenizer_class"] = "BartTokenizer"
  config_path.write_text(transformers.utils.hub.json.dumps(config, indent=2) + "\n")
  reference = transformers.AutoTokenizer.from_pretrained(folder)
  golden = {"mixed_texts": np.array(MIXED_TEXTS)}
  for name, special in (("plain", False), ("special", True)):
    ids = [reference(text, add_special_tokens=special)["input_ids"] for text in MIXED_TEXTS]
    golden[f"mixed_ids_{name}"] = np.array([i for row in ids for i in row], np.int32)
    golden[f"mixed_offsets_{name}"] = np.cumsum([0] + [len(r) for r in ids]).astype(np.int32)
  return golden


# ----------------------------------------------------------------------------- base models


def build_model(name: str, seed: int) -> transformers.PreTrainedModel:
  config_cls, model_cls, kwargs, generation = MODELS[name]
  config = getattr(transformers, config_cls)(**_COMMON, **kwargs)
  torch.manual_seed(seed)
  model = getattr(transformers, model_cls)(config)
  generator = torch.Generator().manual_seed(seed)

  def normal(shape, std):
    return std * torch.randn(shape, generator=generator)

  with torch.no_grad():
    for param_name, param in model.named_parameters():
      if "layer_norm" in param_name or "layernorm" in param_name:
        if param_name.endswith("weight"):
          param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
        else:
          param.copy_(normal(param.shape, 0.1))
      elif param_name.endswith(".bias"):
        param.copy_(normal(param.shape, 0.2))
      elif "embed" in param_name or param_name.endswith("shared.weight"):
        param.copy_(normal(param.shape, 0.3))
      else:  # Linear kernel [out, in].
        param.copy_(normal(param.shape, param.shape[1] ** -0.5))
    model.final_logits_bias.copy_(normal(model.final_logits_bias.shape, 0.5))
  model.generation_config = transformers.GenerationConfig(
      decoder_start_token_id=START, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
      forced_bos_token_id=kwargs.get("forced_bos_token_id"),
      forced_eos_token_id=kwargs.get("forced_eos_token_id"), **generation)
  model.set_attn_implementation("eager")
  return model.eval()


def load_model(name: str) -> transformers.PreTrainedModel:
  model_cls = getattr(transformers, MODELS[name][1])
  return model_cls.from_pretrained(FIXTURES / name, attn_implementation="eager",
                                   dtype=torch.float32).eval()


def encoder_batch(rng: np.random.Generator, vocab: int) -> tuple[np.ndarray, np.ndarray]:
  length = max(BATCH_REAL)
  tokens = np.full((len(BATCH_REAL), length), PAD, np.int32)
  mask = np.zeros_like(tokens)
  for row, n in enumerate(BATCH_REAL):
    tokens[row, :n] = rng.integers(4, vocab - 1, size=n)
    tokens[row, 0], tokens[row, n - 1] = BOS, EOS
    mask[row, :n] = 1
  return tokens, mask


def decoder_batch(rng: np.random.Generator, vocab: int) -> np.ndarray:
  tokens = rng.integers(4, vocab - 1, size=(len(BATCH_REAL), DECODER_LENGTH)).astype(np.int32)
  tokens[:, 0], tokens[:, 1] = START, BOS
  return tokens


def forward_logits(model, tokens, mask, decoder) -> np.ndarray:
  with torch.no_grad():
    return _np(model(input_ids=_t(tokens), attention_mask=_t(mask),
                     decoder_input_ids=_t(decoder)).logits)


def _generated(sequences: torch.Tensor) -> np.ndarray:
  """int32 [B, GEN_NEW]: sequences without the decoder start token, padded with PAD."""
  new = sequences[:, 1:].numpy().astype(np.int32)
  out = np.full((new.shape[0], GEN_NEW), PAD, np.int32)
  out[:, :new.shape[1]] = new
  return out


def _processed_scores(model, tokens, mask, generated: np.ndarray) -> np.ndarray:
  """float32 [B, N, V]: transformers' processed log-probs at each step of `generated`, from one
  uncached forward over start + generated (what greedy / beam search ranked)."""
  decoder = np.concatenate([np.full((len(tokens), 1), START, np.int32), generated], axis=1)
  config = copy.deepcopy(model.generation_config)
  config.max_length = 1 + GEN_NEW  # what generate(max_new_tokens=GEN_NEW) sets
  processors = model._get_logits_processor(  # pylint: disable=protected-access
      generation_config=config, input_ids_seq_length=1,
      encoder_input_ids=_t(tokens), prefix_allowed_tokens_fn=None,
      logits_processor=transformers.LogitsProcessorList(), device="cpu")
  with torch.no_grad():
    logits = model(input_ids=_t(tokens), attention_mask=_t(mask),
                   decoder_input_ids=_t(decoder)).logits.float()
    steps = []
    for step in range(generated.shape[1]):
      log_probs = torch.log_softmax(logits[:, step], dim=-1)
      steps.append(_np(processors(_t(decoder[:, :step + 1]), log_probs)))
  return np.stack(steps, axis=1)


def _generated_length(row: np.ndarray) -> int:
  hits = np.flatnonzero(row == EOS)
  return int(hits[0]) + 1 if hits.size else len(row)


def generation_golden(model, tokens, mask) -> dict[str, np.ndarray]:
  """Greedy and beam generations with the checkpoint's generation_config, checked uncached."""
  config = model.generation_config
  with torch.no_grad():
    greedy = model.generate(_t(tokens), attention_mask=_t(mask), max_new_tokens=GEN_NEW,
                            num_beams=1, do_sample=False)
    beam = model.generate(_t(tokens), attention_mask=_t(mask), max_new_tokens=GEN_NEW,
                          do_sample=False, output_scores=True, return_dict_in_generate=True)
  gen_tokens, beam_tokens = _generated(greedy), _generated(beam.sequences)
  scores = _processed_scores(model, tokens, mask, gen_tokens)
  margins = []
  for row in range(len(tokens)):
    n = _generated_length(gen_tokens[row])
    np.testing.assert_array_equal(scores[row, :n].argmax(-1), gen_tokens[row, :n])
    for step in range(n):
      top2 = np.sort(scores[row, step])[-2:]
      if np.isfinite(top2[0]):  # forced steps have one finite score
        margins.append(top2[1] - top2[0])
  beam_scores = _processed_scores(model, tokens, mask, beam_tokens)
  for row in range(len(tokens)):
    n = _generated_length(beam_tokens[row])
    total = np.take_along_axis(beam_scores[row, :n], beam_tokens[row, :n, None], -1).sum()
    np.testing.assert_allclose(total / n ** config.length_penalty,
                               _np(beam.sequences_scores)[row], rtol=1e-5)
  return dict(gen_tokens=gen_tokens, gen_min_margin=np.float32(min(margins)),
              beam_tokens=beam_tokens, beam_sequence_scores=_np(beam.sequences_scores),
              gen_max_new_tokens=np.int32(GEN_NEW))


def _interesting(golden: dict[str, np.ndarray]) -> bool:
  """Generations that are not degenerate: varied tokens, and greedy and beam differ somewhere."""
  varied = all(len(set(row.tolist())) >= 3 for row in golden["gen_tokens"])
  return varied and golden["gen_min_margin"] >= GEN_MIN_MARGIN and not np.array_equal(
      golden["gen_tokens"], golden["beam_tokens"])


def make_base(name: str, index: int) -> dict[str, np.ndarray]:
  out_dir = FIXTURES / name
  if out_dir.exists():
    shutil.rmtree(out_dir)
  built = build_model(name, seed=index)
  built.save_pretrained(out_dir, safe_serialization=True)
  golden = save_tokenizer(out_dir) if name == "hf_bart_tiny" else {}
  model = load_model(name)
  vocab = model.config.vocab_size
  for attempt in range(200):
    rng = np.random.default_rng(100 + 10 * index + attempt)
    tokens, mask = encoder_batch(rng, vocab)
    decoder = decoder_batch(rng, vocab)
    generation = generation_golden(model, tokens, mask)
    if _interesting(generation):
      break
    if attempt < 3:
      print(f"  {name} attempt {attempt}: greedy {generation['gen_tokens'].tolist()} beam "
            f"{generation['beam_tokens'].tolist()} margin {generation['gen_min_margin']:.3g}")
  else:
    raise RuntimeError(f"{name}: no batch gave varied, well-separated generations")
  logits = forward_logits(model, tokens, mask, decoder)
  np.testing.assert_array_equal(logits, forward_logits(built, tokens, mask, decoder))
  golden.update(input_ids=tokens, attention_mask=mask, decoder_input_ids=decoder, logits=logits,
                **generation, transformers_version=np.array(transformers.__version__))
  np.savez_compressed(out_dir / "golden.npz", **golden)
  return golden


# ----------------------------------------------------------------------------- PEFT


def _labels(decoder: np.ndarray) -> np.ndarray:
  labels = np.concatenate([decoder[:, 1:], np.full((len(decoder), 1), EOS)], axis=1)
  labels = labels.astype(np.int64)
  for row, n in enumerate(LABEL_LENGTHS):
    labels[row, n:] = -100
  return labels


def prefix_tuning_golden(batch: dict, seed: int, projection: bool) -> dict[str, np.ndarray]:
  import peft
  base = load_model("hf_bart_tiny")
  torch.manual_seed(seed)
  config = peft.PrefixTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                   num_virtual_tokens=PREFIX_LENGTH,
                                   prefix_projection=projection,
                                   encoder_hidden_size=ENCODER_HIDDEN)
  model = peft.get_peft_model(base, config).eval()
  encoder = model.prompt_encoder["default"]
  tokens, mask = _t(batch["input_ids"]), _t(batch["attention_mask"])
  decoder, labels = _t(batch["decoder_input_ids"]), _t(batch["labels"])
  with torch.no_grad():
    result = model(input_ids=tokens, attention_mask=mask, decoder_input_ids=decoder,
                   labels=labels)
    cache = model.get_prompt(batch_size=len(tokens))
  self_cache = cache.self_attention_cache
  layers = base.config.decoder_layers
  keys = np.stack([_np(self_cache.layers[l].keys) for l in range(layers)])
  values = np.stack([_np(self_cache.layers[l].values) for l in range(layers)])
  assert cache.cross_attention_cache.get_seq_length() == 0  # the cross half is dropped
  # The layout stated in the docstring: decoder layer l gets view entries 4l, 4l + 1 (mod 2L).
  num_layers = model.peft_config["default"].num_layers
  with torch.no_grad():
    view = _np(encoder(model.prompt_tokens["default"][None, :PREFIX_LENGTH])[0]).reshape(
        PREFIX_LENGTH, 2 * num_layers, base.config.decoder_attention_heads, -1)
  for layer in range(layers):
    for entry, received in ((0, keys), (1, values)):
      np.testing.assert_allclose(received[layer, 0],
                                 view[:, (4 * layer + entry) % (2 * num_layers)].transpose(1, 0, 2),
                                 atol=1e-6)
  logits = _np(result.logits)
  # The same logits from the base model with a hand-built cache of self-attention entries only.
  rebuilt = transformers.EncoderDecoderCache(
      transformers.DynamicCache([(torch.from_numpy(k), torch.from_numpy(v))
                                 for k, v in zip(keys, values)]),
      transformers.DynamicCache())
  with torch.no_grad():
    by_hand = _np(base(input_ids=tokens, attention_mask=mask, decoder_input_ids=decoder,
                       past_key_values=rebuilt).logits)
  np.testing.assert_allclose(by_hand, logits, atol=1e-5)
  loss = torch.nn.functional.cross_entropy(result.logits.reshape(-1, logits.shape[-1]),
                                           labels.reshape(-1), ignore_index=-100)
  np.testing.assert_allclose(loss.item(), result.loss.item(), rtol=1e-6)
  out = {f"encoder_weights/{k}": _np(v) for k, v in encoder.state_dict().items()}
  out.update(received_keys=keys, received_values=values, logits=logits, loss=_np(result.loss),
             decoder_positions_start=np.int32(PREFIX_LENGTH),
             prefix_num_layers=np.int32(model.peft_config["default"].num_layers))
  return out


def make_peft() -> dict[str, int]:
  import peft
  base_golden = np.load(FIXTURES / "hf_bart_tiny" / "golden.npz")
  batch = {k: base_golden[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
  batch["labels"] = _labels(batch["decoder_input_ids"])
  common = dict(**batch, num_virtual_tokens=np.int32(PREFIX_LENGTH),
                peft_version=np.array(peft.__version__),
                transformers_version=np.array(transformers.__version__))
  out_dir = FIXTURES / "peft_bart_tiny"
  if out_dir.exists():
    shutil.rmtree(out_dir)
  out_dir.mkdir(parents=True)
  for name, projection, seed in (("prefix_tuning", False, 70),
                                 ("prefix_tuning_projection", True, 71)):
    np.savez_compressed(out_dir / f"{name}.npz", **common,
                        **prefix_tuning_golden(batch, seed, projection))
  return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", nargs="+", choices=("base", "peft"), default=("base", "peft"))
  args = parser.parse_args()
  transformers.logging.set_verbosity_error()
  if "base" in args.parts:
    for index, name in enumerate(MODELS):
      golden = make_base(name, index)
      sizes = {p.name: p.stat().st_size for p in sorted((FIXTURES / name).iterdir())}
      print(f"{name}: {sizes}\n  greedy {golden['gen_tokens'].tolist()}\n  beam "
            f"{golden['beam_tokens'].tolist()}, margin {golden['gen_min_margin']:.3g}")
  if "peft" in args.parts:
    print(f"peft_bart_tiny: {make_peft()}")


if __name__ == "__main__":
  main()
