"""The embedded demo's shipped model and tasks (prompt_tuning/assets/demo, data/demo_tasks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import seqio

import prompt_tuning
from prompt_tuning.checkpoints import orbax as orbax_ckpt
from prompt_tuning.checkpoints import tree
from prompt_tuning.data import demo_tasks

LENGTHS = demo_tasks.TASK_FEATURE_LENGTHS


@pytest.fixture(scope="module")
def registered() -> list[str]:
  return demo_tasks.register_demo_tasks()


@pytest.fixture(scope="module")
def frozen_model():
  return prompt_tuning.load_model(demo_tasks.MODEL_GIN_FILE,
                                  checkpoint=demo_tasks.model_checkpoint_dir())


def _greedy(model, texts: list[str], prompt=None) -> list[str]:
  tokens_NT = demo_tasks.encode_texts(texts, LENGTHS["inputs"])
  return demo_tasks.decode_tokens(model.generate(tokens_NT, LENGTHS["targets"], prompt=prompt))


def test_transforms_and_byte_vocabulary():
  assert {w: f("kqtbz") for w, f in demo_tasks.TRANSFORMS.items()} == {
      "copy": "kqtbz", "reverse": "zbtqk", "sort": "bkqtz", "upper": "KQTBZ", "shift": "lruca"}
  tokens = demo_tasks.encode_texts(["ab", "c"], 4)
  np.testing.assert_array_equal(tokens, [[100, 101, 1, 0], [102, 1, 0, 0]])
  assert demo_tasks.decode_tokens(np.array([[100, 101, 1, 105], [102, 0, 0, 0]])) == ["ab", "c"]
  with pytest.raises(ValueError, match="larger length"):
    demo_tasks.encode_texts(["abcd"], 4)


def test_examples_are_seeded_and_splits_disjoint():
  train = demo_tasks.make_examples("reverse", "reverse", "train", seed=0, count=300)
  assert train == demo_tasks.make_examples("reverse", "reverse", "train", seed=0, count=300)
  assert train != demo_tasks.make_examples("reverse", "reverse", "train", seed=1, count=300)
  validation = demo_tasks.make_examples(None, "reverse", "validation", seed=0, count=300)
  letters = [t.removeprefix("reverse: ") for t in train["inputs"]]
  assert not any(demo_tasks.is_validation_string(t) for t in letters)
  assert all(demo_tasks.is_validation_string(t) for t in validation["inputs"])
  for text, target in zip(letters, train["targets"]):
    assert target == text[::-1]
    assert demo_tasks.MIN_LENGTH <= len(text) <= demo_tasks.MAX_LENGTH
    assert len(set(text)) == len(text) and text.islower()


def test_tasks_registered_and_yield_examples(registered):
  assert demo_tasks.DEMO_TASK in registered and demo_tasks.PRETRAIN_MIXTURE in registered
  mixture = seqio.get_mixture_or_task(demo_tasks.PRETRAIN_MIXTURE)
  assert sorted(t.name for t in mixture.tasks) == sorted(demo_tasks.pretrain_task_names())
  task = seqio.get_mixture_or_task(demo_tasks.DEMO_TASK)
  assert task.metric_fns[0]([b"ab", b"cd"], ["ab", "dc"]) == {"exact_match": 50.0}
  for split, size in demo_tasks.SPLIT_SIZES.items():
    assert task.num_input_examples(split) in (None, size)
  examples = list(task.get_dataset(LENGTHS, split="validation", shuffle=False)
                  .take(5).as_numpy_iterator())
  for example in examples:
    text = example["inputs_pretokenized"].decode()
    assert example["targets_pretokenized"].decode() == text[::-1]
    np.testing.assert_array_equal(example["inputs"], [ord(c) + 3 for c in text] + [1])
  train = list(seqio.get_mixture_or_task("demo_pretrain_sort").get_dataset(
      LENGTHS, split="train", shuffle=False).take(3).as_numpy_iterator())
  for example in train:
    text = example["inputs_pretokenized"].decode()
    assert text.startswith("sort: ")
    assert example["targets_pretokenized"].decode() == "".join(sorted(text[6:]))


def test_shipped_checkpoint_loads(frozen_model):
  config = frozen_model.config
  assert (config.vocab_size, config.emb_dim, config.num_encoder_layers) == (384, 64, 2)
  assert config.vocab_size >= demo_tasks.vocabulary().vocab_size
  flat = tree.flatten_params(frozen_model.params)
  assert flat["token_embedder/embedding"].shape == (384, 64)
  assert flat["decoder/logits_dense/kernel"].shape == (64, 384)
  assert orbax_ckpt.read_meta(demo_tasks.model_checkpoint_dir())["gin_file"] == (
      demo_tasks.MODEL_GIN_FILE)


def test_frozen_model_does_the_pretraining_tasks(frozen_model):
  letters = ["kqtbz", "hmeacw", "pdlxro", "fiv"]
  for word, transform in demo_tasks.TRANSFORMS.items():
    outputs = _greedy(frozen_model, [f"{word}: {t}" for t in letters])
    assert outputs == [transform(t) for t in letters], word
  # Without an instruction it copies: the demo task (reverse) is not solved by the frozen model.
  assert _greedy(frozen_model, letters) == letters


def test_prompt_model_loads_shipped_weights(frozen_model):
  model = prompt_tuning.load_model(demo_tasks.PROMPT_MODEL_GIN_FILE,
                                   checkpoint=demo_tasks.model_checkpoint_dir())
  prompt_path = prompt_tuning.api.prompt_param_path(model.params)
  flat = tree.flatten_params(model.params)
  assert flat.pop(prompt_path).shape == (10, 64)
  frozen = tree.flatten_params(frozen_model.params)
  assert sorted(flat) == sorted(frozen)
  for path, value in frozen.items():
    np.testing.assert_array_equal(np.asarray(flat[path]), np.asarray(value), err_msg=path)
