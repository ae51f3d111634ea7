# Every target does its own set-up: a virtualenv in .venv, the project's dependencies, and
# (for test and demo) the local control plane binaries, built once and cached in
# ~/.cache/ack-secret-manager (override with ASM_CACHE_DIR).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv controlplane test unit lint demo bench manifests crds proto clean image image-save

all: lint test

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

controlplane: $(STAMP)
	bash hack/build-control-plane.sh >/dev/null
	$(PY) hack/fetch_tools.py >/dev/null

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: controlplane
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(PY) hack/gen_crds.py --check
	$(PY) hack/gen_manifests.py --check
	$(PY) hack/gen_proto.py --check

# The controller image (podman, or docker when it works), tagged VERSION and
# VERSION-<digest of its inputs>; SBOM in dist/. image-save: dist/*.oci.tar as well.
image: $(STAMP)
	bash hack/build-image.sh build

image-save: $(STAMP)
	bash hack/build-image.sh save

manifests: $(STAMP)
	$(PY) hack/gen_manifests.py

crds: $(STAMP)
	$(PY) hack/gen_crds.py

# The KMS v2 plugin's gRPC code, from controller/kmsplugin/proto/api.proto (grpcio-tools).
proto: $(STAMP)
	$(PY) hack/gen_proto.py

# The scale benchmark (not part of the tests): 1,000, 5,000 and 10,000 ExternalSecrets,
# about 11 minutes on 2 cores; results in bench/results/ and docs/performance.md. Then the
# churn benchmark: 10,000 ExternalSecrets with their stores and ServiceAccounts created and
# deleted three times, RSS within 10 % of the first round (bench/churn.py).
bench: controlplane
	$(PY) -m pip install -q -r bench/requirements.txt
	$(PY) -m bench --sizes 1000,5000,10000
	$(PY) -m bench.encryption --secrets 10000 --out bench/results/encryption-10000.json
	$(PY) -m bench.churn --objects 10000

demo: controlplane
	$(PY) hack/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
