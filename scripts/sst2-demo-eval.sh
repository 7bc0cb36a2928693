#!/usr/bin/env bash
# Evaluate an SST-2 prompt (e.g. from sst2-demo.sh, or the paper's released prompt) on the
# validation split with the frozen T5 1.1 LM-adapted base.
#
#   usage: scripts/sst2-demo-eval.sh PROMPT_FILE EVAL_OUTPUT_DIR [TFDS_DATA_DIR] [INITIAL_CHECKPOINT_PATH] [extra flags...]
set -euo pipefail

PROMPT_FILE="${1:-${PROMPT_FILE:-}}"
EVAL_OUTPUT_DIR="${2:-${EVAL_OUTPUT_DIR:-}}"
TFDS_DATA_DIR="${3:-${TFDS_DATA_DIR:-}}"
INITIAL_CHECKPOINT_PATH="${4:-${INITIAL_CHECKPOINT_PATH:-gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000}}"
if [[ -z "${PROMPT_FILE}" || -z "${EVAL_OUTPUT_DIR}" ]]; then
  echo "usage: $0 PROMPT_FILE EVAL_OUTPUT_DIR [TFDS_DATA_DIR] [INITIAL_CHECKPOINT_PATH] [extra flags...]" >&2
  echo "  PROMPT_FILE: a [100, 768] .npy prompt (e.g. MODEL_DIR/numpy_checkpoints/checkpoint_1150000/encoder.prompt.prompt.prompt.npy)" >&2
  exit 1
fi
shift $(( $# < 4 ? $# : 4 ))

TFDS_FLAG=()
if [[ -n "${TFDS_DATA_DIR}" ]]; then TFDS_FLAG=(--tfds_data_dir="${TFDS_DATA_DIR}"); fi

python3 -m prompt_tuning.eval \
  --gin_file=models/t5_1_1_base_prompt.gin \
  --gin_file=runs/prompt_eval.gin \
  --gin.PROMPT_FILE="'${PROMPT_FILE}'" \
  --gin.EVAL_OUTPUT_DIR="'${EVAL_OUTPUT_DIR}'" \
  --gin.MIXTURE_OR_TASK_NAME="'taskless_glue_sst2_v200_examples'" \
  --gin.MIXTURE_OR_TASK_MODULE="'prompt_tuning.data.glue'" \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}" \
  --gin.INITIAL_CHECKPOINT_PATH="'${INITIAL_CHECKPOINT_PATH}'" \
  --gin.BATCH_SIZE="32" \
  "${TFDS_FLAG[@]}" "$@"
