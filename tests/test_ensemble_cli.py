"""Prompt ensembles through the eval / infer commands (PROMPT_FILES): every prompt, the ensemble."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import seqio

from prompt_tuning import api, cli, prompt_files
from prompt_tuning import eval as eval_main
from prompt_tuning import infer as infer_main
from prompt_tuning.checkpoints import orbax as orbax_format
from prompt_tuning.data import file_tasks
from prompt_tuning.train import ensemble_eval, models

TASK = "ensemble_cli_sentiment"
# The byte vocabulary's size (every predicted id decodes to text) and a width that lets prompts
# change the answers.
SHAPE = ["NUM_EMBEDDINGS=259", "EMBED_DIM=32", "HEAD_DIM=16", "MLP_DIM=64"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  folder = tmp_path_factory.mktemp("ensemble_cli")
  rows = "text\tlabel\n" + "".join(f"film {i} was {'great' if i % 2 else 'dull'}\t"
                                   f"{'positive' if i % 2 else 'negative'}\n" for i in range(5))
  (folder / "dev.tsv").write_text(rows)
  file_tasks.register_file_task(TASK, validation_path=str(folder / "dev.tsv"),
                                input_template="{text}", label_names=("negative", "positive"),
                                vocabulary=seqio.ByteVocabulary())
  frozen = api.load_model(["test/t5_1_1_tiny.gin"], SHAPE, seed=4).params
  orbax_format.save_params(folder / "frozen", frozen, 7)
  prompts = np.random.default_rng(0).uniform(-3, 3, (3, 5, 32)).astype(np.float32)
  (folder / "prompts").mkdir()
  for n, prompt in enumerate(prompts):
    np.save(folder / "prompts" / f"p{n}.npy", prompt)
  return folder


def _run(command, workspace, out, *bindings):
  output = "EVAL_OUTPUT_DIR" if command is eval_main._command else "INFER_OUTPUT_DIR"
  run_gin = "runs/prompt_eval.gin" if command is eval_main._command else "runs/prompt_infer.gin"
  return cli.execute(command, [
      "cmd", "--gin_file=test/t5_1_1_tiny_prompt.gin", f"--gin_file={run_gin}",
      f"--gin.INITIAL_CHECKPOINT_PATH='{workspace / 'frozen'}'",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 4}", "--gin.BATCH_SIZE=2",
      *(f"--gin.{binding}" for binding in SHAPE),
      f"--gin.{output}='{out}'", *bindings])


def test_eval_reports_each_prompt_and_the_ensemble(workspace, tmp_path):
  files = [str(workspace / "prompts" / f"p{n}.npy") for n in (0, 0, 1)]
  ensemble = _run(eval_main._command, workspace, tmp_path / "ens",
                  f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", f"--gin.PROMPT_FILES={files!r}")
  record = json.loads((tmp_path / "ens" / "metrics.json").read_text())
  assert record["prompt_files"] == files and len(record["prompt_metrics"]) == 3
  single = _run(eval_main._command, workspace, tmp_path / "one",
                f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", f"--gin.PROMPT_FILE='{files[0]}'")
  assert record["prompt_metrics"][0] == single == record["prompt_metrics"][1]
  # Two of three prompts are the same: the vote is theirs.
  assert ensemble == single and record["metrics"] == ensemble


def test_rank_classification_ensemble_scores_are_mean_log_likelihoods(workspace, tmp_path):
  folder = str(workspace / "prompts")
  ensemble = _run(eval_main._command, workspace, tmp_path / "rank",
                  f"--gin.MIXTURE_OR_TASK_NAME='{TASK}_rank_classification'",
                  f"--gin.PROMPT_FILES='{folder}'")
  record = json.loads((tmp_path / "rank" / "metrics.json").read_text())
  assert len(record["prompt_metrics"]) == 3 and set(ensemble[f"{TASK}_rank_classification"])


def test_ensemble_outputs_equal_single_prompt_runs_in_one_program(workspace):
  """Scores and predictions per prompt equal single-prompt batch functions; the ensemble's are
  the mean log-likelihood and the majority vote; all prompts share one compiled program."""
  from prompt_tuning.train import data, evaluation, model_setup, partitioning
  model = api.load_model(["test/t5_1_1_tiny_prompt.gin"], SHAPE, checkpoint=workspace / "frozen")
  run = model_setup.build_run_model(model.config, model.prompt_config)
  mesh = partitioning.make_mesh(1)
  paths = prompt_files.expand_prompt_files(str(workspace / "prompts" / "p*.npy"))
  decode = models.DecodeConfig(max_decode_length=4)
  fns = ensemble_eval.build(run, model.params, paths, decode, mesh, batch_size=2)
  converter = data.feature_converter(model.config, run.prompt_length)
  lengths = {"inputs": 24, "targets": 4}
  task = seqio.get_mixture_or_task(f"{TASK}_rank_classification")
  features = converter(task.get_dataset(lengths, split="validation", shuffle=False), lengths)
  compiled = api.generate_encoder_decoder._cache_size  # pylint: disable=protected-access
  before = compiled()
  per_prompt_scores = fns.score_all(features)
  per_prompt_tokens = fns.predict_all(features)  # 10 examples: 5 batches, one program.
  assert compiled() == before + 1
  assert per_prompt_scores.shape == (3, 10) and per_prompt_tokens.shape == (3, 10, 4)
  for n, path in enumerate(paths):
    single = evaluation.ModelFns(run.module, decode, mesh, 2)
    params = model.with_prompt(path)
    np.testing.assert_allclose(per_prompt_scores[n], single.score(params, features), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(per_prompt_tokens[n], np.stack(single.predict(params, features)))
  outputs = ensemble_eval.EnsembleOutputs(fns)
  enumerated = features.enumerate()
  mean = outputs.model_fn("score", ensemble_eval.ENSEMBLE)(enumerated)
  np.testing.assert_allclose([s for _, s in mean], per_prompt_scores.mean(axis=0), rtol=1e-6)
  vote = outputs.model_fn("predict", ensemble_eval.ENSEMBLE)(enumerated)
  for index, tokens in vote:
    answers = [tuple(per_prompt_tokens[n, index]) for n in range(3)]
    counts = collections.Counter(answers)
    assert counts[tuple(tokens)] == max(counts.values())


def test_infer_writes_each_prompts_and_the_ensembles_predictions(workspace, tmp_path):
  folder = workspace / "prompts"
  written = _run(infer_main._command, workspace, tmp_path / "infer",
                 f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", f"--gin.PROMPT_FILES='{folder}'")
  records = [json.loads(line) for line in open(written[TASK], encoding="utf-8")]
  single = _run(infer_main._command, workspace, tmp_path / "single",
                f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'", f"--gin.PROMPT_FILE='{folder / 'p2.npy'}'")
  alone = [json.loads(line)["prediction"] for line in open(single[TASK], encoding="utf-8")]
  assert len(records) == 5 and [r["predictions"][2] for r in records] == alone
  # The vote is over token sequences (two prompts' answers may decode to the same text).
  assert all(r["prediction"] in r["predictions"] and "inputs" in r and "targets" in r
             for r in records)
  assert any(len(set(r["predictions"])) > 1 for r in records)  # The prompts disagree somewhere.


def test_prompt_files_errors_are_one_line(workspace, tmp_path):
  with pytest.raises(prompt_files.PromptFileError, match="matches no file"):
    prompt_files.expand_prompt_files(str(tmp_path / "none*.npy"))
  with pytest.raises(prompt_files.PromptFileError, match="folder without .npy"):
    prompt_files.expand_prompt_files(str(tmp_path))
  with pytest.raises(prompt_files.PromptFileError, match="both set"):
    _run(eval_main._command, workspace, tmp_path / "both", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
         f"--gin.PROMPT_FILE='{workspace / 'prompts' / 'p0.npy'}'",
         f"--gin.PROMPT_FILES='{workspace / 'prompts'}'")
