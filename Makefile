# `make test` builds .venv from the pinned requirements on first use, then runs the suite.
# `make demo` trains and evaluates a small FLANet on a generated dataset (CPU, minutes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= workdirs/demo

.PHONY: test demo clean-venv

$(VENV)/.core: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Two pytest processes (pytest-xdist), each test file in one of them: one process alone
# leaves a core partly idle (compiling and tracing are mostly single-threaded). Files are
# handed out slowest first (tests/conftest.py).
test: $(VENV)/.dev
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

demo: $(VENV)/.core
	$(PY) -m flanet_jax.main --config configs/demo.py --workdir $(DEMO_DIR)
	$(PY) -m flanet_jax.main --config configs/demo.py --workdir $(DEMO_DIR) --mode eval

clean-venv:
	rm -rf $(VENV)
