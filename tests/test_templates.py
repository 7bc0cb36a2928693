"""Prompt templates: virtual tokens anywhere ("[P:3] {x} [P:3] It was"), T5 and Llama-family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prompt_tuning
from prompt_tuning import api, combine, templates
from tiny_llms import write_tiny_llama
from uncached_reference import greedy_encoder_decoder

T5_TOKENS = np.array([[5, 9, 13, 2, 1], [7, 3, 1, 0, 0]], np.int32)  # ragged, EOS-terminated.
T5_SLOTS = np.array([[0, 3], [0, 2]], np.int32)  # "[P:2] {x} [P:3]": before all, before EOS.


def test_parse_template_pieces_lengths_and_leading_slots():
  parsed = templates.parse_template("[P:3] {sentence} [P:2] It was")
  assert parsed.pieces == ("", "{sentence}", "It was") and parsed.slot_lengths == (3, 2)
  assert parsed.leading == (True, False) and parsed.length == 5 and not parsed.is_prefix
  assert parsed.columns() == ["sentence"]
  assert parsed.render({"sentence": "a film"}) == "[P:3] a film [P:2] It was"
  assert templates.parse_template("[P:4] {x}").is_prefix
  assert templates.text_slots([0, 4, 2], parsed.leading) == [templates.BEFORE_ALL, 4]
  assert templates.model_slots([templates.BEFORE_ALL, 4], 1) == [0, 5]
  with pytest.raises(templates.TemplateError, match="no prompt slot"):
    templates.parse_template("{x} It was")
  with pytest.raises(templates.TemplateError, match=r"\[P:0\]"):
    templates.parse_template("[P:0] {x}")
  with pytest.raises(templates.TemplateError, match="positional field"):
    templates.parse_template("[P:1] {}")


def test_segments_insert_and_remove_exactly():
  embedded = jnp.arange(1, 6, dtype=jnp.float32).reshape(1, 5, 1)  # tokens 1..5
  prompt = -jnp.arange(1, 4, dtype=jnp.float32).reshape(1, 3, 1)   # rows -1, -2, -3
  slots = jnp.array([[1, 4]])
  combined = combine.insert_segments(prompt, embedded, slots, (1, 2))
  np.testing.assert_array_equal(combined[0, :, 0], [1, -1, 2, 3, 4, -2, -3, 5])
  np.testing.assert_array_equal(combine.remove_segments(combined, slots, (1, 2)), embedded)
  # Causal: row t is the output before token t+1 (the segment's last row when one is between).
  np.testing.assert_array_equal(combine.remove_segments_causal(combined, slots, (1, 2))[0, :, 0],
                                [-1, 2, 3, -3, 5])
  values = combine.insert_segment_values(jnp.ones((1, 5), jnp.int32) * 7, slots, (1, 2), 0)
  np.testing.assert_array_equal(values[0], [7, 0, 7, 7, 7, 0, 0, 7])
  # One segment is insert_prompt / remove_prompt, for every index.
  index = jnp.array([0, 2, 5])
  embedded3 = jnp.tile(embedded, (3, 1, 1))
  np.testing.assert_array_equal(
      combine.insert_segments(jnp.tile(prompt, (3, 1, 1)), embedded3, index[:, None], (3,)),
      combine.insert_prompt(jnp.tile(prompt, (3, 1, 1)), embedded3, index))
  both = combine.insert_prompt(jnp.tile(prompt, (3, 1, 1)), embedded3, index)
  np.testing.assert_array_equal(combine.remove_segments(both, index[:, None], (3,)),
                                combine.remove_prompt(both, index, 3))


@pytest.fixture(scope="module")
def t5():
  return prompt_tuning.load_model(["test/t5_1_1_tiny_prompt.gin"], ["PROMPT_LENGTH=5"], seed=3)


def _template_model(model, template, gin_files, bindings=(), checkpoint=None):
  """`model`'s frozen weights and prompt, with a template placement."""
  other = prompt_tuning.load_model(gin_files, [*bindings, f"PROMPT_TEMPLATE={template!r}"],
                                   checkpoint=checkpoint)
  other.params = model.params
  return other


def test_t5_leading_slot_is_exactly_the_prefix_placement(t5):
  leading = _template_model(t5, "[P:5] {x}", ["test/t5_1_1_tiny_prompt.gin"])
  assert leading.module.template == "[P:5] {x}"
  decoder = np.array([[0, 4, 6], [0, 8, 0]], np.int32)
  reference = np.asarray(t5.logits(T5_TOKENS, decoder))
  np.testing.assert_array_equal(leading.logits(T5_TOKENS, decoder), reference)
  np.testing.assert_array_equal(
      leading.logits(T5_TOKENS, decoder, prompt_slots=np.zeros((2, 1), np.int32)), reference)
  np.testing.assert_array_equal(leading.generate(T5_TOKENS, 5), t5.generate(T5_TOKENS, 5))


def test_t5_trailing_slot_is_the_suffix_placement(t5):
  suffix = prompt_tuning.load_model(["test/t5_1_1_tiny_prompt.gin"],
                                    ["PROMPT_LENGTH=5", "PROMPT_PLACEMENT='suffix_before_eos'"])
  suffix.params = t5.params
  trailing = _template_model(t5, "{x} [P:5]", ["test/t5_1_1_tiny_prompt.gin"])
  slots = np.array([[4], [2]], np.int32)  # before each row's EOS.
  decoder = np.array([[0, 4, 6], [0, 8, 0]], np.int32)
  np.testing.assert_array_equal(trailing.logits(T5_TOKENS, decoder, prompt_slots=slots),
                                suffix.logits(T5_TOKENS, decoder))


def test_t5_two_slots_on_a_ragged_batch_equal_each_example_alone(t5):
  model = _template_model(t5, "[P:2] {x} [P:3]", ["test/t5_1_1_tiny_prompt.gin"])
  decoder = np.array([[0, 4, 6], [0, 8, 0]], np.int32)
  logits = np.asarray(model.logits(T5_TOKENS, decoder, prompt_slots=T5_SLOTS))
  generated = model.generate(T5_TOKENS, 5, prompt_slots=T5_SLOTS)
  for row, length in enumerate([5, 3]):
    alone = np.asarray(model.logits(T5_TOKENS[row:row + 1, :length], decoder[row:row + 1],
                                    prompt_slots=T5_SLOTS[row:row + 1]))
    np.testing.assert_allclose(logits[row], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        generated[row], model.generate(T5_TOKENS[row:row + 1, :length], 5,
                                       prompt_slots=T5_SLOTS[row:row + 1])[0])
  # The slots matter: moving the second one changes the outputs.
  assert not np.allclose(logits, np.asarray(model.logits(T5_TOKENS, decoder,
                                                         prompt_slots=T5_SLOTS * [[1, 0]])))


def test_t5_cached_decoding_equals_uncached_with_slots(t5):
  model = _template_model(t5, "[P:2] {x} [P:3]", ["test/t5_1_1_tiny_prompt.gin"])
  for method in ("greedy", "beam"):
    cached = model.generate(T5_TOKENS, 6, prompt_slots=T5_SLOTS, method=method, num_beams=1)
    logits_fn = model.logits
    model.logits = lambda e, d: logits_fn(e, d, prompt_slots=T5_SLOTS)
    try:
      uncached = greedy_encoder_decoder(model, T5_TOKENS, 6)
    finally:
      model.logits = logits_fn
    np.testing.assert_array_equal(cached, uncached)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  checkpoint = write_tiny_llama(tmp_path_factory.mktemp("llama") / "m", seed=7)
  model = prompt_tuning.load_model(["architectures/prompt_tuning.gin"], ["PROMPT_LENGTH=4"],
                                   checkpoint=checkpoint, seed=1)
  return model, checkpoint


def test_llm_leading_slot_is_exactly_the_prefix_placement(llama):
  model, checkpoint = llama
  leading = _template_model(model, "[P:4] {x}", ["architectures/prompt_tuning.gin"],
                            checkpoint=checkpoint)
  tokens, mask, slots = leading.encode_template([{"x": "a good film"}, {"x": "bad"}])
  assert (slots == 0).all() and tokens[0, 0] == model.config.bos_token_id
  np.testing.assert_array_equal(leading.logits(tokens, attention_mask=mask, prompt_slots=slots),
                                model.logits(tokens, attention_mask=mask))
  np.testing.assert_array_equal(
      leading.generate(tokens, 4, attention_mask=mask, prompt_slots=slots),
      model.generate(tokens, 4, attention_mask=mask))


def _greedy_by_full_passes(model, tokens, slots, steps):
  """Greedy continuation of one unpadded row with its slots, recomputing everything per step."""
  row = list(tokens)
  for _ in range(steps):
    array = np.array([row], np.int32)
    logits = np.asarray(model.logits(array, attention_mask=np.ones_like(array),
                                     prompt_slots=slots[None]))
    row.append(int(logits[0, -1].argmax()))
  return row[len(tokens):]


def test_llm_cloze_two_slots_ragged_cached_equals_uncached_and_alone(llama):
  """LAMA-style '[P:2] {subject} [P:2]': the trailing segment sits right before the answer."""
  model, checkpoint = llama
  cloze = _template_model(model, "[P:2] {subject} [P:2]", ["architectures/prompt_tuning.gin"],
                          checkpoint=checkpoint)
  rows = [{"subject": "Paris is the capital of"}, {"subject": "Rome"}]
  tokens, mask, slots = cloze.encode_template(rows)
  lengths = mask.sum(axis=1)
  np.testing.assert_array_equal(slots[:, 0], 0)
  np.testing.assert_array_equal(slots[:, 1], lengths)  # after BOS + subject: the row's end.
  generated = cloze.generate(tokens, 5, attention_mask=mask, prompt_slots=slots, eos_id=-1)
  beam = cloze.generate(tokens, 5, attention_mask=mask, prompt_slots=slots, eos_id=-1,
                        method="beam", num_beams=1)
  np.testing.assert_array_equal(beam, generated)
  logits = np.asarray(cloze.logits(tokens, attention_mask=mask, prompt_slots=slots))
  for row, length in enumerate(lengths):
    alone_tokens = tokens[row:row + 1, :length]
    np.testing.assert_array_equal(
        generated[row], _greedy_by_full_passes(cloze, alone_tokens[0], slots[row], 5))
    alone = np.asarray(cloze.logits(alone_tokens, attention_mask=np.ones_like(alone_tokens),
                                    prompt_slots=slots[row:row + 1]))
    np.testing.assert_allclose(logits[row, :length], alone[0], rtol=1e-5, atol=1e-5)
  # The trailing segment is read before the first answer token: it changes that prediction.
  moved = slots.copy()
  moved[:, 1] = 1
  assert not np.allclose(logits[np.arange(2), lengths - 1],
                         np.asarray(cloze.logits(tokens, attention_mask=mask,
                                                 prompt_slots=moved))[np.arange(2), lengths - 1])


@pytest.mark.slow  # Default-suite time; related cases stay in the default suite.
def test_gradients_reach_each_segment_through_the_method_parameters(llama, t5):
  """Every prompt row (both segments) gets a gradient; P-tuning's come through its encoder."""
  from prompt_tuning.train import models
  model, checkpoint = llama
  cloze = _template_model(model, "[P:2] {subject} [P:2]", ["architectures/prompt_tuning.gin"],
                          checkpoint=checkpoint)
  tokens, mask, slots = cloze.encode_template([{"subject": "Paris"}, {"subject": "Rome"}])
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": np.roll(tokens, -1, 1),
           "decoder_loss_weights": mask, "decoder_attention_mask": mask, "prompt_slots": slots}
  loss = lambda p: models.loss_terms(cloze.module, p, batch, models.LossConfig()).loss
  grads = jax.grad(loss)(cloze.params)
  prompt_grad = np.asarray(grads["decoder"]["prompt"]["prompt"]["prompt"])
  assert np.abs(prompt_grad).sum(axis=1).min() > 0  # all 4 rows.
  p_tuning = prompt_tuning.load_model(["test/t5_1_1_tiny_p_tuning.gin"],
                                      ["PROMPT_TEMPLATE='[P:2] {x} [P:3]'"], seed=1)
  t5_batch = {"encoder_input_tokens": T5_TOKENS, "prompt_slots": T5_SLOTS,
              "decoder_input_tokens": np.array([[0, 4], [0, 8]], np.int32),
              "decoder_target_tokens": np.array([[4, 6], [8, 1]], np.int32),
              "decoder_loss_weights": np.ones((2, 2), np.int32)}
  t5_loss = lambda p: models.loss_terms(p_tuning.module, p, t5_batch, models.LossConfig()).loss
  t5_grads = jax.grad(t5_loss)(p_tuning.params)
  method = t5_grads["encoder"]["prompt"]["prompt"]
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree_util.tree_leaves(method))
  # The slots' rows come only from the method: the batch's prompt rows are not token rows.
  embed_rows = np.abs(np.asarray(t5_grads["token_embedder"]["embedding"])).sum(axis=1)
  assert set(np.nonzero(embed_rows)[0]) <= set(T5_TOKENS.ravel()) | {0, 4, 6, 8, 1}


def test_template_errors_are_clear(t5):
  model = _template_model(t5, "[P:2] {x} [P:3]", ["test/t5_1_1_tiny_prompt.gin"])
  decoder = np.zeros((2, 2), np.int32)
  with pytest.raises(ValueError, match="needs `prompt_slots`"):
    model.logits(T5_TOKENS, decoder)
  with pytest.raises(ValueError, match=r"must be \[2, 2\]"):
    model.logits(T5_TOKENS, decoder, prompt_slots=np.zeros((2, 3), np.int32))
  with pytest.raises(templates.TemplateError, match="no prompt template"):
    t5.logits(T5_TOKENS, decoder, prompt_slots=T5_SLOTS)
  from prompt_tuning.train import models
  batch = {"encoder_input_tokens": T5_TOKENS, "decoder_input_tokens": decoder,
           "decoder_target_tokens": decoder, "prompt_slots": T5_SLOTS}
  with pytest.raises(templates.TemplateError, match="PROMPT_TEMPLATE set to the same"):
    models.logits(t5.module, t5.params, batch)
  with pytest.raises(ValueError, match="placement"):
    prompt_tuning.load_model(
        ["test/t5_1_1_tiny_prompt.gin"],
        ["PROMPT_TEMPLATE='[P:2] {x}'", "PROMPT_PLACEMENT='suffix_before_eos'"])
