# Shared by tools/train_3d.sh and tools/eval_3d.sh (sourced; needs ROOT and a `usage` function).

resolve_arm_config() {  # DATASET [ARM] -> sets ARM (canonical name) and CONFIG; needs PY
  # The one rule (dataset, arm) -> config, and the default arm, live in tools/arms.py; old arm
  # names warn there.
  local out
  out=$("$PY" "$ROOT/tools/arms.py" 3d "$1" ${2:+"$2"} --shell) || usage "${out:-$PY could not run tools/arms.py}"
  read -r ARM CONFIG <<<"$out"
  [[ -f "$ROOT/$CONFIG" ]] || usage "config $CONFIG not found"
}

abs_if_exists() {  # make a path given relative to the caller's directory absolute
  if [[ -e "$1" && "$1" != /* ]]; then echo "$PWD/$1"; else echo "$1"; fi
}

pick_gpus_and_python() {  # sets GPUS (default: 1 when nvidia-smi sees a GPU, else 0), HAVE_GPU and PY
  HAVE_GPU=0
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAVE_GPU=1; fi
  if [[ "${CPU:-0}" == 1 ]]; then HAVE_GPU=0; fi  # CPU=1: CPU worker processes even on a GPU machine
  if [[ -z "${GPUS:-}" ]]; then GPUS=$HAVE_GPU; fi
  [[ "$GPUS" =~ ^[0-9]+$ ]] || usage "GPUS must be a non-negative integer, got '$GPUS'"
  PY=${PYTHON_BIN:-}
  if [[ -z "$PY" ]]; then
    local venv
    venv=$(bash "$ROOT/tools/install.sh" --venv-path 2>/dev/null || true)
    if [[ -n "$venv" && -x "$venv/bin/python" ]]; then PY=$venv/bin/python; else PY=python; fi
    warn_other_checkout
  fi
}

warn_other_checkout() {  # the shared environment imports the packages of the checkout that last ran install.sh
  local where
  where=$(cd / && "$PY" -c 'import importlib.util as u, os; s = u.find_spec("influencer_core")
print(os.path.dirname(os.path.dirname(os.path.realpath(s.origin))) if s and s.origin else "")' 2>/dev/null || true)
  if [[ "$where" != "$(realpath "$ROOT")" ]]; then
    echo "note: $PY imports the project from '${where:-nowhere}', not $ROOT; run tools/install.sh here first" >&2
  fi
}

multi_node_args() {  # torchrun's node options for NNODES > 1 (NODE_RANK and MASTER_ADDR required)
  local nnodes=${NNODES:-1}
  [[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || usage "NNODES must be a positive integer, got '$nnodes'"
  (( nnodes > 1 )) || return 0
  [[ "${NODE_RANK:-}" =~ ^[0-9]+$ ]] && (( NODE_RANK < nnodes )) \
    || usage "NNODES=$nnodes needs NODE_RANK (0..$((nnodes - 1))) on every node, got '${NODE_RANK:-}'"
  [[ -n "${MASTER_ADDR:-}" ]] || usage "NNODES=$nnodes needs MASTER_ADDR (the address of node 0) on every node"
  NODE_ARGS=(--nnodes="$nnodes" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR")
}

launch() {  # launch SCRIPT_ARGS... -- EXTRA_ARGS...: torchrun for GPUS > 1 or NNODES > 1, else one process
  local script_args=() extra=()
  while [[ $# -gt 0 && "$1" != -- ]]; do script_args+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  extra=("$@")
  local env_prefix=() cmd=() runner=()
  NODE_ARGS=()
  multi_node_args
  # GPUS=0 or CPU=1: CUDA hidden.  Without a GPU in use, several processes train on the CPU,
  # joined by gloo (influencerformer3d/distributed.py)
  if (( GPUS == 0 )) || [[ "${CPU:-0}" == 1 ]]; then env_prefix=(CUDA_VISIBLE_DEVICES=); fi
  if (( GPUS > 1 || ${#NODE_ARGS[@]} > 0 )); then
    if [[ "$PY" == */* && -x "$(dirname "$PY")/torchrun" ]]; then runner=("$(dirname "$PY")/torchrun")
    elif command -v torchrun >/dev/null 2>&1; then runner=(torchrun)
    else runner=("$PY" -m torch.distributed.run); fi
    local procs=$(( GPUS > 0 ? GPUS : 1 ))
    if (( HAVE_GPU == 0 || GPUS == 0 )); then
      echo "note: no GPU in use: $procs CPU worker process(es) per node, joined by gloo" >&2
    fi
    cmd=("${runner[@]}" --nproc_per_node="$procs" "${NODE_ARGS[@]}" --master_port="${PORT:-29500}"
         "${script_args[@]}" --launcher pytorch "${extra[@]}")
  else
    cmd=("$PY" "${script_args[@]}" "${extra[@]}")
  fi
  cd "$ROOT"
  export THP_MEM_ALLOC_ENABLE=${THP_MEM_ALLOC_ENABLE:-1}
  if [[ "$DRY" == 1 ]]; then
    printf '%q ' "${env_prefix[@]}" "${cmd[@]}" | sed 's/ $//'
    echo
    exit 0
  fi
  exec env "${env_prefix[@]}" "${cmd[@]}"
}
