#!/usr/bin/env bash
# Prompt tuning on SST-2 as in the paper's demo: a 100-token prompt, class-label init, T5 1.1
# LM-adapted base frozen at step 1_100_000, trained to step 1_150_000 (50k prompt steps).
#
#   usage: scripts/sst2-demo.sh MODEL_DIR [TFDS_DATA_DIR] [INITIAL_CHECKPOINT_PATH] [extra flags...]
#   (or set MODEL_DIR / TFDS_DATA_DIR / INITIAL_CHECKPOINT_PATH in the environment)
# Extra flags go to `python -m prompt_tuning.train`, e.g. --gin.BATCH_SIZE=8 --gin.NUM_PARTITIONS=2.
set -euo pipefail

MODEL_DIR="${1:-${MODEL_DIR:-}}"
TFDS_DATA_DIR="${2:-${TFDS_DATA_DIR:-}}"
INITIAL_CHECKPOINT_PATH="${3:-${INITIAL_CHECKPOINT_PATH:-gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000}}"
if [[ -z "${MODEL_DIR}" ]]; then
  echo "usage: $0 MODEL_DIR [TFDS_DATA_DIR] [INITIAL_CHECKPOINT_PATH] [extra flags...]" >&2
  echo "  MODEL_DIR: where checkpoints, metrics and the prompt .npy files are written" >&2
  echo "  TFDS_DATA_DIR: TFDS data dir holding glue/sst2 (default: TFDS's own)" >&2
  echo "  INITIAL_CHECKPOINT_PATH: frozen T5X / orbax / Hugging Face checkpoint" >&2
  exit 1
fi
shift $(( $# < 3 ? $# : 3 ))

TFDS_FLAG=()
if [[ -n "${TFDS_DATA_DIR}" ]]; then TFDS_FLAG=(--tfds_data_dir="${TFDS_DATA_DIR}"); fi

python3 -m prompt_tuning.train \
  --gin_file=models/t5_1_1_base_prompt.gin \
  --gin_file=prompts/from_class_labels.gin \
  --gin_file=runs/prompt_finetune.gin \
  --gin.CLASS_LABELS="['positive', 'negative']" \
  --gin.MODEL_DIR="'${MODEL_DIR}'" \
  --gin.MIXTURE_OR_TASK_NAME="'taskless_glue_sst2_v200_examples'" \
  --gin.MIXTURE_OR_TASK_MODULE="'prompt_tuning.data.glue'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}" \
  --gin.INITIAL_CHECKPOINT_PATH="'${INITIAL_CHECKPOINT_PATH}'" \
  --gin.TRAIN_STEPS="1_150_000" \
  --gin.USE_CACHED_TASKS="False" \
  --gin.BATCH_SIZE="16" \
  "${TFDS_FLAG[@]}" "$@"
