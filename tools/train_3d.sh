#!/usr/bin/env bash
# Train InfluencerFormer3D / the OneFormer3D baseline on S3DIS, ScanNet or synthetic rooms.
#
#   tools/train_3d.sh DATASET [VARIANT] [--resume [CKPT]] [--dry-run] [extra tools/train_3d.py args]
#
#   DATASET  s3dis | scannet | synthetic
#   VARIANT  baseline (Hungarian InstanceCriterion) | influencer (InfluencerCriterion 'ot',
#            the default) | reference (InfluencerCriterion 'reference')
#
# Work dir: work_dirs/<dataset>_<variant> (a later --work-dir wins).  Environment:
#   GPUS=N        N > 1: torchrun --nproc_per_node=N ... --launcher pytorch; 1: one process on
#                 the GPU; 0: CPU (CUDA hidden).  Default: 1 when nvidia-smi sees a GPU, else 0.
#   PORT          torchrun master port (default 29500)
#   PRINT_ONLY=1  (or --dry-run) print the command instead of running it
#   PYTHON_BIN    interpreter (default: the project venv of tools/install.sh if built, else python)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG_DIR=projects/InfluencerFormer3D/configs
# shellcheck source=tools/_3d_common.sh
source "$ROOT/tools/_3d_common.sh"  # config_for, abs_if_exists, pick_gpus_and_python, launch

usage() {
  cat >&2 <<EOF
usage: tools/train_3d.sh s3dis|scannet|synthetic [baseline|influencer|reference] [--resume [CKPT]] [--dry-run] [extra train_3d.py args]

  baseline    OneFormer3D with Hungarian matching (InstanceCriterion)
  influencer  InfluencerCriterion, variant 'ot' (default)
  reference   InfluencerCriterion, variant 'reference'

examples:
  tools/train_3d.sh synthetic influencer                    # CPU is fine; data generated on first use
  GPUS=4 tools/train_3d.sh s3dis baseline                   # torchrun, 4 GPUs
  tools/train_3d.sh scannet influencer --resume             # latest checkpoint in the work dir
  tools/train_3d.sh synthetic baseline --cfg-options train_cfg.max_iters=5
env: GPUS=N (default 1 with a GPU, else 0 = CPU), PORT, PRINT_ONLY=1, PYTHON_BIN
EOF
  if [[ -n "${1:-}" ]]; then echo "error: $1" >&2; exit 2; fi
  exit 0
}

[[ $# -ge 1 ]] || usage "missing DATASET"
case "$1" in -h|--help) usage ;; esac
DATASET=$1; shift
case "$DATASET" in s3dis|scannet|synthetic) ;; *) usage "unknown dataset '$DATASET'" ;; esac
VARIANT=influencer
if [[ $# -ge 1 && "$1" != -* ]]; then VARIANT=$1; shift; fi
case "$VARIANT" in baseline|influencer|reference) ;; *) usage "unknown variant '$VARIANT'" ;; esac
CONFIG=$CONFIG_DIR/$(config_for "$DATASET" "$VARIANT")
[[ -f "$ROOT/$CONFIG" ]] || usage "config $CONFIG not found"

DRY=${PRINT_ONLY:-0}
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --resume)
      ARGS+=(--resume)
      if [[ $# -ge 2 && "$2" != -* ]]; then ARGS+=("$(abs_if_exists "$2")"); shift; fi ;;
    --resume=*) ARGS+=("--resume=$(abs_if_exists "${1#--resume=}")") ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done

pick_gpus_and_python

WORK_DIR=work_dirs/${DATASET}_${VARIANT}
SCRIPT_ARGS=(tools/train_3d.py "$CONFIG" --work-dir "$WORK_DIR")
launch "${SCRIPT_ARGS[@]}" -- "${ARGS[@]}"
