# Entry points: `make demo` (set up, train and evaluate QLAM on sMNIST), `make test` and
# `make docs` (the API reference site, built strictly into site/).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench docs mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,peers,plot,cluster,tensorboard,hardware,docs]" "$(TORCH_PIN)"
	$(BIN)/python -m qlam.sim.scan.cpp || echo "qlam: C++ kernel not built; the PyTorch path will be used"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m qlam demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=10

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict -d site

bench: $(STAMP)
	$(BIN)/qlam bench sim --quick

# Mutation testing of the core modules (memory/, sim/, train.py, data/; [tool.mutmut] in
# pyproject.toml): hours on 2 cores, not part of CI. MUTANTS narrows it, e.g.
# `make mutation MUTANTS='qlam.memory*'`; `mutmut results` / `mutmut show NAME` afterwards.
MUTANTS ?=
mutation: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[mutation]"
	nice -n 19 $(BIN)/mutmut run $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) build site src/*.egg-info
