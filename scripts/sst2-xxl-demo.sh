#!/usr/bin/env bash
# The SST-2 demo on T5 1.1 XXL over several hosts: run this same command on every host.
# Model-parallel over NUM_PARTITIONS devices (frozen weights sharded, prompt replicated).
#
#   usage: scripts/sst2-xxl-demo.sh MODEL_DIR TFDS_DATA_DIR [INITIAL_CHECKPOINT_PATH] [extra flags...]
# On TPU pods jax.distributed needs no flags. On GPU hosts add, per host:
#   --multiprocess_gpu --coordinator_address=HOST0:1234 --process_count=N --process_index=I
set -euo pipefail

MODEL_DIR="${1:-${MODEL_DIR:-}}"
TFDS_DATA_DIR="${2:-${TFDS_DATA_DIR:-}}"
INITIAL_CHECKPOINT_PATH="${3:-${INITIAL_CHECKPOINT_PATH:-gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_xxl/checkpoint_1100000}}"
if [[ -z "${MODEL_DIR}" || -z "${TFDS_DATA_DIR}" ]]; then
  echo "usage: $0 MODEL_DIR TFDS_DATA_DIR [INITIAL_CHECKPOINT_PATH] [extra flags...]" >&2
  exit 1
fi
shift $(( $# < 3 ? $# : 3 ))

python3 -m prompt_tuning.train \
  --gin_file=models/t5_1_1_xxl_prompt.gin \
  --gin_file=prompts/from_class_labels.gin \
  --gin_file=runs/prompt_finetune.gin \
  --gin.CLASS_LABELS="['positive', 'negative']" \
  --gin.MODEL_DIR="'${MODEL_DIR}'" \
  --gin.MIXTURE_OR_TASK_NAME="'taskless_glue_sst2_v200_examples'" \
  --gin.MIXTURE_OR_TASK_MODULE="'prompt_tuning.data.glue'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}" \
  --gin.INITIAL_CHECKPOINT_PATH="'${INITIAL_CHECKPOINT_PATH}'" \
  --gin.TRAIN_STEPS="1_150_000" \
  --gin.BATCH_SIZE="32" \
  --gin.NUM_PARTITIONS="8" \
  --gin.ACTIVATION_DTYPE="'bfloat16'" \
  --tfds_data_dir="${TFDS_DATA_DIR}" \
  "$@"
