"""PEFT prompt-tuning adapters from the command line: export / import commands, an adapter folder
as PROMPT_FILE, and a P-tuning run's produced prompt exported as an adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prompt_tuning import api, peft_interchange, prompt_files
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.methods import p_tuning
from prompt_tuning.scripts import export_peft_adapter, import_peft_adapter
from prompt_tuning.train import checkpoints as train_checkpoints
from prompt_tuning.train import model_setup

TOKENS = np.array([[5, 6, 7, 1], [9, 1, 0, 0]], np.int32)
DECODER_INPUTS = np.array([[0, 4, 5], [0, 6, 0]], np.int32)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
  folder = tmp_path_factory.mktemp("peft_cli")
  model = api.load_model(["test/t5_1_1_tiny.gin"], seed=5)
  orbax_format.save_params(folder / "frozen", model.params, 10)
  return folder


def test_adapter_folder_as_prompt_file_gives_the_npy_logits(frozen, tmp_path):
  prompt = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  npy = prompt_files.save_prompt_file(tmp_path / "prompt.npy", prompt)
  adapter = tmp_path / "adapter"
  assert export_peft_adapter.main(["export_peft_adapter", f"--prompt_file={npy}",
                                   f"--output_dir={adapter}",
                                   "--gin_file=test/t5_1_1_tiny_prompt.gin"]) == 0
  config = json.loads((adapter / "adapter_config.json").read_text())
  assert (config["peft_type"], config["num_virtual_tokens"], config["token_dim"],
          config["task_type"]) == ("PROMPT_TUNING", 5, 4, "SEQ_2_SEQ_LM")
  model = api.load_model(["test/t5_1_1_tiny_prompt.gin"], checkpoint=str(frozen / "frozen"))
  np.testing.assert_array_equal(model.logits(TOKENS, DECODER_INPUTS, prompt=str(adapter)),
                                model.logits(TOKENS, DECODER_INPUTS, prompt=str(npy)))
  # The eval / infer commands' path (PROMPT_FILE) reads the folder the same way.
  np.testing.assert_array_equal(
      model_setup.with_prompt_file(model.params, str(adapter))["encoder"]["prompt"]["prompt"][
          "prompt"], prompt)
  back = tmp_path / "back.npy"
  assert import_peft_adapter.main(["import_peft_adapter", f"--adapter_dir={adapter}",
                                   f"--output_path={back}"]) == 0
  np.testing.assert_array_equal(np.load(back), prompt)


def test_folder_that_is_no_adapter_is_one_clear_line(tmp_path, capsys):
  with pytest.raises(prompt_files.PromptFileError, match="folder without adapter_config.json"):
    prompt_files.load_prompt_file(tmp_path)
  assert export_peft_adapter.main(["export_peft_adapter", f"--prompt_file={tmp_path}",
                                   f"--output_dir={tmp_path / 'out'}"]) == 1
  assert "holds no prompt file" in capsys.readouterr().err


def test_p_tuning_run_exports_its_produced_prompt_as_an_adapter(tmp_path):
  # A P-tuning MODEL_DIR as training writes it (numpy_checkpoints/checkpoint_<step>/ with the
  # encoder's produced prompt under for_inference/), from real P-tuning parameters.
  model = api.load_model(["test/t5_1_1_tiny_p_tuning.gin"], seed=1)
  trainable = api.method_subtree(model.params)
  model_dir = str(tmp_path / "p_tuning")
  train_checkpoints.export_step_files(model_dir, 11, trainable, model.prompt_config, model.config)
  adapter = tmp_path / "p_tuning_adapter"
  assert export_peft_adapter.main(["export_peft_adapter", f"--prompt_file={model_dir}",
                                   f"--output_dir={adapter}",
                                   "--gin_file=test/t5_1_1_tiny_p_tuning.gin"]) == 0
  expected = p_tuning.export_prompt(trainable["encoder"]["prompt"]["prompt"])
  np.testing.assert_array_equal(peft_interchange.import_peft_adapter(adapter), expected)
