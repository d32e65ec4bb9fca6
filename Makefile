# Every target sets up what it needs first (tools/bootstrap.sh is idempotent).
PY := .venv/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider -rs

.PHONY: setup demo test lint test-registry test-core test-comfy test-server test-web bench gpu-check node-schemas

setup:
	bash tools/bootstrap.sh

# The main job: the full personalization pipeline on tiny random weights (verifies the install).
demo:
	bash tools/bootstrap.sh --no-comfy
	.venv/bin/drum personalize --tiny-random --history example_workflows/example_history.txt \
		--prompt "a lighthouse on a cliff at dusk" --degree 0.3 --out test-artifacts/demo.png

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The Registry's publishing check (comfy-cli from .venv-tools, no telemetry, no prompt). The archive itself is
# packed, loaded into ComfyUI and linted (comfy-test lint, comfy-lint) by the server tier: docs/shipping.md.
test-registry:
	DO_NOT_TRACK=1 .venv-tools/bin/comfy --skip-prompt node validate

test-core:
	$(PYTEST) -q tests -m "not comfy and not server and not web"

test-comfy:
	$(PYTEST) -q tests -m comfy

test-server:
	$(PYTEST) -q tests -m server

test-web:
	$(PYTEST) -q tests -m web

# All tiers, after setting everything up: what .ci/run runs. Each tier is its own process
# (the ComfyUI tiers put ComfyUI's tree and a torchvision stub on sys.path).
test: setup lint test-registry test-core test-comfy test-server test-web

bench:
	bash tools/bootstrap.sh
	$(PY) bench/bench_peca.py
	$(PY) bench/bench_conditioner.py
	$(PY) bench/bench_history.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_coreset.py
	$(PY) bench/bench_outputs.py

# On a machine with a CUDA GPU (~10 min): PeCA on CUDA, the server tier in ComfyUI's default / --lowvram /
# --highvram modes, a timing table. Sets itself up in .venv-gpu around the machine's CUDA torch (see the script).
gpu-check:
	bash bench/gpu_check.sh

# Rewrite tests/data/node_schemas.json after adding a node or an input with a default (tests/comfy/test_node_schemas.py).
node-schemas:
	$(PY) tests/support/node_schemas.py
