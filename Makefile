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

# Sampled mutation testing of the core modules (memory/, sim/, train.py, data/), not in CI:
# a seeded uniform sample of N mutants per group, each run as a fresh pytest process on a
# private copy of the tree (scripts/mutation.py, standard library only); 15-30 min per group
# on one core. Resumes from results/mutation/sample.json; the table is results/mutation/sample.md.
# `make mutation MUTATION_GROUPS=memory N=10` narrows it.
MUTATION_GROUPS ?= memory sim data train
N ?= 35
mutation: $(STAMP)
	nice -n 5 $(BIN)/python scripts/mutation.py run $(MUTATION_GROUPS) -n $(N) --seed 21

clean:
	rm -rf $(VENV) build site src/*.egg-info
