"""SuperGLUE seqio tasks in the T5 paper's text format, with its variants.

Importing this module registers, on TFDS super_glue 1.0.2, with the prefixes
"" / "taskless_" / "task_index_" and the suffixes "" / "_examples" (see
`task_variants`):
  * `super_glue_NAME_v102` for NAME in boolq, cb, copa, multirc, record, rte,
    wic, axb, axg, and the WSC classification tasks `super_glue_wsc_v102`,
    `super_glue_wsc.fixed_v102` ("wsc text: ... * noun * ... # it # ...");
  * simple WSC (generate the referent): `super_glue_wsc_v102_simple_train`
    (correct referents only), `super_glue_wsc_v102_simple_eval`, and their
    mixture `super_glue_wsc_and_dev_v102_simple`;
  * `dpr_v001_simple` (definite pronoun resolution in the simple WSC format);
  * mixtures `super_glue_v102[_examples]_proportional` and
    `super_glue_with_dpr_v102[_examples]_proportional` (T5's rates);
with the T5 vocabulary, and the same with the mT5 vocabulary under `mt5_`.
"""

from __future__ import annotations

import functools
from typing import Mapping

import seqio
import tensorflow_datasets as tfds

from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors
from prompt_tuning.data import preprocessors
from prompt_tuning.data import task_variants
from prompt_tuning.data import vocab

TFDS_VERSION = "1.0.2"
VERSION = "v102"
# The diagnostic sets are read as RTE, wsc.fixed is WSC.
TASK_INDEX_ALIASES = {"wsc.fixed": "wsc", "axb": "rte", "axg": "rte"}
TEST_ONLY = ("axb", "axg")
# AX-b names its sentences like GLUE; read them as RTE's premise / hypothesis.
AXB_REKEY = {"premise": "sentence1", "hypothesis": "sentence2",
             "label": "label", "idx": "idx"}
WSC_TRAIN = "super_glue_wsc_v102_simple_train"
WSC_EVAL = "super_glue_wsc_v102_simple_eval"
DPR = "dpr_v001_simple"
# T5's mixing rates: training-set sizes.
WEIGHTS = {
    WSC_TRAIN: 259., WSC_EVAL: 0., "super_glue_boolq_v102": 9_427.,
    "super_glue_cb_v102": 250., "super_glue_copa_v102": 400.,
    "super_glue_multirc_v102": 27_243., "super_glue_record_v102": 138_854.,
    "super_glue_rte_v102": 2_490., "super_glue_wic_v102": 5_428.,
}
DPR_WEIGHT = 1_322.


def super_glue_label_names() -> dict[str, tuple[str, ...]]:
  """Class names of each SuperGLUE config."""
  return {name: tuple(config.label_classes) for name, config in
          tfds.text.super_glue.SuperGlue.builder_configs.items()}


def super_glue_task_index() -> dict[str, int]:
  """The `<extra_id_*>` offset of each config in task_index_ tasks."""
  return preprocessors.task_index(list(super_glue_label_names()),
                                  TASK_INDEX_ALIASES)


def _source(config: str, splits=None) -> seqio.TfdsDataSource:
  return seqio.TfdsDataSource(
      tfds_name=f"super_glue/{config}:{TFDS_VERSION}", splits=splits)


def register_super_glue_tasks(vocabulary: seqio.Vocabulary | None = None,
                              prefix: str = "",
                              output_features: Mapping[str, seqio.Feature] |
                              None = None) -> list[str]:
  """Registers every SuperGLUE task and mixture (see module docstring).

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
  index = super_glue_task_index()
  register = functools.partial(task_variants.register_variants,
                               output_features=output_features, prefix=prefix)
  names = []
  for config, label_names in super_glue_label_names().items():
    steps = [preprocessors.glue_text_preprocessor(config, label_names)]
    if config == "axb":
      steps.insert(0, functools.partial(seqio.preprocessors.rekey,
                                        key_map=AXB_REKEY))
    names += register(
        f"super_glue_{config}_{VERSION}",
        source=_source(config, ["test"] if config in TEST_ONLY else None),
        text_preprocessors=steps,
        postprocess_fn=task_variants.glue_postprocessor(config, label_names),
        metric_fns=metrics.super_glue_metrics(config),
        examples_name=config,
        task_index=index[config])

  names += register(
      WSC_TRAIN, source=_source("wsc.fixed", ["train"]),
      text_preprocessors=[functools.partial(preprocessors.wsc_simple,
                                            correct_referent_only=True)],
      postprocess_fn=None, metric_fns=[], examples_name="wsc",
      task_index=index["wsc"])
  names += register(
      WSC_EVAL, source=_source("wsc.fixed", ["validation", "test"]),
      text_preprocessors=[functools.partial(preprocessors.wsc_simple,
                                            correct_referent_only=False)],
      postprocess_fn=postprocessors.wsc_simple,
      metric_fns=metrics.super_glue_metrics("wsc_simple"),
      examples_name="wsc", task_index=index["wsc"])
  names += register(
      DPR, source=seqio.TfdsDataSource(
          tfds_name="definite_pronoun_resolution:1.1.0"),
      text_preprocessors=[preprocessors.definite_pronoun_resolution_simple],
      postprocess_fn=None, metric_fns=[metrics.accuracy], examples_name="dpr",
      task_index=index["wsc"])

  mixtures = functools.partial(task_variants.register_mixture_variants,
                               prefix=prefix)
  names += mixtures(f"super_glue_wsc_and_dev_{VERSION}_simple",
                    [WSC_TRAIN, WSC_EVAL])
  names += mixtures(f"super_glue_{VERSION}", list(WEIGHTS.items()),
                    default_rate=None, name_suffix="_proportional")
  names += mixtures(f"super_glue_with_dpr_{VERSION}",
                    [(DPR, DPR_WEIGHT)] + list(WEIGHTS.items()),
                    default_rate=None, name_suffix="_proportional")
  return names


def register_all() -> list[str]:
  """The registrations done at import: T5 vocabulary, and mT5 under "mt5_"."""
  return (register_super_glue_tasks() +
          register_super_glue_tasks(vocab.mt5_vocabulary(), prefix="mt5_"))


register_all()
