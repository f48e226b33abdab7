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

config_for() {  # dataset variant -> config file name (same table as tools/train_3d.sh)
  case "$1:$2" in
    s3dis:baseline)      echo oneformer3d_1xb2_s3dis-area-5.py ;;
    s3dis:influencer)    echo influencerformer_1xb2_s3dis-area-5.py ;;
    s3dis:reference)     echo influencerformer-reference_1xb2_s3dis-area-5.py ;;
    scannet:baseline)    echo oneformer3d_1xb4_scannet.py ;;
    scannet:influencer)  echo influencerformer_1xb4_scannet.py ;;
    scannet:reference)   echo influencerformer-reference_1xb4_scannet.py ;;
    synthetic:baseline)  echo synthetic-rooms_baseline.py ;;
    synthetic:influencer) echo synthetic-rooms_influencer.py ;;
    synthetic:reference) echo synthetic-rooms_reference.py ;;
    *) return 1 ;;
  esac
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
if [[ -e "$CKPT" && "$CKPT" != /* ]]; then CKPT=$PWD/$CKPT; fi

DRY=${PRINT_ONLY:-0}
ARGS=()
for a in "$@"; do
  if [[ "$a" == --dry-run ]]; then DRY=1; else ARGS+=("$a"); fi
done

if [[ -z "${GPUS:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPUS=1; else GPUS=0; fi
fi
[[ "$GPUS" =~ ^[0-9]+$ ]] || usage "GPUS must be a non-negative integer, got '$GPUS'"

PY=${PYTHON_BIN:-}
if [[ -z "$PY" ]]; then
  VENV=$(bash "$ROOT/tools/install.sh" --venv-path 2>/dev/null || true)
  if [[ -n "$VENV" && -x "$VENV/bin/python" ]]; then PY=$VENV/bin/python; else PY=python; fi
fi

SCRIPT_ARGS=(tools/test_3d.py "$CONFIG" "$CKPT" --work-dir "work_dirs/${DATASET}_${VARIANT}/eval")
ENV_PREFIX=()
if (( GPUS > 1 )); then
  if [[ "$PY" == */* && -x "$(dirname "$PY")/torchrun" ]]; then LAUNCH=("$(dirname "$PY")/torchrun")
  elif command -v torchrun >/dev/null 2>&1; then LAUNCH=(torchrun)
  else LAUNCH=("$PY" -m torch.distributed.run); fi
  CMD=("${LAUNCH[@]}" --nproc_per_node="$GPUS" --master_port="${PORT:-29500}"
       "${SCRIPT_ARGS[@]}" --launcher pytorch "${ARGS[@]}")
else
  if (( GPUS == 0 )); then ENV_PREFIX=(CUDA_VISIBLE_DEVICES=); fi
  CMD=("$PY" "${SCRIPT_ARGS[@]}" "${ARGS[@]}")
fi

cd "$ROOT"
export PYTHONPATH="$ROOT:$ROOT/projects/InfluencerFormer3D${PYTHONPATH:+:$PYTHONPATH}"
export THP_MEM_ALLOC_ENABLE=${THP_MEM_ALLOC_ENABLE:-1}
if [[ "$DRY" == 1 ]]; then
  printf '%q ' "${ENV_PREFIX[@]}" "${CMD[@]}" | sed 's/ $//'
  echo
  exit 0
fi
exec env "${ENV_PREFIX[@]}" "${CMD[@]}"
