#!/usr/bin/env bash
# Train InfluencerFormer3D / the OneFormer3D baseline on S3DIS, ScanNet or synthetic rooms.
#
#   tools/train_3d.sh DATASET [ARM] [--resume [CKPT] | --overwrite] [--dry-run] [extra tools/train_3d.py args]
#
#   DATASET  s3dis | scannet | synthetic
#   ARM      hungarian (OneFormer3D, Hungarian InstanceCriterion) | reference (InfluencerCriterion
#            'reference') | ot (InfluencerCriterion 'ot', the default); the config is
#            tools/arms.py's (old names baseline / influencer still work, with a warning)
#
# Work dir: work_dirs/<dataset>_<arm> (a later --work-dir wins).  One that holds a previous run is
# refused unless --resume continues it or --overwrite deletes it first (both passed to train_3d.py).
# Environment:
#   GPUS=N        N > 1: torchrun --nproc_per_node=N ... --launcher pytorch, one process per GPU,
#                 or, without a GPU, N CPU processes joined by gloo; 1: one process on the GPU;
#                 0: one CPU process (CUDA hidden).  Default: 1 when nvidia-smi sees a GPU, else 0.
#   CPU=1         hide CUDA: GPUS=N > 1 then starts N CPU processes on a GPU machine too
#   NNODES        number of machines (default 1); with NNODES > 1 every machine runs the same
#                 command with its NODE_RANK (0 .. NNODES-1) and MASTER_ADDR (node 0's address)
#                 and GPUS processes (at least 1); torchrun's --nnodes / --node_rank / --master_addr
#   PORT          torchrun master port (default 29500)
#   PRINT_ONLY=1  (or --dry-run) print the command instead of running it
#   PYTHON_BIN    interpreter (default: the project venv of tools/install.sh if built, else python)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/_3d_common.sh
source "$ROOT/tools/_3d_common.sh"  # resolve_arm_config, abs_if_exists, pick_gpus_and_python, launch

usage() {
  cat >&2 <<EOT
usage: tools/train_3d.sh s3dis|scannet|synthetic [hungarian|reference|ot] [--resume [CKPT] | --overwrite] [--dry-run] [extra train_3d.py args]

  hungarian   OneFormer3D with Hungarian matching (InstanceCriterion)
  reference   InfluencerCriterion, variant 'reference'
  ot          InfluencerCriterion, variant 'ot' (default)

examples:
  tools/train_3d.sh synthetic                               # CPU is fine; data generated on first use
  GPUS=4 tools/train_3d.sh s3dis hungarian                  # torchrun, 4 GPUs
  GPUS=2 tools/train_3d.sh synthetic ot                     # without a GPU: 2 CPU processes (gloo)
  tools/train_3d.sh scannet ot --resume                     # latest checkpoint in the work dir
  tools/train_3d.sh synthetic ot --overwrite                # delete the previous run, train again
  tools/train_3d.sh synthetic hungarian --cfg-options train_cfg.max_iters=5
env: GPUS=N (default 1 with a GPU, else 0 = CPU), CPU=1, NNODES, NODE_RANK, MASTER_ADDR, PORT,
     PRINT_ONLY=1, PYTHON_BIN
EOT
  if [[ -n "${1:-}" ]]; then echo "error: $1" >&2; exit 2; fi
  exit 0
}

[[ $# -ge 1 ]] || usage "missing DATASET"
case "$1" in -h|--help) usage ;; esac
DATASET=$1; shift
ARM=  # default: tools/arms.py's (ot)
if [[ $# -ge 1 && "$1" != -* ]]; then ARM=$1; shift; fi

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
resolve_arm_config "$DATASET" "$ARM"  # sets ARM (canonical) and CONFIG

WORK_DIR=work_dirs/${DATASET}_${ARM}
SCRIPT_ARGS=(tools/train_3d.py "$CONFIG" --work-dir "$WORK_DIR")
launch "${SCRIPT_ARGS[@]}" -- "${ARGS[@]}"
