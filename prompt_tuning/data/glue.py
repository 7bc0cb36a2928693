"""GLUE seqio tasks in the T5 paper's text format, with the paper's variants.

Importing this module (e.g. through `MIXTURE_OR_TASK_MODULE`) registers, for
every TFDS GLUE config NAME (cola, sst2, mrpc, qqp, stsb, mnli,
mnli_mismatched, mnli_matched, qnli, rte, wnli, ax):
  * `glue_NAME_v002` on TFDS glue 1.0.0 and `glue_NAME_v200` on glue 2.0.0,
  * `taskless_glue_NAME_...` (no leading task name) and
    `task_index_glue_NAME_...` (an `<extra_id_i>` task token prepended),
  * each also as `..._examples` (metrics also report decoded examples),
  * mixtures `{,taskless_,task_index_}glue_mnli_and_dev_{v002,v200}[_examples]`
    and `{...}glue_{v002,v200}[_examples]_proportional`,
with the T5 vocabulary, and the same with the mT5 vocabulary under `mt5_`.
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow_datasets as tfds

from prompt_tuning.data import metrics
from prompt_tuning.data import preprocessors
from prompt_tuning.data import task_variants
from prompt_tuning.data import vocab

# (TFDS version, task-name version).
VERSIONS = (("1.0.0", "v002"), ("2.0.0", "v200"))
# The diagnostic set and the MNLI dev/test configs are read as MNLI.
TASK_INDEX_ALIASES = {"ax": "mnli", "mnli_mismatched": "mnli",
                      "mnli_matched": "mnli"}
# T5's mixing rates: training-set sizes (WNLI left out, as in T5).
WEIGHTS = {
    "cola": 8_551., "sst2": 67_349., "mrpc": 3_668., "qqp": 363_849.,
    "stsb": 5_749., "mnli": 392_702., "qnli": 104_743., "rte": 2_490.,
    "mnli_mismatched": 0., "mnli_matched": 0., "ax": 0.,
}
MNLI_AND_DEV = ("mnli", "mnli_mismatched", "mnli_matched")


def glue_label_names() -> dict[str, tuple[str, ...] | None]:
  """Class names of each GLUE config (None for the regression task stsb)."""
  return {
      name: None if config.label_classes is None else tuple(
          config.label_classes)
      for name, config in tfds.text.glue.Glue.builder_configs.items()
  }


def glue_task_index() -> dict[str, int]:
  """The `<extra_id_*>` offset of each GLUE config in task_index_ tasks."""
  return preprocessors.task_index(list(glue_label_names()), TASK_INDEX_ALIASES)


def register_glue_tasks(vocabulary: seqio.Vocabulary | None = None,
                        prefix: str = "",
                        output_features: Mapping[str, seqio.Feature] | None
                        = None) -> list[str]:
  """Registers every GLUE task and mixture (see module docstring).

  Registering again replaces the earlier tasks of the same names.

  Args:
    vocabulary: the vocabulary of the tasks; T5's when None.
    prefix: prepended to every task / mixture name (e.g. "mt5_").
    output_features: overrides the features built from `vocabulary`.

  Returns:
    The registered task and mixture names.
  """
  if output_features is None:
    output_features = vocab.t5_output_features(vocabulary)
  index = glue_task_index()
  names = []
  for tfds_version, version in VERSIONS:
    for config, label_names in glue_label_names().items():
      source = seqio.TfdsDataSource(
          tfds_name=f"glue/{config}:{tfds_version}",
          splits=["test"] if config == "ax" else None)
      names += task_variants.register_variants(
          f"glue_{config}_{version}",
          source=source,
          text_preprocessors=[
              preprocessors.glue_text_preprocessor(config, label_names)],
          output_features=output_features,
          postprocess_fn=task_variants.glue_postprocessor(config, label_names),
          metric_fns=metrics.glue_metrics(config),
          examples_name=config,
          task_index=index[config],
          prefix=prefix)
    names += task_variants.register_mixture_variants(
        f"glue_mnli_and_dev_{version}",
        [f"glue_{config}_{version}" for config in MNLI_AND_DEV],
        prefix=prefix)
    names += task_variants.register_mixture_variants(
        f"glue_{version}",
        [(f"glue_{c}_{version}", rate) for c, rate in WEIGHTS.items()],
        prefix=prefix, default_rate=None, name_suffix="_proportional")
  return names


def register_all() -> list[str]:
  """The registrations done at import: T5 vocabulary, and mT5 under "mt5_"."""
  return (register_glue_tasks() +
          register_glue_tasks(vocab.mt5_vocabulary(), prefix="mt5_"))


register_all()
