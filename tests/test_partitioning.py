"""The logical-axis rules, and the same training losses on 1 CPU device and on a (4, 2) mesh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from prompt_tuning import api
from prompt_tuning.train import partitioning


def test_rules_shard_frozen_weights_and_replicate_the_prompt():
  spec = partitioning.logical_to_spec
  assert spec(("vocab", "embed")) == PartitionSpec("model", None)
  assert spec(("embed", "mlp")) == PartitionSpec(None, "model")
  assert spec(("joined_kv", "embed")) == PartitionSpec("model", None)
  assert spec(("heads", "relpos_buckets")) == PartitionSpec("model", None)
  assert spec(("prompt", "prompt_embed")) == PartitionSpec(None, None)
  assert spec(("mlp", "heads")) == PartitionSpec("model", None)  # a mesh axis is used once.
  with pytest.raises(partitioning.UnknownLogicalAxisError, match="LOGICAL_AXIS_RULES"):
    spec(("no_such_axis",))


def test_every_parameter_of_every_method_has_a_rule():
  for gin_file in ("test/t5_1_1_tiny_prompt.gin", "test/t5_1_1_tiny_prefix.gin",
                   "test/t5_1_1_tiny_p_tuning.gin", "test/decoder_only_tiny_prompt.gin"):
    model = api.load_model([gin_file])
    axes = api.param_axes(model.module, model.config)
    for names in jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, tuple)):
      partitioning.logical_to_spec(names)


_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, seqio
    from prompt_tuning import prompts
    from prompt_tuning.data import file_tasks
    from prompt_tuning.models import T5Config
    from prompt_tuning.train import data, runner
    folder, partitions = sys.argv[1], int(sys.argv[2])
    rows = "text\\tlabel\\n" + "".join(
        f"film {i} was {'good' if i % 2 else 'bad'}\\t{'positive' if i % 2 else 'negative'}\\n"
        for i in range(32))
    open(folder + "/train.tsv", "w").write(rows)
    file_tasks.register_file_task("mesh_task", train_path=folder + "/train.tsv",
                                  input_template="{text}", vocabulary=seqio.ByteVocabulary())
    config = T5Config(vocab_size=384, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                      num_encoder_layers=2, num_decoder_layers=2, relpos_num_buckets=8,
                      relpos_max_distance=16, dropout_rate=0.0)
    result = runner.train(
        model_config=config, model_dir=f"{folder}/run_{partitions}",
        prompt_config=prompts.PromptConfig(length=4, initializer=prompts.uniform(0.5)),
        train_dataset_cfg=data.DatasetConfig("mesh_task", {"inputs": 24, "targets": 4},
                                             batch_size=8),
        total_steps=3, checkpoint_period=None, log_period=1, num_partitions=partitions,
        tensorboard=False)
    import jax
    losses = [json.loads(l)["loss"] for l in open(f"{folder}/run_{partitions}/metrics.jsonl")]
    print("RESULT", json.dumps({"devices": jax.device_count(), "losses": losses}))
""")


def _run(folder, device_count: int, partitions: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count}",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder), str(partitions)],
                          capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_one_device_and_a_4x2_mesh_give_the_same_losses(tmp_path):
  one = _run(tmp_path, 1, 1)
  eight = _run(tmp_path, 8, 2)
  assert one["devices"] == 1 and eight["devices"] == 8
  assert len(one["losses"]) == 3
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
