#!/usr/bin/env bash
# Evaluate a checkpoint: instance mAP / mAP50 / mAP25 per class and overall (plus semantic mIoU
# and panoptic PQ) on the dataset's test split (S3DIS: Area 5, ScanNet: val, synthetic: Area 5).
#
#   tools/eval_3d.sh DATASET VARIANT CHECKPOINT [--dry-run] [extra tools/test_3d.py args]
#
#   DATASET  s3dis | scannet | synthetic;  VARIANT  baseline | influencer | reference
#
# Runs tools/test_3d.py with the config tools/train_3d.sh uses for DATASET / VARIANT; results
# go to work_dirs/<dataset>_<variant>/eval/test_metrics.json.  Same environment variables as
# tools/train_3d.sh (GPUS, PORT, PRINT_ONLY, PYTHON_BIN).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG_DIR=projects/InfluencerFormer3D/configs
# shellcheck source=tools/_3d_common.sh
source "$ROOT/tools/_3d_common.sh"  # config_for, abs_if_exists, pick_gpus_and_python, launch

usage() {
  cat >&2 <<EOF
usage: tools/eval_3d.sh s3dis|scannet|synthetic baseline|influencer|reference CHECKPOINT [--dry-run] [extra test_3d.py args]

examples:
  tools/eval_3d.sh synthetic influencer work_dirs/synthetic_influencer/iter_300.pth
  tools/eval_3d.sh s3dis baseline work_dirs/s3dis_baseline/best_all_ap_50%_epoch_512.pth --show-dir vis
env: GPUS=N (default 1 with a GPU, else 0 = CPU), PORT, PRINT_ONLY=1, PYTHON_BIN
EOF
  if [[ -n "${1:-}" ]]; then echo "error: $1" >&2; exit 2; fi
  exit 0
}

case "${1:-}" in -h|--help) usage ;; esac
[[ $# -ge 3 ]] || usage "expected DATASET VARIANT CHECKPOINT, got $# argument(s)"
DATASET=$1 VARIANT=$2 CKPT=$3
shift 3
case "$DATASET" in s3dis|scannet|synthetic) ;; *) usage "unknown dataset '$DATASET'" ;; esac
case "$VARIANT" in baseline|influencer|reference) ;; *) usage "unknown variant '$VARIANT'" ;; esac
CONFIG=$CONFIG_DIR/$(config_for "$DATASET" "$VARIANT")
[[ -f "$ROOT/$CONFIG" ]] || usage "config $CONFIG not found"
[[ "$CKPT" != -* ]] || usage "CHECKPOINT expected, got option '$CKPT'"
CKPT=$(abs_if_exists "$CKPT")

DRY=${PRINT_ONLY:-0}
ARGS=()
for a in "$@"; do
  if [[ "$a" == --dry-run ]]; then DRY=1; else ARGS+=("$a"); fi
done

pick_gpus_and_python

SCRIPT_ARGS=(tools/test_3d.py "$CONFIG" "$CKPT" --work-dir "work_dirs/${DATASET}_${VARIANT}/eval")
launch "${SCRIPT_ARGS[@]}" -- "${ARGS[@]}"
