# vibe3r: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
# Both are idempotent: the set-up step is skipped when nothing it depends on changed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PKGS := libusb-1.0-0 libgl1 libgomp1 chromium

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if command -v apt-get >/dev/null 2>&1 && ! dpkg -s $(APT_PKGS) >/dev/null 2>&1; then \
	  echo "installing apt packages: $(APT_PKGS)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS)) >/dev/null; fi
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,sfm]"
	@touch $(STAMP)

demo: setup
	$(BIN)/vibe3r loop iterate --config configs/default.yaml --run runs/demo
	$(BIN)/vibe3r loop status --run runs/demo

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs
