#!/usr/bin/env bash
# Install the full InfluencerFormer stack into a cached virtual environment.
#
#   tools/install.sh              install what is missing (idempotent, fast when done)
#   tools/install.sh --venv-path  print the environment's path and exit
#   tools/install.sh --core       torch + test tools only (enough for influencer_core)
#
# The checkout that runs this script is installed into the environment in editable mode
# (pip install -e, the packages of setup.cfg); as the environment is shared by every clone,
# each run checks where it imports influencer_core from and re-points it when needed.
#
# The environment lives outside the checkout, in $INFLUENCER_CACHE (default
# ~/.cache/influencerformer), keyed by a hash of this file: a fresh clone reuses
# it, a changed pin builds a new one.  The compiled mmcv wheel is cached apart,
# keyed by mmcv/torch/CUDA, so a new environment does not rebuild it.
# Overrides: INFLUENCER_VENV, TORCH_SPEC, D2_SOURCE (auto|git|pypi), SPCONV_PKG,
# MAX_JOBS, PYTHON.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${INFLUENCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/influencerformer}
KEY=$(sha256sum "$ROOT/tools/install.sh" | cut -c1-12)
VENV=${INFLUENCER_VENV:-$CACHE/venv-$KEY}
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--venv-path" ]]; then echo "$VENV"; exit 0; fi
CORE_ONLY=0; [[ "${1:-}" == "--core" ]] && CORE_ONLY=1

# ---- pins ------------------------------------------------------------------
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_GIT=https://github.com/facebookresearch/detectron2.git
D2_SDIST=pb1-detectron2==0.6
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
MMDET3D_VERSION=1.4.0
SPCONV_VERSION=2.3.8

mkdir -p "$CACHE/wheels" "$CACHE/logs"
exec 9>"$CACHE/install.lock"
if ! flock -w 3600 9; then echo "install: could not take $CACHE/install.lock" >&2; exit 1; fi

CONSTRAINTS="$CACHE/constraints-$KEY.txt"
cat > "$CONSTRAINTS" <<PINS
numpy<2
pillow<10
setuptools<81
opencv-python-headless<4.12
iopath<0.1.10
PINS
for spec in $TORCH_SPEC; do echo "$spec" >> "$CONSTRAINTS"; done
export PIP_CONSTRAINT="$CONSTRAINTS" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

HAS_CUDA=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then HAS_CUDA=1; fi

STAMPS="$VENV/.influencer-stamps"
CURRENT=""
LOG=""
on_error() {
  echo "" >&2
  echo "INSTALL FAILED at step '$CURRENT' (log: $LOG)" >&2
  [[ -n "$LOG" && -f "$LOG" ]] && tail -n 40 "$LOG" >&2
  exit 1
}
trap on_error ERR

STEP_NO=0
step() {  # step NAME FUNCTION: run FUNCTION once per environment, logging to a file
  local name=$1 fn=$2 t0
  STEP_NO=$((STEP_NO + 1))
  if [[ -f "$STAMPS/$name" ]]; then
    printf '[install %2d] %-14s already done\n' "$STEP_NO" "$name"
    return 0
  fi
  CURRENT=$name
  LOG="$CACHE/logs/$KEY-$name.log"
  printf '[install %2d] %-14s ... ' "$STEP_NO" "$name"
  t0=$(date +%s)
  "$fn" > "$LOG" 2>&1
  mkdir -p "$STAMPS"; touch "$STAMPS/$name"
  printf 'done (%ss)\n' "$(( $(date +%s) - t0 ))"
}

PIP() { "$VENV/bin/python" -m pip "$@"; }
PY() { "$VENV/bin/python" "$@"; }

fetch_sdist() {  # fetch_sdist NAME VERSION DEST: download a source archive from PyPI's simple API
  PY - "$1" "$2" "$3" <<'PYEOF'
import hashlib, json, sys, urllib.request
name, version, dest = sys.argv[1:]
req = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
cands = [f for f in files if f["filename"].endswith(f"-{version}.tar.gz")]
if not cands:
    sys.exit(f"no sdist of {name}=={version} on PyPI")
f = cands[0]
data = urllib.request.urlopen(f["url"], timeout=300).read()
if hashlib.sha256(data).hexdigest() != f["hashes"]["sha256"]:
    sys.exit(f"sha256 mismatch for {f['filename']}")
open(dest, "wb").write(data)
print("fetched", f["filename"])
PYEOF
}

# ---- steps -------------------------------------------------------------------
s_venv() { rm -rf "$VENV"; "$PYTHON" -m venv "$VENV"; }
s_base() { PIP install 'setuptools<81' wheel ninja 'numpy<2' 'pillow<10'; }
s_torch() { PIP install $TORCH_SPEC; PY -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)'; }
s_testtools() { PIP install pytest scipy ruff; }
s_common() {
  PIP install matplotlib opencv-python-headless pycocotools tensorboard fvcore 'iopath<0.1.10' \
    omegaconf hydra-core yacs tabulate termcolor cloudpickle tqdm shapely psutil pydot \
    addict yapf rich pyyaml terminaltables six numba plyfile trimesh scikit-image networkx \
    pyquaternion descartes pandas scikit-learn cachetools
  PIP install --no-deps panopticapi-lite==0.2.0
}
d2_from_git() {
  timeout 20 git ls-remote --exit-code "$D2_GIT" HEAD >/dev/null 2>&1 || return 1
  PIP install --no-build-isolation --no-deps "git+$D2_GIT" || return 1
}
d2_from_pypi() {
  # The registry copy of detectron2 0.6 ships without its C++ sources: build it
  # python-only and provide a stand-in _C whose ops raise a clear error.
  local src="$CACHE/build/detectron2"
  rm -rf "$src"; mkdir -p "$src"
  fetch_sdist pb1-detectron2 0.6 "$src/d2.tar.gz"
  tar xzf "$src/d2.tar.gz" -C "$src"
  local d="$src/pb1-detectron2-0.6"
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$d/setup.py"
  # numpy >= 1.24 removed the np.bool/np.int/np.float aliases detectron2 0.6 uses.
  grep -rlE 'np\.(bool|int|float)\b' --include='*.py' "$d/detectron2" | \
    xargs sed -i -E 's/np\.bool\b([^_])/bool\1/g; s/np\.int\b([^_0-9])/int\1/g; s/np\.float\b([^_0-9])/float\1/g'
  cat > "$d/detectron2/_C.py" <<'PYEOF'
"""Stand-in for detectron2's compiled extension (not shipped by the registry sdist).

Ops that need it (rotated boxes, deformable conv, fast COCOeval) raise a clear error;
use COCOEvaluator(..., use_fast_impl=False).
"""


def get_compiler_version():
    return "none (python-only build, no compiled extension)"


def get_cuda_version():
    return "none (python-only build)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def _missing(*args, **kwargs):
        raise NotImplementedError(
            f"detectron2._C.{name} is unavailable: this detectron2 was built without its C++ "
            "extension. Install upstream detectron2 from its git repository for compiled ops."
        )

    return _missing
PYEOF
  (cd "$d" && PIP install --no-build-isolation --no-deps .)
}
s_detectron2() {
  local src=${D2_SOURCE:-auto}
  if [[ "$src" != pypi ]] && d2_from_git; then echo "detectron2: installed from $D2_GIT"; return 0; fi
  [[ "$src" == git ]] && { echo "D2_SOURCE=git but $D2_GIT could not be installed"; return 1; }
  echo "detectron2: upstream git not reachable or failed to build; using registry $D2_SDIST"
  d2_from_pypi
}
s_mmengine() { PIP install --no-deps mmengine==$MMENGINE_VERSION; }
s_mmcv() {
  local tag
  tag=$(PY -c 'import torch; print(torch.__version__.split("+")[0] + ("-cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else ""))')
  local wdir="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$tag-cuda$HAS_CUDA"
  if ! ls "$wdir"/mmcv-*.whl >/dev/null 2>&1; then
    local src="$CACHE/build/mmcv"
    rm -rf "$src"; mkdir -p "$src"
    fetch_sdist mmcv $MMCV_VERSION "$src/mmcv.tar.gz"
    tar xzf "$src/mmcv.tar.gz" -C "$src"
    # torch >= 2.10 headers need C++20.
    sed -i "s/-std=c++17/-std=c++20/g; s/-std=c++14/-std=c++20/g" "$src/mmcv-$MMCV_VERSION/setup.py"
    (cd "$src/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=$HAS_CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      PIP wheel --no-build-isolation --no-deps -w "$wdir.tmp" .)
    mv "$wdir.tmp" "$wdir"
  fi
  PIP install --no-deps "$wdir"/mmcv-*.whl
}
s_mmdet() {
  PIP install --no-deps mmdet==$MMDET_VERSION mmdet3d==$MMDET3D_VERSION
  PIP install --no-deps nuscenes-devkit lyft_dataset_sdk
}
s_spconv() {
  local pkg=${SPCONV_PKG:-}
  if [[ -z "$pkg" ]]; then
    if [[ $HAS_CUDA == 1 ]]; then
      pkg=$(PY -c 'import torch; v=torch.version.cuda or "12.6"; M,m=v.split(".")[:2]; print("spconv-cu118" if M=="11" else "spconv-cu126" if int(m)>=6 else "spconv-cu120")')
    else
      pkg=spconv
    fi
  fi
  PIP install "$pkg==$SPCONV_VERSION"
}
s_verify() {
  PY - <<'PYEOF'
import importlib
for mod in ["torch", "torchvision", "scipy", "detectron2", "detectron2.modeling", "detectron2.engine",
            "fvcore", "pycocotools.cocoeval", "panopticapi.evaluation", "cv2", "mmengine", "mmcv.ops",
            "mmdet", "mmdet3d.models", "mmdet3d.evaluation.functional", "spconv.pytorch"]:
    importlib.import_module(mod)
    print("ok", mod)
PYEOF
}

# This checkout, editable: influencer_core, influencerformer2d, influencerformer3d and
# influencer_data import from it, with no path settings anywhere.
s_editable() { PIP install --no-deps --no-build-isolation -e "$ROOT"; }
installed_checkout() {  # the folder the environment imports influencer_core from (find_spec: no import)
  (cd / && PY -c 'import importlib.util as u, os; s = u.find_spec("influencer_core")
print(os.path.dirname(os.path.dirname(os.path.realpath(s.origin))) if s and s.origin else "")' 2>/dev/null) || true
}
editable_checkout() {  # run on every call, also when all stamps exist: cheap, re-installs only if needed
  local want have t0
  want=$(realpath "$ROOT")
  have=$(installed_checkout)
  if [[ "$have" == "$want" ]]; then
    printf '[install  *] %-14s %s\n' "checkout" "already $want"
    return 0
  fi
  CURRENT=checkout
  LOG="$CACHE/logs/$KEY-checkout.log"
  printf '[install  *] %-14s %s ... ' "checkout" "pip install -e $want (was: ${have:-none})"
  t0=$(date +%s)
  s_editable > "$LOG" 2>&1
  have=$(installed_checkout)
  if [[ "$have" != "$want" ]]; then
    echo "influencer_core resolves to '${have:-nothing}' after the editable install, not $want" >> "$LOG"
    false
  fi
  printf 'done (%ss)\n' "$(( $(date +%s) - t0 ))"
}

echo "InfluencerFormer install -> $VENV (cuda=$HAS_CUDA)"
if [[ ! -x "$VENV/bin/python" || ! -f "$STAMPS/venv" ]]; then rm -rf "$STAMPS"; fi
step venv s_venv
step base s_base
step torch s_torch
step testtools s_testtools
editable_checkout
if [[ $CORE_ONLY == 0 ]]; then
  step common s_common
  step detectron2 s_detectron2
  step mmengine s_mmengine
  step mmcv s_mmcv
  step mmdet s_mmdet
  step spconv s_spconv
  step verify s_verify
fi
trap - ERR
echo "InfluencerFormer install: ready ($VENV)"
