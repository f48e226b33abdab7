#!/usr/bin/env bash
# Evaluate a checkpoint: instance mAP / mAP50 / mAP25 per class and overall (plus semantic mIoU
# and panoptic PQ) on the dataset's test split (S3DIS: Area 5, ScanNet: val, synthetic: Area 5).
#
#   tools/eval_3d.sh DATASET ARM CHECKPOINT [--dry-run] [extra tools/test_3d.py args]
#
#   DATASET  s3dis | scannet | synthetic;  ARM  hungarian | reference | ot
#
# Runs tools/test_3d.py with the config tools/train_3d.sh uses for DATASET / ARM (tools/arms.py;
# old arm names baseline / influencer warn); results go to
# work_dirs/<dataset>_<arm>/eval/test_metrics.json.  Same environment variables as
# tools/train_3d.sh (GPUS, CPU, NNODES, NODE_RANK, MASTER_ADDR, PORT, PRINT_ONLY, PYTHON_BIN).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/_3d_common.sh
source "$ROOT/tools/_3d_common.sh"  # resolve_arm_config, abs_if_exists, pick_gpus_and_python, launch

usage() {
  cat >&2 <<EOF
usage: tools/eval_3d.sh s3dis|scannet|synthetic hungarian|reference|ot CHECKPOINT [--dry-run] [extra test_3d.py args]

examples:
  tools/eval_3d.sh synthetic ot work_dirs/synthetic_ot/iter_300.pth
  tools/eval_3d.sh s3dis hungarian work_dirs/s3dis_hungarian/best_all_ap_50%_epoch_512.pth --show-dir vis
env: GPUS=N (default 1 with a GPU, else 0 = CPU), CPU=1, NNODES, NODE_RANK, MASTER_ADDR, PORT,
     PRINT_ONLY=1, PYTHON_BIN
EOF
  if [[ -n "${1:-}" ]]; then echo "error: $1" >&2; exit 2; fi
  exit 0
}

case "${1:-}" in -h|--help) usage ;; esac
[[ $# -ge 3 ]] || usage "expected DATASET ARM CHECKPOINT, got $# argument(s)"
DATASET=$1 ARM=$2 CKPT=$3
shift 3
[[ "$CKPT" != -* ]] || usage "CHECKPOINT expected, got option '$CKPT'"
CKPT=$(abs_if_exists "$CKPT")

DRY=${PRINT_ONLY:-0}
ARGS=()
for a in "$@"; do
  if [[ "$a" == --dry-run ]]; then DRY=1; else ARGS+=("$a"); fi
done

pick_gpus_and_python
resolve_arm_config "$DATASET" "$ARM"  # sets ARM (canonical) and CONFIG

SCRIPT_ARGS=(tools/test_3d.py "$CONFIG" "$CKPT" --work-dir "work_dirs/${DATASET}_${ARM}/eval")
launch "${SCRIPT_ARGS[@]}" -- "${ARGS[@]}"
